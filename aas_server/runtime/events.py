"""MQTT change events: the store's outbox encoder, the collector of device values, and the publisher, wired.

What becomes durable where (``docs/events.md``):

- client writes (REST, OPC UA) and model changes: the store encodes their events and journals
  them in the change's own transaction (``TwinStore.outbox_encoder``), before the client gets
  its answer;
- device values (origin ``device:<name>``), roll-ups, KPIs and predictive results (origins
  ``rollup``, ``kpi``, ``predictive``): they are not
  journaled one by one, so ``DeviceEventCollector`` takes them from the change bus and appends
  them to the outbox as soon as they arrive (what arrives while an append runs goes in the
  next one, so batches grow with the rate); only then are they published;
- restored values (origin ``restore``) are not published, nor are the identifiables loaded at start.

``MqttEventPublisher`` (the events edge, ``events.mqtt``) then publishes the outbox in sequence order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aas_server.config import HubSettings
from aas_server.errors import PersistenceError
from aas_server.events.mqtt import MqttEventPublisher
from aas_server.lifecycle import cancel_and_wait
from aas_server.model.events import ValueChanged
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.store.bus import Subscription
from aas_server.store.outbox import OutboundEvent, Outbox, OutboxEncoder
from aas_server.store.twin_store import StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

"""Seconds device value events wait to be appended to the outbox together (one transaction)."""


def is_collected(change: ValueChanged) -> bool:
    """Whether a value change reaches the outbox through the collector (not journaled by the store)."""
    origin = change.origin
    # the hub's computed values (roll-ups, KPIs, predictive results) come from its own services
    return origin.startswith("device") or origin in ("rollup", "kpi", "predictive")


class DeviceEventCollector:
    """Appends the value events of device values and roll-ups from the change bus to the outbox, in batches.

    The subscription must be taken before the first such change (``start_event_publishing`` does),
    so that none is missed. When stopped, what was taken from the bus is still appended.
    """

    def __init__(
        self,
        subscription: Subscription[StoreEvent],
        outbox: Outbox,
        encoder: OutboxEncoder,
    ) -> None:
        self._subscription = subscription
        self._outbox = outbox
        self._encoder = encoder
        self._task: asyncio.Task[None] | None = None
        self.appended = 0

    @property
    def dropped(self) -> int:
        """Bus events lost because the collector fell behind (the bus keeps the newest)."""
        return self._subscription.dropped

    def start(self) -> None:
        self._task = asyncio.create_task(self._collect(), name="mqtt event collector")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._subscription.close()

    def _events(self, changes: list[StoreEvent]) -> list[OutboundEvent]:
        events = []
        for change in changes:
            if isinstance(change, ValueChanged) and is_collected(change):
                event = self._encoder.value_event(change)
                if event is not None:
                    events.append(event)
        return events

    async def _append(self, changes: list[StoreEvent]) -> None:
        events = self._events(changes)
        if not events:
            return
        try:
            await self._outbox.outbox_append(events)
        except PersistenceError as error:
            _LOG.error("%d device value events are lost: %s", len(events), error)
            return
        self.appended += len(events)

    async def _collect(self) -> None:
        taken: list[StoreEvent] = []
        try:
            while True:
                taken.append(await self._subscription.get())
                # No batching window: what arrived meanwhile is taken along, and the append is queued on
                # the database's one worker at once, so a client write journaled later gets a later
                # sequence number than a device value it follows. While an append runs, new events
                # gather and go in the next one (batches grow with the rate by themselves).
                taken.extend(self._subscription.get_nowait_all())
                batch, taken = taken, []
                await self._append(batch)
        except asyncio.CancelledError:
            taken.extend(self._subscription.get_nowait_all())
            await self._append(taken)
            raise


@dataclass(slots=True)
class EventPublishing:
    """The running change-event service: encoder (set on the store), collector and publisher."""

    encoder: OutboxEncoder
    collector: DeviceEventCollector
    publisher: MqttEventPublisher
    repository: SqliteRepository

    @property
    def published(self) -> int:
        """Messages handed to the MQTT client (resends after a reconnect not counted)."""
        return self.publisher.published

    @property
    def acknowledged(self) -> int:
        """Messages the broker acknowledged."""
        return self.publisher.acknowledged

    @property
    def dropped(self) -> int:
        """Events lost: not stored because the outbox was full, or refused by the broker, or lost on the bus."""
        return self.repository.outbox_dropped + self.publisher.rejected + self.collector.dropped

    @property
    def pending(self) -> int:
        """Events in the outbox, waiting to be published or acknowledged."""
        return self.repository.outbox_size

    @property
    def connected(self) -> bool:
        return self.publisher.connected


async def start_event_publishing(
    stack: contextlib.AsyncExitStack, settings: HubSettings, store: TwinStore, repository: SqliteRepository
) -> EventPublishing | None:
    """Start MQTT change events if ``settings.events.enabled``; ``None`` otherwise.

    Sets ``store.outbox_encoder`` (the store's journal must be ``repository``), subscribes the
    collector to the store's bus, starts the publisher, and registers their shutdown on
    ``stack``: the collector appends what it took, the publisher removes what was acknowledged
    and disconnects; the rest is published after the next start. Call it after the model is
    loaded and before REST and OPC UA accept writes.
    """
    events = settings.events
    if not events.enabled:
        return None
    repository.outbox_limit = events.outbox_limit
    encoder = OutboxEncoder(events.repository_id, value_events=events.value_events)
    publisher = await stack.enter_async_context(MqttEventPublisher(events, repository))
    repository.outbox_listener = publisher.notify

    def detach() -> None:
        repository.outbox_listener = None
        store.outbox_encoder = None

    stack.callback(detach)
    collector = DeviceEventCollector(store.bus.subscribe("mqtt-events", maxsize=100_000), repository, encoder)
    collector.start()
    stack.push_async_callback(collector.stop)
    store.outbox_encoder = encoder
    if repository.outbox_size:
        _LOG.info("%d change events from before the start are waiting in the outbox", repository.outbox_size)
    return EventPublishing(encoder, collector, publisher, repository)
