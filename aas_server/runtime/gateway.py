"""The device gateway: the store's ``DeviceWriter``, carrying client writes of device-bound Properties to devices.

A write of a bound Property (``TwinStore.write_value``) arrives here with the value already of the
Property's valueType. The gateway finds the point bound to the Property, asks the point's mapping
engine for the raw value (``MappingEngine.to_raw``: ``TypeMismatchError`` for a value the point
cannot hold, before anything is sent), and hands the ``RawWrite`` to the device's connector, whose
``write`` returns once the device acknowledged it. The store orders the writes of one Property and
holds no lock of the submodel meanwhile (``store.twin_store``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aas_server.connectors.base import Connector
from aas_server.errors import DeviceError, NotFoundError
from aas_server.mapping.engine import MappingEngine


@dataclass(frozen=True, slots=True)
class _Route:
    engine: MappingEngine
    point_name: str
    device: str


class DeviceGateway:
    """Routes the writes of bound Properties to their device points (a ``store.twin_store.DeviceWriter``).

    ``connectors`` is the hub's table of running connectors by device name; a device without one (not
    started yet, or stopped) answers ``DeviceError``.
    """

    def __init__(self, connectors: Mapping[str, Connector]) -> None:
        self._connectors = connectors
        self._routes: dict[tuple[str, str], _Route] = {}

    def route(self, submodel_id: str, id_short_path: str, engine: MappingEngine, point_name: str) -> None:
        """Send the writes of the Property at ``id_short_path`` to the point ``point_name`` of ``engine``'s mapping."""
        device = engine.point(point_name).device
        self._routes[(submodel_id, id_short_path)] = _Route(engine, point_name, device)

    async def write(self, submodel_id: str, id_short_path: str, value: Any) -> None:
        route = self._routes.get((submodel_id, id_short_path))
        if route is None:
            raise NotFoundError(f"{id_short_path!r} in {submodel_id!r} is not bound to a device point")
        raw = route.engine.to_raw(route.point_name, value)
        connector = self._connectors.get(route.device)
        if connector is None:
            raise DeviceError("not connected", route.device)
        await connector.write(raw)
