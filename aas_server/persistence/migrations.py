"""Versioned schema migrations, applied when a database is opened.

Each database declares a ``Schema``: its ordered ``Migration`` list, version 1 being the schema the
hub used before versions were recorded. Opening a file applies the migrations it lacks in one
transaction and records the version reached; a file whose version is newer than the code knows is
refused (``DatabaseSchemaError``) before anything in it is written.

Where the version lives: SQLite's ``PRAGMA user_version``, an integer in the database header. It is
written in the same transaction as the migrations (it rolls back with them), costs no table that a
pre-versioning file would lack, and reads without parsing. PostgreSQL has no such header; its back end
keeps the same ``Schema`` form (a list of its own dialect's statements) and records the version in a
``schema_version`` table, using ``pending`` for the decision.

A file with version 0 is either new (no tables) or from a release before versioning: it holds some
of the tables of version 1, whose statements (``CREATE ... IF NOT EXISTS``) then add only what is
missing, so the file is stamped, not recreated. A version-0 file holding only tables the hub does not
know is another program's database and is refused.

Why not alembic or yoyo: alembic builds on SQLAlchemy, which the hub does not use, and yoyo keeps
migrations as SQL files with its own lock and log tables; the hub's needs (an ordered list, one
transaction, refuse newer) are these few lines, shared by four SQLite files and the PostgreSQL back end.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from aas_server.errors import DatabaseSchemaError, PersistenceError

_LOG = logging.getLogger(__name__)

ConnectionT = TypeVar("ConnectionT")

_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", re.IGNORECASE)


def sql_statements(script: str) -> tuple[str, ...]:
    """The statements of ``script`` (separated by ``;``; none may contain one in a literal)."""
    return tuple(statement.strip() for statement in script.split(";") if statement.strip())


@dataclass(frozen=True, slots=True)
class Migration(Generic[ConnectionT]):
    """One step from ``version - 1`` to ``version``: its SQL ``statements``, then ``step`` (data changes that
    SQL alone cannot make) on the same connection, inside the migration transaction."""

    version: int
    description: str
    statements: tuple[str, ...] = ()
    step: Callable[[ConnectionT], None] | None = None


@dataclass(frozen=True, slots=True)
class Schema(Generic[ConnectionT]):
    """The ordered migrations of one database (versions 1, 2, ... without gaps)."""

    label: str
    """What the database holds, for messages: ``model``, ``history``, ``alarm``, ``predictive``."""
    migrations: tuple[Migration[ConnectionT], ...]
    baseline_tables: frozenset[str] = field(init=False)
    """The tables version 1 creates: a version-0 file holding any of them is a pre-versioning hub file."""

    def __post_init__(self) -> None:
        versions = [migration.version for migration in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.label} schema: migration versions must be 1, 2, ... in order, not {versions}")
        tables = frozenset(_CREATE_TABLE.findall(" ".join(self.migrations[0].statements)))
        object.__setattr__(self, "baseline_tables", tables)

    @property
    def latest(self) -> int:
        """The version this code creates and understands at most."""
        return self.migrations[-1].version


def pending(schema: Schema[ConnectionT], current: int, location: str) -> tuple[Migration[ConnectionT], ...]:
    """The migrations taking a database at version ``current`` to ``schema.latest``.

    ``DatabaseSchemaError`` naming ``location`` if ``current`` is newer than the code knows.
    """
    if current > schema.latest:
        raise DatabaseSchemaError(
            f"the {schema.label} database has schema version {current}, newer than the highest this hub knows "
            f"({schema.latest}); it was written by a newer release. Run that release, or restore a backup made "
            "for this one; the file was not changed",
            location,
        )
    return schema.migrations[current:]


def _user_version(connection: sqlite3.Connection) -> int:
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    return int(version)


def _tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return {str(name) for (name,) in rows}


def check_sqlite(connection: sqlite3.Connection, path: Path, schema: Schema[sqlite3.Connection]) -> int:
    """The schema version of the open SQLite file ``path``, read without writing anything.

    ``DatabaseSchemaError`` if the version is newer than ``schema`` knows, or if a version-0 file holds
    tables but none of the hub's (another program's database).
    """
    current = _user_version(connection)
    pending(schema, current, str(path))
    if current == 0:
        tables = _tables(connection)
        if tables and not tables & schema.baseline_tables:
            raise DatabaseSchemaError(
                f"not a {schema.label} database of the hub: it holds the tables {', '.join(sorted(tables))} and "
                f"none of {', '.join(sorted(schema.baseline_tables))}; the file was not changed",
                str(path),
            )
    return current


def migrate_sqlite(connection: sqlite3.Connection, path: Path, schema: Schema[sqlite3.Connection]) -> int:
    """Bring the SQLite file ``path`` to ``schema.latest`` in one transaction; return the version it had.

    The connection is in autocommit mode (``isolation_level=None``). The version is read again under
    the write lock, so two processes opening one file migrate it once. Any failure rolls the whole
    transaction back (the file keeps its earlier version and content) and is raised as
    ``PersistenceError`` naming the file and the migration; a newer version as ``DatabaseSchemaError``.
    """
    before = check_sqlite(connection, path, schema)
    if before == schema.latest:
        return before
    connection.execute("BEGIN IMMEDIATE")
    migration: Migration[sqlite3.Connection] | None = None
    try:
        current = _user_version(connection)
        stamped = current == 0 and bool(_tables(connection) & schema.baseline_tables)
        for migration in pending(schema, current, str(path)):
            for statement in migration.statements:
                connection.execute(statement)
            if migration.step is not None:
                migration.step(connection)
        connection.execute(f"PRAGMA user_version = {schema.latest:d}")
        connection.execute("COMMIT")
    except BaseException as error:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (SQLITE_FULL)
                connection.execute("ROLLBACK")
        if migration is None or isinstance(error, DatabaseSchemaError | KeyboardInterrupt | SystemExit):
            raise
        raise PersistenceError(
            f"{path}: migrating the {schema.label} database to schema version {migration.version} "
            f"({migration.description}) failed: {error}; nothing was changed, the file stays at version {before}"
        ) from error
    if stamped:
        _LOG.info("%s: %s database from before schema versions, recognised as version 1", path, schema.label)
    if (current > 0 or stamped) and schema.latest > max(current, 1):
        _LOG.info(
            "%s: %s database migrated from schema version %d to %d", path, schema.label, max(current, 1), schema.latest
        )
    return current
