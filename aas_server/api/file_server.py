"""AASX File Server API and ``/serialization`` (IDTA-01002 Part 2, *AASX File Server Interface*,
*Serialization Interface*).

``/packages``: ``GET`` (filter ``aasId``, paging), ``POST`` (multipart ``file``, ``fileName``,
``aasIds``; ``201`` with ``PackageDescription``), ``GET/PUT/DELETE /packages/{packageId}`` (the id
base64url-encoded in the path). See ``packages.py`` for what an upload does.

``GET /serialization?aasIds=..&submodelIds=..&includeConceptDescriptions=``: the selected objects
as a JSON environment (``application/json``, spliced from the cached bodies), an XML environment
(``application/xml``) or an AASX (``application/asset-administration-shell-package+xml``) by
``Accept``; XML and AASX are written by ``aas_server.exchange.write_package`` in a worker thread
from a JSON snapshot taken on the event loop (the live objects are never read off the loop).
Without ``aasIds`` and ``submodelIds`` the whole repository is serialised; unknown ids are ``404``.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.attachments import read_upload, safe_file_name
from aas_server.api.context import ATTACHMENTS_KEY, MAX_BODY_KEY, PACKAGES_KEY, store_of
from aas_server.api.packages import import_package, object_rights
from aas_server.api.paging import page_positions, parse_page_request
from aas_server.api.resources import cached_body, note_change
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import (
    JSON_CONTENT_TYPE,
    accept_json,
    bytes_response,
    decode_identifier,
    dumps,
    encode_identifier,
    negotiate,
    to_json_object,
)
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.exchange import write_package
from aas_server.exchange.json_codec import FaithfulJsonDecoder
from aas_server.store.files import (
    AttachmentStore,
    FileReference,
    StoredPackage,
    file_references,
    owned_key,
    package_files,
    rename_files,
)

routes = RouteTable()

AASX_CONTENT_TYPE = "application/asset-administration-shell-package"
AASX_XML_CONTENT_TYPE = "application/asset-administration-shell-package+xml"
XML_CONTENT_TYPE = "application/xml"
SERIALIZATION_TYPES = (JSON_CONTENT_TYPE, XML_CONTENT_TYPE, AASX_XML_CONTENT_TYPE, AASX_CONTENT_TYPE)


def _boolean(request: web.Request, name: str, default: bool) -> bool:
    text = request.query.get(name)
    if text is None:
        return default
    if text.lower() not in ("true", "false"):
        raise InvalidRequestError(f"query parameter {name}={text!r}: expected true or false")
    return text.lower() == "true"


def _description(package: StoredPackage) -> bytes:
    return dumps({"packageId": package.package_id, "aasIds": list(package.aas_ids)})


def _package_id(request: web.Request) -> str:
    return decode_identifier(request.match_info["packageId"], "packageId")


async def _import(request: web.Request, package_id: str, *, replace: bool) -> StoredPackage:
    """Import an uploaded package whole or not at all (``packages.import_package``), checking the caller's
    rights on every object it creates or replaces."""
    upload = await read_upload(request, request.app[MAX_BODY_KEY])
    file_name = safe_file_name(upload.file_name, "package.aasx")
    return await import_package(
        store_of(request),
        request.app[ATTACHMENTS_KEY],
        request.app[PACKAGES_KEY],
        upload.content,
        StoredPackage(package_id, file_name, upload.content, tuple(upload.fields.get("aasIds", []))),
        replace=replace,
        strict=_boolean(request, "strict", False),
        rights=lambda batch: object_rights(request, batch),
        on_change=lambda identifiable: note_change(request, identifiable.id, identifiable),
    )


@routes.get("/packages")
async def get_all_packages(request: web.Request) -> web.Response:
    """GetAllAASXPackageIds (filter ``aasId``), paged: ``PackageDescription`` items."""
    accept_json(request)
    page_request = parse_page_request(request.query)
    packages = await request.app[PACKAGES_KEY].packages()
    aas_id = request.query.get("aasId")
    if aas_id is not None:
        wanted = decode_identifier(aas_id, "aasId")
        packages = [package for package in packages if wanted in package.aas_ids]
    readable = auth.package_filter(request)
    if readable is not None:
        packages = [package for package in packages if await readable(package)]
    page = page_positions(packages, page_request, lambda package: package.package_id)
    return bytes_response(page.to_bytes(_description))


@routes.post("/packages")
async def post_package(request: web.Request) -> web.Response:
    """PostAASXPackage: import the package, keep the file; ``201`` with its ``PackageDescription``."""
    accept_json(request)
    package = await _import(request, uuid.uuid4().hex, replace=False)
    location = f"{request.path.rstrip('/')}/{encode_identifier(package.package_id)}"
    return bytes_response(_description(package), status=201, headers={"Location": location})


@routes.get("/packages/{packageId}")
async def get_package(request: web.Request) -> web.Response:
    """GetAASXByPackageId: the package file as uploaded."""
    package = await request.app[PACKAGES_KEY].get(_package_id(request))
    if package is None:
        raise NotFoundError(f"no package {_package_id(request)!r}")
    return web.Response(
        body=package.content,
        content_type=AASX_CONTENT_TYPE,
        headers={"X-FileName": package.file_name, "Content-Disposition": f'attachment; filename="{package.file_name}"'},
    )


@routes.put("/packages/{packageId}")
async def put_package(request: web.Request) -> web.Response:
    """PutAASXByPackageId: replace the file and upsert its objects (``204``), or create it (``201``).

    Replacing a file needs the rights to delete it (``auth.check_package_replacement``)."""
    package_id = _package_id(request)
    existing = await request.app[PACKAGES_KEY].get(package_id)
    if existing is not None:
        await auth.check_package_replacement(request, existing)
    package = await _import(request, package_id, replace=True)
    if existing is not None:
        return web.Response(status=204)
    return bytes_response(_description(package), status=201, headers={"Location": request.path})


@routes.delete("/packages/{packageId}")
async def delete_package(request: web.Request) -> web.Response:
    """DeleteAASXByPackageId: the file goes; the objects it brought stay."""
    package_id = _package_id(request)
    packages = request.app[PACKAGES_KEY]
    if await packages.get(package_id) is None:
        raise NotFoundError(f"no package {package_id!r}")
    await packages.delete(package_id)
    return web.Response(status=204)


# --- /serialization --------------------------------------------------------------------------------


def _selection(request: web.Request) -> list[model.Identifiable]:
    store = store_of(request)
    aas_ids = [decode_identifier(text, "aasIds value") for text in request.query.getall("aasIds", [])]
    submodel_ids = [decode_identifier(text, "submodelIds value") for text in request.query.getall("submodelIds", [])]
    include_concept_descriptions = _boolean(request, "includeConceptDescriptions", True)
    selected: list[model.Identifiable] = []
    if not aas_ids and not submodel_ids:
        selected.extend(store.shells())
        selected.extend(store.submodels())
    else:
        selected.extend(store.shell(identifier) for identifier in dict.fromkeys(aas_ids))
        selected.extend(store.submodel(identifier) for identifier in dict.fromkeys(submodel_ids))
    if include_concept_descriptions:
        selected.extend(store.concept_descriptions())
    return auth.exportable(request, selected)


def _environment_json(request: web.Request, selected: list[model.Identifiable]) -> bytes:
    groups: dict[bytes, list[bytes]] = {}
    for identifiable in selected:
        key = (
            b"assetAdministrationShells"
            if isinstance(identifiable, model.AssetAdministrationShell)
            else b"submodels"
            if isinstance(identifiable, model.Submodel)
            else b"conceptDescriptions"
        )
        body = cached_body(
            request,
            identifiable.id,
            ("environment-item",),
            lambda item=identifiable: dumps(to_json_object(item)),  # type: ignore[misc]
        )
        groups.setdefault(key, []).append(body)
    parts = [b'"' + key + b'":[' + b",".join(items) + b"]" for key, items in groups.items()]
    return b"{" + b",".join(parts) + b"}"


async def _supplementary_files(
    attachments: AttachmentStore, selected: list[model.Identifiable]
) -> tuple[dict[str, tuple[bytes, str]], dict[str, str]]:
    """The bytes stored for each File and thumbnail of ``selected`` by package path, and the owners whose path
    another owner fills with different bytes, with the path they get in the package (``store.files``)."""
    found: list[tuple[FileReference, tuple[bytes, str] | None]] = []
    for reference in file_references(selected):
        attachment = await attachments.get(owned_key(reference.owner, reference.path))
        found.append((reference, None if attachment is None else (attachment.content, attachment.content_type)))
    return package_files(found)


def _snapshot_objects(snapshot: bytes) -> list[model.Identifiable]:
    """The objects of a JSON snapshot as stored, without the importer's repairs (which would drop, not rename,
    a legacy File value naming a package part: ``write_package`` renames those)."""
    document = json.loads(snapshot, cls=FaithfulJsonDecoder)
    return [
        item
        for key in ("assetAdministrationShells", "submodels", "conceptDescriptions")
        for item in document.get(key, [])
    ]


def _convert(
    snapshot: bytes, files: dict[str, tuple[bytes, str]], renamed: dict[str, str], package_format: str
) -> bytes:
    identifiables = _snapshot_objects(snapshot)
    rename_files(identifiables, renamed)
    return write_package(identifiables, files, package_format)  # type: ignore[arg-type]


@routes.get("/serialization")
async def get_serialization(request: web.Request) -> web.Response:
    """GenerateSerializationByIds: JSON, XML or AASX by ``Accept``."""
    media_type = negotiate(request, SERIALIZATION_TYPES)
    selected = _selection(request)
    snapshot = _environment_json(request, selected)
    if media_type == JSON_CONTENT_TYPE:
        return bytes_response(snapshot)
    if media_type == XML_CONTENT_TYPE:
        body = await asyncio.to_thread(_convert, snapshot, {}, {}, "xml")
        return web.Response(body=body, content_type=XML_CONTENT_TYPE)
    files, renamed = await _supplementary_files(request.app[ATTACHMENTS_KEY], selected)
    body = await asyncio.to_thread(_convert, snapshot, files, renamed, "aasx")
    return web.Response(
        body=body,
        content_type=media_type,
        headers={"Content-Disposition": 'attachment; filename="environment.aasx"'},
    )
