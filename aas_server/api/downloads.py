"""Responses that hand out bytes a caller stored: File attachments, Blob values and thumbnails.

The bytes and their media type come from whoever had the right to upload them, so whoever opens
such a response in a browser must not run it on the hub's origin (an SVG or HTML file with a
script, stored XSS): every such response says ``X-Content-Type-Options: nosniff`` and
``Content-Security-Policy: default-src 'none'; sandbox``. A media type with parameters
(``text/plain; charset=utf-8``) is served as given; one that is not a media type at all is
served as ``application/octet-stream``. The file name in ``Content-Disposition`` is written as
ASCII, with the full name in ``filename*`` (RFC 6266) where it is not ASCII.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import hdrs, web

from aas_server.store.files import DEFAULT_CONTENT_TYPE

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"(?:[^\"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*\"))*"
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")

SANDBOX_POLICY = "default-src 'none'; sandbox"
"""``Content-Security-Policy`` of stored bytes: nothing in them may load, run or navigate."""


def media_type(content_type: str | None) -> str:
    """``content_type`` when it is a media type (RFC 9110 §8.3.1, parameters allowed), else the default."""
    text = (content_type or "").strip()
    return text if _MEDIA_TYPE.fullmatch(text) else DEFAULT_CONTENT_TYPE


def content_disposition(disposition: str, name: str) -> str:
    """``attachment``/``inline`` with ``name`` as an ASCII ``filename`` and, if it differs, ``filename*``."""
    fallback = _UNSAFE_NAME.sub("_", name) or "file"
    if fallback == name:
        return f'{disposition}; filename="{name}"'
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def stored_bytes_response(content: bytes, content_type: str | None, disposition: str, name: str) -> web.Response:
    """The response for bytes a caller stored, with their media type and the headers that keep them inert."""
    return web.Response(
        body=content,
        headers={
            hdrs.CONTENT_TYPE: media_type(content_type),
            hdrs.CONTENT_DISPOSITION: content_disposition(disposition, name),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": SANDBOX_POLICY,
        },
    )
