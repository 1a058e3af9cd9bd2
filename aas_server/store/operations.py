"""Implementations of AAS Operations, shared by every edge that invokes them (REST, OPC UA).

An Operation element (AAS Part 1 §5.3.7.10) only declares its input, output and in-output
variables; what it does is code the hub registers here:
``OperationRegistry.register(submodel_id, id_short_path, handler)``. A handler is an async callable
that takes the input and in-output values by idShort in the Part 2 *ValueOnly* form and returns
the output and in-output values by idShort in the same form. How a missing handler, a timeout or a
failure is reported is the edge's business (REST: an ``OperationResult``; OPC UA: a status code).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

OperationHandler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""Input and in-output values by idShort in, output and in-output values by idShort out (ValueOnly)."""


class OperationRegistry:
    """Implementations of Operation elements, by submodel id and idShort path."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], OperationHandler] = {}

    def register(self, submodel_id: str, id_short_path: str, handler: OperationHandler) -> None:
        """Make ``handler`` the implementation of the Operation at ``id_short_path`` (replacing any other)."""
        self._handlers[(submodel_id, id_short_path)] = handler

    def handler(self, submodel_id: str, id_short_path: str) -> OperationHandler | None:
        """The registered implementation, or ``None``."""
        return self._handlers.get((submodel_id, id_short_path))
