"""Store sync: the store's value and model changes written into the OPC UA address space.

One task consumes the projection's change-bus subscription in order. Each ``ValueChanged`` becomes
a ``DataValue`` with the store's value, status code and source and server timestamps, written with
the server's internal attribute write so that subscribed clients get a data change notification
carrying exactly those (OPC 10000-4 §5.12.1.2). Each ``ModelChanged`` re-projects the subtree it
names (:class:`aas_server.opcua.address_space.ProjectedAddressSpace`). Because both go through the
same consumer, a value change queued after a structure change is written to the node the structure
change left, and never to a deleted one. If the bus dropped events because this consumer fell
behind, the whole projection is compared with the store once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from asyncua import ua

from aas_server.model.events import ValueChanged
from aas_server.opcua_common.variants import data_value
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import ModelChanged, StoreEvent

_LOG = logging.getLogger(__name__)

ElementKey = tuple[str, str]
AttributeWriter = Callable[[ua.NodeId, ua.DataValue], Awaitable[None]]
ModelChangeHandler = Callable[[ModelChanged], Awaitable[None]]
Resynchronizer = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class StoreSync:
    """Consumes a change-bus subscription: value changes into variable nodes, model changes into subtrees."""

    subscription: Subscription[StoreEvent]
    nodes: Mapping[ElementKey, tuple[ua.NodeId, ua.VariantType]]
    """Each Property's variable node and its variant type (updated in place by the projection)."""
    write_attribute_value: AttributeWriter
    apply_model_change: ModelChangeHandler
    resynchronize: Resynchronizer
    _dropped: int = field(default=0, init=False)

    async def run(self) -> None:
        """Run until cancelled; a failing change is logged and the next one is handled."""
        while True:
            first = await self.subscription.get()
            if self.subscription.dropped != self._dropped:
                self._dropped = self.subscription.dropped
                await self._guarded(self.resynchronize(), "resynchronize the OPC UA address space")
            for event in (first, *self.subscription.get_nowait_all()):
                if isinstance(event, ValueChanged):
                    await self._apply_value(event)
                else:
                    await self._guarded(self.apply_model_change(event), f"project {event}")

    async def _guarded(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception:
            _LOG.exception("could not %s", what)

    async def _apply_value(self, change: ValueChanged) -> None:
        target = self.nodes.get((change.submodel_id, change.id_short_path))
        if target is None:
            return
        node_id, variant_type = target
        try:
            value = data_value(
                change.value, variant_type, change.quality, change.reason, change.source_time, change.server_time
            )
            await self.write_attribute_value(node_id, value)
        except Exception:
            _LOG.exception("could not write %s %s into the OPC UA node", change.submodel_id, change.id_short_path)
