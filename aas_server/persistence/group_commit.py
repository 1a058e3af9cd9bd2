"""Group commit: durable writes that arrive while a commit is in flight share the next transaction and its fsync.

A writer hands over a *unit* of work (a function that writes its rows in a given connection and returns
what to do once they are committed) and awaits its future. One committer, on the repository's database
thread, drains everything queued, runs one ``BEGIN IMMEDIATE … COMMIT`` with all units and
then resolves the futures, in the order the units were queued, in one event-loop callback.
In WAL mode with ``synchronous=FULL`` one COMMIT is one fsync of the WAL, so N concurrent writers pay for
one fsync instead of N, and each is still answered only after its rows are on disk.

Failures stay with their unit: when any unit raises, or the COMMIT fails (``SQLITE_FULL``,
``SQLITE_IOERR``), the whole batch is rolled back and every unit of it is run again alone, in a
transaction of its own, so only the unit at fault fails (its writer gets its error) and nothing is
half-written. (Savepoints per unit would avoid the second run, but cost three statements per unit,
each a release and re-acquisition of the GIL by the database thread, on the path every write takes;
errors are rare.)

While a batch commits the next one gathers; a batch is not delayed to wait for more writers, so a lone
writer pays no latency. After each batch the committer yields the thread to other queued database jobs
(reads, outbox) before it takes the next batch.

``enabled=False`` (env ``AAS_GROUP_COMMIT=0``) runs each unit in a transaction of its own: the behaviour
before group commit, kept for comparison in ``benchmarks/writes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

Settle = Callable[[], None]
"""Run on the database thread after the unit's rows were committed (in-memory accounting)."""

Unit = Callable[[sqlite3.Connection], Settle | None]
"""Writes a unit's rows in the open transaction; may return what to do once they are committed."""

Transaction = Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]]


def enabled_by_default() -> bool:
    """Group commit is on unless env ``AAS_GROUP_COMMIT`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("AAS_GROUP_COMMIT", "1").strip().lower() not in {"0", "false", "no", "off"}


@dataclass(slots=True)
class _Pending:
    unit: Unit
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    settle: Settle | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(slots=True)
class GroupCommitStatistics:
    """Counters for benchmarks and tests (read anywhere, written on the database thread)."""

    commits: int = 0
    units: int = 0
    largest_batch: int = 0
    retried_alone: int = 0


class GroupCommitter:
    """Queue of durable units drained in shared transactions on the repository's single database thread."""

    def __init__(self, executor: Executor, transaction: Transaction, *, enabled: bool | None = None) -> None:
        self._executor = executor
        self._transaction = transaction
        self.enabled = enabled_by_default() if enabled is None else enabled
        self._queue: list[_Pending] = []
        self._guard = threading.Lock()
        self._scheduled = False
        self.statistics = GroupCommitStatistics()

    async def submit(self, unit: Unit) -> None:
        """Queue ``unit`` and return once its rows are committed durably (or raise its error)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(unit, loop, loop.create_future())
        with self._guard:
            self._queue.append(pending)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._executor.submit(self._drain)
        await pending.future

    def _drain(self) -> None:
        """Commit what is queued now as one batch (database thread); schedule the next batch if more arrived."""
        with self._guard:
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        except BaseException as error:  # pragma: no cover - _commit hands every error to its unit
            for pending in batch:
                if not pending.done:
                    pending.error, pending.done = error, True
            raise
        finally:
            with self._guard:
                more = bool(self._queue)
                self._scheduled = more
            if more:
                # behind any other queued database job: reads and the outbox are not starved by a stream of writes
                self._executor.submit(self._drain)
            self._resolve(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        statistics = self.statistics
        if not self.enabled or len(batch) == 1:
            for pending in batch:
                self._alone(pending)
            return
        try:
            with self._transaction() as database:
                for pending in batch:
                    pending.settle = pending.unit(database)
        except BaseException:  # the batch is rolled back whole: each unit is tried alone, so only a bad one fails
            for pending in batch:
                pending.settle = None
                statistics.retried_alone += 1
                self._alone(pending)
            return
        statistics.commits += 1
        statistics.units += len(batch)
        statistics.largest_batch = max(statistics.largest_batch, len(batch))
        for pending in batch:
            pending.done = True
            self._settle(pending)

    def _alone(self, pending: _Pending) -> None:
        try:
            with self._transaction() as database:
                pending.settle = pending.unit(database)
        except BaseException as error:  # handed to the unit's writer
            pending.error = error
        else:
            self.statistics.commits += 1
            self.statistics.units += 1
            self._settle(pending)
        pending.done = True

    @staticmethod
    def _settle(pending: _Pending) -> None:
        if pending.settle is not None:
            try:
                pending.settle()
            finally:
                pending.settle = None

    @staticmethod
    def _resolve(batch: list[_Pending]) -> None:
        """Resolve the batch's futures in queue order, one callback per loop (writers resume in that order)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for pending in batch:
            by_loop.setdefault(pending.loop, []).append(pending)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_set_results, items)


def _set_results(items: list[_Pending]) -> None:
    for pending in items:
        if pending.future.done():
            continue  # the writer was cancelled
        if pending.error is not None:
            pending.future.set_exception(pending.error)
        else:
            pending.future.set_result(None)
