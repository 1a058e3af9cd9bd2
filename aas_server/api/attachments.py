"""File contents behind File elements and shell thumbnails (Part 2, *attachment* and *thumbnail*).

A File element's ``value`` is a path inside the AASX package (``/aasx/files/manual.pdf``), exactly as
an AASX keeps supplementary files; the hub keeps the bytes in an ``AttachmentStore`` for their owner,
the element (or the shell, for a thumbnail), under that path (``aas_server.store.files.owned_key``).
Uploading through ``PUT .../attachment`` stores the bytes under a path derived from the element
(``/aasx/files/<hash of submodel and idShort path>/<fileName>``) and sets the element's ``value``
(and ``contentType``) to it, so a download finds the bytes only while the element still points at
them; a package import stores its supplementary files for the elements that name them, and a package
export writes them back from there.

A download reads only the bytes stored for the element (or shell) asked for. A change that points a
File or thumbnail at a path whose bytes another element or shell owns is refused (``403``,
:func:`check_file_values`, :func:`check_thumbnail`): the value would name bytes the element cannot
reach, and would otherwise be a way to read what the caller may not.

The protocol is small and asynchronous so that a SQLite or PostgreSQL implementation can sit
beside ``MemoryAttachmentStore`` (see ``aas_server/store/files.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import posixpath
import re
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from basyx.aas import model

from aas_server.api.context import attachments_of, store_of
from aas_server.errors import AccessDeniedError, InvalidRequestError, NotFoundError
from aas_server.model import paths
from aas_server.store.files import (
    DEFAULT_CONTENT_TYPE,
    Attachment,
    FileReference,
    element_owner,
    file_references,
    is_package_path,
    owned_key,
    thumbnail_owner,
)
from aas_server.store.twin_store import TwinStore, is_large

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str | None, fallback: str = "file") -> str:
    """A file name reduced to ``[A-Za-z0-9._-]`` (no directories), never empty."""
    base = posixpath.basename((name or "").replace("\\", "/"))
    cleaned = _UNSAFE.sub("_", base).strip("._")
    return cleaned[:120] or fallback


def attachment_path(owner: str, location: str, file_name: str) -> str:
    """The package path for a file uploaded to ``location`` (idShort path or ``thumbnail``) of ``owner``."""
    digest = hashlib.sha256(f"{owner}\x00{location}".encode()).hexdigest()[:16]
    return f"/aasx/files/{digest}/{safe_file_name(file_name)}"


def content_type_for(file_name: str, declared: str | None, current: str | None = None) -> str:
    """The media type of an upload: declared (unless generic), guessed from the name, or kept."""
    if declared and declared != DEFAULT_CONTENT_TYPE:
        return declared
    guessed, _ = mimetypes.guess_type(file_name)
    return guessed or current or declared or DEFAULT_CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class Upload:
    """The fields of a ``multipart/form-data`` upload: the file part and the text fields."""

    content: bytes
    file_name: str
    content_type: str | None
    fields: dict[str, list[str]]


async def read_upload(request: web.Request, limit: int) -> Upload:
    """Read a ``multipart/form-data`` body with a ``file`` part (and ``fileName``, ``aasIds`` fields).

    ``415`` for another content type, ``400`` without a file part, ``413`` above ``limit`` bytes.
    """
    if request.content_type != "multipart/form-data":
        raise web.HTTPUnsupportedMediaType(
            text=f"the body must be multipart/form-data with a 'file' part, not {request.content_type!r}"
        )
    try:
        return await _read_parts(request, limit)
    except (BadHttpMessage, ValueError, LookupError, AssertionError) as error:
        raise InvalidRequestError(f"malformed multipart body: {error}".strip()) from None


MAX_MULTIPART_PARTS = 16
"""Uploads carry a file and a few fields; many tiny parts would only cost the server time."""


async def _read_parts(request: web.Request, limit: int) -> Upload:
    reader = await request.multipart()
    content: bytes | None = None
    part_file_name: str | None = None
    part_type: str | None = None
    fields: dict[str, list[str]] = {}
    total = 0
    parts = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        parts += 1
        if parts > MAX_MULTIPART_PARTS:
            raise InvalidRequestError(
                f"a multipart body may have at most {MAX_MULTIPART_PARTS} parts (file, fileName and a few fields)"
            )
        if not isinstance(part, BodyPartReader):
            raise InvalidRequestError("nested multipart bodies are not accepted")
        chunks: list[bytes] = []
        while chunk := await part.read_chunk(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
            chunks.append(chunk)
        data = b"".join(chunks)
        if part.name == "file":
            content = data
            part_file_name = part.filename
            part_type = part.headers.get("Content-Type")
        elif part.name:
            fields.setdefault(part.name, []).append(data.decode("utf-8", errors="replace"))
    if content is None:
        raise InvalidRequestError("the multipart body has no 'file' part")
    file_name = (fields.get("fileName") or [part_file_name or ""])[0]
    return Upload(content, file_name, part_type, fields)


# --- ownership of stored bytes ----------------------------------------------------------------------


async def stored_attachment(
    request: web.Request, submodel_id: str, id_short_path: str, value: str | None
) -> Attachment | None:
    """The bytes stored for the File element at ``id_short_path`` under its ``value`` (``None``: none)."""
    if not value:
        return None
    return await attachments_of(request).get(owned_key(element_owner(submodel_id, id_short_path), value))


async def stored_thumbnail(request: web.Request, shell_id: str, path: str) -> Attachment | None:
    """The thumbnail bytes stored for the shell under ``path``."""
    return await attachments_of(request).get(owned_key(thumbnail_owner(shell_id), path))


class _Owners:
    """Who else keeps bytes under a package path, looked up once per request (the model is walked lazily)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self._references: list[FileReference] | None = None

    async def other_owner(self, owner: str | None, path: str) -> bool:
        if self._references is None:
            store = store_of(self.request)
            self._references = file_references([*store.shells(), *store.submodels()])
        attachments = attachments_of(self.request)
        for reference in self._references:
            if (
                reference.path == path
                and reference.owner != owner
                and await attachments.get(owned_key(reference.owner, path)) is not None
            ):
                return True
        return False

    async def check(self, owner: str | None, path: str | None, current: str | None, what: str) -> None:
        if path is None or not is_package_path(path) or path == current:
            return
        if owner is not None and await attachments_of(self.request).get(owned_key(owner, path)) is not None:
            return
        if await self.other_owner(owner, path):
            raise AccessDeniedError(
                f"{what} may not name {path!r}: the bytes stored under that path belong to another element or "
                "shell; upload this one's own content (PUT .../attachment or .../thumbnail) instead"
            )


_ABSENT = object()


def _current_file_value(request: web.Request, submodel_id: str, id_short_path: str | None) -> object:
    """The value of the File at ``id_short_path`` now (``None`` for another kind), or ``_ABSENT``."""
    if id_short_path is None:
        return _ABSENT
    try:
        current = store_of(request).element(submodel_id, id_short_path)
    except (NotFoundError, InvalidRequestError):
        return _ABSENT
    return current.value if isinstance(current, model.File) else None


def _files_below(new: model.Submodel | model.SubmodelElement, prefix: str) -> list[tuple[str, model.File]]:
    return [(path, element) for path, element in paths.walk(new, prefix) if isinstance(element, model.File)]


async def check_file_values(
    request: web.Request,
    submodel_id: str,
    id_short_path: str | None,
    new: model.Submodel | model.SubmodelElement,
) -> None:
    """Refuse (``AccessDeniedError``) a change that points a File at bytes another element or shell owns.

    ``new`` is the submodel (``id_short_path`` ``""``) or the element about to be put at
    ``id_short_path`` (``None`` when not known yet: a new item of a SubmodelElementList), with what it
    holds. A File may keep its value, name bytes stored for itself, or name a path no one has bytes
    under (a link to a file not uploaded yet).
    """
    owners = _Owners(request)
    found: list[tuple[str | None, model.File]] = []
    if isinstance(new, model.File):
        found.append((id_short_path, new))
    # a walk over a large submodel takes a while: in a worker thread (``new`` is not shown to anyone yet)
    prefix = id_short_path or ""
    files = await asyncio.to_thread(_files_below, new, prefix) if is_large(new) else _files_below(new, prefix)
    for child_path, element in files:
        found.append((child_path if id_short_path is not None else None, element))
    for path, file in found:
        owner = element_owner(submodel_id, path) if path is not None else None
        what = f"File {path or file.id_short!r} of submodel {submodel_id!r}"
        current = _current_file_value(request, submodel_id, path)
        if current is _ABSENT and owner is not None and is_package_path(file.value):
            # bytes left by a deleted element at the same path are not the new element's
            stale = owned_key(owner, str(file.value))
            if await attachments_of(request).get(stale) is not None:
                await attachments_of(request).delete(stale)
        await owners.check(owner, file.value, current if isinstance(current, str) else None, what)


async def check_thumbnail(request: web.Request, shell_id: str, thumbnail: model.Resource | None) -> None:
    """Refuse (``AccessDeniedError``) a shell change that points its thumbnail at bytes another owner keeps."""
    if thumbnail is None:
        return
    try:
        current = store_of(request).shell(shell_id).asset_information.default_thumbnail
    except NotFoundError:
        current = None
    await _Owners(request).check(
        thumbnail_owner(shell_id),
        thumbnail.path,
        current.path if current is not None else None,
        f"the thumbnail of shell {shell_id!r}",
    )


def new_element_path(
    store: TwinStore, submodel_id: str, parent_path: str | None, element: model.SubmodelElement
) -> str | None:
    """Where ``element`` goes when created in the container at ``parent_path`` (``None``/``""``: the submodel);
    ``None`` for an item of a SubmodelElementList (its index is given when it is added)."""
    if not parent_path:
        return str(element.id_short)
    try:
        parent = store.element(submodel_id, parent_path)
    except (NotFoundError, InvalidRequestError):
        return None
    if isinstance(parent, model.SubmodelElementList):
        return None
    return f"{parent_path}.{element.id_short}"


def list_item_moves(store: TwinStore, submodel_id: str, id_short_path: str) -> list[tuple[str, str, str]]:
    """When the item at ``id_short_path`` of a SubmodelElementList is deleted, the items after it move up one
    place: ``(old owner, new owner, package path)`` for each File below them that names a package path."""
    segments = paths.parse_id_short_path(id_short_path)
    index = segments[-1]
    if not isinstance(index, int):
        return []
    parent_path = paths.format_id_short_path(segments[:-1])
    try:
        parent = store.element(submodel_id, parent_path)
    except (NotFoundError, InvalidRequestError):
        return []
    if not isinstance(parent, model.SubmodelElementList):
        return []
    moves: list[tuple[str, str, str]] = []
    for position, item in enumerate(list(parent.value)):
        if position <= index:
            continue
        old_prefix, new_prefix = f"{parent_path}[{position}]", f"{parent_path}[{position - 1}]"
        found = [(old_prefix, item)] if isinstance(item, model.File) else []
        found += [(path, element) for path, element in paths.walk(item, old_prefix) if isinstance(element, model.File)]
        for path, file in found:
            if file.value and is_package_path(file.value):
                new_path = new_prefix + path[len(old_prefix) :]
                moves.append((element_owner(submodel_id, path), element_owner(submodel_id, new_path), file.value))
    return moves


async def move_attachments(request: web.Request, moves: list[tuple[str, str, str]]) -> None:
    """Keep the bytes of Files that moved (``list_item_moves``) with them."""
    attachments = attachments_of(request)
    for old_owner, new_owner, path in moves:
        found = await attachments.get(owned_key(old_owner, path))
        if found is not None:
            await attachments.put(owned_key(new_owner, path), found)
            await attachments.delete(owned_key(old_owner, path))
