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
import uuid

from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.attachments import read_upload, safe_file_name
from aas_server.api.context import ATTACHMENTS_KEY, MAX_BODY_KEY, PACKAGES_KEY, store_of
from aas_server.api.packages import import_package
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
from aas_server.exchange import read_package, write_package
from aas_server.model import paths
from aas_server.store.files import AttachmentStore, StoredPackage

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
    upload = await read_upload(request, request.app[MAX_BODY_KEY])
    file_name = safe_file_name(upload.file_name, "package.aasx")
    aas_ids = await import_package(
        store_of(request),
        request.app[ATTACHMENTS_KEY],
        upload.content,
        file_name,
        replace=replace,
        strict=_boolean(request, "strict", False),
        on_change=lambda identifiable: note_change(request, identifiable.id, identifiable),
    )
    package = StoredPackage(package_id, file_name, upload.content, aas_ids or tuple(upload.fields.get("aasIds", [])))
    await request.app[PACKAGES_KEY].put(package)
    return package


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
        packages = [package for package in packages if readable(package)]
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
    """PutAASXByPackageId: replace the file and upsert its objects (``204``), or create it (``201``)."""
    package_id = _package_id(request)
    existed = await request.app[PACKAGES_KEY].get(package_id) is not None
    package = await _import(request, package_id, replace=True)
    if existed:
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
) -> dict[str, tuple[bytes, str]]:
    wanted: set[str] = set()
    for identifiable in selected:
        if isinstance(identifiable, model.Submodel):
            for _, element in paths.walk(identifiable):
                if isinstance(element, model.File) and element.value and element.value.startswith("/"):
                    wanted.add(element.value)
        elif isinstance(identifiable, model.AssetAdministrationShell):
            thumbnail = identifiable.asset_information.default_thumbnail
            if thumbnail is not None and thumbnail.path.startswith("/"):
                wanted.add(thumbnail.path)
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(wanted):
        attachment = await attachments.get(path)
        if attachment is not None:
            files[path] = (attachment.content, attachment.content_type)
    return files


def _convert(snapshot: bytes, files: dict[str, tuple[bytes, str]], package_format: str) -> bytes:
    identifiables = read_package(snapshot, "environment.json").identifiables
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
        body = await asyncio.to_thread(_convert, snapshot, {}, "xml")
        return web.Response(body=body, content_type=XML_CONTENT_TYPE)
    files = await _supplementary_files(request.app[ATTACHMENTS_KEY], selected)
    body = await asyncio.to_thread(_convert, snapshot, files, "aasx")
    return web.Response(
        body=body,
        content_type=media_type,
        headers={"Content-Disposition": 'attachment; filename="environment.aasx"'},
    )
