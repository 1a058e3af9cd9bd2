"""JSONPath expressions (RFC 9535 syntax as jsonpath-ng parses it) for values in MQTT JSON payloads."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonpath_ng.ext.parser import parse


@lru_cache(maxsize=4096)
def compile_json_path(path: str) -> Any:
    """The parsed expression; ``ValueError`` naming the path and the parser's reason if it is invalid."""
    try:
        return parse(path)
    except Exception as error:  # jsonpath-ng raises its own lexer/parser errors and plain ones (e.g. TypeError)
        raise ValueError(f"invalid JSONPath {path!r}: {error}") from None


def check_json_path(path: str) -> None:
    """Raise ``ValueError`` if ``path`` is not a JSONPath expression."""
    compile_json_path(path)
