"""Versioned schema migrations of the hub's SQLite files (``persistence.migrations``).

Real files throughout: a new file gets the latest version; a file written by the releases before
versions were recorded (built here with their exact ``CREATE`` statements) is recognised and stamped
without losing a row; a file newer than the code is refused, by the hub and its commands too, and left
byte-identical; a migration that fails leaves the file as it was.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from basyx.aas import model

from aas_server.cli import EXIT_INVALID, main
from aas_server.errors import DatabaseSchemaError, PersistenceError
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.persistence.alarms import ALARM_SCHEMA, AlarmDatabase
from aas_server.persistence.history import HISTORY_SCHEMA, HistoryDatabase, SampleRecord
from aas_server.persistence.migrations import Migration, Schema, sql_statements
from aas_server.persistence.predictive import PREDICTIVE_SCHEMA, PredictiveDatabase
from aas_server.persistence.sqlite import MODEL_SCHEMA, SqliteRepository
from aas_server.persistence.worker_database import open_private
from aas_server.runtime.demo_day import DEMO_KPI_FILE
from aas_server.store.outbox import OutboundEvent

# The exact CREATE statements of the releases before schema versions (aas_server/persistence/*.py),
# kept verbatim so that the files those releases left can be rebuilt here.
RELEASE_0_MODEL = """
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
RELEASE_0_HISTORY = """
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
RELEASE_0_ALARM = """
CREATE TABLE IF NOT EXISTS alarms (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL
) WITHOUT ROWID;
"""
RELEASE_0_PREDICTIVE = """
CREATE TABLE IF NOT EXISTS predictive_states (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
"""

SUBMODEL = "urn:example:migrations:submodel"
TIME = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


async def _fill_model(path: Path) -> None:
    submodel = model.Submodel(
        SUBMODEL, id_short="Line", submodel_element=[model.Property("Speed", model.datatypes.Double, value=1.5)]
    )
    async with SqliteRepository(path) as repository:
        await repository.save_identifiables([submodel])
        await repository.persist_values(
            [ValueChanged(SUBMODEL, "Speed", 2.5, TIME, Quality.GOOD, QualityReason.NONE)],
            outbox=[OutboundEvent("hub/line/speed", b'{"value": 2.5}', sequenced=True)],
        )
        await repository.save_files({"/aasx/manual.pdf": (b"%PDF manual", "application/pdf")})


async def _fill_history(path: Path) -> None:
    async with HistoryDatabase(path) as database:
        await database.record(
            [
                SampleRecord(SUBMODEL, "Speed", "xs:double", 1.0 + index, TIME, TIME, Quality.GOOD, QualityReason.NONE)
                for index in range(3)
            ]
        )


async def _fill_alarms(path: Path) -> None:
    async with AlarmDatabase(path) as database:
        await database.save([{"name": "high-temperature", "state": "active_unacknowledged"}])


async def _fill_predictive(path: Path) -> None:
    async with PredictiveDatabase(path) as database:
        await database.save({("detector", "spindle"): b"\x80\x05learnt", ("rul", "bearing"): b"[1, 2]"})


@dataclass(frozen=True)
class Kind:
    name: str
    schema: Schema[sqlite3.Connection]
    release_0: str
    opener: Callable[[Path], AbstractAsyncContextManager[Any]]
    fill: Callable[[Path], Coroutine[Any, Any, None]]


KINDS = [
    Kind("model", MODEL_SCHEMA, RELEASE_0_MODEL, SqliteRepository, _fill_model),
    Kind("history", HISTORY_SCHEMA, RELEASE_0_HISTORY, HistoryDatabase, _fill_history),
    Kind("alarm", ALARM_SCHEMA, RELEASE_0_ALARM, AlarmDatabase, _fill_alarms),
    Kind("predictive", PREDICTIVE_SCHEMA, RELEASE_0_PREDICTIVE, PredictiveDatabase, _fill_predictive),
]
BY_KIND = pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])


def _release_0_file(path: Path, script: str) -> None:
    """A file as the releases before versions opened it: WAL, then their schema script."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(script)
    connection.close()


def _user_version(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        return int(version)
    finally:
        connection.close()


def _contents(path: Path) -> dict[str, Any]:
    """Every table's definition and rows (sorted), the way a user's data would be compared."""
    connection = sqlite3.connect(path)
    try:
        tables = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        return {
            name: (sql, sorted(connection.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr))
            for name, sql in tables
        }
    finally:
        connection.close()


def _set_version(path: Path, version: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA user_version = {version:d}")
    connection.close()


@BY_KIND
def test_a_new_file_gets_the_latest_version_and_the_schema_of_release_0(kind: Kind, tmp_path: Path) -> None:
    fresh, old = tmp_path / "fresh.sqlite", tmp_path / "old.sqlite"

    async def open_fresh() -> None:
        async with kind.opener(fresh):
            pass

    asyncio.run(open_fresh())
    _release_0_file(old, kind.release_0)
    assert _user_version(fresh) == kind.schema.latest == 1
    assert _contents(fresh) == _contents(old), "version 1 must be exactly the schema earlier releases created"


@BY_KIND
def test_a_file_from_before_versions_is_stamped_without_losing_a_row(kind: Kind, tmp_path: Path) -> None:
    scratch, old = tmp_path / "scratch.sqlite", tmp_path / "old.sqlite"
    asyncio.run(kind.fill(scratch))  # rows exactly as the code writes them
    _release_0_file(old, kind.release_0)
    connection = sqlite3.connect(old, isolation_level=None)
    connection.execute("ATTACH DATABASE ? AS scratch", (str(scratch),))
    for table in _contents(old):
        connection.execute(f'INSERT INTO main."{table}" SELECT * FROM scratch."{table}"')
    connection.execute("DETACH DATABASE scratch")
    connection.close()
    before = _contents(old)
    assert any(rows for _, rows in before.values())
    assert _user_version(old) == 0

    async def reopen() -> None:
        async with kind.opener(old):
            pass

    asyncio.run(reopen())
    assert _user_version(old) == 1
    assert _contents(old) == before


def test_the_hub_reads_its_model_back_from_a_file_of_an_earlier_release(tmp_path: Path) -> None:
    scratch, old = tmp_path / "scratch.sqlite", tmp_path / "hub.sqlite"
    asyncio.run(_fill_model(scratch))
    _release_0_file(old, RELEASE_0_MODEL)
    connection = sqlite3.connect(old, isolation_level=None)
    connection.execute("ATTACH DATABASE ? AS scratch", (str(scratch),))
    for table in ("identifiables", "property_values", "supplementary_files", "outbox"):
        connection.execute(f"INSERT INTO main.{table} SELECT * FROM scratch.{table}")
    connection.close()

    async def load() -> tuple[list[str], list[Any], int]:
        async with SqliteRepository(old) as repository:
            identifiables = await repository.load_identifiables()
            values = await repository.load_values()
            events = await repository.outbox_read(0, 10)
            return [identifiable.id for identifiable in identifiables], values, len(events)

    identifiers, values, events = asyncio.run(load())
    assert identifiers == [SUBMODEL]
    assert [(value.id_short_path, value.lexical_value) for value in values] == [("Speed", "2.5")]
    assert events == 1


@BY_KIND
def test_a_file_newer_than_the_code_is_refused_and_left_byte_identical(kind: Kind, tmp_path: Path) -> None:
    path = tmp_path / f"{kind.name}.sqlite"
    asyncio.run(kind.fill(path))
    newer = kind.schema.latest + 1
    _set_version(path, newer)
    before = path.read_bytes()

    async def reopen() -> None:
        async with kind.opener(path):
            pass

    with pytest.raises(DatabaseSchemaError) as refused:
        asyncio.run(reopen())
    message = str(refused.value)
    assert str(path) in message
    assert f"schema version {newer}" in message
    assert f"highest this hub knows ({kind.schema.latest})" in message
    assert path.read_bytes() == before
    assert not path.with_name(path.name + "-wal").exists()


def test_a_file_of_another_program_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (name TEXT)")
    connection.execute("INSERT INTO customers VALUES ('ACME')")
    connection.commit()
    connection.close()
    before = path.read_bytes()

    async def open_it() -> None:
        async with SqliteRepository(path):
            pass

    with pytest.raises(DatabaseSchemaError, match=r"hub\.sqlite: not a model database of the hub.*customers"):
        asyncio.run(open_it())
    assert path.read_bytes() == before


def _settings_file(tmp_path: Path) -> Path:
    settings = tmp_path / "hub.yaml"
    settings.write_text(
        f"data_dir: {tmp_path / 'data'}\nrest: {{port: 0}}\nopcua: {{enabled: false}}\nsecurity: {{enabled: false}}\n",
        encoding="utf-8",
    )
    return settings


@pytest.mark.parametrize("command", ["serve", "export"])
def test_the_hub_and_its_commands_refuse_a_newer_model_file_with_exit_2(tmp_path: Path, command: str) -> None:
    settings = _settings_file(tmp_path)
    database = tmp_path / "data" / "hub.sqlite"
    database.parent.mkdir()
    asyncio.run(_fill_model(database))
    _set_version(database, MODEL_SCHEMA.latest + 5)
    before = database.read_bytes()
    arguments = ["serve", "--config", str(settings)]
    if command == "export":
        arguments = ["export", str(tmp_path / "out.json"), "--config", str(settings)]
    result = subprocess.run(
        [sys.executable, "-m", "aas_server", *arguments], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{database}: the model database has schema version {MODEL_SCHEMA.latest + 5}" in result.stderr
    assert database.read_bytes() == before


def test_calibration_refuses_a_newer_history_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "data" / "history.sqlite"
    history.parent.mkdir()
    asyncio.run(_fill_history(history))
    _set_version(history, HISTORY_SCHEMA.latest + 1)
    before = history.read_bytes()
    settings = tmp_path / "hub.yaml"
    settings.write_text(f"data_dir: data\nanalytics: {{kpi_files: [{DEMO_KPI_FILE}]}}\n", encoding="utf-8")
    times = ["--from", "2026-03-02T05:00:00Z", "--to", "2026-03-02T09:00:00Z"]
    assert main(["simulate", "calibrate", "--config", str(settings), *times]) == EXIT_INVALID
    refused = capsys.readouterr().err
    assert f"{history}: the history database has schema version {HISTORY_SCHEMA.latest + 1}" in refused
    assert history.read_bytes() == before


def _failing_step(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE identifiables SET document = 'overwritten'")
    raise RuntimeError("the conversion of a document failed")


def test_a_failing_migration_rolls_back_whole_and_a_working_one_applies(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    asyncio.run(_fill_model(path))
    before = _contents(path)
    added = (
        "CREATE TABLE element_index (submodel_id TEXT, id_short_path TEXT)",
        "ALTER TABLE outbox ADD COLUMN hub TEXT",
    )
    failing: Schema[sqlite3.Connection] = Schema(
        "model", (*MODEL_SCHEMA.migrations, Migration(2, "index the elements", added, _failing_step))
    )
    with pytest.raises(PersistenceError) as failed:
        open_private(path, failing, synchronous="FULL")
    message = str(failed.value)
    assert message.startswith(f"{path}: migrating the model database to schema version 2 (index the elements)")
    assert "the conversion of a document failed" in message
    assert "stays at version 1" in message
    assert _user_version(path) == 1
    assert _contents(path) == before

    working: Schema[sqlite3.Connection] = Schema(
        "model", (*MODEL_SCHEMA.migrations, Migration(2, "index the elements", added))
    )
    open_private(path, working, synchronous="FULL").close()
    after = _contents(path)
    assert _user_version(path) == 2
    assert "element_index" in after
    assert after["identifiables"] == before["identifiables"]
    assert [row[:4] for row in after["outbox"][1]] == list(before["outbox"][1])
    # the released code (version 1) now refuses the file the newer schema left
    with pytest.raises(DatabaseSchemaError, match="schema version 2, newer than the highest this hub knows \\(1\\)"):
        open_private(path, MODEL_SCHEMA, synchronous="FULL")


def test_a_file_from_before_versions_takes_every_migration_in_one_go(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    _release_0_file(path, RELEASE_0_MODEL)
    two: Schema[sqlite3.Connection] = Schema(
        "model",
        (*MODEL_SCHEMA.migrations, Migration(2, "a journal table", ("CREATE TABLE journal (sequence INTEGER)",))),
    )
    open_private(path, two, synchronous="FULL").close()
    assert _user_version(path) == 2
    assert "journal" in _contents(path)


def test_migration_versions_must_follow_each_other() -> None:
    with pytest.raises(ValueError, match=r"must be 1, 2, \.\.\. in order, not \[1, 3\]"):
        Schema("model", (MODEL_SCHEMA.migrations[0], Migration(3, "a gap", sql_statements("SELECT 1;"))))
