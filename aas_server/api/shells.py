"""Asset Administration Shell Repository API and AAS API (IDTA-01002 Part 2, 10.2, 11.x).

Served: ``GET /shells`` (filters ``idShort``, ``assetIds``; paging) and ``POST /shells``;
``GET /shells/$reference``; ``GET/PUT/DELETE /shells/{aasIdentifier}`` and its ``$reference``;
``GET/PUT .../asset-information``; ``GET/PUT/DELETE .../asset-information/thumbnail`` (content kept
in the ``AttachmentStore``); ``GET/POST .../submodel-refs`` and
``DELETE .../submodel-refs/{submodelIdentifier}``. The Submodel API nested under
``/shells/{aasIdentifier}/submodels/{submodelIdentifier}`` is ``submodels.interface`` and
``submodel_elements.routes`` mounted a second time (see ``app.py``).

Changes build a new shell (a deep copy with the change, or the deserialised body) and hand it to
``TwinStore.replace``; nothing is changed in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.attachments import (
    attachment_path,
    check_thumbnail,
    content_type_for,
    read_upload,
    stored_thumbnail,
)
from aas_server.api.context import MAX_BODY_KEY, attachments_of, catalog_of, store_of
from aas_server.api.deserialization import decode_asset_information, decode_reference
from aas_server.api.downloads import stored_bytes_response
from aas_server.api.paging import FilterKey, Page, page_positions, parse_page_request
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
    replace_identifiable,
    shell_id_of,
)
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import (
    accept_json,
    bytes_response,
    decode_identifier,
    dumps,
    encode_identifier,
    read_json_body,
    to_json_object,
)
from aas_server.errors import ConflictError, InvalidRequestError, NotFoundError
from aas_server.store.files import Attachment, owned_key, thumbnail_owner

routes = RouteTable()


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


def _shell_page(request: web.Request) -> Page[model.AssetAdministrationShell]:
    page_request = parse_page_request(request.query)
    keys = parse_asset_ids(request.query.getall("assetIds", []))
    id_short = request.query.get("idShort")
    if id_short is not None:
        keys.append(("idShort", id_short))
    return catalog_of(request).shells().page(page_request, keys, auth.shell_filter(request))


def shell_body(request: web.Request, shell_id: str) -> bytes:
    store = store_of(request)
    return cached_body(request, shell_id, ("shell",), lambda: dumps(to_json_object(store.shell(shell_id))))


def _copy(request: web.Request) -> model.AssetAdministrationShell:
    """A deep copy of the addressed shell, to change and then ``_replace``."""
    return copy.deepcopy(store_of(request).shell(shell_id_of(request)))


@routes.get("/shells")
async def get_all_shells(request: web.Request) -> web.Response:
    """GetAllAssetAdministrationShells (ByIdShort/ByAssetId), paged."""
    accept_json(request)
    page = _shell_page(request)
    return bytes_response(page.to_bytes(lambda shell: shell_body(request, shell.id)))


@routes.get("/shells/$reference")
async def get_all_shells_reference(request: web.Request) -> web.Response:
    """GetAllAssetAdministrationShells-Reference, paged."""
    accept_json(request)
    page = _shell_page(request)
    return bytes_response(
        page.to_bytes(
            lambda shell: cached_body(
                request, shell.id, ("reference",), lambda: dumps(model.ModelReference.from_referable(shell))
            )
        )
    )


@routes.post("/shells")
async def post_shell(request: web.Request) -> web.Response:
    """PostAssetAdministrationShell: ``201`` with the shell and ``Location``; ``409`` if the id exists."""
    accept_json(request)
    shell = await read_identifiable(request, model.AssetAdministrationShell)
    auth.check_references(request, shell.id, shell)
    await check_thumbnail(request, shell.id, shell.asset_information.default_thumbnail)
    await create_identifiable(request, shell)
    return created(request, shell_body(request, shell.id), collection_location(request, shell.id))


@routes.get("/shells/{aasIdentifier}")
async def get_shell(request: web.Request) -> web.Response:
    """GetAssetAdministrationShellById."""
    accept_json(request)
    return bytes_response(shell_body(request, shell_id_of(request)))


@routes.put("/shells/{aasIdentifier}")
async def put_shell(request: web.Request) -> web.Response:
    """PutAssetAdministrationShellById: replace (``204``) or create (``201``); the body's id must match."""
    accept_json(request)
    shell_id = shell_id_of(request)
    shell = await read_identifiable(request, model.AssetAdministrationShell)
    check_body_id(shell, shell_id)
    auth.check_references(request, shell_id, shell)
    await check_thumbnail(request, shell_id, shell.asset_information.default_thumbnail)
    return await put_identifiable(request, shell, store_of(request).shell, lambda: shell_body(request, shell_id))


@routes.delete("/shells/{aasIdentifier}")
async def delete_shell(request: web.Request) -> web.Response:
    """DeleteAssetAdministrationShellById (its submodels stay in the repository)."""
    shell_id = shell_id_of(request)

    def find_and_check(identifier: str) -> None:
        store_of(request).shell(identifier)
        auth.check_references(request, identifier, None)

    await delete_identifiable(request, shell_id, find_and_check)
    return no_content()


@routes.get("/shells/{aasIdentifier}/$reference")
async def get_shell_reference(request: web.Request) -> web.Response:
    """GetAssetAdministrationShellById-Reference."""
    return _shell_part(request, "reference", model.ModelReference.from_referable)


def _shell_part(
    request: web.Request, form: str, part: Callable[[model.AssetAdministrationShell], object]
) -> web.Response:
    """The JSON of ``part`` of the addressed shell, cached as its ``form``."""
    accept_json(request)
    store = store_of(request)
    shell_id = shell_id_of(request)
    return bytes_response(cached_body(request, shell_id, (form,), lambda: dumps(part(store.shell(shell_id)))))


# --- asset information ------------------------------------------------------------------------------


@routes.get("/shells/{aasIdentifier}/asset-information")
async def get_asset_information(request: web.Request) -> web.Response:
    """GetAssetInformation."""
    return _shell_part(request, "asset-information", lambda shell: shell.asset_information)


@routes.put("/shells/{aasIdentifier}/asset-information")
async def put_asset_information(request: web.Request) -> web.Response:
    """PutAssetInformation: ``204``."""
    information = decode_asset_information(await read_json_body(request))
    shell = _copy(request)
    await check_thumbnail(request, shell.id, information.default_thumbnail)
    shell.asset_information = information
    await replace_identifiable(request, shell)
    return no_content()


@routes.get("/shells/{aasIdentifier}/asset-information/thumbnail")
async def get_thumbnail(request: web.Request) -> web.Response:
    """GetThumbnail: the stored thumbnail bytes with their content type."""
    shell = store_of(request).shell(shell_id_of(request))
    thumbnail = shell.asset_information.default_thumbnail
    attachment = await stored_thumbnail(request, shell.id, thumbnail.path) if thumbnail is not None else None
    if thumbnail is None or attachment is None:
        raise NotFoundError(f"shell {shell.id!r} has no stored thumbnail")
    return stored_bytes_response(
        attachment.content,
        thumbnail.content_type or attachment.content_type,
        "inline",
        thumbnail.path.rsplit("/", 1)[-1],
    )


@routes.put("/shells/{aasIdentifier}/asset-information/thumbnail")
async def put_thumbnail(request: web.Request) -> web.Response:
    """PutThumbnail (multipart ``file``, ``fileName``): store it and set ``defaultThumbnail``. ``204``."""
    shell = _copy(request)
    upload = await read_upload(request, request.app[MAX_BODY_KEY])
    content_type = content_type_for(upload.file_name, upload.content_type)
    path = attachment_path(shell.id, "thumbnail", upload.file_name or "thumbnail")
    await attachments_of(request).put(
        owned_key(thumbnail_owner(shell.id), path), Attachment(upload.content, content_type)
    )
    shell.asset_information.default_thumbnail = model.Resource(path, content_type)
    await replace_identifiable(request, shell)
    return no_content()


@routes.delete("/shells/{aasIdentifier}/asset-information/thumbnail")
async def delete_thumbnail(request: web.Request) -> web.Response:
    """DeleteThumbnail: ``200``."""
    shell = _copy(request)
    thumbnail = shell.asset_information.default_thumbnail
    if thumbnail is None:
        raise NotFoundError(f"shell {shell.id!r} has no thumbnail")
    shell.asset_information.default_thumbnail = None
    await replace_identifiable(request, shell)
    await attachments_of(request).delete(owned_key(thumbnail_owner(shell.id), thumbnail.path))
    return web.Response(status=200)


# --- submodel references -----------------------------------------------------------------------------


def _reference_sort_key(reference: model.Reference) -> str:
    return "\x1f".join(key.value for key in reference.key)


@routes.get("/shells/{aasIdentifier}/submodel-refs")
async def get_submodel_references(request: web.Request) -> web.Response:
    """GetAllSubmodelReferences, paged in the shell's order of its references."""
    accept_json(request)
    shell_id = shell_id_of(request)
    page_request = parse_page_request(request.query)
    shell = store_of(request).shell(shell_id)
    page = page_positions(list(shell.submodel), page_request, _reference_sort_key)
    return bytes_response(page.to_bytes(dumps))


@routes.post("/shells/{aasIdentifier}/submodel-refs")
async def post_submodel_reference(request: web.Request) -> web.Response:
    """PostSubmodelReference: ``201`` with the reference; ``409`` if the shell has it already."""
    accept_json(request)
    reference = decode_reference(await read_json_body(request))
    if not isinstance(reference, model.ModelReference) or not reference.key:
        raise InvalidRequestError("a submodel reference must be a ModelReference with a Submodel key")
    if reference.key[0].type is not model.KeyTypes.SUBMODEL:
        raise InvalidRequestError(
            f"the first key of a submodel reference must be Submodel, not {reference.key[0].type.name}"
        )
    shell = _copy(request)
    if any(_reference_sort_key(existing) == _reference_sort_key(reference) for existing in shell.submodel):
        raise ConflictError(f"shell {shell.id!r} references {reference.key[0].value!r} already")
    shell.submodel.add(reference)
    auth.check_references(request, shell.id, shell)
    await replace_identifiable(request, shell)
    return created(request, dumps(reference), f"{request.path.rstrip('/')}/{encode_identifier(reference.key[0].value)}")


@routes.delete("/shells/{aasIdentifier}/submodel-refs/{submodelIdentifier}")
async def delete_submodel_reference(request: web.Request) -> web.Response:
    """DeleteSubmodelReference: ``204``; the submodel itself stays."""
    submodel_id = decode_identifier(request.match_info["submodelIdentifier"], "submodelIdentifier")
    shell = _copy(request)
    matching = [reference for reference in shell.submodel if reference.key and reference.key[0].value == submodel_id]
    if not matching:
        raise NotFoundError(f"shell {shell.id!r} has no reference to submodel {submodel_id!r}")
    for reference in matching:
        shell.submodel.discard(reference)
    auth.check_references(request, shell.id, shell)
    await replace_identifiable(request, shell)
    return no_content()
