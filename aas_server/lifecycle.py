"""Start and stop: the one shape of the long-running parts the hub owns (``ARCHITECTURE.md``, house rule 4).

A ``Service`` starts with ``start()`` and stops with ``stop()``; ``async with service:`` does both,
stopping also when the block fails. Connectors, the simulated devices and the event publisher are
services; the hub enters them into its ``AsyncExitStack``.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Self


class Service:
    """A part that runs in the background between ``start()`` and ``stop()``."""

    async def start(self) -> None:
        """Start in the background; do not wait for, nor fail on, a peer that is away."""

    async def stop(self) -> None:
        """End every task the part started and close what it opened."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended; its cancellation is not re-raised here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
