"""The audit log: every write (success or failure) and every denial, as JSON lines.

Each :class:`AuditRecord` says when (UTC), who (principal name, kind and roles), what (method,
path, operation, target) and the result (status and reason). :meth:`AuditLog.record` never blocks:
it logs the record at INFO on the ``aas_server.audit`` logger (whose lines ``security.logs`` escapes)
and queues it for a writer thread that appends it to the file as one JSON line (created with mode
``0600``, flushed after each burst; control characters and line separators escaped, so a path with
``%0A`` or ``%C2%85`` cannot split a record). When the queue is full
(the disk is far behind) records are dropped, counted and the loss logged as an error; a write
error is logged once until writing works again.

Left out: rotation (use logrotate with ``copytruncate``), signing or chaining of records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from aas_server.model.events import utc_now
from aas_server.security.logs import json_line

AUDIT_LOGGER = logging.getLogger("aas_server.audit")

QUEUE_LIMIT = 100_000
"""Records waiting for the writer at most; beyond it new ones are dropped (and counted)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited request or write."""

    principal: str
    principal_kind: str
    roles: tuple[str, ...]
    method: str
    """The HTTP method, or ``OPCUA-WRITE``."""
    path: str
    """The URL path, or the OPC UA node id."""
    operation: str | None
    target: str
    status: int | str
    """The HTTP status, or the OPC UA status code name."""
    reason: str = ""
    time: datetime = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "principal": self.principal,
            "principalKind": self.principal_kind,
            "roles": list(self.roles),
            "method": self.method,
            "path": self.path,
            "operation": self.operation,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
        }


_STOP = object()


class AuditLog:
    """Appends audit records to ``path`` from a writer thread (``path`` ``None``: logger only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        """Records lost because the queue was full."""

    def record(self, record: AuditRecord) -> None:
        """Log ``record`` and queue it for the file; never blocks."""
        if AUDIT_LOGGER.isEnabledFor(logging.INFO):
            AUDIT_LOGGER.info(
                "%s %s by %s %s (%s): %s %s%s",
                record.method,
                record.path,
                record.principal_kind,
                record.principal,
                ",".join(record.roles) or "no role",
                record.operation or "-",
                record.status,
                f" ({record.reason})" if record.reason else "",
            )
        if self.path is None:
            return
        self._start()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                AUDIT_LOGGER.error("audit log %s is too far behind: %d records dropped", self.path, self.dropped)

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._write_loop, name="audit-log", daemon=True)
                thread.start()
                self._thread = thread

    def _write_loop(self) -> None:
        assert self.path is not None
        sink: IO[bytes] | None = None
        failing = False
        while True:
            batch = [self._queue.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            records = [item for item in batch if isinstance(item, AuditRecord)]
            try:
                if sink is None:
                    sink = _open_for_append(self.path)
                sink.write(b"".join(json_line(orjson.dumps(record.to_json())) + b"\n" for record in records))
                sink.flush()
                if failing:
                    AUDIT_LOGGER.warning("audit log %s is written again", self.path)
                failing = False
            except OSError as error:
                if not failing:
                    AUDIT_LOGGER.error("cannot write the audit log %s: %s", self.path, error.strerror or error)
                failing = True
                if sink is not None:
                    _close_quietly(sink)
                    sink = None
            if stop:
                if sink is not None:
                    _close_quietly(sink)
                return

    def close(self) -> None:
        """Write what is queued and stop the writer thread (blocks until done)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join()

    async def aclose(self) -> None:
        """:meth:`close` off the event loop."""
        await asyncio.to_thread(self.close)


def _open_for_append(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(descriptor, "ab")


def _close_quietly(sink: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        sink.close()
