"""The change bus: bounded fan-out of events from the store to its views.

Publishing never blocks the publisher. Each subscriber has its own bounded queue; a subscriber
that falls behind loses its oldest events (counted in ``dropped`` and logged once per episode)
instead of slowing the store or the other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

_LOG = logging.getLogger(__name__)

EventT = TypeVar("EventT")


class Subscription(Generic[EventT]):
    """One subscriber's queue. Iterate it (``async for``) or call ``get``; ``close`` to leave."""

    def __init__(self, bus: ChangeBus[EventT], name: str, maxsize: int) -> None:
        self._bus = bus
        self.name = name
        self._queue: asyncio.Queue[EventT] = asyncio.Queue(maxsize)
        self.dropped = 0
        self._overflowing = False

    def _offer(self, event: EventT) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                _LOG.warning("subscriber %s falls behind: dropping its oldest events", self.name)
        elif self._overflowing and self._queue.qsize() < self._queue.maxsize // 2:
            self._overflowing = False
            _LOG.info("subscriber %s caught up (%d events dropped so far)", self.name, self.dropped)
        self._queue.put_nowait(event)

    async def get(self) -> EventT:
        return await self._queue.get()

    def get_nowait_all(self) -> list[EventT]:
        """Take every event queued right now without waiting."""
        events: list[EventT] = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    def close(self) -> None:
        self._bus._remove(self)

    def __aiter__(self) -> AsyncIterator[EventT]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[EventT]:
        while True:
            yield await self._queue.get()


class ChangeBus(Generic[EventT]):
    """Publish/subscribe within one event loop."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription[EventT]] = []

    def subscribe(self, name: str, maxsize: int = 10_000) -> Subscription[EventT]:
        subscription = Subscription(self, name, maxsize)
        self._subscriptions.append(subscription)
        return subscription

    def _remove(self, subscription: Subscription[EventT]) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish(self, event: EventT) -> None:
        for subscription in self._subscriptions:
            subscription._offer(event)
