"""Submodel API, element level (IDTA-01002 Part 2, 10.3 *Submodel API*, 11.x): ``submodel-elements/{idShortPath}``.

Served relative to both submodel bases (``/submodels/{id}`` and ``/shells/{aas}/submodels/{id}``):
GET/PUT/PATCH/POST/DELETE of an element, ``$metadata`` (GET/PATCH), ``$value`` (GET/PATCH for every
element kind, see ``value_only.py``), ``$reference``, ``$path``, ``attachment`` (GET/PUT/DELETE for
File and Blob; other kinds ``405``), ``invoke``, ``invoke-async`` (and their ``$value`` forms),
``operation-status`` and ``operation-results`` (see ``operations.py``).

GETs of a Property add its live quality as response headers (``docs/rest.md``):
``X-AAS-Quality``, ``X-AAS-Quality-Reason``, ``X-AAS-Source-Timestamp``, ``X-AAS-Server-Timestamp``.
"""

from __future__ import annotations

import asyncio
import posixpath
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.attachments import (
    attachment_path,
    check_file_values,
    content_type_for,
    list_item_moves,
    move_attachments,
    new_element_path,
    read_upload,
    stored_attachment,
)
from aas_server.api.context import MAX_BODY_KEY, OPERATIONS_KEY, RUNS_KEY, attachments_of, store_of
from aas_server.api.deserialization import decode_element
from aas_server.api.downloads import stored_bytes_response
from aas_server.api.errors import result_response, timestamp
from aas_server.api.operations import OperationsBusyError, Outcome, parse_duration, run_operation
from aas_server.api.resources import cached_body, created, element_path_of, no_content, submodel_id_of
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import (
    accept_json,
    bytes_response,
    dumps,
    element_value,
    json_response,
    metadata,
    parse_modifiers,
    plain_json,
    read_json_body,
    read_json_object,
    to_json_object,
)
from aas_server.api.submodels import (
    apply_value_plan,
    check_metadata_body,
    created_element_body,
    element_body,
    element_id_short,
    element_paths,
    element_value_body,
    merged,
    wrapped_value,
)
from aas_server.api.value_only import copy_element, is_wrapped, plan_element_value_update
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.model import paths, values
from aas_server.model.events import QualityReason
from aas_server.store.files import Attachment, element_owner, owned_key
from aas_server.store.twin_store import TwinStore

routes = RouteTable()

ELEMENT = "/submodel-elements/{idShortPath}"

QUALITY_HEADER = "X-AAS-Quality"
QUALITY_REASON_HEADER = "X-AAS-Quality-Reason"
SOURCE_TIMESTAMP_HEADER = "X-AAS-Source-Timestamp"
SERVER_TIMESTAMP_HEADER = "X-AAS-Server-Timestamp"


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_HEADER_CACHE: dict[tuple[str, str], tuple[tuple[object, ...], dict[str, str]]] = {}
_HEADER_CACHE_LIMIT = 50_000


def quality_headers(store: TwinStore, submodel_id: str, id_short_path: str) -> dict[str, str] | None:
    """The quality headers of a Property that has a value state; ``None`` for other elements.

    The formatted headers are kept per Property until its state changes (formatting two
    timestamps costs more than the rest of a cached GET).
    """
    state = store.state(submodel_id, id_short_path)
    if state is None:
        return None
    key = (submodel_id, id_short_path)
    fingerprint = (state.source_time, state.server_time, state.quality, state.reason)
    cached = _HEADER_CACHE.get(key)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    headers = {
        QUALITY_HEADER: state.quality.value,
        SOURCE_TIMESTAMP_HEADER: _iso_utc(state.source_time),
        SERVER_TIMESTAMP_HEADER: _iso_utc(state.server_time),
    }
    if state.reason is not QualityReason.NONE:
        headers[QUALITY_REASON_HEADER] = state.reason.value
    if len(_HEADER_CACHE) >= _HEADER_CACHE_LIMIT:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[key] = (fingerprint, headers)
    return headers


def _target(request: web.Request) -> tuple[TwinStore, str, str]:
    return store_of(request), submodel_id_of(request), element_path_of(request)


def _parent_path(path: str) -> tuple[str | None, paths.Segment]:
    segments = paths.parse_id_short_path(path)
    parent = paths.format_id_short_path(segments[:-1]) if len(segments) > 1 else None
    return parent, segments[-1]


def _elements_base(request: web.Request) -> str:
    """The URL path up to and including ``/submodel-elements``."""
    marker = "/submodel-elements/"
    return request.path[: request.path.rindex(marker) + len(marker) - 1]


INLINE_DECODE_BYTES = 512
"""Element bodies up to this size are decoded on the event loop (under 0.1 ms): handing them to a worker thread and
back costs more than decoding them. Larger ones (about 0.2 µs a byte) are decoded in a worker thread."""


async def _decoded_element(request: web.Request, data: Any) -> model.SubmodelElement:
    length = request.content_length
    if length is not None and length <= INLINE_DECODE_BYTES:
        return decode_element(data)
    return await asyncio.to_thread(decode_element, data)


# --- the element -------------------------------------------------------------------------------


@routes.get(ELEMENT)
async def get_submodel_element(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath (``level``, ``extent``), with quality headers for a Property."""
    accept_json(request)
    store, submodel_id, path = _target(request)
    body = element_body(request, submodel_id, path, parse_modifiers(request.query))
    return bytes_response(body, headers=quality_headers(store, submodel_id, path))


@routes.put(ELEMENT)
async def put_submodel_element(request: web.Request) -> web.Response:
    """PutSubmodelElementByPath: replace (``204``) or create it in an existing parent (``201``)."""
    accept_json(request)
    store, submodel_id, path = _target(request)
    element = await _decoded_element(request, await read_json_body(request))
    await check_file_values(request, submodel_id, path, element)
    try:
        store.element(submodel_id, path)
    except NotFoundError:
        parent, last = _parent_path(path)
        if isinstance(last, int):
            raise
        if element.id_short != last:
            raise InvalidRequestError(
                f"the idShort in the body ({element.id_short!r}) differs from the path's ({last!r})"
            ) from None
        new_path = await store.create_element(submodel_id, parent, element)
        return created(request, created_element_body(request, submodel_id, new_path, element), request.path)
    await store.replace_element(submodel_id, path, element)
    return no_content()


@routes.patch(ELEMENT)
async def patch_submodel_element(request: web.Request) -> web.Response:
    """PatchSubmodelElementByPath: the body's attributes replace the current ones."""
    store, submodel_id, path = _target(request)
    body = await read_json_object(request, "SubmodelElement")
    current = plain_json(store.element(submodel_id, path))
    element = await asyncio.to_thread(decode_element, merged(current, body))
    await check_file_values(request, submodel_id, path, element)
    auth.check_kept_content(request, submodel_id, path, element)
    await store.replace_element(submodel_id, path, element)
    return no_content()


@routes.post(ELEMENT)
async def post_submodel_element_by_path(request: web.Request) -> web.Response:
    """PostSubmodelElementByPath: a new child of the collection, list or entity at the path."""
    accept_json(request)
    store, submodel_id, path = _target(request)
    element = await _decoded_element(request, await read_json_body(request))
    await check_file_values(request, submodel_id, new_element_path(store, submodel_id, path, element), element)
    new_path = await store.create_element(submodel_id, path, element)
    location = f"{_elements_base(request)}/{new_path}"
    return created(request, created_element_body(request, submodel_id, new_path, element), location)


@routes.delete(ELEMENT)
async def delete_submodel_element(request: web.Request) -> web.Response:
    """DeleteSubmodelElementByPath."""
    store, submodel_id, path = _target(request)
    moves = list_item_moves(store, submodel_id, path)
    await store.delete_element(submodel_id, path)
    await move_attachments(request, moves)
    return no_content()


_VALUELESS = (model.Operation, model.Capability)
_CONTAINERS = (model.SubmodelElementCollection, model.SubmodelElementList, model.Entity)


def _require(element: model.SubmodelElement, kinds: tuple[type, ...], form: str) -> None:
    if not isinstance(element, kinds):
        raise InvalidRequestError(f"a {type(element).__name__} has no {form} form")


def _refuse(element: model.SubmodelElement, kinds: tuple[type, ...], form: str) -> None:
    if isinstance(element, kinds):
        raise InvalidRequestError(f"a {type(element).__name__} has no {form} form")


@routes.get(ELEMENT + "/$metadata")
async def get_submodel_element_metadata(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath-Metadata (not for Operation and Capability: ``400``, as the IDTA engines expect)."""
    accept_json(request)
    store, submodel_id, path = _target(request)
    _refuse(store.element(submodel_id, path), _VALUELESS, "$metadata")
    body = cached_body(
        request, submodel_id, ("element-metadata", path), lambda: dumps(metadata(store.element(submodel_id, path)))
    )
    return bytes_response(body)


@routes.patch(ELEMENT + "/$metadata")
async def patch_submodel_element_metadata(request: web.Request) -> web.Response:
    """PatchSubmodelElementByPath-Metadata: metadata attributes only; value and children unchanged."""
    store, submodel_id, path = _target(request)
    body = await read_json_object(request, "SubmodelElementMetadata")
    current = plain_json(store.element(submodel_id, path))
    check_metadata_body(body, current)
    element = await asyncio.to_thread(decode_element, merged(current, body))
    auth.check_kept_content(request, submodel_id, path, element)
    await store.replace_element(submodel_id, path, element)
    return no_content()


@routes.get(ELEMENT + "/$value")
async def get_submodel_element_value(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath-ValueOnly, with quality headers for a Property (Operation, Capability: ``400``).

    An element with an idShort answers ``{"<idShort>": value}`` (``{"Temperature": 21.5}``), as the
    IDTA engines require of every element kind (a JSON object, never a bare number or string); an
    item of a SubmodelElementList, which has no idShort, answers its bare value.
    """
    accept_json(request)
    store, submodel_id, path = _target(request)
    body = element_value_body(request, submodel_id, path, parse_modifiers(request.query))
    id_short = element_id_short(path)
    if id_short is not None:
        body = wrapped_value(id_short, body)
    return bytes_response(body, headers=quality_headers(store, submodel_id, path))


@routes.patch(ELEMENT + "/$value")
async def patch_submodel_element_value(request: web.Request) -> web.Response:
    """PatchSubmodelElementByPath-ValueOnly for every element kind: ``204`` once written.

    The body is the bare ValueOnly value or the idShort-wrapped form the GET answers
    (``{"<idShort>": value}``, see ``value_only.plan_element_value_update``). A Property takes its
    value (``42.5`` or ``{"Temperature": 42.5}``) through ``TwinStore.write_value``: for a
    device-bound Property the device must acknowledge first (``502``/``504`` otherwise), a read-only
    binding is ``403``. Other kinds are rebuilt with the new value and replaced (``value_only.py``).
    """
    store, submodel_id, path = _target(request)
    element = store.element(submodel_id, path)
    body = await read_json_body(request)
    if isinstance(element, model.Property):
        if is_wrapped(element, body):
            body = body[element.id_short]
        await store.write_value(submodel_id, path, body, origin="rest")
    else:
        plan = plan_element_value_update(element, body, path)
        for replacement in plan.replacements:
            await check_file_values(request, submodel_id, replacement.id_short_path, replacement.element)
        await apply_value_plan(store, submodel_id, plan)
    return no_content()


@routes.get(ELEMENT + "/$reference")
async def get_submodel_element_reference(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath-Reference: a ModelReference from the submodel down to the element."""
    accept_json(request)
    store, submodel_id, path = _target(request)
    body = cached_body(
        request,
        submodel_id,
        ("element-reference", path),
        lambda: dumps(model.ModelReference.from_referable(store.element(submodel_id, path))),
    )
    return bytes_response(body)


@routes.get(ELEMENT + "/$path")
async def get_submodel_element_path(request: web.Request) -> web.Response:
    """GetSubmodelElementByPath-Path: the element's idShort path and those below it (``core``: children only).

    Only collections, lists and entities have a ``$path`` form; other kinds are ``400``.
    """
    accept_json(request)
    store, submodel_id, path = _target(request)
    _require(store.element(submodel_id, path), _CONTAINERS, "$path")
    level = parse_modifiers(request.query).level
    view = auth.element_view(request, submodel_id, path)
    if view is not None:
        return bytes_response(dumps([path, *element_paths(view, path, level)]))
    body = cached_body(
        request,
        submodel_id,
        ("element-paths", path, level.value),
        lambda: dumps([path, *element_paths(store.element(submodel_id, path), path, level)]),
    )
    return bytes_response(body)


# --- attachment ----------------------------------------------------------------------------------


def _file_or_blob(request: web.Request, element: model.SubmodelElement) -> model.File | model.Blob:
    if not isinstance(element, model.File | model.Blob):
        raise web.HTTPMethodNotAllowed(
            request.method,
            [],
            text=f"attachments exist for File and Blob elements only; this is a {type(element).__name__}",
        )
    return element


def _download_name(name: str | None, fallback: str) -> str:
    base = posixpath.basename(name or "") or fallback
    return base.replace('"', "")


@routes.get(ELEMENT + "/attachment")
async def get_attachment(request: web.Request) -> web.Response:
    """GetFileByPath: the File's stored content (or the Blob's bytes) with its content type."""
    store, submodel_id, path = _target(request)
    element = _file_or_blob(request, store.element(submodel_id, path))
    if isinstance(element, model.Blob):
        if element.value is None:
            raise NotFoundError(f"Blob {path!r} has no content")
        content, content_type, name = element.value, element.content_type, str(element.id_short or "blob")
    else:
        attachment = await stored_attachment(request, submodel_id, path, element.value)
        if attachment is None:
            raise NotFoundError(f"no file content is stored for File {path!r} (value {element.value!r})")
        content = attachment.content
        content_type = element.content_type or attachment.content_type
        name = _download_name(element.value, str(element.id_short or "file"))
    return stored_bytes_response(content, content_type, "attachment", name)


@routes.put(ELEMENT + "/attachment")
async def put_attachment(request: web.Request) -> web.Response:
    """PutFileByPath (multipart ``file`` and ``fileName``): store the content and point the File at it."""
    store, submodel_id, path = _target(request)
    element = _file_or_blob(request, store.element(submodel_id, path))
    upload = await read_upload(request, request.app[MAX_BODY_KEY])
    replacement = copy_element(element)
    content_type = content_type_for(upload.file_name, upload.content_type, element.content_type)
    if isinstance(replacement, model.Blob):
        replacement.value = upload.content
        replacement.content_type = content_type
    else:
        package_path = attachment_path(submodel_id, path, upload.file_name or str(element.id_short))
        await attachments_of(request).put(
            owned_key(element_owner(submodel_id, path), package_path), Attachment(upload.content, content_type)
        )
        replacement.value = package_path
        replacement.content_type = content_type
    await store.replace_element(submodel_id, path, replacement)
    return no_content()


@routes.delete(ELEMENT + "/attachment")
async def delete_attachment(request: web.Request) -> web.Response:
    """DeleteFileByPath: remove the content; the File's (or Blob's) value becomes empty. ``200``."""
    store, submodel_id, path = _target(request)
    element = _file_or_blob(request, store.element(submodel_id, path))
    if element.value is None:
        raise NotFoundError(f"{path!r} has no attachment")
    replacement = copy_element(element)
    replacement.value = None
    await store.replace_element(submodel_id, path, replacement)
    if isinstance(element, model.File) and element.value:
        await attachments_of(request).delete(owned_key(element_owner(submodel_id, path), element.value))
    return web.Response(status=200)


# --- operations ------------------------------------------------------------------------------------


def _operation(request: web.Request) -> tuple[str, str, model.Operation]:
    store, submodel_id, path = _target(request)
    element = store.element(submodel_id, path)
    if not isinstance(element, model.Operation):
        raise web.HTTPMethodNotAllowed(
            request.method, [], text=f"only Operation elements can be invoked; this is a {type(element).__name__}"
        )
    return submodel_id, path, element


def _declared(operation: model.Operation) -> dict[str, model.SubmodelElement]:
    return {str(variable.id_short): variable for variable in (*operation.input_variable, *operation.in_output_variable)}


def _inputs(operation: model.Operation, body: dict[str, Any], value_only: bool) -> dict[str, Any]:
    declared = _declared(operation)
    inputs: dict[str, Any] = {}
    for key in ("inputArguments", "inoutputArguments"):
        given = body.get(key)
        if given is None:
            continue
        if value_only:
            if not isinstance(given, dict):
                raise InvalidRequestError(f"{key} must be a ValueOnly object {{idShort: value}}")
            pairs = list(given.items())
        else:
            if not isinstance(given, list):
                raise InvalidRequestError(f"{key} must be a list of OperationVariables")
            pairs = []
            for index, variable in enumerate(given):
                if not isinstance(variable, dict) or "value" not in variable:
                    raise InvalidRequestError(f'{key}[{index}] must be an OperationVariable {{"value": ...}}')
                element = decode_element(variable["value"])
                pairs.append((str(element.id_short), element_value(element)))
        for id_short, value in pairs:
            if id_short not in declared:
                raise InvalidRequestError(
                    f"{id_short!r} is not an input or in-output variable of {operation.id_short!r}"
                )
            inputs[id_short] = value
    return inputs


def _variables(variables: model.NamespaceSet[Any], outputs: dict[str, Any]) -> list[model.SubmodelElement]:
    result: list[model.SubmodelElement] = []
    for variable in variables:
        filled = copy_element(variable)
        if isinstance(filled, model.Property) and variable.id_short in outputs:
            filled.value = values.coerce(filled.value_type, outputs[str(variable.id_short)])
        result.append(filled)
    return result


def operation_result(operation: model.Operation, outcome: Outcome, value_only: bool) -> dict[str, Any]:
    """The ``OperationResult`` (or ``OperationResultValueOnly``) of an outcome."""
    result: dict[str, Any] = {
        "messages": outcome.messages,
        "executionState": outcome.execution_state,
        "success": outcome.success,
    }
    if outcome.execution_state != "Completed":
        return result
    outputs = dict(outcome.outputs)
    names = {
        "outputArguments": operation.output_variable,
        "inoutputArguments": operation.in_output_variable,
    }
    for key, variables in names.items():
        if not len(variables):
            continue
        if value_only:
            result[key] = {
                name: value for name, value in outputs.items() if name in {str(v.id_short) for v in variables}
            }
        else:
            result[key] = [{"value": to_json_object(element)} for element in _variables(variables, outputs)]
    return result


async def _invoke(request: web.Request, value_only: bool, asynchronous: bool) -> web.Response:
    accept_json(request)
    submodel_id, path, operation = _operation(request)
    body = await read_json_object(request, "OperationRequest")
    inputs = _inputs(operation, body, value_only)
    duration = body.get("clientTimeoutDuration")
    timeout = parse_duration(duration) if isinstance(duration, str) else None
    handler = request.app[OPERATIONS_KEY].handler(submodel_id, path)
    work = run_operation(handler, inputs, timeout, timestamp, f"operation {path!r}")
    if asynchronous:
        try:
            handle_id = request.app[RUNS_KEY].start(submodel_id, path, operation, work)
        except OperationsBusyError as error:
            return result_response(503, "ServiceUnavailable", str(error), headers={"Retry-After": "1"})
        base = request.path[: request.path.rindex("/invoke-async")]
        return web.Response(status=202, headers={"Location": f"{base}/operation-status/{handle_id}"})
    return json_response(operation_result(operation, await work, value_only))


@routes.post(ELEMENT + "/invoke")
async def invoke_operation(request: web.Request) -> web.Response:
    """InvokeOperationSync: ``200`` with the OperationResult (``Failed``/``NotExecutable`` without a handler)."""
    return await _invoke(request, value_only=False, asynchronous=False)


@routes.post(ELEMENT + "/invoke/$value")
async def invoke_operation_value_only(request: web.Request) -> web.Response:
    """InvokeOperationSync-ValueOnly."""
    return await _invoke(request, value_only=True, asynchronous=False)


@routes.post(ELEMENT + "/invoke-async")
async def invoke_operation_async(request: web.Request) -> web.Response:
    """InvokeOperationAsync: ``202`` with ``Location`` of the operation status."""
    return await _invoke(request, value_only=False, asynchronous=True)


@routes.post(ELEMENT + "/invoke-async/$value")
async def invoke_operation_async_value_only(request: web.Request) -> web.Response:
    """InvokeOperationAsync-ValueOnly."""
    return await _invoke(request, value_only=True, asynchronous=True)


def _run(request: web.Request) -> tuple[model.Operation, Any]:
    submodel_id, path, _ = _operation(request)
    run = request.app[RUNS_KEY].get(submodel_id, path, request.match_info["handleId"])
    return run.operation, run.task


@routes.get(ELEMENT + "/operation-status/{handleId}")
async def get_operation_status(request: web.Request) -> web.Response:
    """GetOperationAsyncStatus: ``200`` ``Running`` while it runs, ``302`` to the result once finished."""
    accept_json(request)
    _, task = _run(request)
    if task.done():
        base = request.path[: request.path.rindex("/operation-status/")]
        raise web.HTTPFound(f"{base}/operation-results/{request.match_info['handleId']}")
    return json_response({"messages": [], "executionState": "Running"})


async def _operation_results(request: web.Request, value_only: bool) -> web.Response:
    accept_json(request)
    operation, task = _run(request)
    if not task.done():
        return json_response({"messages": [], "executionState": "Running"})
    return json_response(operation_result(operation, task.result(), value_only))


@routes.get(ELEMENT + "/operation-results/{handleId}")
async def get_operation_results(request: web.Request) -> web.Response:
    """GetOperationAsyncResult."""
    return await _operation_results(request, value_only=False)


@routes.get(ELEMENT + "/operation-results/{handleId}/$value")
async def get_operation_results_value_only(request: web.Request) -> web.Response:
    """GetOperationAsyncResult-ValueOnly."""
    return await _operation_results(request, value_only=True)
