"""Value sync: the store's value changes written into the OPC UA address space.

Each ``ValueChanged`` from the change bus becomes a ``DataValue`` with the store's value, status
code and source and server timestamps, written with the server's internal attribute write so
that subscribed clients get a data change notification carrying exactly those (OPC 10000-4
§5.12.1.2). Model changes are not projected yet: they are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from asyncua import ua

from aas_server.model.events import ValueChanged
from aas_server.opcua.variants import data_value
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import StoreEvent

_LOG = logging.getLogger(__name__)

ElementKey = tuple[str, str]
AttributeWriter = Callable[[ua.NodeId, ua.DataValue], Awaitable[None]]


class ValueSync:
    """Consumes a change-bus subscription and writes value changes into their variable nodes."""

    def __init__(
        self,
        subscription: Subscription[StoreEvent],
        nodes: Mapping[ElementKey, tuple[ua.NodeId, ua.VariantType]],
        write_attribute_value: AttributeWriter,
    ) -> None:
        self._subscription = subscription
        self._nodes = nodes
        self._write_attribute_value = write_attribute_value

    async def run(self) -> None:
        """Run until cancelled; a failing write is logged and the next change is handled."""
        while True:
            first = await self._subscription.get()
            for event in (first, *self._subscription.get_nowait_all()):
                if isinstance(event, ValueChanged):
                    await self._apply(event)

    async def _apply(self, change: ValueChanged) -> None:
        target = self._nodes.get((change.submodel_id, change.id_short_path))
        if target is None:
            return
        node_id, variant_type = target
        try:
            value = data_value(
                change.value, variant_type, change.quality, change.reason, change.source_time, change.server_time
            )
            await self._write_attribute_value(node_id, value)
        except Exception:
            _LOG.exception("could not write %s %s into the OPC UA node", change.submodel_id, change.id_short_path)
