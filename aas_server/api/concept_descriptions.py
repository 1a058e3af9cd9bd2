"""Concept Description Repository API (IDTA-01002 Part 2, 10.4 and 11.x).

Served: ``GET /concept-descriptions`` (filters ``idShort``, ``isCaseOf``, ``dataSpecificationRef``;
``limit``, ``cursor``), ``POST /concept-descriptions``, and ``GET/PUT/DELETE
/concept-descriptions/{cdIdentifier}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.context import catalog_of, store_of
from aas_server.api.paging import FilterKey, parse_page_request
from aas_server.api.resources import (
    cached_body,
    check_body_id,
    collection_location,
    create_identifiable,
    created,
    delete_identifiable,
    no_content,
    put_identifiable,
    read_identifiable,
)
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import (
    accept_json,
    bytes_response,
    decode_identifier,
    dumps,
    to_json_object,
)
from aas_server.errors import InvalidRequestError

routes = RouteTable()


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


def concept_description_body(request: web.Request, identifier: str) -> bytes:
    store = store_of(request)
    return cached_body(
        request,
        identifier,
        ("concept-description",),
        lambda: dumps(to_json_object(store.concept_description(identifier))),
    )


def _identifier(request: web.Request) -> str:
    return decode_identifier(request.match_info["cdIdentifier"], "cdIdentifier")


@routes.get("/concept-descriptions")
async def get_all_concept_descriptions(request: web.Request) -> web.Response:
    """GetAllConceptDescriptions (ByIdShort/ByIsCaseOf/ByDataSpecificationReference), paged."""
    accept_json(request)
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
    readable = auth.concept_description_filter(request)
    if readable is not None:
        tests.append(readable)
    page = catalog_of(request).concept_descriptions().page(page_request, keys, _matches_all(tests))
    return bytes_response(page.to_bytes(lambda cd: concept_description_body(request, cd.id)))


@routes.post("/concept-descriptions")
async def post_concept_description(request: web.Request) -> web.Response:
    """PostConceptDescription: ``201`` with ``Location``; ``409`` if the id exists."""
    accept_json(request)
    concept_description = await read_identifiable(request, model.ConceptDescription)
    await create_identifiable(request, concept_description)
    return created(
        request,
        concept_description_body(request, concept_description.id),
        collection_location(request, concept_description.id),
    )


@routes.get("/concept-descriptions/{cdIdentifier}")
async def get_concept_description(request: web.Request) -> web.Response:
    """GetConceptDescriptionById."""
    accept_json(request)
    return bytes_response(concept_description_body(request, _identifier(request)))


@routes.put("/concept-descriptions/{cdIdentifier}")
async def put_concept_description(request: web.Request) -> web.Response:
    """PutConceptDescriptionById: replace (``204``) or create (``201``); the body's id must match."""
    accept_json(request)
    identifier = _identifier(request)
    concept_description = await read_identifiable(request, model.ConceptDescription)
    check_body_id(concept_description, identifier)
    return await put_identifiable(
        request,
        concept_description,
        store_of(request).concept_description,
        lambda: concept_description_body(request, identifier),
    )


@routes.delete("/concept-descriptions/{cdIdentifier}")
async def delete_concept_description(request: web.Request) -> web.Response:
    """DeleteConceptDescriptionById."""
    await delete_identifiable(request, _identifier(request), store_of(request).concept_description)
    return no_content()
