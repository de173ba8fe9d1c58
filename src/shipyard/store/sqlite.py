"""SQLite connections as the store wants them, for both of its paths to the file.

WAL journaling (readers never wait for the writer), `synchronous = NORMAL` (durable at
each checkpoint, safe with WAL), a busy timeout for the write lock, foreign keys on.
Standard library only: the read path uses it without importing SQLAlchemy.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from shipyard.store.failure import BUSY_TIMEOUT_MS

__all__ = ["configure", "connect"]


def connect(path: Path) -> sqlite3.Connection:
    """A configured connection to a SQLite file (usable from any thread, one at a time)."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
    )
    try:
        configure(connection, memory=False)
    except BaseException:
        connection.close()
        raise
    return connection


def configure(connection: sqlite3.Connection, *, memory: bool) -> None:
    """Set a fresh connection up; transactions are then begun explicitly by the caller."""
    # No implicit (and late) BEGIN from the sqlite3 module: the store says BEGIN itself,
    # so transactions really are transactions.
    connection.isolation_level = None
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not memory:
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL journaling (persistent; a no-op once done).

    Changing the journal mode needs an exclusive lock and SQLite does not call the
    busy handler for it, so when another process is creating the same fresh file at
    the same moment we get "database is locked" at once: retry until the deadline.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))
