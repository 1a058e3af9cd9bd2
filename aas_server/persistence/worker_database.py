"""An SQLite database whose one connection is owned by one worker thread (the model database and the
history database): every SQLite call runs there, never on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aas_server.errors import PersistenceError
from aas_server.persistence.migrations import Schema, check_sqlite, migrate_sqlite
from aas_server.persistence.permissions import private_database

_T = TypeVar("_T")


def open_private(
    path: Path, schema: Schema[sqlite3.Connection], *, synchronous: str, pragmas: Sequence[str] = ()
) -> sqlite3.Connection:
    """Open the SQLite database ``path`` (created ``0600``) for the one thread that will use it.

    The schema version is checked first (``DatabaseSchemaError`` for a file newer than the code, nothing
    written); then autocommit mode (transactions are explicit), WAL, ``synchronous`` (``FULL``,
    ``NORMAL``), the further ``pragmas`` (``foreign_keys=ON``) and the ``schema`` migrations the file
    lacks, in one transaction (``migrations.migrate_sqlite``).
    """
    private_database(path)
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        check_sqlite(connection, path, schema)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        for pragma in pragmas:
            connection.execute(f"PRAGMA {pragma}")
        migrate_sqlite(connection, path, schema)
    except BaseException:
        connection.close()
        raise
    return connection


class WorkerDatabase:
    """``async with`` runs ``_open`` on the worker thread, and at the end ``_close`` and stops the thread.

    A subclass sets ``path``, ``_executor`` (one worker) and ``_connection`` in its ``__init__`` and
    opens the connection in ``_open``.
    """

    path: Path
    _executor: ThreadPoolExecutor
    _connection: sqlite3.Connection | None

    async def __aenter__(self) -> Self:
        await self._run(self._open)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the worker thread; an SQLite error becomes ``_failure(error)``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as error:
            raise self._failure(error) from error

    def _failure(self, error: sqlite3.Error) -> PersistenceError:
        return PersistenceError(f"{self.path}: {error}")

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise PersistenceError(f"{self.path}: database is not open")
        return self._connection
