"""The history database: recorded samples of mapped values in their own SQLite file.

The file (``settings.history_path``) is apart from the model database, so recording never delays
model and value persistence. It runs in WAL mode with ``synchronous=NORMAL``: a committed batch
survives a crash of the hub; a power loss may take the last batches (the model database is the
durable one). All SQLite calls run on one worker thread that owns the connection, never on the
event loop (as ``persistence/sqlite.py`` does).

Layout: ``series`` names each recorded element once (submodel id, idShort path, XSD value type);
``samples`` is clustered by ``(series, source_time, sequence)`` (a ``WITHOUT ROWID`` table), so a
time-range page costs O(log n + page) and a retention purge per series O(log n + removed).
Times are microseconds since 1970 UTC. Values are stored natively when they are numbers or booleans
(so SQLite aggregates them) and in XSD lexical form otherwise. Aggregates are computed in SQL, one
``GROUP BY`` over the interval index ``(source_time - start) / width``.

Left out: PostgreSQL (the database is behind :class:`HistoryDatabase`'s small interface), history
of elements that are not Properties, and modified-value history (samples are never updated).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aas_server.model.events import Quality, QualityReason
from aas_server.persistence.migrations import Migration, Schema, sql_statements
from aas_server.persistence.worker_database import WorkerDatabase, open_private
from aas_server.store.history import (
    Aggregate,
    AggregatePage,
    HistorySample,
    IntervalAggregate,
    RawQuery,
    SampleKey,
    SamplePage,
    from_microseconds,
    interval_starts,
    storable_value,
    to_microseconds,
    typed_value,
    value_type_of,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    submodel_id TEXT NOT NULL,
    id_short_path TEXT NOT NULL,
    value_type TEXT NOT NULL,
    UNIQUE (submodel_id, id_short_path)
);
CREATE TABLE IF NOT EXISTS samples (
    series INTEGER NOT NULL,
    source_time INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    server_time INTEGER NOT NULL,
    value,
    quality TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (series, source_time, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

HISTORY_SCHEMA: Schema[sqlite3.Connection] = Schema(
    "history", (Migration(1, "the history of releases before schema versions", sql_statements(_SCHEMA)),)
)
"""The versions of the history database (``persistence.migrations``); append, never edit, a released one."""

_NUMERIC = "CASE WHEN typeof(value) IN ('integer', 'real') THEN value END"
_USABLE = "quality != 'bad' AND value IS NOT NULL"


@dataclass(slots=True)
class SampleRecord:
    """One sample to record: the element, its ``valueType`` (XSD name) and the change.

    Treat as immutable; not declared frozen because a frozen dataclass costs four times as much to
    construct, and every recorded change creates one.
    """

    submodel_id: str
    id_short_path: str
    value_type: str
    value: Any
    source_time: datetime
    server_time: datetime
    quality: Quality
    reason: QualityReason


_QUALITY_TEXT = {quality: quality.value for quality in Quality}
_REASON_TEXT = {reason: reason.value for reason in QualityReason}


class HistoryDatabase(WorkerDatabase):
    """Recorded samples in SQLite. Use as an async context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._connection: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str], tuple[int, str]] = {}
        """(submodel id, idShort path) → (series id, value type); touched only on the worker thread."""
        self._next_sequence = 0

    def _open(self) -> None:
        # a batch touches one index page per series: keep them cached (64 MiB) instead of re-reading them
        connection = open_private(self.path, HISTORY_SCHEMA, synchronous="NORMAL", pragmas=("cache_size=-65536",))
        self._connection = connection
        self._series = {
            (submodel_id, path): (identifier, value_type)
            for identifier, submodel_id, path, value_type in connection.execute(
                "SELECT id, submodel_id, id_short_path, value_type FROM series"
            )
        }
        row = connection.execute("SELECT value FROM counters WHERE name = 'sequence'").fetchone()
        self._next_sequence = int(row[0]) if row else 0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        database = self._db
        database.execute("BEGIN IMMEDIATE")
        try:
            yield database
        except BaseException:
            database.execute("ROLLBACK")
            raise
        database.execute("COMMIT")

    # --- recording -------------------------------------------------------------------------------

    async def record(self, records: Sequence[SampleRecord]) -> None:
        """Insert samples in one transaction."""
        if records:
            await self._run(self._record, list(records))

    def _record(self, records: list[SampleRecord]) -> None:
        added: list[tuple[str, str]] = []
        sequence = self._next_sequence
        try:
            with self._transaction() as database:
                rows = []
                times: dict[object, int] = {}
                for record in records:
                    key = (record.submodel_id, record.id_short_path)
                    known = self._series.get(key)
                    if known is None or known[1] != record.value_type:
                        (identifier,) = database.execute(
                            "INSERT INTO series (submodel_id, id_short_path, value_type) VALUES (?, ?, ?) "
                            "ON CONFLICT (submodel_id, id_short_path) DO UPDATE SET value_type = excluded.value_type "
                            "RETURNING id",
                            (*key, record.value_type),
                        ).fetchone()
                        self._series[key] = (identifier, record.value_type)
                        added.append(key)
                    sequence += 1
                    rows.append(
                        (
                            self._series[key][0],
                            times.get(record.source_time)
                            or times.setdefault(record.source_time, to_microseconds(record.source_time)),
                            sequence,
                            times.get(record.server_time)
                            or times.setdefault(record.server_time, to_microseconds(record.server_time)),
                            storable_value(record.value),
                            _QUALITY_TEXT[record.quality],
                            _REASON_TEXT[record.reason],
                        )
                    )
                database.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                database.execute(
                    "INSERT INTO counters VALUES ('sequence', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (sequence,),
                )
        except BaseException:
            for key in added:
                self._series.pop(key, None)
            raise
        self._next_sequence = sequence

    async def purge(self, before: datetime) -> int:
        """Delete every sample whose source time is before ``before``; return how many."""
        limit = to_microseconds(before)

        def purge() -> int:
            removed = 0
            with self._transaction() as database:
                for identifier, _ in list(self._series.values()):
                    cursor = database.execute(
                        "DELETE FROM samples WHERE series = ? AND source_time < ?", (identifier, limit)
                    )
                    removed += cursor.rowcount
            return removed

        return await self._run(purge)

    # --- reading ---------------------------------------------------------------------------------

    async def series_value_type(self, submodel_id: str, id_short_path: str) -> str | None:
        """The XSD value type recorded for an element, ``None`` if nothing was recorded for it."""
        return await self._run(lambda: (self._series.get((submodel_id, id_short_path)) or (None, None))[1])

    async def read_raw(self, query: RawQuery) -> SamplePage:
        """See :meth:`aas_server.store.history.HistorySource.read_raw`."""
        low = None if query.start is None else to_microseconds(query.start)
        high = None if query.end is None else to_microseconds(query.end)
        series = (query.submodel_id, query.id_short_path)
        return await self._run(self._read_raw, series, low, high, query.limit, query.after, query.reverse)

    def _read_raw(
        self,
        key: tuple[str, str],
        start: int | None,
        end: int | None,
        limit: int,
        after: SampleKey | None,
        reverse: bool,
    ) -> SamplePage:
        known = self._series.get(key)
        if known is None:
            return SamplePage([])
        identifier, value_type_name = known
        conditions = ["series = ?"]
        parameters: list[Any] = [identifier]
        if reverse:
            if start is not None:
                conditions.append("source_time <= ?")
                parameters.append(start)
            if end is not None:
                conditions.append("source_time > ?")
                parameters.append(end)
            if after is not None:
                conditions.append("(source_time, sequence) < (?, ?)")
                parameters.extend((after.source_time, after.sequence))
            order = "DESC"
        else:
            if start is not None:
                conditions.append("source_time >= ?")
                parameters.append(start)
            if end is not None:
                conditions.append("source_time < ?" if start != end else "source_time <= ?")
                parameters.append(end)
            if after is not None:
                conditions.append("(source_time, sequence) > (?, ?)")
                parameters.extend((after.source_time, after.sequence))
            order = "ASC"
        rows = self._db.execute(
            "SELECT source_time, sequence, server_time, value, quality, reason FROM samples "
            f"WHERE {' AND '.join(conditions)} ORDER BY source_time {order}, sequence {order} LIMIT ?",
            (*parameters, limit + 1),
        ).fetchall()
        value_type = value_type_of(value_type_name)
        samples = [
            HistorySample(
                typed_value(value, value_type),
                from_microseconds(source_time),
                from_microseconds(server_time),
                Quality(quality),
                QualityReason(reason),
                sequence,
            )
            for source_time, sequence, server_time, value, quality, reason in rows[:limit]
        ]
        next_after = samples[-1].key if len(rows) > limit and samples else None
        return SamplePage(samples, next_after)

    async def first_time(self, submodel_id: str, id_short_path: str) -> datetime | None:
        """The source time of the element's oldest sample."""

        def first() -> datetime | None:
            known = self._series.get((submodel_id, id_short_path))
            if known is None:
                return None
            row = self._db.execute("SELECT MIN(source_time) FROM samples WHERE series = ?", (known[0],)).fetchone()
            return None if row[0] is None else from_microseconds(row[0])

        return await self._run(first)

    async def read_aggregates(
        self,
        submodel_id: str,
        id_short_path: str,
        start: datetime,
        end: datetime,
        interval: timedelta,
        aggregates: Sequence[Aggregate],
        *,
        limit: int,
    ) -> AggregatePage:
        """Aggregates of the intervals from ``start`` (at most ``limit`` of them) before ``end``; empty ones too."""
        starts = interval_starts(start, end, interval, limit + 1)
        more = len(starts) > limit
        starts = starts[:limit]
        if not starts:
            return AggregatePage([])
        page_end = min(starts[-1] + interval, end)
        buckets = await self._run(
            self._aggregate,
            (submodel_id, id_short_path),
            to_microseconds(starts[0]),
            to_microseconds(page_end),
            interval // timedelta(microseconds=1),
            frozenset(aggregates),
        )
        intervals: list[IntervalAggregate] = []
        for index, moment in enumerate(starts):
            found = buckets.get(index)
            interval_end = min(moment + interval, end)
            if found is None:
                intervals.append(IntervalAggregate(moment, interval_end, 0))
            else:
                intervals.append(IntervalAggregate(moment, interval_end, *found))
        return AggregatePage(intervals, starts[-1] + interval if more else None)

    def _aggregate(
        self, key: tuple[str, str], start: int, end: int, width: int, wanted: frozenset[Aggregate]
    ) -> dict[int, tuple[Any, ...]]:
        known = self._series.get(key)
        if known is None:
            return {}
        identifier, value_type_name = known
        value_type = value_type_of(value_type_name)
        scope = f"FROM samples WHERE series = ? AND source_time >= ? AND source_time < ? AND {_USABLE}"
        parameters = (start, width, identifier, start, end)
        result: dict[int, list[Any]] = {}
        for bucket, count, minimum, maximum, average in self._db.execute(
            f"SELECT (source_time - ?) / ? AS bucket, COUNT(*), MIN({_NUMERIC}), MAX({_NUMERIC}), AVG({_NUMERIC}) "
            f"{scope} GROUP BY bucket",
            parameters,
        ):
            result[bucket] = [
                count,
                _typed_extreme(minimum, value_type),
                _typed_extreme(maximum, value_type),
                None if average is None else float(average),
                None,
                None,
            ]
        for aggregate, function, position in ((Aggregate.FIRST, "MIN", 4), (Aggregate.LAST, "MAX", 5)):
            if aggregate not in wanted:
                continue
            # SQLite takes the bare column ``value`` from the row holding the MIN/MAX (one such aggregate only).
            for bucket, _, value in self._db.execute(
                f"SELECT (source_time - ?) / ? AS bucket, {function}(source_time), value {scope} GROUP BY bucket",
                parameters,
            ):
                if bucket in result:
                    result[bucket][position] = typed_value(value, value_type)
        return {bucket: tuple(values) for bucket, values in result.items()}

    async def integrity_check(self) -> str:
        return await self._run(lambda: str(self._db.execute("PRAGMA integrity_check").fetchone()[0]))


def _typed_extreme(stored: Any, value_type: Any) -> Any:
    if stored is None:
        return None
    try:
        return typed_value(stored, value_type)
    except (TypeError, ValueError):
        return stored
