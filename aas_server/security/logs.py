"""Log lines nobody can forge: control characters are escaped in every record the hub writes.

A request path, header, identifier or device string may hold a line feed (``%0A`` in a URL), a
carriage return, an escape sequence or a Unicode line separator. Written raw, such text starts a
new line that looks like a record of its own (log injection, CWE-117). :class:`SafeFormatter`
escapes every control character of a record's line (``\\n`` becomes the two characters ``\\`` ``n``),
and indents the lines of a traceback so that none of them can pass for a record.
:func:`configure_logging`, the one place the hub sets logging up (every command of ``aas-server``),
gives the root logger its one handler with this formatter. The audit file's JSON lines are escaped
by :func:`json_line`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_LINE_FEED = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTINUATION = "\n    "
"""What begins every further line of a traceback: never the timestamp a record begins with."""


def _escaped(match: re.Match[str]) -> str:
    character = match.group()
    return _NAMED.get(character) or (
        f"\\x{ord(character):02x}" if ord(character) < 0x100 else f"\\u{ord(character):04x}"
    )


def escape_controls(text: str) -> str:
    """``text`` with every C0 and C1 control character and U+2028/U+2029 written as an escape."""
    return _CONTROL.sub(_escaped, text)


def _indented(text: str) -> str:
    return _CONTROL_BUT_LINE_FEED.sub(_escaped, text.rstrip("\n")).replace("\n", _CONTINUATION)


class SafeFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose record line holds no control character; tracebacks come indented."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += _CONTINUATION + _indented(record.exc_text)
        if record.stack_info:
            line += _CONTINUATION + _indented(self.formatStack(record.stack_info))
        return line


def configure_logging(level: int | str, stream: TextIO | None = None) -> None:
    """Log at ``level`` to ``stream`` (standard error) through one handler with :class:`SafeFormatter`.

    Called again, it only changes the level. A root logger that has handlers of someone else's (a
    program embedding the hub, a test runner) is left as it is, as ``logging.basicConfig`` would.
    """
    root = logging.getLogger()
    if any(isinstance(handler.formatter, SafeFormatter) for handler in root.handlers):
        root.setLevel(level)
        return
    if root.handlers:
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


def json_line(document: bytes) -> bytes:
    """A compact JSON document (orjson escapes C0 controls in strings) with C1 controls and U+2028/U+2029
    escaped as well, so that no tool splitting lines (``str.splitlines`` splits at U+0085) cuts it."""
    text = document.decode("utf-8")
    if _JSON_UNSAFE.search(text) is None:
        return document
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text).encode("utf-8")
