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


class StoreSync:
    """Consumes a change-bus subscription: value changes into variable nodes, model changes into subtrees."""

    def __init__(
        self,
        subscription: Subscription[StoreEvent],
        nodes: Mapping[ElementKey, tuple[ua.NodeId, ua.VariantType]],
        write_attribute_value: AttributeWriter,
        apply_model_change: ModelChangeHandler,
        resynchronize: Resynchronizer,
    ) -> None:
        self._subscription = subscription
        self._nodes = nodes
        self._write_attribute_value = write_attribute_value
        self._apply_model_change = apply_model_change
        self._resynchronize = resynchronize
        self._dropped = 0

    async def run(self) -> None:
        """Run until cancelled; a failing change is logged and the next one is handled."""
        while True:
            first = await self._subscription.get()
            if self._subscription.dropped != self._dropped:
                self._dropped = self._subscription.dropped
                await self._guarded(self._resynchronize(), "resynchronize the OPC UA address space")
            for event in (first, *self._subscription.get_nowait_all()):
                if isinstance(event, ValueChanged):
                    await self._apply_value(event)
                else:
                    await self._guarded(self._apply_model_change(event), f"project {event}")

    async def _guarded(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception:
            _LOG.exception("could not %s", what)

    async def _apply_value(self, change: ValueChanged) -> None:
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
