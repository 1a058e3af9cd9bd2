"""Predictive maintenance states kept across restarts: one row per detector or wear signal.

The file (``settings.predictive_path``, ``<data_dir>/predictive.sqlite``, mode ``0600``) holds each
anomaly detector's learnt state (``analytics.predictive.to_bytes``, read back through its restricted
unpickler) and each RUL estimator's history (JSON), keyed by kind and name. All SQLite calls run on
one worker thread that owns the connection, never on the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from aas_server.errors import PersistenceError
from aas_server.persistence.permissions import private_database

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictive_states (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
"""


class PredictiveDatabase:
    """The kept detector and RUL states. ``async with PredictiveDatabase(path)`` opens and closes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predictive-db")
        self._connection: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            connection = self._connection
            if connection is None:
                raise PersistenceError(f"predictive database {self.path} is closed")
            try:
                return work(connection)
            except sqlite3.Error as error:
                raise PersistenceError(f"predictive database {self.path}: {error}") from error

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def __aenter__(self) -> Self:
        def open_database() -> sqlite3.Connection:
            private_database(self.path)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            return connection

        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, open_database)
        except sqlite3.Error as error:
            self._executor.shutdown(wait=False)
            raise PersistenceError(f"cannot open the predictive database {self.path}: {error}") from error
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        def close(connection: sqlite3.Connection) -> None:
            connection.close()

        if self._connection is not None:
            await self._run(close)
            self._connection = None
        self._executor.shutdown(wait=True)

    async def load(self) -> dict[tuple[str, str], bytes]:
        """Every kept state by ``(kind, name)``."""

        def read(connection: sqlite3.Connection) -> dict[tuple[str, str], bytes]:
            rows = connection.execute("SELECT kind, name, state FROM predictive_states").fetchall()
            return {(str(kind), str(name)): bytes(state) for kind, name, state in rows}

        return await self._run(read)

    async def save(self, states: dict[tuple[str, str], bytes]) -> None:
        """Write these states in one transaction."""
        rows = [(kind, name, state) for (kind, name), state in states.items()]

        def write(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(
                    "INSERT INTO predictive_states (kind, name, state) VALUES (?, ?, ?)"
                    " ON CONFLICT (kind, name) DO UPDATE SET state = excluded.state",
                    rows,
                )

        await self._run(write)
