"""Asset Administration Shell Repository API, read subset (IDTA-01002 Part 2, 10.2 and 11.x).

Served: ``GET /shells`` (filters ``idShort``, ``assetIds``; ``limit``, ``cursor``),
``GET /shells/{aasIdentifier}``, ``GET /shells/{aasIdentifier}/submodel-refs``.

Left out (issue: full Part 2): POST/PUT/DELETE of shells and submodel references,
``/shells/$reference``, ``/asset-information`` and its thumbnail, and the submodel routes nested
under ``/shells/{aasIdentifier}/submodels/...`` (served under ``/submodels`` instead).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from basyx.aas import model

from aas_server.api.context import catalog_of, store_of
from aas_server.api.paging import FilterKey, page_sorted, parse_page_request
from aas_server.api.serialization import decode_identifier, json_response, to_json_object
from aas_server.errors import InvalidRequestError

routes = web.RouteTableDef()


def parse_asset_ids(encoded: list[str]) -> list[FilterKey]:
    """Filter keys from ``assetIds`` values: each a base64url-encoded ``SpecificAssetId`` JSON object.

    ``{"name": "globalAssetId", "value": ...}`` matches ``assetInformation.globalAssetId``; other
    names match the shell's ``specificAssetIds``. A value holding a JSON array of such objects is
    accepted too. All given asset ids must match (AND).
    """
    keys: list[FilterKey] = []
    for text in encoded:
        decoded = decode_identifier(text, "assetIds value")
        try:
            parsed: Any = orjson.loads(decoded)
        except orjson.JSONDecodeError as error:
            raise InvalidRequestError(
                f"assetIds value is not a JSON SpecificAssetId: line {error.lineno} column {error.colno}: {error.msg}"
            ) from None
        for asset_id in parsed if isinstance(parsed, list) else [parsed]:
            if not (
                isinstance(asset_id, dict)
                and isinstance(asset_id.get("name"), str)
                and isinstance(asset_id.get("value"), str)
            ):
                raise InvalidRequestError('an assetIds value must be {"name": "...", "value": "..."}')
            keys.append(("assetId", asset_id["name"], asset_id["value"]))
    return keys


@routes.get("/shells")
async def get_all_shells(request: web.Request) -> web.Response:
    """GetAllAssetAdministrationShells (ById/ByIdShort/ByAssetId), paged."""
    page_request = parse_page_request(request.query)
    keys = parse_asset_ids(request.query.getall("assetIds", []))
    id_short = request.query.get("idShort")
    if id_short is not None:
        keys.append(("idShort", id_short))
    page = catalog_of(request).shells().page(page_request, keys)
    return json_response(page.to_json(to_json_object))


@routes.get("/shells/{aasIdentifier}")
async def get_shell(request: web.Request) -> web.Response:
    """GetAssetAdministrationShellById."""
    shell_id = decode_identifier(request.match_info["aasIdentifier"], "aasIdentifier")
    return json_response(to_json_object(store_of(request).shell(shell_id)))


def _reference_sort_key(reference: model.Reference) -> str:
    return "\x1f".join(key.value for key in reference.key)


@routes.get("/shells/{aasIdentifier}/submodel-refs")
async def get_submodel_references(request: web.Request) -> web.Response:
    """GetAllSubmodelReferences, paged (ordered by the references' key values)."""
    shell_id = decode_identifier(request.match_info["aasIdentifier"], "aasIdentifier")
    page_request = parse_page_request(request.query)
    shell = store_of(request).shell(shell_id)
    page = page_sorted(shell.submodel, page_request, _reference_sort_key)
    return json_response(page.to_json(to_json_object))
