"""The one place where the hub's error tree becomes HTTP (IDTA-01002 Part 2, 12.4 *Result*).

Every error answer, including aiohttp's own (unknown route 404, wrong method 405, body too large
413), carries a ``Result`` body::

    {"messages": [{"code": "NotFound", "messageType": "Error", "text": "...", "timestamp": "..."}]}

A change the database has no room for (full disk) is ``507 Insufficient Storage`` (RFC 4918 §11.5):
nothing of it was stored, reads go on, and the same request succeeds once space is freed.

Unexpected exceptions become ``500`` with a generic text and a ``correlationId``; the server log
has one ERROR line with the correlationId and the reason (exception type and the first 300
characters of its text, never the request body), and the innermost frames of the traceback at
DEBUG. A ``RecursionError`` (input nested deeper than a parser copes with) is a ``400`` logged
as one WARNING line.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from aas_server.api.serialization import JSON_CONTENT_TYPE
from aas_server.errors import (
    AccessDeniedError,
    CapacityError,
    ConflictError,
    DeviceError,
    DeviceTimeoutError,
    HubError,
    InvalidRequestError,
    NotFoundError,
    NotWritableError,
    PersistenceError,
    StorageFullError,
    TypeMismatchError,
)
from aas_server.model.events import utc_now

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """HTTP status and ``Message.code`` for one class of the error tree."""

    status: int
    code: str


ERROR_MAPPINGS: Mapping[type[HubError], ErrorMapping] = {
    NotFoundError: ErrorMapping(404, "NotFound"),
    InvalidRequestError: ErrorMapping(400, "BadRequest"),
    TypeMismatchError: ErrorMapping(400, "TypeMismatch"),
    ConflictError: ErrorMapping(409, "Conflict"),
    NotWritableError: ErrorMapping(403, "NotWritable"),
    AccessDeniedError: ErrorMapping(403, "Forbidden"),
    CapacityError: ErrorMapping(429, "TooManyRequests"),
    DeviceError: ErrorMapping(502, "DeviceError"),
    DeviceTimeoutError: ErrorMapping(504, "DeviceTimeout"),
    PersistenceError: ErrorMapping(500, "PersistenceError"),
    StorageFullError: ErrorMapping(507, "InsufficientStorage"),
}
"""The most specific class in an error's MRO decides; ``HubError`` subclasses not listed give 500."""


def timestamp() -> str:
    """The current UTC time as the ``Message.timestamp`` pattern wants it (``...Z``)."""
    return utc_now().isoformat().replace("+00:00", "Z")


def result_body(status: int, code: str, text: str, correlation_id: str | None = None) -> bytes:
    """A Part 2 ``Result`` with one error message."""
    message_type = "Exception" if status >= 500 and correlation_id else "Error"
    message: dict[str, str] = {"code": code, "messageType": message_type, "text": text, "timestamp": timestamp()}
    if correlation_id is not None:
        message["correlationId"] = correlation_id
    return orjson.dumps({"messages": [message]})


def result_response(
    status: int, code: str, text: str, *, correlation_id: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error response with a ``Result`` body."""
    return web.Response(
        status=status,
        body=result_body(status, code, text, correlation_id),
        content_type=JSON_CONTENT_TYPE,
        headers=headers,
    )


def mapping_for(error: HubError) -> ErrorMapping | None:
    """The ``ErrorMapping`` of the most specific listed class ``error`` is an instance of."""
    for kind in type(error).__mro__:
        mapping = ERROR_MAPPINGS.get(kind)
        if mapping is not None:
            return mapping
    return None


_REASON_LIMIT = 300
_TRACEBACK_FRAMES = 15
"""Innermost frames of an unexpected error's traceback logged at DEBUG (a recursion has thousands)."""


def _shortened(text: str) -> str:
    return text if len(text) <= _REASON_LIMIT else f"{text[:_REASON_LIMIT]}... ({len(text)} characters)"


def _logged(request: web.Request, error: BaseException, level: int, what: str) -> str:
    """Log one line naming the request, a new correlationId and the reason; the id."""
    correlation_id = uuid.uuid4().hex[:16]
    reason = _shortened(f"{type(error).__name__}: {error}")
    _LOG.log(
        level,
        "%s on %s %s (correlationId %s): %s",
        what,
        request.method,
        _shortened(request.path),
        correlation_id,
        reason,
    )
    if _LOG.isEnabledFor(logging.DEBUG):
        frames = "".join(traceback.format_exception(error, limit=-_TRACEBACK_FRAMES))
        _LOG.debug("correlationId %s, innermost %d frames:\n%s", correlation_id, _TRACEBACK_FRAMES, frames)
    return correlation_id


def _internal_error(request: web.Request, error: BaseException) -> web.Response:
    correlation_id = _logged(request, error, logging.ERROR, "unexpected error")
    return result_response(
        500,
        "InternalServerError",
        "internal server error; the server log has the details under this correlationId",
        correlation_id=correlation_id,
    )


def _http_error(error: web.HTTPException) -> web.Response:
    status = HTTPStatus(error.status)
    code = status.phrase.replace(" ", "").replace("-", "")
    text = error.text if error.text and error.text != f"{error.status}: {error.reason}" else status.description
    headers = {key: value for key, value in error.headers.items() if key in ("Allow", "Retry-After")}
    return result_response(error.status, code, text or status.phrase, headers=headers)


def unreadable_body(error: BaseException) -> str:
    """The message of a request body that aiohttp could not read (say, not gzip though ``Content-Encoding: gzip``)."""
    cause = error.__cause__ if error.__cause__ is not None else error
    reason = " ".join(str(getattr(cause, "message", "") or cause).split()) or type(cause).__name__
    return f"the request body cannot be read as its Content-Encoding says: {_shortened(reason)}"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a ``Result`` response with the status of ``ERROR_MAPPINGS``."""
    try:
        return await handler(request)
    except HubError as error:
        mapping = mapping_for(error)
        if mapping is None:
            return _internal_error(request, error)
        return result_response(mapping.status, mapping.code, str(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _http_error(error)
    except web.RequestPayloadError as error:  # the body does not decode as its Content-Encoding says
        request.content.feed_eof()  # the rest cannot be read either: aiohttp must not try (and log a traceback)
        response = result_response(400, "BadRequest", unreadable_body(error))
        response.force_close()  # and the connection ends with this answer
        return response
    except RecursionError as error:
        correlation_id = _logged(request, error, logging.WARNING, "input nested too deeply")
        return result_response(
            400, "BadRequest", "the request is nested too deeply to be processed", correlation_id=correlation_id
        )
    except Exception as error:
        return _internal_error(request, error)
