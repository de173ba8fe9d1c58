"""The store's reads on a SQLite file through the standard library's `sqlite3`.

`status`, `history` and `plan` only read the store; importing SQLAlchemy for that would be
most of their start-up (docs/architecture.md, "Start-up"). These are the same queries as
`sql.SqlStore`'s (same filters, same order, same limits), decoded as SQLAlchemy decodes the
columns it wrote: datetimes are naive UTC text, JSON is text. `tests/integration/
test_store_reads_startup.py` checks over generated stores that both paths return the same
records. Private to the store.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.store import rows, sqlite
from shipyard.store.failure import os_failure, store_error
from shipyard.store.ids import ambiguous_prefix, canonical_prefix
from shipyard.store.migrate import VERSION_TABLE
from shipyard.store.records import (
    UNFINISHED_STATUSES,
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    EventRecord,
    LockEventRecord,
    LockRecord,
    PlanRecord,
    ReleaseSpecRecord,
    SnapshotEntry,
)
from shipyard.store.urls import StoreUrl

__all__ = ["DATETIME_COLUMNS", "JSON_COLUMNS", "SqliteReads", "decode_row"]

# The columns tables.py types as UTCDateTime and as JSONValue (a test holds them equal).
DATETIME_COLUMNS = frozenset(
    {"created_at", "started_at", "finished_at", "at", "acquired_at", "heartbeat_at", "expires_at"}
)
JSON_COLUMNS = frozenset({"options", "health", "data", "spec", "plan"})
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC"


def _datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _identity(value: Any) -> Any:
    return value


def _decoder(name: str) -> Callable[[Any], Any]:
    if name in DATETIME_COLUMNS:
        return _datetime
    if name in JSON_COLUMNS:
        return _json
    return _identity


def decode_row(cursor: sqlite3.Cursor, values: Sequence[Any]) -> rows.Row:
    """A row as a mapping of decoded values (a cursor's `row_factory`)."""
    names = [d[0] for d in cursor.description]
    return {name: _decoder(name)(value) for name, value in zip(names, values, strict=True)}


def _where(column: str, value: str | None) -> tuple[str, tuple[Any, ...]]:
    """` WHERE column = ?` and its parameter, or nothing when `value` is None."""
    return ("", ()) if value is None else (f" WHERE {column} = ?", (value,))


def _limit(limit: int | None) -> str:
    # An int (never text from outside): safe to inline, as SQLAlchemy's bound LIMIT is.
    return "" if limit is None else f" LIMIT {int(limit)}"


class SqliteReads:
    """Every read of `Store` on one SQLite file; one connection, used by one thread at a time."""

    def __init__(self, connection: sqlite3.Connection, url: StoreUrl, masked: str) -> None:
        """Use `SqliteReads.connect`."""
        self._connection = connection
        self._url = url
        self._masked = masked
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, path: Path, url: StoreUrl, masked: str) -> SqliteReads:
        """Open and configure a connection (StoreError if the file cannot be used)."""
        try:
            connection = sqlite.connect(path)
        except sqlite3.Error as exc:
            raise store_error(masked, url, "connect", str(exc), unreachable=True) from None
        return cls(connection, url, masked)

    def close(self) -> None:
        self._connection.close()

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Cursor]:
        """One read transaction (a deferred BEGIN: takes no write lock)."""
        with self._lock:
            try:
                cursor = self._connection.cursor()
                cursor.row_factory = decode_row
                cursor.execute("BEGIN")
                try:
                    yield cursor
                finally:
                    cursor.execute("COMMIT")
                    cursor.close()
            except sqlite3.Error as exc:
                raise store_error(
                    self._masked,
                    self._url,
                    action,
                    str(exc) or type(exc).__name__,
                    integrity=isinstance(exc, sqlite3.IntegrityError),
                ) from None
            except OSError as exc:
                raise os_failure(self._masked, action, exc) from None

    def _all(self, action: str, sql: str, *params: Any) -> list[rows.Row]:
        with self._read(action) as cursor:
            return cursor.execute(sql, params).fetchall()

    def _one(self, action: str, sql: str, *params: Any) -> rows.Row | None:
        found = self._all(action, sql, *params)
        return found[0] if found else None

    # ---------------------------------------------------------------- the schema

    def revisions(self) -> tuple[str, ...]:
        """The revision(s) recorded in the database; () for an empty database."""
        with self._read("read the schema revision") as cursor:
            exists = cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
                (VERSION_TABLE,),
            ).fetchall()
            if not exists:
                return ()
            found = cursor.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
        return tuple(sorted(str(r["version_num"]) for r in found))

    def ping(self) -> None:
        self._all("reach the database", "SELECT 1")

    def schema_revision(self) -> str | None:
        heads = self.revisions()
        return heads[0] if heads else None

    # ---------------------------------------------------------------- deployments

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        wanted = deployment_id.strip()
        with self._read(f"read deployment {wanted}") as cursor:
            found = cursor.execute("SELECT * FROM deployments WHERE id = ?", (wanted,)).fetchall()
            if found:
                return rows.deployment(found[0])
            prefix = canonical_prefix(wanted)
            if prefix is None:
                return None
            # As SQLAlchemy's startswith(autoescape=True) renders it.
            escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
            found = cursor.execute(
                "SELECT * FROM deployments WHERE id LIKE ? || '%' ESCAPE '/' ORDER BY id LIMIT 6",
                (escaped,),
            ).fetchall()
        if not found:
            return None
        if len(found) > 1:
            raise ambiguous_prefix(wanted, [r["id"] for r in found])
        return rows.deployment(found[0])

    def list_deployments(
        self, environment: str | None = None, limit: int | None = 20
    ) -> list[DeploymentRecord]:
        where, params = _where("environment", environment)
        sql = "SELECT * FROM deployments" + where + _NEWEST_FIRST + _limit(limit)
        return [rows.deployment(r) for r in self._all("list deployments", sql, *params)]

    def last_good_deployment(self, environment: str) -> DeploymentRecord | None:
        row = self._one(
            f"find the last good deployment of {environment}",
            "SELECT * FROM deployments WHERE environment = ? AND status = 'succeeded'"
            + _NEWEST_FIRST
            + " LIMIT 1",
            environment,
        )
        return None if row is None else rows.deployment(row)

    def unfinished_deployments(self, environment: str) -> list[DeploymentRecord]:
        statuses = sorted(UNFINISHED_STATUSES)
        marks = ", ".join("?" * len(statuses))
        found = self._all(
            f"find unfinished deployments of {environment}",
            f"SELECT * FROM deployments WHERE environment = ? AND status IN ({marks})"
            + _NEWEST_FIRST,
            environment,
            *statuses,
        )
        return [rows.deployment(r) for r in found]

    # ---------------------------------------------------------------- components, journal

    def components(self, deployment_id: str) -> list[ComponentRecord]:
        found = self._all(
            f"read the components of deployment {deployment_id}",
            "SELECT * FROM deployment_components WHERE deployment_id = ? ORDER BY component, host",
            deployment_id,
        )
        return [rows.component(r) for r in found]

    def events(
        self, deployment_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        found = self._all(
            f"read the journal of deployment {deployment_id}",
            "SELECT * FROM events WHERE deployment_id = ? AND seq > ? ORDER BY seq" + _limit(limit),
            deployment_id,
            after_seq,
        )
        return [rows.event(r) for r in found]

    def snapshot(self, deployment_id: str) -> list[SnapshotEntry]:
        found = self._all(
            f"read the snapshot of deployment {deployment_id}",
            "SELECT * FROM snapshots WHERE deployment_id = ? ORDER BY component, host",
            deployment_id,
        )
        return [rows.snapshot_entry(r) for r in found]

    def release_spec(
        self, environment: str, component: str, release: str
    ) -> ReleaseSpecRecord | None:
        row = self._one(
            f"read the spec of {component} release {release}",
            "SELECT * FROM release_specs WHERE environment = ? AND component = ? AND release = ?",
            environment,
            component,
            release,
        )
        return None if row is None else rows.release_spec(row)

    # ---------------------------------------------------------------- artifacts, plans

    def get_artifact(self, component: str, digest: str) -> ArtifactRecord | None:
        row = self._one(
            f"read artifact {component}@{digest}",
            "SELECT * FROM artifacts WHERE component = ? AND digest = ?",
            component,
            digest,
        )
        return None if row is None else rows.artifact(row)

    def list_artifacts(self, component: str | None = None) -> list[ArtifactRecord]:
        where, params = _where("component", component)
        sql = "SELECT * FROM artifacts" + where + " ORDER BY created_at DESC, component, digest"
        return [rows.artifact(r) for r in self._all("list artifacts", sql, *params)]

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        row = self._one(f"read plan {plan_id}", "SELECT * FROM plans WHERE id = ?", plan_id)
        return None if row is None else rows.plan(row)

    # ---------------------------------------------------------------- locks

    def get_lock(self, environment: str) -> LockRecord | None:
        row = self._one(
            f"read the lock of environment {environment}",
            "SELECT * FROM locks WHERE environment = ?",
            environment,
        )
        return None if row is None else rows.lock(row)

    def lock_events(
        self, environment: str | None = None, limit: int | None = 50
    ) -> list[LockEventRecord]:
        where, params = _where("environment", environment)
        sql = "SELECT * FROM lock_events" + where + " ORDER BY id DESC" + _limit(limit)
        return [rows.lock_event(r) for r in self._all("read the lock audit trail", sql, *params)]
