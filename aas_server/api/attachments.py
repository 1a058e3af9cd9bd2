"""File contents behind File elements and shell thumbnails (Part 2, *attachment* and *thumbnail*).

A File element's ``value`` is a path inside the AASX package (``/aasx/files/manual.pdf``), exactly as
an AASX keeps supplementary files; the hub keeps the bytes under that path in an
``AttachmentStore``. Uploading through ``PUT .../attachment`` stores the bytes under a path derived
from the element (``/aasx/files/<hash of submodel and idShort path>/<fileName>``) and sets the
element's ``value`` (and ``contentType``) to it, so a download finds the bytes only while the element
still points at them; a package import stores its supplementary files under their package paths,
and a package export writes them back from there.

The protocol is small and asynchronous so that a SQLite or PostgreSQL implementation can sit
beside ``MemoryAttachmentStore`` (see ``aas_server/store/files.py``).
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import re
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from aas_server.errors import InvalidRequestError
from aas_server.store.files import DEFAULT_CONTENT_TYPE

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
