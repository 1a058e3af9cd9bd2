"""Alarm states kept across restarts: one row per alarm in a small SQLite file of its own.

The file (``settings.alarms_path``, ``<data_dir>/alarms.sqlite``, mode ``0600``) is apart from the
model database (whose module others change) and from the history. Each row holds an alarm's
``Alarm.to_dict()`` as JSON, written (upsert) in its own transaction after every transition, with
``synchronous=FULL``: when an operator's acknowledge is answered, it is on disk. All SQLite calls run
on one worker thread that owns the connection, never on the event loop.

Left out: history of transitions (the audit log keeps them) and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from aas_server.persistence.migrations import Migration, Schema, sql_statements
from aas_server.persistence.side_database import SideDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL
) WITHOUT ROWID;
"""

ALARM_SCHEMA: Schema[sqlite3.Connection] = Schema(
    "alarm", (Migration(1, "the alarm states of releases before schema versions", sql_statements(_SCHEMA)),)
)
"""The versions of the alarm database (``persistence.migrations``); append, never edit, a released one."""


class AlarmDatabase(SideDatabase):
    """The kept alarm states. ``async with AlarmDatabase(path)`` opens and closes it."""

    schema = ALARM_SCHEMA
    label = "alarm"

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
        await self._upsert("alarms", ("name",), rows)
