"""Submodel Repository API and the submodel level of the Submodel API (IDTA-01002 Part 2, 10.3, 11.x).

``repository`` serves ``/submodels`` (GET with filters ``idShort``, ``semanticId``, paging, ``level``,
``extent``, and the ``$metadata``, ``$value``, ``$reference``, ``$path`` listings; POST).
``interface`` serves one submodel, relative to a base that ``app.py`` mounts twice: at
``/submodels/{submodelIdentifier}`` and at ``/shells/{aasIdentifier}/submodels/{submodelIdentifier}``
(there only for submodels the shell references, else ``404``): GET/PUT/PATCH/DELETE of the
submodel, ``$metadata`` (GET/PATCH), ``$value`` (GET/PATCH), ``$reference``, ``$path``, and the
``submodel-elements`` listing (paged, with its ``$metadata``/``$value``/``$reference``/``$path``
forms) and POST of a top-level element. Element routes are in ``submodel_elements.py``.

Model changes go through ``TwinStore`` (``create``, ``replace``, ``delete``, ``create_element``,
``write_value``, ``replace_element``): bodies are deserialised into new basyx objects, PATCH merges
the body into the current JSON form and deserialises the result; nothing is changed in place.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.attachments import check_file_values
from aas_server.api.context import catalog_of, is_release_3_1, store_of
from aas_server.api.deserialization import decode_element, decode_model
from aas_server.api.paging import FilterKey, Page, page_positions, parse_page_request
from aas_server.api.resources import (
    cached_body,
    check_body_id,
    collection_location,
    created,
    delete_identifiable,
    no_content,
    note_change,
    put_identifiable,
    references_submodel,
    replace_identifiable,
    shell_id_of,
    submodel_id_of,
)
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import (
    METADATA_KEYS,
    Level,
    Modifiers,
    accept_json,
    bytes_response,
    decode_identifier,
    dumps,
    element_value,
    metadata,
    parse_modifiers,
    plain_json,
    read_json_body,
    read_json_object,
    submodel_value,
    to_json_object,
)
from aas_server.api.value_only import ValuePlan, plan_value_update
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.model import paths
from aas_server.store.twin_store import LARGE_ELEMENT_COUNT, TwinStore, collector_paused, is_large

repository = RouteTable()
interface = RouteTable()


# --- shared helpers ----------------------------------------------------------------------------


def element_paths(element: model.Submodel | model.SubmodelElement, prefix: str, level: Level) -> list[str]:
    """idShort paths below ``element`` (all with ``level=deep``, its direct children with ``core``)."""
    if level is Level.DEEP:
        return [path for path, _ in paths.walk(element, prefix)]
    return [path for path, child in paths.walk(element, prefix) if child.parent is element]


def submodel_body(request: web.Request, submodel_id: str, modifiers: Modifiers) -> bytes:
    view = auth.submodel_view(request, submodel_id)
    if view is not None:
        return dumps(to_json_object(view, modifiers), modifiers)
    store = store_of(request)
    return cached_body(
        request,
        submodel_id,
        ("submodel", modifiers.key),
        lambda: dumps(to_json_object(store.submodel(submodel_id), modifiers), modifiers),
    )


def element_body(request: web.Request, submodel_id: str, path: str, modifiers: Modifiers) -> bytes:
    view = auth.element_view(request, submodel_id, path)
    if view is not None:
        return dumps(to_json_object(view, modifiers), modifiers)
    store = store_of(request)
    return cached_body(
        request,
        submodel_id,
        ("element", path, modifiers.key),
        lambda: dumps(to_json_object(store.element(submodel_id, path), modifiers), modifiers),
    )


def created_element_body(request: web.Request, submodel_id: str, path: str, element: model.SubmodelElement) -> bytes:
    """The answer to a create: the element at ``path``, or, when a later change of its batch already removed or
    replaced it there, the element this request created and stored (W7 in ``docs/security.md``)."""
    try:
        if store_of(request).element(submodel_id, path) is element:
            return element_body(request, submodel_id, path, Modifiers())
    except NotFoundError:
        pass
    return dumps(to_json_object(element, Modifiers()), Modifiers())


def element_value_body(request: web.Request, submodel_id: str, path: str, modifiers: Modifiers) -> bytes:
    """The cached bare ValueOnly bytes of an element; ``400`` for Operation and Capability (they have none)."""
    store = store_of(request)
    view = auth.element_view(request, submodel_id, path)
    if view is not None:
        if isinstance(view, model.Operation | model.Capability):
            raise InvalidRequestError(f"a {type(view).__name__} has no ValueOnly form")
        return dumps(element_value(view, modifiers), modifiers)

    def build() -> bytes:
        element = store.element(submodel_id, path)
        if isinstance(element, model.Operation | model.Capability):
            raise InvalidRequestError(f"a {type(element).__name__} has no ValueOnly form")
        return dumps(element_value(element, modifiers), modifiers)

    return cached_body(request, submodel_id, ("value", path, modifiers.key), build)


def wrapped_value(id_short: str, value: bytes) -> bytes:
    """``{"<idShort>": value}`` around the bare ValueOnly bytes ``value`` (an idShort needs no JSON escaping)."""
    return b'{"' + id_short.encode() + b'":' + value + b"}"


def element_id_short(path: str) -> str | None:
    """The idShort of the element at the canonical ``path``; ``None`` for an item of a SubmodelElementList."""
    if path.endswith("]"):
        return None
    return path.rpartition(".")[2]


async def apply_value_plan(store: TwinStore, submodel_id: str, plan: ValuePlan) -> None:
    """Apply a ValueOnly write plan: element replacements, then Property writes (device path)."""
    for replacement in plan.replacements:
        await store.replace_element(submodel_id, replacement.id_short_path, replacement.element)
    for write in plan.property_writes:
        await store.write_value(submodel_id, write.id_short_path, write.value, origin="rest")


def check_metadata_body(body: dict[str, Any], current: dict[str, Any]) -> None:
    """A ``$metadata`` PATCH may carry metadata attributes only, and not change ``modelType`` or ``id``."""
    unknown = sorted(set(body) - METADATA_KEYS)
    if unknown:
        raise InvalidRequestError(f"not metadata attributes: {unknown} (PATCH the element or $value instead)")
    for fixed in ("modelType", "id"):
        if fixed in body and body[fixed] != current.get(fixed):
            raise InvalidRequestError(f"{fixed} cannot be changed ({current.get(fixed)!r} in the path)")


def merged(current: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """PATCH: the current JSON form with the body's attributes replacing the current ones."""
    if "modelType" in body and body["modelType"] != current.get("modelType"):
        raise InvalidRequestError(f"modelType cannot change from {current.get('modelType')!r} to {body['modelType']!r}")
    result = dict(current)
    result.update(body)
    return result


def decoded_submodel(document: Any) -> tuple[model.Submodel, bytes]:
    """A submodel from its JSON ``document``, and its JSON bytes as created: both CPU-bound, for a worker thread."""
    submodel = decode_model(document, model.Submodel, "Submodel")
    return submodel, dumps(to_json_object(submodel, Modifiers()), Modifiers())


def is_large_document(document: Any) -> bool:
    """Whether a JSON submodel holds more than ``LARGE_ELEMENT_COUNT`` elements (counting stops there)."""
    seen = 0
    stack = [document]
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        for key in ("submodelElements", "value", "statements", "annotations"):
            children = item.get(key)
            if isinstance(children, list):
                seen += len(children)
                if seen > LARGE_ELEMENT_COUNT:
                    return True
                stack.extend(children)
    return False


def created_submodel_body(request: web.Request, submodel_id: str, encoded: bytes) -> bytes:
    """The answer to creating ``submodel_id``: ``encoded`` (kept in the response cache for the next read),
    or the caller's pruned view of it."""
    if auth.submodel_view(request, submodel_id) is not None:
        return submodel_body(request, submodel_id, Modifiers())
    return cached_body(request, submodel_id, ("submodel", Modifiers().key), lambda: encoded)


async def current_json(store: TwinStore, submodel_id: str) -> dict[str, Any]:
    """The JSON form of a stored submodel; a large one's made in a worker thread while no model change can alter it."""
    if not is_large(store.submodel(submodel_id)):
        return plain_json(store.submodel(submodel_id))
    async with store.change_lock(submodel_id):
        return await asyncio.to_thread(plain_json, store.submodel(submodel_id))


# --- /submodels -------------------------------------------------------------------------------


def _submodel_page(request: web.Request) -> Page[model.Submodel]:
    page_request = parse_page_request(request.query)
    keys: list[FilterKey] = []
    id_short = request.query.get("idShort")
    if id_short is not None:
        keys.append(("idShort", id_short))
    semantic_id = request.query.get("semanticId")
    if semantic_id is not None:
        keys.append(("semanticId", decode_identifier(semantic_id, "semanticId")))
    return catalog_of(request).submodels().page(page_request, keys, auth.submodel_filter(request))


def _paged(request: web.Request, page: Page[Any], item_bytes: Callable[[Any], bytes]) -> web.Response:
    return bytes_response(page.to_bytes(item_bytes))


@repository.get("/submodels")
async def get_all_submodels(request: web.Request) -> web.Response:
    """GetAllSubmodels (BySemanticId/ByIdShort), paged; each item's bytes come from the cache."""
    accept_json(request)
    modifiers = parse_modifiers(request.query)
    page = _submodel_page(request)
    return _paged(request, page, lambda submodel: submodel_body(request, submodel.id, modifiers))


@repository.get("/submodels/$metadata")
async def get_all_submodels_metadata(request: web.Request) -> web.Response:
    """GetAllSubmodels-Metadata, paged."""
    accept_json(request)
    page = _submodel_page(request)
    return _paged(
        request,
        page,
        lambda submodel: cached_body(request, submodel.id, ("metadata",), lambda: dumps(metadata(submodel))),
    )


@repository.get("/submodels/$value")
async def get_all_submodels_value(request: web.Request) -> web.Response:
    """GetAllSubmodels-ValueOnly, paged: ``result`` is a list of SubmodelValue objects, one per submodel."""
    accept_json(request)
    modifiers = parse_modifiers(request.query)
    page = _submodel_page(request)
    return _paged(request, page, lambda submodel: submodel_value_body(request, submodel.id, modifiers))


def submodel_value_body(request: web.Request, submodel_id: str, modifiers: Modifiers) -> bytes:
    """The SubmodelValue bytes (cached unless the caller sees a pruned submodel)."""
    store = store_of(request)
    view = auth.submodel_view(request, submodel_id)
    if view is not None:
        return dumps(submodel_value(view, modifiers), modifiers)
    return cached_body(
        request,
        submodel_id,
        ("submodel-value", modifiers.key),
        lambda: dumps(submodel_value(store.submodel(submodel_id), modifiers), modifiers),
    )


@repository.get("/submodels/$reference")
async def get_all_submodels_reference(request: web.Request) -> web.Response:
    """GetAllSubmodels-Reference, paged."""
    accept_json(request)
    page = _submodel_page(request)
    return _paged(
        request,
        page,
        lambda submodel: cached_body(
            request, submodel.id, ("reference",), lambda: dumps(model.ModelReference.from_referable(submodel))
        ),
    )


@repository.get("/submodels/$path")
async def get_all_submodels_path(request: web.Request) -> web.Response:
    """GetAllSubmodels-Path, paged over submodels: one PathItem per submodel, its idShort.

    (A submodel's element paths are ``/submodels/{id}/$path``; the IDTA engines expect exactly one
    entry per submodel here.)
    """
    accept_json(request)
    parse_modifiers(request.query)
    page = _submodel_page(request)
    return _paged(request, page, lambda submodel: dumps(submodel.id_short or ""))


@repository.post("/submodels")
async def post_submodel(request: web.Request) -> web.Response:
    """PostSubmodel: ``201`` with the submodel and its ``Location``; ``409`` if the id exists."""
    accept_json(request)
    document = await read_json_body(request)
    # a large new submodel: no collector pass from its decoding until it is stored and frozen (each would walk
    # every object decoded so far, holding the interpreter)
    with collector_paused(is_large_document(document)) as keep:
        submodel, encoded = await asyncio.to_thread(decoded_submodel, document)
        await check_file_values(request, submodel.id, "", submodel)
        await store_of(request).create(submodel)
        keep()
    note_change(request, submodel.id, submodel)
    return created(
        request, created_submodel_body(request, submodel.id, encoded), collection_location(request, submodel.id)
    )


# --- one submodel -----------------------------------------------------------------------------


@interface.get("")
async def get_submodel(request: web.Request) -> web.Response:
    """GetSubmodelById (``level``, ``extent``)."""
    accept_json(request)
    return bytes_response(submodel_body(request, submodel_id_of(request), parse_modifiers(request.query)))


@interface.put("")
async def put_submodel(request: web.Request) -> web.Response:
    """PutSubmodelById: replace (``204``) or, in the repository, create (``201``); the body's id must match."""
    accept_json(request)
    submodel_id = submodel_id_of(request)
    submodel, encoded = await asyncio.to_thread(decoded_submodel, await read_json_body(request))
    check_body_id(submodel, submodel_id)
    await check_file_values(request, submodel_id, "", submodel)
    if "aasIdentifier" not in request.match_info:
        return await put_identifiable(
            request, submodel, store_of(request).submodel, lambda: created_submodel_body(request, submodel_id, encoded)
        )
    await replace_identifiable(request, submodel)
    return no_content()


@interface.patch("")
async def patch_submodel(request: web.Request) -> web.Response:
    """PatchSubmodelById: the body's attributes replace the current ones (``submodelElements`` as a whole)."""
    submodel_id = submodel_id_of(request)
    submodel = await _patched(request, submodel_id, "Submodel")
    check_body_id(submodel, submodel_id)
    await check_file_values(request, submodel_id, "", submodel)
    auth.check_kept_content(request, submodel_id, "", submodel)
    await replace_identifiable(request, submodel)
    return no_content()


async def _patched(
    request: web.Request,
    submodel_id: str,
    what: str,
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> model.Submodel:
    """The stored submodel with the PATCH body's members (a JSON object, ``what``) put over its JSON form.

    ``check(body, current)`` may refuse the body first.
    """
    body = await read_json_object(request, what)
    current = await current_json(store_of(request), submodel_id)
    if check is not None:
        check(body, current)
    return await asyncio.to_thread(decode_model, merged(current, body), model.Submodel, "Submodel")


@interface.delete("")
async def delete_submodel(request: web.Request) -> web.Response:
    """DeleteSubmodelById; under a shell also removes the shell's reference to it."""
    store = store_of(request)
    submodel_id = submodel_id_of(request)
    await delete_identifiable(request, submodel_id, store.submodel)
    if "aasIdentifier" in request.match_info:
        shell = store.shell(shell_id_of(request))
        if references_submodel(shell, submodel_id):
            await replace_identifiable(request, copy_shell_without(shell, submodel_id))
    return no_content()


def copy_shell_without(shell: model.AssetAdministrationShell, submodel_id: str) -> model.AssetAdministrationShell:
    """A copy of ``shell`` without its references to ``submodel_id``."""
    replacement = copy.deepcopy(shell)
    for reference in [reference for reference in replacement.submodel if reference.key[0].value == submodel_id]:
        replacement.submodel.discard(reference)
    return replacement


@interface.get("/$metadata")
async def get_submodel_metadata(request: web.Request) -> web.Response:
    """GetSubmodelById-Metadata."""
    accept_json(request)
    store = store_of(request)
    submodel_id = submodel_id_of(request)
    return bytes_response(
        cached_body(request, submodel_id, ("metadata",), lambda: dumps(metadata(store.submodel(submodel_id))))
    )


@interface.patch("/$metadata")
async def patch_submodel_metadata(request: web.Request) -> web.Response:
    """PatchSubmodelById-Metadata: metadata attributes only; elements unchanged."""
    submodel_id = submodel_id_of(request)
    submodel = await _patched(request, submodel_id, "SubmodelMetadata", check_metadata_body)
    auth.check_kept_content(request, submodel_id, "", submodel)
    await replace_identifiable(request, submodel)
    return no_content()


@interface.get("/$value")
async def get_submodel_value(request: web.Request) -> web.Response:
    """GetSubmodelById-ValueOnly."""
    accept_json(request)
    return bytes_response(submodel_value_body(request, submodel_id_of(request), parse_modifiers(request.query)))


@interface.patch("/$value")
async def patch_submodel_value(request: web.Request) -> web.Response:
    """PatchSubmodelById-ValueOnly: ``{idShort: value}`` for the elements to change (see ``value_only.py``)."""
    store = store_of(request)
    submodel_id = submodel_id_of(request)
    body = await read_json_body(request)
    plan = plan_value_update(store.submodel(submodel_id), body)
    for replacement in plan.replacements:
        await check_file_values(request, submodel_id, replacement.id_short_path, replacement.element)
    await apply_value_plan(store, submodel_id, plan)
    return no_content()


@interface.get("/$reference")
async def get_submodel_reference(request: web.Request) -> web.Response:
    """GetSubmodelById-Reference: a ModelReference with one Submodel key."""
    accept_json(request)
    store = store_of(request)
    submodel_id = submodel_id_of(request)
    return bytes_response(
        cached_body(
            request,
            submodel_id,
            ("reference",),
            lambda: dumps(model.ModelReference.from_referable(store.submodel(submodel_id))),
        )
    )


@interface.get("/$path")
async def get_submodel_path(request: web.Request) -> web.Response:
    """GetSubmodelById-Path: the idShort paths of the submodel's elements (``level=core``: the top level)."""
    accept_json(request)
    store = store_of(request)
    submodel_id = submodel_id_of(request)
    level = parse_modifiers(request.query).level
    view = auth.submodel_view(request, submodel_id)
    if view is not None:
        return bytes_response(dumps(element_paths(view, "", level)))
    return bytes_response(
        cached_body(
            request,
            submodel_id,
            ("paths", level.value),
            lambda: dumps(element_paths(store.submodel(submodel_id), "", level)),
        )
    )


# --- submodel-elements listings -------------------------------------------------------------------


def _element_page(request: web.Request) -> tuple[str, Page[model.SubmodelElement]]:
    submodel_id = submodel_id_of(request)
    submodel = store_of(request).submodel(submodel_id)
    page_request = parse_page_request(request.query)
    elements = auth.visible_elements(request, submodel_id, submodel.submodel_element)
    return submodel_id, page_positions(elements, page_request, lambda element: element.id_short)


@interface.get("/submodel-elements")
async def get_all_submodel_elements(request: web.Request) -> web.Response:
    """GetAllSubmodelElements, paged in model order."""
    accept_json(request)
    modifiers = parse_modifiers(request.query)
    submodel_id, page = _element_page(request)
    return _paged(request, page, lambda element: element_body(request, submodel_id, str(element.id_short), modifiers))


@interface.get("/submodel-elements/$metadata")
async def get_all_submodel_elements_metadata(request: web.Request) -> web.Response:
    """GetAllSubmodelElements-Metadata, paged."""
    accept_json(request)
    _, page = _element_page(request)
    return _paged(request, page, lambda element: dumps(metadata(element)))


@interface.get("/submodel-elements/$value")
async def get_all_submodel_elements_value(request: web.Request) -> web.Response:
    """GetAllSubmodelElements-ValueOnly, paged over the top-level elements in model order.

    Release 3.0 (the IDTA engines) reads ``result`` as a list with one ``{idShort: value}`` per
    element; release 3.1.2 (``GetSubmodelElementsValueResult``) as one object ``{idShort: value, ...}``
    over the page's elements. Each base path answers its own release's form. Operations and
    Capabilities (no ValueOnly form) are left out of the page.
    """
    accept_json(request)
    modifiers = parse_modifiers(request.query)
    submodel_id, page = _element_page(request)
    shown = Page(
        [element for element in page.items if not isinstance(element, model.Operation | model.Capability)],
        page.next_cursor,
    )
    if not is_release_3_1(request):
        return _paged(
            request,
            shown,
            lambda element: wrapped_value(
                str(element.id_short), element_value_body(request, submodel_id, str(element.id_short), modifiers)
            ),
        )
    joined = b",".join(
        b'"'
        + str(element.id_short).encode()
        + b'":'
        + element_value_body(request, submodel_id, str(element.id_short), modifiers)
        for element in shown.items
    )
    return bytes_response(shown.result_bytes(b"{" + joined + b"}"))


@interface.get("/submodel-elements/$reference")
async def get_all_submodel_elements_reference(request: web.Request) -> web.Response:
    """GetAllSubmodelElements-Reference, paged."""
    accept_json(request)
    _, page = _element_page(request)
    return _paged(request, page, lambda element: dumps(model.ModelReference.from_referable(element)))


@interface.get("/submodel-elements/$path")
async def get_all_submodel_elements_path(request: web.Request) -> web.Response:
    """GetAllSubmodelElements-Path, paged over the paths: each top-level element, then (``deep``) its subtree.

    ``limit`` counts the paths returned, not the top-level elements they belong to.
    """
    accept_json(request)
    level = parse_modifiers(request.query).level
    submodel_id = submodel_id_of(request)
    submodel = store_of(request).submodel(submodel_id)
    page_request = parse_page_request(request.query)
    result: list[str] = []
    for element in auth.visible_elements(request, submodel_id, submodel.submodel_element):
        result.append(str(element.id_short))
        if level is Level.DEEP:
            shown = auth.element_view(request, submodel_id, str(element.id_short)) or element
            result.extend(element_paths(shown, str(element.id_short), level))
    return bytes_response(page_positions(result, page_request, str).to_bytes(dumps))


@interface.post("/submodel-elements")
async def post_submodel_element(request: web.Request) -> web.Response:
    """PostSubmodelElement: a new top-level element; ``409`` if its idShort exists."""
    accept_json(request)
    store = store_of(request)
    submodel_id = submodel_id_of(request)
    element = decode_element(await read_json_body(request))
    await check_file_values(request, submodel_id, str(element.id_short), element)
    path = await store.create_element(submodel_id, None, element)
    location = f"{request.path.rstrip('/')}/{path}"
    return created(request, created_element_body(request, submodel_id, path, element), location)
