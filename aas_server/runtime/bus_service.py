"""The shape of the hub's services that follow the store's change bus (alarms, KPIs, predictive
maintenance, roll-ups, history): one subscription and the tasks reading it, owned and ended together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aas_server.lifecycle import Service
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import StoreEvent


class BusService(Service):
    """A service whose ``start()`` subscribes to the change bus and starts tasks of its own.

    ``stop()`` cancels the tasks, waits until each has ended, and closes the subscription.
    """

    _subscription: Subscription[StoreEvent] | None = None
    _tasks: Sequence[asyncio.Task[None]] = ()

    async def stop(self) -> None:
        await self._end_tasks()
        self._close_subscription()

    async def _end_tasks(self) -> None:
        tasks, self._tasks = self._tasks, ()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _close_subscription(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
