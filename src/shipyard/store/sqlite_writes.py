"""The store's writes on a SQLite file through the standard library's `sqlite3`.

A deploy writes a journal event or a record some twenty times per component; building each
statement in SQLAlchemy cost more CPU than SQLite spent storing it, and importing SQLAlchemy
at all cost every `deploy` ~0.1 s. These are `sql.SqlStore`'s writes, statement for
statement (BEGIN IMMEDIATE, the same upserts, RETURNING), storing values as SQLAlchemy's
SQLite dialect stored them: datetimes as naive UTC text with microseconds, JSON as compact
text (NULL for None), booleans as 0/1. `tests/integration/test_store_writes_sqlwrite.py`
checks that stores written by either layer read the same. Private to the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shipyard.store import rows, sqlite, writing
from shipyard.store.failure import BUSY_TIMEOUT_MS, closed_store, os_failure, store_error
from shipyard.store.records import (
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    EventRecord,
    LockOwner,
    LockRecord,
    PlanRecord,
    ReleaseSpecRecord,
    SnapshotEntry,
)
from shipyard.store.sqlite_reads import DATETIME_COLUMNS, JSON_COLUMNS, decode_row
from shipyard.store.urls import StoreUrl

__all__ = ["SqliteWrites"]

Clock = Callable[[], datetime]
BOOLEAN_COLUMNS = frozenset({"dirty"})
_COMPONENT_KEYS = ("deployment_id", "component", "host")


class _BindError(Exception):
    """A value the column cannot take (SQLAlchemy's StatementError: same StoreError)."""


def _datetime(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise _BindError(
            "SQLite DateTime type only accepts Python datetime and date objects as input."
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise _BindError(f"naive datetime {value!r}: the store only takes aware UTC datetimes")
    v = value.astimezone(UTC)
    # SQLAlchemy's SQLite DATETIME storage format, microseconds always written.
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


def _json(value: Any) -> str | None:
    if value is None:
        return None  # none_as_null: SQL NULL, not the JSON text 'null'
    try:
        return writing.json_dumps(value)
    except (TypeError, ValueError) as exc:
        raise _BindError(str(exc)) from None


def _boolean(value: Any) -> int | None:
    if value is None:
        return None
    if value is not True and value is not False:  # SQLAlchemy's Boolean is as strict
        if not isinstance(value, int):
            raise _BindError(f"Not a boolean value: {value!r}")
        raise _BindError(f"Value {value!r} is not None, True, or False")
    return int(value)


def _encode(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values as SQLAlchemy's SQLite dialect bound them."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in DATETIME_COLUMNS:
            out[name] = _datetime(value)
        elif name in JSON_COLUMNS:
            out[name] = _json(value)
        elif name in BOOLEAN_COLUMNS:
            out[name] = _boolean(value)
        else:
            out[name] = value
    return out


def _insert(table: str, values: Mapping[str, Any], tail: str = "") -> str:
    names = list(values)
    return (
        f"INSERT INTO {table} ({', '.join(_quoted(n) for n in names)}) "
        f"VALUES ({', '.join(':' + n for n in names)}){tail}"
    )


def _quoted(name: str) -> str:
    return f'"{name}"'  # `commit` is a keyword


def _conflict(keys: tuple[str, ...], values: Mapping[str, Any] | None = None) -> str:
    """ON CONFLICT (keys) DO NOTHING, or DO UPDATE of every other column of `values`."""
    target = f" ON CONFLICT ({', '.join(keys)})"
    if values is None:
        return target + " DO NOTHING"
    sets = ", ".join(f"{_quoted(n)} = excluded.{_quoted(n)}" for n in values if n not in keys)
    return target + f" DO UPDATE SET {sets}"


class SqliteWrites:
    """Every write of `Store` on one SQLite file: one connection, opened on the first write.

    Threads take turns: a write transaction holds the connection (and SQLite's write lock,
    taken up front by BEGIN IMMEDIATE) until it commits, so writes from the engine's threads
    and the journal writer are serialized, as SQLite serializes writers anyway. Waiting for
    another thread is bounded by the busy timeout, as waiting for another process is.
    """

    def __init__(self, path: Path, url: StoreUrl, masked: str, now: Clock) -> None:
        self._path = path
        self._url = url
        self._masked = masked
        self.now = now
        self._connection: sqlite3.Connection | None = None
        self._turn = threading.RLock()
        self._batch = threading.local()  # the cursor of a `batch()` in this thread
        self._closed = False

    def close(self) -> None:
        with self._turn:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # ---------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def _translating(self, action: str, integrity_hint: str | None = None) -> Iterator[None]:
        """Turn sqlite3/OS errors into the StoreError `SqlStore` gives for them."""
        try:
            yield
        except sqlite3.Error as exc:
            raise store_error(
                self._masked,
                self._url,
                action,
                str(exc) or type(exc).__name__,
                integrity=isinstance(exc, sqlite3.IntegrityError),
                integrity_hint=integrity_hint,
            ) from None
        except _BindError as exc:
            raise store_error(self._masked, self._url, action, str(exc)) from None
        except OSError as exc:
            raise os_failure(self._masked, action, exc) from None

    def _connected(self) -> sqlite3.Connection:
        """The write connection (opened on first use; StoreError naming the store if not)."""
        if self._closed:
            raise closed_store(self._masked)
        if self._connection is None:
            try:
                self._connection = sqlite.connect(self._path)
            except sqlite3.Error as exc:
                raise store_error(
                    self._masked, self._url, "connect", str(exc), unreachable=True
                ) from None
        return self._connection

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Cursor]:
        """This thread's turn and a BEGIN IMMEDIATE … COMMIT (ROLLBACK on any error)."""
        if not self._turn.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise store_error(self._masked, self._url, action, "database is locked")
        try:
            cursor = self._connected().cursor()
            cursor.row_factory = decode_row
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                cursor.close()
        finally:
            self._turn.release()

    @contextlib.contextmanager
    def batch(self, action: str) -> Iterator[None]:
        """This thread's writes inside the block in one transaction (see `Store.batch`)."""
        with self._translating(action), self._transaction(action) as cursor:
            self._batch.cursor = cursor
            try:
                yield
            finally:
                self._batch.cursor = None

    @contextlib.contextmanager
    def _write(self, action: str, integrity_hint: str | None = None) -> Iterator[sqlite3.Cursor]:
        """A write transaction, or this thread's open `batch`."""
        batched: sqlite3.Cursor | None = getattr(self._batch, "cursor", None)
        with self._translating(action, integrity_hint):
            if batched is not None:
                if self._closed:
                    self._connected()  # raises: closed
                yield batched
                return
            with self._transaction(action) as cursor:
                yield cursor

    # ---------------------------------------------------------------- deployments

    def create_deployment(self, d: DeploymentRecord) -> None:
        values = writing.deployment_row(d, self.now())
        with self._write(
            f"create deployment {d.id}",
            integrity_hint="deployment ids must be unique (use shipyard.store.new_id()) "
            "and rollback_of must name a stored deployment",
        ) as cursor:
            cursor.execute(_insert("deployments", values), _encode(values))

    def update_deployment(self, deployment_id: str, **fields: Any) -> DeploymentRecord:
        writing.check_updatable(fields)
        with self._write(f"update deployment {deployment_id}") as cursor:
            row = cursor.execute(
                "SELECT * FROM deployments WHERE id = ?", (deployment_id,)
            ).fetchone()
            if row is None:
                raise writing.no_deployment(deployment_id, self._masked)
            record = rows.deployment(row).replace(**fields)
            record.validate()
            if fields:
                values = writing.changed_fields(record, fields)
                sets = ", ".join(f"{_quoted(n)} = :{n}" for n in values)
                cursor.execute(
                    f"UPDATE deployments SET {sets} WHERE id = :id_1",
                    {**_encode(values), "id_1": deployment_id},
                )
        return record

    # ---------------------------------------------------------------- components, journal

    def set_component(self, rec: ComponentRecord) -> None:
        values = writing.component_row(rec)
        with self._write(
            f"save component {rec.component}@{rec.host} of deployment {rec.deployment_id}",
            integrity_hint="create the deployment before its components",
        ) as cursor:
            sql = _insert("deployment_components", values, _conflict(_COMPONENT_KEYS, values))
            cursor.execute(sql, _encode(values))

    def append_event(
        self,
        deployment_id: str,
        kind: str,
        *,
        step: str | None = None,
        component: str | None = None,
        status: str | None = None,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> EventRecord:
        with self._write(f"journal {kind!r} for deployment {deployment_id}") as cursor:
            found = cursor.execute(
                "UPDATE deployments SET event_seq = event_seq + 1 WHERE id = ? RETURNING event_seq",
                (deployment_id,),
            ).fetchall()
            if not found:
                raise writing.no_deployment(deployment_id, self._masked)
            record = EventRecord(
                deployment_id=deployment_id,
                seq=found[0]["event_seq"],
                at=self.now() if at is None else at.astimezone(UTC),
                kind=kind,
                step=step,
                component=component,
                status=status,
                message=message,
                data=None if data is None else dict(data),
            )
            values = {
                "deployment_id": record.deployment_id,
                "seq": record.seq,
                "at": record.at,
                "kind": record.kind,
                "step": record.step,
                "component": record.component,
                "status": record.status,
                "message": record.message,
                "data": record.data,
            }
            cursor.execute(_insert("events", values), _encode(values))
        return record

    def save_snapshot(self, deployment_id: str, entries: Iterable[SnapshotEntry]) -> None:
        entries = list(entries)
        seen: set[tuple[str, str]] = set()
        for e in entries:
            key = (e.component, e.host)
            if key in seen:
                raise ValueError(f"snapshot lists {e.component}@{e.host} twice")
            seen.add(key)
        with self._write(
            f"save the snapshot of deployment {deployment_id}",
            integrity_hint="create the deployment before its snapshot",
        ) as cursor:
            cursor.execute("DELETE FROM snapshots WHERE deployment_id = ?", (deployment_id,))
            rows_ = [
                {
                    "deployment_id": deployment_id,
                    "component": e.component,
                    "host": e.host,
                    "release": e.release,
                    "artifact": e.artifact,
                    "migration_revision": e.migration_revision,
                    "commit": e.commit,
                    "active_deployment_id": e.deployment_id,
                }
                for e in entries
            ]
            if rows_:
                cursor.executemany(_insert("snapshots", rows_[0]), rows_)

    # ---------------------------------------------------------------- specs, artifacts, plans

    def save_release_spec(self, rec: ReleaseSpecRecord) -> None:
        values = writing.release_spec_row(rec, self.now())
        with self._write(f"save the spec of {rec.component} release {rec.release}") as cursor:
            tail = _conflict(("environment", "component", "release"))
            cursor.execute(_insert("release_specs", values, tail), _encode(values))

    def record_artifact(self, a: ArtifactRecord) -> None:
        values = writing.artifact_row(a, self.now())
        with self._write(f"record artifact {a.component}@{a.digest}") as cursor:
            tail = _conflict(("component", "digest"))
            cursor.execute(_insert("artifacts", values, tail), _encode(values))

    def save_plan(self, rec: PlanRecord) -> None:
        values = writing.plan_row(rec, self.now())
        with self._write(
            f"save plan {rec.id}", integrity_hint="plan ids must be unique (use new_id())"
        ) as cursor:
            cursor.execute(_insert("plans", values), _encode(values))

    def prune_plans(self, max_age: timedelta, keep: int, protect: Iterable[str] = ()) -> int:
        spared = set(protect)
        oldest = self.now() - max_age
        with self._write("prune saved plans") as cursor:
            found = cursor.execute(
                "SELECT id, environment, created_at FROM plans ORDER BY created_at DESC, id DESC"
            ).fetchall()
            seen: dict[str, int] = {}
            doomed = []
            for row in found:
                env = row["environment"]
                seen[env] = seen.get(env, 0) + 1
                if env not in spared and (seen[env] > keep or row["created_at"] < oldest):
                    doomed.append(row["id"])
            for start in range(0, len(doomed), 500):
                chunk = doomed[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                cursor.execute(f"DELETE FROM plans WHERE id IN ({marks})", chunk)
        return len(doomed)

    # ---------------------------------------------------------------- locks

    def acquire_lock(
        self, environment: str, deployment_id: str, owner: LockOwner, ttl_s: float
    ) -> LockRecord | None:
        writing.check_ttl(ttl_s)
        for _ in range(5):
            with self._write(f"lock environment {environment}") as cursor:
                now = self.now()
                expires = now + timedelta(seconds=ttl_s)
                values = {
                    "environment": environment,
                    "deployment_id": deployment_id,
                    "owner_user": owner.user,
                    "owner_host": owner.host,
                    "owner_pid": owner.pid,
                    "acquired_at": now,
                    "heartbeat_at": now,
                    "expires_at": expires,
                }
                tail = _conflict(("environment",)) + " RETURNING environment"
                inserted = cursor.execute(_insert("locks", values, tail), _encode(values))
                if inserted.fetchall():
                    self._audit(cursor, environment, "acquired", now, deployment_id, owner)
                    return None
                row = cursor.execute(
                    "SELECT * FROM locks WHERE environment = ?", (environment,)
                ).fetchone()
                if row is None:
                    continue  # released between our insert and select: try again
                held = rows.lock(row)
                if held.deployment_id == deployment_id and held.owner == owner:
                    cursor.execute(
                        "UPDATE locks SET heartbeat_at = ?, expires_at = ? WHERE environment = ?",
                        (_datetime(now), _datetime(expires), environment),
                    )
                    return None
                if not held.expired(now):
                    raise writing.locked_error(held, now)
                taken = {
                    "deployment_id": deployment_id,
                    "owner_user": owner.user,
                    "owner_host": owner.host,
                    "owner_pid": owner.pid,
                    "acquired_at": now,
                    "heartbeat_at": now,
                    "expires_at": expires,
                }
                sets = ", ".join(f"{n} = :{n}" for n in taken)
                cursor.execute(
                    f"UPDATE locks SET {sets} WHERE environment = :environment_1",
                    {**_encode(taken), "environment_1": environment},
                )
                self._audit(
                    cursor,
                    environment,
                    "taken_over",
                    now,
                    held.deployment_id,
                    held.owner,
                    by=str(owner),
                    detail=writing.taken_over_detail(held, deployment_id),
                )
                return held
        raise writing.lock_changed_hands(self._masked, environment)

    def heartbeat(self, environment: str, deployment_id: str, ttl_s: float) -> None:
        writing.check_ttl(ttl_s)
        with self._write(f"renew the lock of environment {environment}") as cursor:
            now = self.now()
            renewed = cursor.execute(
                "UPDATE locks SET heartbeat_at = ?, expires_at = ? "
                "WHERE environment = ? AND deployment_id = ?",
                (
                    _datetime(now),
                    _datetime(now + timedelta(seconds=ttl_s)),
                    environment,
                    deployment_id,
                ),
            )
            if renewed.rowcount == 1:
                return
            row = cursor.execute(
                "SELECT * FROM locks WHERE environment = ?", (environment,)
            ).fetchone()
            last_forced = cursor.execute(
                "SELECT * FROM lock_events WHERE environment = ? AND deployment_id = ? "
                "AND action IN ('forced_release', 'taken_over') ORDER BY id DESC LIMIT 1",
                (environment, deployment_id),
            ).fetchone()
        raise writing.lost_lock_error(
            environment,
            deployment_id,
            None if row is None else rows.lock(row),
            None if last_forced is None else rows.lock_event(last_forced),
        )

    def release_lock(self, environment: str, deployment_id: str) -> None:
        with self._write(f"unlock environment {environment}") as cursor:
            row = cursor.execute(
                "SELECT * FROM locks WHERE environment = ? AND deployment_id = ?",
                (environment, deployment_id),
            ).fetchone()
            if row is None:
                return
            held = rows.lock(row)
            cursor.execute(
                "DELETE FROM locks WHERE environment = ? AND deployment_id = ?",
                (environment, deployment_id),
            )
            self._audit(cursor, environment, "released", self.now(), deployment_id, held.owner)

    def force_release_lock(self, environment: str, by: str) -> LockRecord | None:
        with self._write(f"force-release the lock of environment {environment}") as cursor:
            row = cursor.execute(
                "SELECT * FROM locks WHERE environment = ?", (environment,)
            ).fetchone()
            if row is None:
                return None
            held = rows.lock(row)
            now = self.now()
            cursor.execute("DELETE FROM locks WHERE environment = ?", (environment,))
            self._audit(
                cursor,
                environment,
                "forced_release",
                now,
                held.deployment_id,
                held.owner,
                by=by,
                detail=writing.forced_detail(held, now),
            )
        return held

    def _audit(
        self,
        cursor: sqlite3.Cursor,
        environment: str,
        action: str,
        at: datetime,
        deployment_id: str | None,
        owner: LockOwner | None,
        *,
        by: str | None = None,
        detail: str | None = None,
    ) -> None:
        values = {
            "environment": environment,
            "action": action,
            "at": at,
            "deployment_id": deployment_id,
            "owner_user": None if owner is None else owner.user,
            "owner_host": None if owner is None else owner.host,
            "owner_pid": None if owner is None else owner.pid,
            "by": by,
            "detail": detail,
        }
        cursor.execute(_insert("lock_events", values), _encode(values))
