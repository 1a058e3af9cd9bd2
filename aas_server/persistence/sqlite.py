"""Embedded SQLite persistence: the AAS model (one row per identifiable) and the last value of each Property.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a transaction that returned
is on disk, not only in the OS cache; an acknowledged client write survives a crash of the hub or
the machine. Device samples are written in batches (one transaction per batch); client writes
(REST ``PATCH $value``, OPC UA writes) and model changes are journaled *before* they are acknowledged,
those arriving while a commit is in flight sharing the next transaction and its fsync
(``group_commit.GroupCommitter``; env ``AAS_GROUP_COMMIT=0`` gives one transaction each).

The outbox of MQTT change events (``store.outbox``) is a table here too: the journal calls take
the events of a change as ``outbox=`` and insert them in the change's own transaction, so an
acknowledged change implies its event is durable. Events get an ascending sequence that is never
reused (``AUTOINCREMENT``) and are removed once the broker acknowledged them. The outbox holds at
most ``outbox_limit`` events; beyond that new events are dropped (the changes themselves are
still stored), counted in ``outbox_dropped`` and reported as errors.

A full disk (or ``set_size_limit`` reached; SQLite reports both as ``SQLITE_FULL``) fails the change
with ``StorageFullError``: its transaction is rolled back whole, earlier data stays intact, reads go
on, and the next change that fits is stored as usual, without a restart. The first refused change
is logged as an error, the first change stored again as information.

All SQLite calls run on one dedicated worker thread that owns the connection, never on the event
loop. The model is never rewritten as a whole on a change: identifiables are upserted one by one.

Not done here (later issues): PostgreSQL, value history, model-change persistence through REST.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from basyx.aas import model
from basyx.aas.model import datatypes

from aas_server.errors import PersistenceError, StorageFullError
from aas_server.exchange.json_codec import FaithfulJsonDecoder
from aas_server.exchange.roundtrip import DECODE_ERRORS, JsonEncoder, roundtrip_problem
from aas_server.model import paths
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.persistence.group_commit import GroupCommitter, Settle, Unit
from aas_server.persistence.migrations import Migration, Schema, sql_statements
from aas_server.persistence.worker_database import WorkerDatabase, open_private
from aas_server.store.files import Attachment, StoredPackage
from aas_server.store.outbox import OutboundEvent, OutboxOverflow, PendingEvent, pending_event

_LOG = logging.getLogger(__name__)

_LARGEST_PAGE_COUNT = 4_294_967_294
"""SQLite's largest ``max_page_count`` (lifts a size limit)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identifiables (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantined_identifiables (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    document TEXT NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS supplementary_files (
    path TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS packages (
    package_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    aas_ids TEXT NOT NULL,
    content BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS property_values (
    submodel_id TEXT NOT NULL,
    id_short_path TEXT NOT NULL,
    value TEXT,
    source_time TEXT NOT NULL,
    server_time TEXT NOT NULL,
    quality TEXT NOT NULL,
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (submodel_id, id_short_path)
);
CREATE TABLE IF NOT EXISTS outbox (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    sequenced INTEGER NOT NULL
);
"""

MODEL_SCHEMA: Schema[sqlite3.Connection] = Schema(
    "model", (Migration(1, "the model database of releases before schema versions", sql_statements(_SCHEMA)),)
)
"""The versions of the model database (``persistence.migrations``); append, never edit, a released one."""

_KINDS: dict[type[model.Identifiable], str] = {
    model.AssetAdministrationShell: "shell",
    model.Submodel: "submodel",
    model.ConceptDescription: "concept_description",
}


@dataclass(frozen=True, slots=True)
class StoredValue:
    """The last value of a Property as persisted, in XSD lexical form."""

    submodel_id: str
    id_short_path: str
    lexical_value: str | None
    source_time: datetime
    server_time: datetime
    quality: Quality
    reason: QualityReason
    origin: str

    def typed_value(self, value_type: Any) -> Any:
        """The value parsed with the element's current ``valueType``."""
        if self.lexical_value is None:
            return None
        return datatypes.from_xsd(self.lexical_value, value_type)


def _lexical(value: Any) -> str | None:
    return None if value is None else datatypes.xsd_repr(value)


def _documents(
    identifiables: list[model.Identifiable],
) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, str | None]]]:
    """The rows of ``identifiables`` (id, kind, JSON document) and each submodel's Property values as documented.

    The caller keeps the identifiables from changing meanwhile (the store's lock); only values may
    change, each atomically.
    """
    rows = [
        (identifiable.id, _KINDS[type(identifiable)], json.dumps(identifiable, cls=JsonEncoder))
        for identifiable in identifiables
    ]
    documented = {
        identifiable.id: {
            path: _lexical(element.value)
            for path, element in paths.walk(identifiable)
            if isinstance(element, model.Property)
        }
        for identifiable in identifiables
        if isinstance(identifiable, model.Submodel)
    }
    return rows, documented


_UPSERT_FILE = (
    "INSERT INTO supplementary_files VALUES (?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
    "content_type = excluded.content_type, data = excluded.data"
)


def _upsert_package(database: sqlite3.Connection, package: StoredPackage) -> None:
    (position,) = database.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM packages").fetchone()
    database.execute(
        "INSERT INTO packages VALUES (?, ?, ?, ?, ?) ON CONFLICT(package_id) DO UPDATE SET "
        "file_name = excluded.file_name, aas_ids = excluded.aas_ids, content = excluded.content",
        (package.package_id, position, package.file_name, json.dumps(package.aas_ids), package.content),
    )


class SqliteRepository(WorkerDatabase):
    """The hub's embedded database. Use as an async context manager.

    It is also the ``Outbox`` of change events; ``outbox_listener`` (if set) is called on the event
    loop after events were stored.
    """

    def __init__(self, path: Path, *, outbox_limit: int = 1_000_000, group_commit: bool | None = None) -> None:
        self.path = path
        self.outbox_limit = outbox_limit
        self.outbox_listener: Callable[[], None] | None = None
        self._outbox_size = 0
        self._outbox_uncommitted = 0
        """Events inserted in the open transaction (database thread; counted into the size on commit)."""
        self._overflow = OutboxOverflow()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self.committer = GroupCommitter(self._executor, self._transaction, enabled=group_commit)
        """Client writes and model changes share transactions (``group_commit=False`` or env
        ``AAS_GROUP_COMMIT=0``: one transaction each)."""
        self._connection: sqlite3.Connection | None = None
        self._full = False
        """The last change failed for lack of space (read and written on the database thread)."""
        self.quarantined_at_load: list[str] = []
        """Ids of the identifiables the latest ``load_identifiables`` quarantined."""

    def _failure(self, error: sqlite3.Error) -> PersistenceError:
        if error.sqlite_errorcode == sqlite3.SQLITE_FULL:
            return StorageFullError(f"{self.path}: storage full ({error}); the change was not stored (free disk space)")
        return PersistenceError(f"{self.path}: {error}")

    async def _durable(self, unit: Unit) -> None:
        """Run ``unit`` in the next group commit; return once its rows are on disk."""
        try:
            await self.committer.submit(unit)
        except sqlite3.Error as error:
            raise self._failure(error) from error

    def _open(self) -> None:
        connection = open_private(self.path, MODEL_SCHEMA, synchronous="FULL", pragmas=("foreign_keys=ON",))
        (self._outbox_size,) = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self._connection = connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; on any failure (the commit's included) it is rolled back and the error re-raised.

        SQLite may have rolled back already (``SQLITE_FULL``, ``SQLITE_IOERR``): then there is nothing
        to undo, and the original error is kept rather than masked by the failing ``ROLLBACK``.
        """
        database = self._db
        database.execute("BEGIN IMMEDIATE")
        self._outbox_uncommitted = 0
        try:
            yield database
            database.execute("COMMIT")
        except BaseException as error:
            if database.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    database.execute("ROLLBACK")
            if isinstance(error, sqlite3.Error) and error.sqlite_errorcode == sqlite3.SQLITE_FULL:
                self._storage_full(error)
            raise
        if self._full:
            self._full = False
            _LOG.info("database %s stores changes again", self.path)

    def _storage_full(self, error: sqlite3.Error) -> None:
        """Log the first change refused for lack of space (database thread); later ones until recovery are quiet."""
        if not self._full:
            self._full = True
            _LOG.error(
                "database %s is full (%s): changes are refused until disk space is freed (or its size limit "
                "raised); reads go on",
                self.path,
                error,
            )

    async def set_size_limit(self, maximum_bytes: int | None) -> None:
        """Cap the database at about ``maximum_bytes`` (SQLite ``max_page_count``); ``None`` lifts the cap.

        A change that would grow the database beyond the cap fails with ``StorageFullError``, as on a
        full disk. A cap below the current size holds the database at its current size.
        """

        def limit() -> None:
            database = self._db
            if maximum_bytes is None:
                pages = _LARGEST_PAGE_COUNT
            else:
                (page_size,) = database.execute("PRAGMA page_size").fetchone()
                pages = max(1, maximum_bytes // page_size)
            database.execute(f"PRAGMA max_page_count = {int(pages)}")

        await self._run(limit)

    # --- model ---------------------------------------------------------------------------------

    async def has_model(self) -> bool:
        return await self._run(lambda: self._db.execute("SELECT 1 FROM identifiables LIMIT 1").fetchone() is not None)

    async def save_identifiables(
        self, identifiables: Iterable[model.Identifiable], *, outbox: Sequence[OutboundEvent] = ()
    ) -> None:
        """Insert or replace identifiables, keeping the order of first insertion; ``outbox`` events in the same
        transaction.

        A submodel's document carries the current value of each of its Properties, so a stored last
        value that differs from it (the Property was replaced, deleted or re-created since) or whose
        Property is gone is removed in the same transaction: a restart restores the document's value
        and never an older one. Stored values equal to the document's keep their times and quality.
        """
        identifiables = list(identifiables)
        events = list(outbox)

        def save(database: sqlite3.Connection) -> Settle:
            # encoding takes seconds for a submodel of 40,000 elements: on the database thread, off the loop
            rows, documented = _documents(identifiables)
            return self._write_identifiables(database, rows, events, documented)

        await self._durable(save)
        self._outbox_appended(outbox)

    def _write_identifiables(
        self,
        database: sqlite3.Connection,
        rows: list[tuple[str, str, str]],
        events: list[OutboundEvent],
        documented: dict[str, dict[str, str | None]],
        extra: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Settle:
        """Write identifiables (a unit of a transaction); return the accounting to do once committed."""
        position: int | None = None
        for identifier, kind, document in rows:
            # an existing row (the usual case: a change) is updated in place; only a new one needs the next
            # position, which is a scan of the table (there is no index on it)
            if database.execute(
                "UPDATE identifiables SET kind = ?, document = ? WHERE id = ?", (kind, document, identifier)
            ).rowcount:
                continue
            if position is None:
                (position,) = database.execute("SELECT COALESCE(MAX(position), 0) FROM identifiables").fetchone()
            position += 1
            database.execute(
                "INSERT INTO identifiables (id, kind, position, document) VALUES (?, ?, ?, ?)",
                (identifier, kind, position, document),
            )
        for submodel_id, values in documented.items():
            kept = database.execute(
                "SELECT id_short_path, value FROM property_values WHERE submodel_id = ?", (submodel_id,)
            ).fetchall()
            stale = [(submodel_id, path) for path, value in kept if path not in values or values[path] != value]
            if stale:
                database.executemany("DELETE FROM property_values WHERE submodel_id = ? AND id_short_path = ?", stale)
        if extra is not None:
            extra(database)
        stored = self._insert_events(database, events)
        return lambda: self._count_events(stored, len(events))

    async def save_batch(
        self,
        identifiables: Sequence[model.Identifiable],
        *,
        files: Mapping[str, tuple[bytes, str]],
        package: StoredPackage | None,
        outbox: Sequence[OutboundEvent] = (),
    ) -> None:
        """``save_identifiables`` with supplementary files and an uploaded package file, in one transaction.

        The identifiables are written first, then the files, then the package: a failure anywhere
        (a full disk included) rolls all of it back, so an upload or import is stored whole or not at all.
        """
        batch = list(identifiables)
        events = list(outbox)
        file_rows = [(path, content_type, data) for path, (data, content_type) in files.items()]

        def files_and_package(database: sqlite3.Connection) -> None:
            database.executemany(_UPSERT_FILE, file_rows)
            if package is not None:
                _upsert_package(database, package)

        def save(database: sqlite3.Connection) -> Settle:
            rows, documented = _documents(batch)  # on the database thread, off the loop
            return self._write_identifiables(database, rows, events, documented, files_and_package)

        await self._durable(save)
        self._outbox_appended(outbox)

    async def delete_identifiable(self, identifier: str, *, outbox: Sequence[OutboundEvent] = ()) -> None:
        """Delete an identifiable and the values of its Properties; ``outbox`` events in the same transaction."""
        events = list(outbox)

        def delete(database: sqlite3.Connection) -> Settle:
            database.execute("DELETE FROM identifiables WHERE id = ?", (identifier,))
            database.execute("DELETE FROM property_values WHERE submodel_id = ?", (identifier,))
            stored = self._insert_events(database, events)
            return lambda: self._count_events(stored, len(events))

        await self._durable(delete)
        self._outbox_appended(outbox)

    async def load_identifiables(self) -> list[model.Identifiable]:
        """Every stored identifiable, in insertion order, decoded strictly.

        One that does not decode, or does not write and read back as itself, is quarantined: moved
        to the ``quarantined_identifiables`` table with the reason (kept, not deleted), logged as an
        error, and left out; the others are returned, so one bad object never stops a start.
        """
        return await self._run(self._load_identifiables)

    def _load_identifiables(self) -> list[model.Identifiable]:
        rows = self._db.execute("SELECT id, kind, document FROM identifiables ORDER BY position").fetchall()
        result: list[model.Identifiable] = []
        self.quarantined_at_load = []
        for identifier, kind, document in rows:
            problem: str | None
            try:
                identifiable = json.loads(document, cls=FaithfulJsonDecoder)
            except DECODE_ERRORS as error:
                problem = f"does not decode: {str(error).split(' >>> ')[0] or type(error).__name__}"
            else:
                if not isinstance(identifiable, model.Identifiable):
                    problem = f"decodes as a {type(identifiable).__name__}, not an identifiable"
                else:
                    problem = roundtrip_problem(identifiable)
            if problem is None:
                result.append(identifiable)
                continue
            with self._transaction() as database:
                database.execute(
                    "INSERT INTO quarantined_identifiables (id, kind, document, reason, quarantined_at) "
                    "VALUES (?, ?, ?, ?, datetime('now')) ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, "
                    "document = excluded.document, reason = excluded.reason, quarantined_at = excluded.quarantined_at",
                    (identifier, kind, document, problem),
                )
                database.execute("DELETE FROM identifiables WHERE id = ?", (identifier,))
            self.quarantined_at_load.append(identifier)
            _LOG.error(
                "stored %s %r %s; quarantined (kept in table quarantined_identifiables of %s), the rest is served",
                kind,
                identifier,
                problem,
                self.path,
            )
        return result

    async def quarantined_identifiables(self) -> list[tuple[str, str, str]]:
        """``(id, kind, reason)`` of every identifiable set aside at a load, oldest first."""
        rows: list[tuple[str, str, str]] = await self._run(
            lambda: self._db.execute(
                "SELECT id, kind, reason FROM quarantined_identifiables ORDER BY quarantined_at, id"
            ).fetchall()
        )
        return rows

    # --- supplementary files (AASX parts named by File elements and thumbnails) ----------------

    async def save_files(self, files: dict[str, tuple[bytes, str]]) -> None:
        """Insert or replace files by their package path (``/aasx/files/logo.png``)."""
        rows = [(path, content_type, data) for path, (data, content_type) in files.items()]
        if rows:
            await self._write(lambda database: database.executemany(_UPSERT_FILE, rows))

    async def _write(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """``work`` in one write transaction of its own, on the database thread."""

        def write() -> None:
            with self._transaction() as database:
                work(database)

        await self._run(write)

    async def delete_file(self, path: str) -> None:
        await self._write(lambda database: database.execute("DELETE FROM supplementary_files WHERE path = ?", (path,)))

    async def load_files(self) -> dict[str, tuple[bytes, str]]:
        rows = await self._run(
            lambda: self._db.execute("SELECT path, content_type, data FROM supplementary_files").fetchall()
        )
        return {path: (bytes(data), content_type) for path, content_type, data in rows}

    async def load_file(self, path: str) -> tuple[bytes, str] | None:
        row = await self._run(
            lambda: self._db.execute(
                "SELECT data, content_type FROM supplementary_files WHERE path = ?", (path,)
            ).fetchone()
        )
        return None if row is None else (bytes(row[0]), str(row[1]))

    # --- uploaded packages ---------------------------------------------------------------------

    async def save_package(self, package: StoredPackage) -> None:
        await self._write(lambda database: _upsert_package(database, package))

    async def delete_package(self, package_id: str) -> None:
        await self._write(lambda database: database.execute("DELETE FROM packages WHERE package_id = ?", (package_id,)))

    async def load_packages(self, package_id: str | None = None) -> list[StoredPackage]:
        query = "SELECT package_id, file_name, content, aas_ids FROM packages"
        parameters: tuple[str, ...] = ()
        if package_id is not None:
            query, parameters = query + " WHERE package_id = ?", (package_id,)
        rows = await self._run(lambda: self._db.execute(query + " ORDER BY position", parameters).fetchall())
        return [
            StoredPackage(identifier, file_name, bytes(content), tuple(json.loads(aas_ids)))
            for identifier, file_name, content, aas_ids in rows
        ]

    # --- values --------------------------------------------------------------------------------

    async def persist_values(self, changes: Sequence[ValueChanged], *, outbox: Sequence[OutboundEvent] = ()) -> None:
        """Upsert the last value of each changed Property in one durable transaction, with the ``outbox`` events."""
        if not changes and not outbox:
            return
        batch = list(changes)
        events = list(outbox)

        def persist(database: sqlite3.Connection) -> Settle:
            # the lexical forms are made on the database thread, off the loop
            rows = [
                (
                    change.submodel_id,
                    change.id_short_path,
                    _lexical(change.value),
                    change.source_time.isoformat(),
                    change.server_time.isoformat(),
                    change.quality.value,
                    change.reason.value,
                    change.origin,
                )
                for change in batch
            ]
            database.executemany(
                "INSERT INTO property_values VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(submodel_id, id_short_path) DO UPDATE SET "
                "value = COALESCE(excluded.value, property_values.value), source_time = excluded.source_time, "
                "server_time = excluded.server_time, quality = excluded.quality, reason = excluded.reason, "
                "origin = excluded.origin",
                rows,
            )
            stored = self._insert_events(database, events)
            return lambda: self._count_events(stored, len(events))

        await self._durable(persist)
        self._outbox_appended(outbox)

    async def load_values(self) -> list[StoredValue]:
        rows = await self._run(lambda: self._db.execute("SELECT * FROM property_values").fetchall())
        return [
            StoredValue(
                submodel_id,
                path,
                value,
                datetime.fromisoformat(source_time),
                datetime.fromisoformat(server_time),
                Quality(quality),
                QualityReason(reason),
                origin,
            )
            for submodel_id, path, value, source_time, server_time, quality, reason, origin in rows
        ]

    # --- outbox of change events (store.outbox.Outbox) -----------------------------------------
    #
    # ``_outbox_size`` is read and written on the database thread only (reads elsewhere are for display).

    def _insert_events(self, database: sqlite3.Connection, events: list[OutboundEvent]) -> int:
        """Insert as many of ``events`` as fit below the limit; return how many (inside a transaction)."""
        if not events:
            return 0
        room = max(0, self.outbox_limit - self._outbox_size - self._outbox_uncommitted)
        taken = events[:room]
        database.executemany(
            "INSERT INTO outbox (topic, payload, sequenced) VALUES (?, ?, ?)",
            [(event.topic, event.payload, int(event.sequenced)) for event in taken],
        )
        self._outbox_uncommitted += len(taken)
        return len(taken)

    def _count_events(self, stored: int, offered: int) -> None:
        """After the commit: account for stored and dropped events (database thread)."""
        self._outbox_size += stored
        if stored < offered:
            self._overflow.drop(offered - stored, self.outbox_limit)
        elif stored:
            self._overflow.accepted()

    def _outbox_appended(self, events: Sequence[OutboundEvent]) -> None:
        if events and self.outbox_listener is not None:
            self.outbox_listener()

    @property
    def outbox_size(self) -> int:
        """Events in the outbox (stored, not yet removed)."""
        return self._outbox_size

    @property
    def outbox_dropped(self) -> int:
        """Events dropped since the repository was opened because the outbox held ``outbox_limit`` events."""
        return self._overflow.dropped

    async def outbox_append(self, events: Sequence[OutboundEvent]) -> None:
        """Store events in one durable transaction (those beyond ``outbox_limit`` are dropped and counted)."""
        if not events:
            return
        batch = list(events)

        def append() -> None:
            with self._transaction() as database:
                stored = self._insert_events(database, batch)
            self._count_events(stored, len(batch))

        await self._run(append)
        self._outbox_appended(batch)

    async def outbox_read(self, after: int, limit: int) -> list[PendingEvent]:
        """Up to ``limit`` events with a sequence above ``after``, in sequence order."""
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT sequence, topic, payload, sequenced FROM outbox WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after, limit),
            ).fetchall()
        )
        return [
            pending_event(sequence, topic, bytes(payload), bool(sequenced))
            for sequence, topic, payload, sequenced in rows
        ]

    async def outbox_remove(self, sequences: Sequence[int]) -> None:
        """Remove delivered events (one transaction).

        The commit is not waited for on disk (``synchronous=NORMAL``; the next full commit syncs
        it): a removal lost to a power failure only means the event is published once more.
        """
        if not sequences:
            return
        parameters = [(sequence,) for sequence in sequences]

        def remove() -> None:
            database = self._db
            database.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction():
                    before = database.total_changes
                    database.executemany("DELETE FROM outbox WHERE sequence = ?", parameters)
                    removed = database.total_changes - before
            finally:
                database.execute("PRAGMA synchronous=FULL")
            self._outbox_size -= removed

        await self._run(remove)

    async def integrity_check(self) -> str:
        return await self._run(lambda: str(self._db.execute("PRAGMA integrity_check").fetchone()[0]))


class SqliteAttachmentStore:
    """The REST API's ``AttachmentStore`` on the hub's database (the supplementary files table)."""

    def __init__(self, repository: SqliteRepository) -> None:
        self._repository = repository
        self.journal = repository
        """The journal it stores in: a ``TwinStore`` with the same journal stores uploads whole (``save_batch``)."""

    async def get(self, path: str) -> Attachment | None:
        found = await self._repository.load_file(path)
        return None if found is None else Attachment(found[0], found[1])

    async def put(self, path: str, attachment: Attachment) -> None:
        await self._repository.save_files({path: (attachment.content, attachment.content_type)})

    async def delete(self, path: str) -> None:
        await self._repository.delete_file(path)


class SqlitePackageStore:
    """The REST API's ``PackageStore`` on the hub's database: uploaded package files as they came."""

    def __init__(self, repository: SqliteRepository) -> None:
        self._repository = repository
        self.journal = repository
        """The journal it stores in (see ``SqliteAttachmentStore.journal``)."""

    async def packages(self) -> list[StoredPackage]:
        return await self._repository.load_packages()

    async def get(self, package_id: str) -> StoredPackage | None:
        found = await self._repository.load_packages(package_id)
        return found[0] if found else None

    async def put(self, package: StoredPackage) -> None:
        await self._repository.save_package(package)

    async def delete(self, package_id: str) -> None:
        await self._repository.delete_package(package_id)
