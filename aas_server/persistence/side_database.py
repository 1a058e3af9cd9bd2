"""A small SQLite file of its own beside the model database, owned by one worker thread.

The alarm and predictive-maintenance states each live in such a file (mode ``0600``, WAL,
``synchronous=FULL``); every SQLite call runs on the one thread that owns the connection, never on
the event loop, and SQLite errors become ``PersistenceError`` naming the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from aas_server.errors import PersistenceError
from aas_server.persistence.migrations import Schema
from aas_server.persistence.worker_database import open_private

_T = TypeVar("_T")


class SideDatabase:
    """``async with`` opens the file (migrating it to ``schema``) and closes it; ``_run`` calls work on its thread."""

    schema: ClassVar[Schema[sqlite3.Connection]]
    label: ClassVar[str]
    """What the file holds, for messages and the thread name: ``alarm``, ``predictive``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.label}-db")
        self._connection: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            connection = self._connection
            if connection is None:
                raise PersistenceError(f"{self.label} database {self.path} is closed")
            try:
                return work(connection)
            except sqlite3.Error as error:
                raise PersistenceError(f"{self.label} database {self.path}: {error}") from error

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _upsert(self, table: str, keys: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (the ``keys`` columns, then ``state``) into ``table``, replacing the ``state`` of a
        row with the same keys, in one durable transaction."""
        columns = (*keys, "state")
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET state = excluded.state"
        )

        def write(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(statement, rows)

        await self._run(write)

    async def __aenter__(self) -> Self:
        def open_database() -> sqlite3.Connection:
            return open_private(self.path, self.schema, synchronous="FULL")

        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, open_database)
        except sqlite3.Error as error:
            self._executor.shutdown(wait=False)
            raise PersistenceError(f"cannot open the {self.label} database {self.path}: {error}") from error
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
