"""Submodel Repository API, spine subset (IDTA-01002 Part 2, 10.3 and 11.x).

Served: ``GET /submodels`` (filters ``idShort``, ``semanticId``; ``limit``, ``cursor``, ``level``,
``extent``); ``GET /submodels/{id}`` with ``$value`` and ``$metadata``;
``GET /submodels/{id}/submodel-elements`` (paged); ``GET``
``/submodels/{id}/submodel-elements/{idShortPath}`` with ``$value`` and ``$metadata``; ``PATCH``
``.../{idShortPath}/$value`` for Properties (through ``TwinStore.write_value``: type check, device
write and acknowledgement, journal).

Element GETs of a Property add its live quality as response headers (``docs/rest.md``):
``X-AAS-Quality``, ``X-AAS-Quality-Reason``, ``X-AAS-Source-Timestamp``, ``X-AAS-Server-Timestamp``.

Left out (issue: full Part 2): POST/PUT/PATCH/DELETE of submodels and elements, PATCH ``$value``
of non-Property elements, ``/submodels/$metadata|$value|$reference|$path`` listings, ``$reference``
and ``$path`` content, file ``attachment``, ``invoke`` and operation results.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from basyx.aas import model

from aas_server.api.context import catalog_of, store_of
from aas_server.api.paging import FilterKey, page_positions, parse_page_request
from aas_server.api.serialization import (
    Modifiers,
    decode_identifier,
    element_value,
    json_response,
    metadata,
    parse_modifiers,
    read_json_body,
    submodel_value,
    to_json_object,
)
from aas_server.model import paths
from aas_server.model.events import QualityReason
from aas_server.store.twin_store import TwinStore

routes = web.RouteTableDef()

QUALITY_HEADER = "X-AAS-Quality"
QUALITY_REASON_HEADER = "X-AAS-Quality-Reason"
SOURCE_TIMESTAMP_HEADER = "X-AAS-Source-Timestamp"
SERVER_TIMESTAMP_HEADER = "X-AAS-Server-Timestamp"


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _submodel_id(request: web.Request) -> str:
    return decode_identifier(request.match_info["submodelIdentifier"], "submodelIdentifier")


def _element_path(request: web.Request) -> str:
    """The canonical idShort path of the request (the key of the store's value states)."""
    return paths.format_id_short_path(paths.parse_id_short_path(request.match_info["idShortPath"]))


def quality_headers(store: TwinStore, submodel_id: str, id_short_path: str) -> dict[str, str]:
    """The quality headers of a Property that has a value state; empty for other elements."""
    state = store.state(submodel_id, id_short_path)
    if state is None:
        return {}
    headers = {
        QUALITY_HEADER: state.quality.value,
        SOURCE_TIMESTAMP_HEADER: _iso_utc(state.source_time),
        SERVER_TIMESTAMP_HEADER: _iso_utc(state.server_time),
    }
    if state.reason is not QualityReason.NONE:
        headers[QUALITY_REASON_HEADER] = state.reason.value
    return headers


def _semantic_id_key(encoded: str) -> FilterKey:
    return ("semanticId", decode_identifier(encoded, "semanticId"))


@routes.get("/submodels")
async def get_all_submodels(request: web.Request) -> web.Response:
    """GetAllSubmodels (BySemanticId/ByIdShort), paged."""
    page_request = parse_page_request(request.query)
    modifiers = parse_modifiers(request.query)
    keys: list[FilterKey] = []
    id_short = request.query.get("idShort")
    if id_short is not None:
        keys.append(("idShort", id_short))
    semantic_id = request.query.get("semanticId")
    if semantic_id is not None:
        keys.append(_semantic_id_key(semantic_id))
    page = catalog_of(request).submodels().page(page_request, keys)
    return json_response(page.to_json(lambda submodel: to_json_object(submodel, modifiers)), modifiers)


@routes.get("/submodels/{submodelIdentifier}")
async def get_submodel(request: web.Request) -> web.Response:
    """GetSubmodelById."""
    submodel = store_of(request).submodel(_submodel_id(request))
    modifiers = parse_modifiers(request.query)
    return json_response(to_json_object(submodel, modifiers), modifiers)


@routes.get("/submodels/{submodelIdentifier}/$value")
async def get_submodel_value(request: web.Request) -> web.Response:
    """GetSubmodelById-ValueOnly."""
    submodel = store_of(request).submodel(_submodel_id(request))
    modifiers = parse_modifiers(request.query)
    return json_response(submodel_value(submodel, modifiers), modifiers)


@routes.get("/submodels/{submodelIdentifier}/$metadata")
async def get_submodel_metadata(request: web.Request) -> web.Response:
    """GetSubmodelById-Metadata."""
    submodel = store_of(request).submodel(_submodel_id(request))
    return json_response(metadata(submodel))


@routes.get("/submodels/{submodelIdentifier}/submodel-elements")
async def get_all_submodel_elements(request: web.Request) -> web.Response:
    """GetAllSubmodelElements, paged in model order."""
    submodel = store_of(request).submodel(_submodel_id(request))
    page_request = parse_page_request(request.query)
    modifiers = parse_modifiers(request.query)
    page = page_positions(submodel.submodel_element, page_request, lambda element: element.id_short)
    return json_response(page.to_json(lambda element: to_json_object(element, modifiers)), modifiers)


def _element(request: web.Request) -> tuple[TwinStore, str, str, model.SubmodelElement]:
    store = store_of(request)
    submodel_id = _submodel_id(request)
    path = _element_path(request)
    return store, submodel_id, path, store.element(submodel_id, path)


@routes.get("/submodels/{submodelIdentifier}/submodel-elements/{idShortPath}")
async def get_submodel_element(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath, with quality headers for a Property."""
    store, submodel_id, path, element = _element(request)
    modifiers = parse_modifiers(request.query)
    headers = quality_headers(store, submodel_id, path)
    return json_response(to_json_object(element, modifiers), modifiers, headers=headers)


@routes.get("/submodels/{submodelIdentifier}/submodel-elements/{idShortPath}/$value")
async def get_submodel_element_value(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath-ValueOnly, with quality headers for a Property."""
    store, submodel_id, path, element = _element(request)
    modifiers = parse_modifiers(request.query)
    headers = quality_headers(store, submodel_id, path)
    return json_response(element_value(element, modifiers), modifiers, headers=headers)


@routes.get("/submodels/{submodelIdentifier}/submodel-elements/{idShortPath}/$metadata")
async def get_submodel_element_metadata(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath-Metadata."""
    _, _, _, element = _element(request)
    return json_response(metadata(element), Modifiers())


@routes.patch("/submodels/{submodelIdentifier}/submodel-elements/{idShortPath}/$value")
async def patch_submodel_element_value(request: web.Request) -> web.Response:
    """PatchSubmodelElementByPath-ValueOnly for a Property: ``204`` once the value is written.

    The body is the ValueOnly value (``42.5``); the wrapped form ``{"<idShort>": 42.5}`` that some
    clients send is accepted too. For a device-bound Property the device must acknowledge first
    (``502``/``504`` otherwise); a read-only binding or a non-Property element answers ``403``.
    """
    store = store_of(request)
    submodel_id = _submodel_id(request)
    path = _element_path(request)
    element = store.element(submodel_id, path)
    body = await read_json_body(request)
    if isinstance(body, dict) and len(body) == 1 and element.id_short in body:
        body = body[element.id_short]
    await store.write_value(submodel_id, path, body, origin="rest")
    return web.Response(status=204)
