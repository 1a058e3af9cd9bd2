"""Concept Description Repository API, read subset (IDTA-01002 Part 2, 10.4 and 11.x).

Served: ``GET /concept-descriptions`` (filters ``idShort``, ``isCaseOf``, ``dataSpecificationRef``;
``limit``, ``cursor``) and ``GET /concept-descriptions/{cdIdentifier}``.

Left out (issue: full Part 2): POST/PUT/DELETE of concept descriptions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from basyx.aas import model

from aas_server.api.context import catalog_of, store_of
from aas_server.api.paging import FilterKey, parse_page_request
from aas_server.api.serialization import decode_identifier, json_response, to_json_object
from aas_server.errors import InvalidRequestError

routes = web.RouteTableDef()


def parse_reference(encoded: str, name: str) -> tuple[str, ...]:
    """The key values of a base64url-encoded Reference JSON (``{"type": ..., "keys": [...]}``)."""
    text = decode_identifier(encoded, name)
    try:
        parsed: Any = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(
            f"{name} is not a JSON Reference: line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    keys = parsed.get("keys") if isinstance(parsed, dict) else None
    if (
        not isinstance(keys, list)
        or not keys
        or not all(isinstance(key, dict) and isinstance(key.get("value"), str) for key in keys)
    ):
        raise InvalidRequestError(f'{name} must be a Reference with keys: {{"type": ..., "keys": [...]}}')
    return tuple(key["value"] for key in keys)


def _key_values(reference: model.Reference) -> tuple[str, ...]:
    return tuple(key.value for key in reference.key)


def _matches_all(
    tests: list[Callable[[model.ConceptDescription], bool]],
) -> Callable[[model.ConceptDescription], bool] | None:
    if not tests:
        return None
    return lambda concept_description: all(test(concept_description) for test in tests)


@routes.get("/concept-descriptions")
async def get_all_concept_descriptions(request: web.Request) -> web.Response:
    """GetAllConceptDescriptions (ByIdShort/ByIsCaseOf/ByDataSpecificationReference), paged."""
    page_request = parse_page_request(request.query)
    keys: list[FilterKey] = []
    id_short = request.query.get("idShort")
    if id_short is not None:
        keys.append(("idShort", id_short))
    tests: list[Callable[[model.ConceptDescription], bool]] = []
    is_case_of = request.query.get("isCaseOf")
    if is_case_of is not None:
        wanted_case = parse_reference(is_case_of, "isCaseOf")
        tests.append(lambda cd: any(_key_values(reference) == wanted_case for reference in cd.is_case_of))
    data_specification = request.query.get("dataSpecificationRef")
    if data_specification is not None:
        wanted_specification = parse_reference(data_specification, "dataSpecificationRef")
        tests.append(
            lambda cd: any(
                _key_values(embedded.data_specification) == wanted_specification
                for embedded in cd.embedded_data_specifications
            )
        )
    page = catalog_of(request).concept_descriptions().page(page_request, keys, _matches_all(tests))
    return json_response(page.to_json(to_json_object))


@routes.get("/concept-descriptions/{cdIdentifier}")
async def get_concept_description(request: web.Request) -> web.Response:
    """GetConceptDescriptionById."""
    concept_description_id = decode_identifier(request.match_info["cdIdentifier"], "cdIdentifier")
    return json_response(to_json_object(store_of(request).concept_description(concept_description_id)))
