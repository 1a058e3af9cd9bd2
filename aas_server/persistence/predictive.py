"""Predictive maintenance states kept across restarts: one row per detector or wear signal.

The file (``settings.predictive_path``, ``<data_dir>/predictive.sqlite``, mode ``0600``) holds each
anomaly detector's learnt state (``analytics.predictive.to_bytes``, read back through its restricted
unpickler) and each RUL estimator's history (JSON), keyed by kind and name. All SQLite calls run on
one worker thread that owns the connection, never on the event loop.
"""

from __future__ import annotations

import sqlite3

from aas_server.persistence.migrations import Migration, Schema, sql_statements
from aas_server.persistence.side_database import SideDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictive_states (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
"""

PREDICTIVE_SCHEMA: Schema[sqlite3.Connection] = Schema(
    "predictive", (Migration(1, "the predictive states of releases before schema versions", sql_statements(_SCHEMA)),)
)
"""The versions of the predictive database (``persistence.migrations``); append, never edit, a released one."""


class PredictiveDatabase(SideDatabase):
    """The kept detector and RUL states. ``async with PredictiveDatabase(path)`` opens and closes it."""

    schema = PREDICTIVE_SCHEMA
    label = "predictive"

    async def load(self) -> dict[tuple[str, str], bytes]:
        """Every kept state by ``(kind, name)``."""

        def read(connection: sqlite3.Connection) -> dict[tuple[str, str], bytes]:
            rows = connection.execute("SELECT kind, name, state FROM predictive_states").fetchall()
            return {(str(kind), str(name)): bytes(state) for kind, name, state in rows}

        return await self._run(read)

    async def save(self, states: dict[tuple[str, str], bytes]) -> None:
        """Write these states in one transaction."""
        rows = [(kind, name, state) for (kind, name), state in states.items()]
        await self._upsert("predictive_states", ("kind", "name"), rows)
