"""Alarm states kept across restarts: one row per alarm in a small SQLite file of its own.

The file (``settings.alarms_path``, ``<data_dir>/alarms.sqlite``, mode ``0600``) is apart from the
model database (whose module others change) and from the history. Each row holds an alarm's
``Alarm.to_dict()`` as JSON, written (upsert) in its own transaction after every transition, with
``synchronous=FULL``: when an operator's acknowledge is answered, it is on disk. All SQLite calls run
on one worker thread that owns the connection, never on the event loop.

Left out: history of transitions (the audit log keeps them) and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson

from aas_server.errors import PersistenceError
from aas_server.persistence.permissions import private_database

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL
) WITHOUT ROWID;
"""


class AlarmDatabase:
    """The kept alarm states. ``async with AlarmDatabase(path)`` opens and closes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alarms-db")
        self._connection: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            connection = self._connection
            if connection is None:
                raise PersistenceError(f"alarm database {self.path} is closed")
            try:
                return work(connection)
            except sqlite3.Error as error:
                raise PersistenceError(f"alarm database {self.path}: {error}") from error

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def __aenter__(self) -> Self:
        def open_database() -> sqlite3.Connection:
            private_database(self.path)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
            return connection

        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, open_database)
        except sqlite3.Error as error:
            self._executor.shutdown(wait=False)
            raise PersistenceError(f"cannot open the alarm database {self.path}: {error}") from error
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

    async def load(self) -> list[dict[str, Any]]:
        """Every kept alarm state (``Alarm.to_dict()``), rows that are not JSON objects left out."""

        def read(connection: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = connection.execute("SELECT state FROM alarms ORDER BY name").fetchall()
            states: list[dict[str, Any]] = []
            for (text,) in rows:
                try:
                    state = orjson.loads(text)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(state, dict):
                    states.append(state)
            return states

        return await self._run(read)

    async def save(self, states: list[dict[str, Any]]) -> None:
        """Write these alarm states (each with its ``name``) in one durable transaction."""
        rows = [(str(state["name"]), orjson.dumps(state).decode()) for state in states]

        def write(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(
                    "INSERT INTO alarms (name, state) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET state = excluded.state",
                    rows,
                )

        await self._run(write)
