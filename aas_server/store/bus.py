"""The change bus: bounded fan-out of events from the store to its views.

Publishing never blocks the publisher. Each subscriber has its own bounded queue; a subscriber
that falls behind loses its oldest events (counted in ``dropped`` and logged once per episode)
instead of slowing the store or the other subscribers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

_LOG = logging.getLogger(__name__)

EventT = TypeVar("EventT")


class Subscription(Generic[EventT]):
    """One subscriber's queue. Iterate it (``async for``) or call ``get``; ``close`` to leave.

    A ``deque`` with one waiter future rather than an ``asyncio.Queue``: offering an event is on
    every device sample's path, and this costs a quarter of ``Queue.put_nowait`` (no waiter
    bookkeeping per item, no ``full()`` calls).
    """

    def __init__(self, bus: ChangeBus[EventT], name: str, maxsize: int) -> None:
        self._bus = bus
        self.name = name
        self.maxsize = maxsize
        self._events: collections.deque[EventT] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self._overflowing = False
        self._plain_below = maxsize
        """Below this many queued events an offer is a plain append (``ChangeBus.publish``); -1 while overflowing."""

    def _offer(self, event: EventT) -> None:
        events = self._events
        if len(events) >= self.maxsize:
            events.popleft()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                self._plain_below = -1
                _LOG.warning("subscriber %s falls behind: dropping its oldest events", self.name)
        elif self._overflowing and len(events) < self.maxsize // 2:
            self._overflowing = False
            self._plain_below = self.maxsize
            _LOG.info("subscriber %s caught up (%d events dropped so far)", self.name, self.dropped)
        events.append(event)
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def qsize(self) -> int:
        """Events queued now."""
        return len(self._events)

    async def get(self) -> EventT:
        while not self._events:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        return self._events.popleft()

    def get_nowait_all(self) -> list[EventT]:
        """Take every event queued right now without waiting."""
        events = list(self._events)
        self._events.clear()
        return events

    def close(self) -> None:
        self._bus._remove(self)

    def __aiter__(self) -> AsyncIterator[EventT]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[EventT]:
        while True:
            yield await self.get()


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
            # ``Subscription._offer`` inlined for the common case (every device sample passes here)
            events = subscription._events
            if len(events) < subscription._plain_below:
                events.append(event)
                if subscription._waiter is not None:
                    subscription._wake()
            else:
                subscription._offer(event)
