"""Private files: the data directory ``0700``; databases, their WAL and shared-memory files ``0600``.

The data directory holds the model, the history, keys and the audit log: only the hub's user may
read it (``docs/security.md``). A database file is created ``0600`` before SQLite opens it, because
SQLite gives the ``-wal``, ``-shm`` and ``-journal`` files it creates later the permissions of the
database file; files an older version left wider are narrowed at every start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""Suffixes of the files SQLite keeps beside a database."""


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode ``0700``; narrow it to ``0700`` if it is wider."""
    path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, PRIVATE_DIRECTORY)


def private_database(path: Path) -> None:
    """Make sure the SQLite database ``path`` exists with mode ``0600`` and so do its companion files.

    A missing parent directory is created ``0700``; an empty new file is a valid empty database.
    """
    path.parent.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) != PRIVATE_FILE:
            os.fchmod(descriptor, PRIVATE_FILE)
    finally:
        os.close(descriptor)
    for suffix in SQLITE_COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path.with_name(path.name + suffix), PRIVATE_FILE)
