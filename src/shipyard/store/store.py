"""The durable state store: one `Store` over SQLite (default) or PostgreSQL."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import random
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Row,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.pool import StaticPool

from shipyard.errors import LockedError, StoreError
from shipyard.store import migrate
from shipyard.store.models import (
    Artifact,
    Deployment,
    DeploymentComponent,
    Event,
    Lock,
    LockEvent,
    ReleaseSpec,
    SavedPlan,
    Snapshot,
)
from shipyard.store.records import (
    UNFINISHED_STATUSES,
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    EventRecord,
    LockEventRecord,
    LockOwner,
    LockRecord,
    PlanRecord,
    ReleaseSpecRecord,
    SnapshotEntry,
    iso,
)
from shipyard.store.urls import is_memory_sqlite, mask_url, normalize_url, scrub, sqlite_path

__all__ = ["Clock", "Store"]

Clock = Callable[[], datetime]

BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
MIN_PREFIX = 4

_deployments = cast(Table, Deployment.__table__)
_components = cast(Table, DeploymentComponent.__table__)
_events = cast(Table, Event.__table__)
_snapshots = cast(Table, Snapshot.__table__)
_artifacts = cast(Table, Artifact.__table__)
_release_specs = cast(Table, ReleaseSpec.__table__)
_locks = cast(Table, Lock.__table__)
_lock_events = cast(Table, LockEvent.__table__)
_plans = cast(Table, SavedPlan.__table__)

_DEPLOYMENT_FIELDS = (
    "id",
    "environment",
    "kind",
    "commit",
    "status",
    "base_commit",
    "started_at",
    "finished_at",
    "error",
    "plan_hash",
    "dirty",
    "rollback_of",
    "promoted_from",
    "created_by",
    "options",
    "created_at",
)
_UPDATABLE = frozenset(_DEPLOYMENT_FIELDS) - {"id", "created_at"}
_HEX_PREFIX = re.compile(r"[0-9a-f-]+")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _ago(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"


class Store:
    """The durable record of deployments, their journal, snapshots, artifacts and locks.

    Open one with `Store.open(url)`:

    - `sqlite:///path/state.db` (the default, file created with its folders; WAL
      journal, `busy_timeout`, foreign keys on) or `sqlite://` (in memory, for tests);
    - `postgresql://user@host/db` for teams deploying from several machines (the psycopg
      3 driver is used).

    Opening runs the Alembic migrations on first use (safe when several processes open
    a fresh database at once) and refuses a database migrated by a newer shipyard.
    Every database failure surfaces as `StoreError` naming the URL with its password
    masked, plus a hint; nothing from SQLAlchemy leaks out. Records are the frozen
    dataclasses of `shipyard.store.records`.

    Groups of methods:

    - deployments: `create_deployment`, `update_deployment` (returns the new record),
      `get_deployment` (exact id or a unique prefix of at least 4 characters, like git),
      `list_deployments` (newest first), `last_good_deployment`, `unfinished_deployments`;
    - components of a deployment, per host: `set_component` (upsert), `components`;
    - the journal: `append_event` (per-deployment `seq` from 1, assigned atomically;
      `at` from the clock), `events`;
    - `save_snapshot` / `snapshot`: what was active before a deployment;
    - saved plans (deploy exactly what was shown): `save_plan`, `get_plan`;
    - artifacts: `record_artifact` (idempotent on component+digest), `get_artifact`,
      `list_artifacts`;
    - the per-environment lease: `acquire_lock`, `heartbeat`, `release_lock`, `get_lock`,
      `force_release_lock`, and the audit trail `lock_events`.

    Time: every timestamp the store writes comes from the injectable `clock` (aware
    UTC); lock expiry is judged with that clock too, so machines sharing a PostgreSQL
    store need synchronized clocks (NTP) and TTLs much longer than their skew.

    Only the engine's state machine decides a deployment's status; the store saves
    what it is told (it validates values, not transitions).

    Secrets are never stored: no table has a column for environment values, and
    `options`, event `data` and `health` must hold only names, fingerprints and flags.

    Thread-safe: share one Store between the engine's worker threads.
    """

    def __init__(self, engine: Engine, url: URL, clock: Clock, display: str | None = None) -> None:
        """Use `Store.open`; this wraps an engine that is already migrated.

        `display` is the URL as the user wrote it (shown masked in messages).
        """
        self._engine = engine
        self._url = url
        self._masked = mask_url(display if display is not None else url)
        self._clock = clock
        self._closed = False
        self._batch = threading.local()  # the connection of a `batch()` in this thread
        # An in-memory SQLite database is one shared connection: serialize its users.
        self._mutex: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if is_memory_sqlite(url) else contextlib.nullcontext()
        )

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, url: str, *, clock: Clock | None = None) -> Store:
        """Connect, create the SQLite file's folders, migrate to the current schema.

        Raises StoreError when the database is unreachable, the URL unusable, or the
        schema newer than this code.
        """
        parsed = normalize_url(url)
        masked = mask_url(url.strip())
        path = sqlite_path(parsed)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"state store {masked}: cannot create the folder {path.parent}: "
                    f"{exc.strerror or exc}",
                    hint="check the path in `state` of shipyard.toml and the folder's permissions",
                ) from None
            try:
                _owner_only(path)
            except OSError as exc:
                raise StoreError(
                    f"state store {masked}: cannot create or protect the file {path}: "
                    f"{exc.strerror or exc}",
                    hint="check the path in `state` of shipyard.toml and the file's permissions",
                ) from None
        engine = _create_engine(parsed)
        store = cls(engine, parsed, clock or _utcnow, display=url.strip())
        try:
            with store._translating("connect", unreachable=True):
                engine.connect().close()
            with store._translating("migrate the schema"):
                migrate.upgrade(engine, masked)
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        """Close every pooled connection; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._masked!r})"

    @property
    def url(self) -> str:
        """The store's URL with its password masked (safe to print)."""
        return self._masked

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    def now(self) -> datetime:
        """The store's clock: an aware datetime in UTC."""
        value = self._clock()
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the store clock returned a naive datetime: {value!r}")
        return value.astimezone(UTC)

    def ping(self) -> None:
        """Check the store is reachable (raises StoreError otherwise)."""
        with self._read("reach the database") as conn:
            conn.execute(select(1)).scalar_one()

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self._read("read the schema revision") as conn:
            heads = migrate.current_revision(conn)
        return heads[0] if heads else None

    # ---------------------------------------------------------------- deployments

    def create_deployment(self, d: DeploymentRecord) -> None:
        """Insert a new deployment; `created_at` defaults to now. Its id must be new."""
        d.validate()
        values = {name: getattr(d, name) for name in _DEPLOYMENT_FIELDS}
        values["created_at"] = d.created_at or self.now()
        values["options"] = dict(d.options)
        values["event_seq"] = 0
        with self._write(
            f"create deployment {d.id}",
            integrity_hint="deployment ids must be unique (use shipyard.store.new_id()) "
            "and rollback_of must name a stored deployment",
        ) as conn:
            conn.execute(insert(_deployments).values(values))

    def update_deployment(self, deployment_id: str, **fields: Any) -> DeploymentRecord:
        """Change some fields of a deployment; returns the record as stored now."""
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise TypeError(
                f"update_deployment() cannot change {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(_UPDATABLE))}"
            )
        with self._write(f"update deployment {deployment_id}") as conn:
            row = conn.execute(
                select(_deployments).where(_deployments.c.id == deployment_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise self._no_deployment(deployment_id)
            record = _deployment(row).replace(**fields)
            record.validate()
            if fields:
                values = {name: getattr(record, name) for name in fields}
                if "options" in values:
                    values["options"] = dict(values["options"])
                conn.execute(
                    update(_deployments).where(_deployments.c.id == deployment_id).values(values)
                )
        return record

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        """A deployment by id, or by a unique prefix of its id (at least 4 characters).

        Raises StoreError when the prefix matches several deployments.
        """
        wanted = deployment_id.strip()
        with self._read(f"read deployment {wanted}") as conn:
            row = conn.execute(
                select(_deployments).where(_deployments.c.id == wanted)
            ).one_or_none()
            if row is not None:
                return _deployment(row)
            prefix = _canonical_prefix(wanted)
            if prefix is None:
                return None
            rows = conn.execute(
                select(_deployments)
                .where(_deployments.c.id.startswith(prefix, autoescape=True))
                .order_by(_deployments.c.id)
                .limit(6)
            ).all()
        if not rows:
            return None
        if len(rows) > 1:
            shown = ", ".join(r.id for r in rows[:5]) + (", …" if len(rows) > 5 else "")
            raise StoreError(
                f"deployment id prefix {wanted!r} is ambiguous: it matches {shown}",
                hint="give more characters of the id (`shipyard history` lists them)",
            )
        return _deployment(rows[0])

    def list_deployments(
        self, environment: str | None = None, limit: int | None = 20
    ) -> list[DeploymentRecord]:
        """Deployments, newest first (all environments unless one is given)."""
        query = select(_deployments).order_by(
            _deployments.c.created_at.desc(), _deployments.c.id.desc()
        )
        if environment is not None:
            query = query.where(_deployments.c.environment == environment)
        if limit is not None:
            query = query.limit(limit)
        with self._read("list deployments") as conn:
            return [_deployment(r) for r in conn.execute(query)]

    def last_good_deployment(self, environment: str) -> DeploymentRecord | None:
        """The newest deployment of the environment that succeeded."""
        query = (
            select(_deployments)
            .where(_deployments.c.environment == environment)
            .where(_deployments.c.status == "succeeded")
            .order_by(_deployments.c.created_at.desc(), _deployments.c.id.desc())
            .limit(1)
        )
        with self._read(f"find the last good deployment of {environment}") as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _deployment(row)

    def unfinished_deployments(self, environment: str) -> list[DeploymentRecord]:
        """Deployments still pending, running or rolling back; newest first."""
        query = (
            select(_deployments)
            .where(_deployments.c.environment == environment)
            .where(_deployments.c.status.in_(sorted(UNFINISHED_STATUSES)))
            .order_by(_deployments.c.created_at.desc(), _deployments.c.id.desc())
        )
        with self._read(f"find unfinished deployments of {environment}") as conn:
            return [_deployment(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- components

    def set_component(self, rec: ComponentRecord) -> None:
        """Insert or replace the state of one component on one host of a deployment."""
        rec.validate()
        values = {
            "deployment_id": rec.deployment_id,
            "component": rec.component,
            "host": rec.host,
            "status": rec.status,
            "release": rec.release,
            "previous_release": rec.previous_release,
            "artifact": rec.artifact,
            "port": rec.port,
            "started_at": rec.started_at,
            "finished_at": rec.finished_at,
            "health": None if rec.health is None else dict(rec.health),
            "error": rec.error,
        }
        with self._write(
            f"save component {rec.component}@{rec.host} of deployment {rec.deployment_id}",
            integrity_hint="create the deployment before its components",
        ) as conn:
            conn.execute(self._upsert(_components, values, ("deployment_id", "component", "host")))

    def components(self, deployment_id: str) -> list[ComponentRecord]:
        """The components of a deployment, by component name then host."""
        query = (
            select(_components)
            .where(_components.c.deployment_id == deployment_id)
            .order_by(_components.c.component, _components.c.host)
        )
        with self._read(f"read the components of deployment {deployment_id}") as conn:
            return [_component(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- journal

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
        """Append to a deployment's journal; `seq` is the next number (from 1), `at` now
        unless given (a writer that queues events passes the time each happened)."""
        with self._write(f"journal {kind!r} for deployment {deployment_id}") as conn:
            seq = conn.execute(
                update(_deployments)
                .where(_deployments.c.id == deployment_id)
                .values(event_seq=_deployments.c.event_seq + 1)
                .returning(_deployments.c.event_seq)
            ).scalar_one_or_none()
            if seq is None:
                raise self._no_deployment(deployment_id)
            record = EventRecord(
                deployment_id=deployment_id,
                seq=seq,
                at=self.now() if at is None else at.astimezone(UTC),
                kind=kind,
                step=step,
                component=component,
                status=status,
                message=message,
                data=None if data is None else dict(data),
            )
            conn.execute(
                insert(_events).values(
                    deployment_id=record.deployment_id,
                    seq=record.seq,
                    at=record.at,
                    kind=record.kind,
                    step=record.step,
                    component=record.component,
                    status=record.status,
                    message=record.message,
                    data=record.data,
                )
            )
        return record

    def events(
        self, deployment_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """The journal of a deployment in order, from `after_seq + 1` (for `logs --follow`)."""
        query = (
            select(_events)
            .where(_events.c.deployment_id == deployment_id)
            .where(_events.c.seq > after_seq)
            .order_by(_events.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._read(f"read the journal of deployment {deployment_id}") as conn:
            return [_event(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- snapshots

    def save_snapshot(self, deployment_id: str, entries: Iterable[SnapshotEntry]) -> None:
        """Record what was active before a deployment (replaces an earlier snapshot of it)."""
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
        ) as conn:
            conn.execute(delete(_snapshots).where(_snapshots.c.deployment_id == deployment_id))
            if entries:
                conn.execute(
                    insert(_snapshots),
                    [
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
                    ],
                )

    def snapshot(self, deployment_id: str) -> list[SnapshotEntry]:
        """The snapshot taken before a deployment, by component then host ([] if none)."""
        query = (
            select(_snapshots)
            .where(_snapshots.c.deployment_id == deployment_id)
            .order_by(_snapshots.c.component, _snapshots.c.host)
        )
        with self._read(f"read the snapshot of deployment {deployment_id}") as conn:
            return [
                SnapshotEntry(
                    component=r.component,
                    host=r.host,
                    release=r.release,
                    artifact=r.artifact,
                    migration_revision=r.migration_revision,
                    commit=r.commit,
                    deployment_id=r.active_deployment_id,
                )
                for r in conn.execute(query)
            ]

    # ---------------------------------------------------------------- release specs

    def save_release_spec(self, rec: ReleaseSpecRecord) -> None:
        """Keep a release's spec; a release is immutable, so saving it again is a no-op."""
        values = {
            "environment": rec.environment,
            "component": rec.component,
            "release": rec.release,
            "commit": rec.commit,
            "spec": dict(rec.spec),
            "created_at": rec.created_at or self.now(),
        }
        with self._write(f"save the spec of {rec.component} release {rec.release}") as conn:
            conn.execute(
                self._upsert(
                    _release_specs,
                    values,
                    ("environment", "component", "release"),
                    replace=False,
                )
            )

    def release_spec(
        self, environment: str, component: str, release: str
    ) -> ReleaseSpecRecord | None:
        """The spec saved for one release (None for a release made before specs were kept)."""
        query = select(_release_specs).where(
            _release_specs.c.environment == environment,
            _release_specs.c.component == component,
            _release_specs.c.release == release,
        )
        with self._read(f"read the spec of {component} release {release}") as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        return ReleaseSpecRecord(
            environment=row.environment,
            component=row.component,
            release=row.release,
            commit=row.commit,
            spec=dict(row.spec),
            created_at=row.created_at,
        )

    # ---------------------------------------------------------------- artifacts

    def record_artifact(self, a: ArtifactRecord) -> None:
        """Remember a built artifact; recording the same component+digest again is a no-op."""
        values = {
            "component": a.component,
            "digest": a.digest,
            "path": a.path,
            "size_bytes": a.size_bytes,
            "created_at": a.created_at or self.now(),
            "build_command": a.build_command,
            "commit": a.commit,
            "dirty": a.dirty,
        }
        with self._write(f"record artifact {a.component}@{a.digest}") as conn:
            conn.execute(self._upsert(_artifacts, values, ("component", "digest"), replace=False))

    def get_artifact(self, component: str, digest: str) -> ArtifactRecord | None:
        query = select(_artifacts).where(
            _artifacts.c.component == component, _artifacts.c.digest == digest
        )
        with self._read(f"read artifact {component}@{digest}") as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _artifact(row)

    def list_artifacts(self, component: str | None = None) -> list[ArtifactRecord]:
        """Recorded artifacts, newest first (of one component if given)."""
        query = select(_artifacts).order_by(
            _artifacts.c.created_at.desc(), _artifacts.c.component, _artifacts.c.digest
        )
        if component is not None:
            query = query.where(_artifacts.c.component == component)
        with self._read("list artifacts") as conn:
            return [_artifact(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- saved plans

    def save_plan(self, rec: PlanRecord) -> None:
        """Keep a plan for a later `deploy(plan_id)`; its id must be new."""
        values = {
            "id": rec.id,
            "environment": rec.environment,
            "plan_hash": rec.plan_hash,
            "commit": rec.commit,
            "plan": dict(rec.plan),
            "created_at": rec.created_at or self.now(),
            "created_by": rec.created_by,
        }
        with self._write(
            f"save plan {rec.id}", integrity_hint="plan ids must be unique (use new_id())"
        ) as conn:
            conn.execute(insert(_plans).values(values))

    def prune_plans(self, max_age: timedelta, keep: int, protect: Iterable[str] = ()) -> int:
        """Delete the saved plans older than `max_age` and those beyond each environment's
        newest `keep`, but none of an environment in `protect`; return how many went."""
        spared = set(protect)
        oldest = self.now() - max_age
        with self._write("prune saved plans") as conn:
            rows = conn.execute(
                select(_plans.c.id, _plans.c.environment, _plans.c.created_at).order_by(
                    _plans.c.created_at.desc(), _plans.c.id.desc()
                )
            ).all()
            seen: dict[str, int] = {}
            doomed = []
            for row in rows:
                seen[row.environment] = seen.get(row.environment, 0) + 1
                if row.environment not in spared and (
                    seen[row.environment] > keep or row.created_at < oldest
                ):
                    doomed.append(row.id)
            for start in range(0, len(doomed), 500):
                conn.execute(delete(_plans).where(_plans.c.id.in_(doomed[start : start + 500])))
        return len(doomed)

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """A saved plan by its exact id (None if there is none)."""
        with self._read(f"read plan {plan_id}") as conn:
            row = conn.execute(select(_plans).where(_plans.c.id == plan_id)).one_or_none()
        if row is None:
            return None
        return PlanRecord(
            id=row.id,
            environment=row.environment,
            plan_hash=row.plan_hash,
            commit=row.commit,
            plan=dict(row.plan),
            created_at=row.created_at,
            created_by=row.created_by,
        )

    # ---------------------------------------------------------------- locks

    def acquire_lock(
        self, environment: str, deployment_id: str, owner: LockOwner, ttl_s: float
    ) -> LockRecord | None:
        """Take the environment's lease for `ttl_s` seconds, atomically across machines.

        - free → taken; returns None;
        - already held by this deployment and owner → lease renewed; returns None;
        - held by someone else and not expired → raises LockedError naming the holder;
        - held but expired (its orchestrator died) → taken over; returns the expired
          LockRecord so the caller can recover that deployment first.
        """
        _check_ttl(ttl_s)
        for _ in range(5):
            with self._write(f"lock environment {environment}") as conn:
                now = self.now()
                expires = now + timedelta(seconds=ttl_s)
                inserted = conn.execute(
                    self._upsert(
                        _locks,
                        {
                            "environment": environment,
                            "deployment_id": deployment_id,
                            "owner_user": owner.user,
                            "owner_host": owner.host,
                            "owner_pid": owner.pid,
                            "acquired_at": now,
                            "heartbeat_at": now,
                            "expires_at": expires,
                        },
                        ("environment",),
                        replace=False,
                    ).returning(_locks.c.environment)
                ).first()
                if inserted is not None:
                    self._audit(conn, environment, "acquired", now, deployment_id, owner)
                    return None
                row = conn.execute(
                    select(_locks).where(_locks.c.environment == environment).with_for_update()
                ).one_or_none()
                if row is None:
                    continue  # released between our insert and select: try again
                held = _lock(row)
                if held.deployment_id == deployment_id and held.owner == owner:
                    conn.execute(
                        update(_locks)
                        .where(_locks.c.environment == environment)
                        .values(heartbeat_at=now, expires_at=expires)
                    )
                    return None
                if not held.expired(now):
                    raise _locked_error(held, now)
                conn.execute(
                    update(_locks)
                    .where(_locks.c.environment == environment)
                    .values(
                        deployment_id=deployment_id,
                        owner_user=owner.user,
                        owner_host=owner.host,
                        owner_pid=owner.pid,
                        acquired_at=now,
                        heartbeat_at=now,
                        expires_at=expires,
                    )
                )
                self._audit(
                    conn,
                    environment,
                    "taken_over",
                    now,
                    held.deployment_id,
                    held.owner,
                    by=str(owner),
                    detail=f"lease expired at {iso(held.expires_at)}; "
                    f"taken over by deployment {deployment_id}",
                )
                return held
        raise StoreError(
            f"state store {self._masked}: could not lock environment {environment}: "
            "the lock changed hands five times in a row",
            hint="retry; another shipyard process is taking and releasing this lock rapidly",
        )

    def heartbeat(self, environment: str, deployment_id: str, ttl_s: float) -> None:
        """Extend our lease to now + `ttl_s`; raises LockedError if the lock is not ours."""
        _check_ttl(ttl_s)
        with self._write(f"renew the lock of environment {environment}") as conn:
            now = self.now()
            result = conn.execute(
                update(_locks)
                .where(_locks.c.environment == environment)
                .where(_locks.c.deployment_id == deployment_id)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl_s))
            )
            if result.rowcount == 1:
                return
            row = conn.execute(
                select(_locks).where(_locks.c.environment == environment)
            ).one_or_none()
            last_forced = conn.execute(
                select(_lock_events)
                .where(_lock_events.c.environment == environment)
                .where(_lock_events.c.deployment_id == deployment_id)
                .where(_lock_events.c.action.in_(["forced_release", "taken_over"]))
                .order_by(_lock_events.c.id.desc())
                .limit(1)
            ).one_or_none()
        message = (
            f"deployment {deployment_id} no longer holds the lock of environment {environment!r}"
        )
        if last_forced is not None:
            audit = _lock_event(last_forced)
            verb = "force-released" if audit.action == "forced_release" else "taken over"
            message += f": it was {verb} by {audit.by} at {iso(audit.at)}"
        if row is not None:
            held = _lock(row)
            message += (
                f"; it is now held by deployment {held.deployment_id} ({held.owner}) "
                f"since {iso(held.acquired_at)}"
            )
        raise LockedError(
            message,
            hint="stop this deployment: another process owns the environment now "
            "(and will recover this deployment if it needs to)",
        )

    def release_lock(self, environment: str, deployment_id: str) -> None:
        """Give the lock back; does nothing if this deployment does not hold it."""
        with self._write(f"unlock environment {environment}") as conn:
            row = conn.execute(
                select(_locks)
                .where(_locks.c.environment == environment)
                .where(_locks.c.deployment_id == deployment_id)
                .with_for_update()
            ).one_or_none()
            if row is None:
                return
            held = _lock(row)
            conn.execute(
                delete(_locks)
                .where(_locks.c.environment == environment)
                .where(_locks.c.deployment_id == deployment_id)
            )
            self._audit(conn, environment, "released", self.now(), deployment_id, held.owner)

    def get_lock(self, environment: str) -> LockRecord | None:
        """The environment's lock (possibly expired: see `LockRecord.expired(now)`)."""
        with self._read(f"read the lock of environment {environment}") as conn:
            row = conn.execute(
                select(_locks).where(_locks.c.environment == environment)
            ).one_or_none()
        return None if row is None else _lock(row)

    def force_release_lock(self, environment: str, by: str) -> LockRecord | None:
        """Remove whatever lock the environment has, recording `by` in the audit trail.

        Returns the lock that was released (None if there was none).
        """
        with self._write(f"force-release the lock of environment {environment}") as conn:
            row = conn.execute(
                select(_locks).where(_locks.c.environment == environment).with_for_update()
            ).one_or_none()
            if row is None:
                return None
            held = _lock(row)
            now = self.now()
            conn.execute(delete(_locks).where(_locks.c.environment == environment))
            state = "expired" if held.expired(now) else "not expired"
            self._audit(
                conn,
                environment,
                "forced_release",
                now,
                held.deployment_id,
                held.owner,
                by=by,
                detail=f"held since {iso(held.acquired_at)}, last heartbeat "
                f"{iso(held.heartbeat_at)}, lease {state} ({iso(held.expires_at)})",
            )
        return held

    def lock_events(
        self, environment: str | None = None, limit: int | None = 50
    ) -> list[LockEventRecord]:
        """The lock audit trail, newest first."""
        query = select(_lock_events).order_by(_lock_events.c.id.desc())
        if environment is not None:
            query = query.where(_lock_events.c.environment == environment)
        if limit is not None:
            query = query.limit(limit)
        with self._read("read the lock audit trail") as conn:
            return [_lock_event(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- internals

    def _audit(
        self,
        conn: Connection,
        environment: str,
        action: str,
        at: datetime,
        deployment_id: str | None,
        owner: LockOwner | None,
        *,
        by: str | None = None,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            insert(_lock_events).values(
                environment=environment,
                action=action,
                at=at,
                deployment_id=deployment_id,
                owner_user=None if owner is None else owner.user,
                owner_host=None if owner is None else owner.host,
                owner_pid=None if owner is None else owner.pid,
                by=by,
                detail=detail,
            )
        )

    def _upsert(
        self,
        table: Table,
        values: dict[str, Any],
        keys: tuple[str, ...],
        *,
        replace: bool = True,
    ) -> Insert:
        """INSERT … ON CONFLICT (keys) DO UPDATE (or DO NOTHING), in the store's dialect."""
        if self.dialect == "postgresql":
            # Imported here: the PostgreSQL dialect costs a SQLite user ~50 ms of start-up.
            from sqlalchemy.dialects import postgresql as pg_dialect

            pg = pg_dialect.insert(table).values(values)
            if not replace:
                return pg.on_conflict_do_nothing(index_elements=list(keys))
            return pg.on_conflict_do_update(
                index_elements=list(keys),
                set_={k: pg.excluded[k] for k in values if k not in keys},
            )
        lite = sqlite_dialect.insert(table).values(values)
        if not replace:
            return lite.on_conflict_do_nothing(index_elements=list(keys))
        return lite.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: lite.excluded[k] for k in values if k not in keys},
        )

    def _no_deployment(self, deployment_id: str) -> StoreError:
        return StoreError(
            f"no deployment {deployment_id} in the state store {self._masked}",
            hint="`shipyard history` lists the stored deployments",
        )

    @contextlib.contextmanager
    def _translating(
        self, action: str, integrity_hint: str | None = None, *, unreachable: bool = False
    ) -> Iterator[None]:
        """Turn SQLAlchemy/DBAPI/OS errors into StoreError naming the (masked) URL."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise self._store_error(action, exc, integrity_hint, unreachable) from None
        except OSError as exc:
            raise StoreError(
                f"state store {self._masked}: could not {action}: {exc.strerror or exc}",
                hint="check the state store's path and permissions",
            ) from None

    def _store_error(
        self,
        action: str,
        exc: SQLAlchemyError,
        integrity_hint: str | None,
        unreachable: bool = False,
    ) -> StoreError:
        orig = getattr(exc, "orig", None) if isinstance(exc, StatementError) else None
        reason = str(orig if orig is not None else exc).strip().splitlines()
        text = scrub(reason[0] if reason else type(exc).__name__, self._url)
        low = text.lower()
        if isinstance(exc, IntegrityError):
            hint = integrity_hint or "the record conflicts with one already stored"
        elif "database is locked" in low or "database table is locked" in low:
            hint = (
                f"another process held the SQLite write lock longer than "
                f"{BUSY_TIMEOUT_MS // 1000}s; retry, or use PostgreSQL when several "
                "machines deploy at once"
            )
        elif "unable to open database file" in low or "readonly database" in low:
            hint = "check that the state file's folder exists and is writable"
        elif 'database "' in low and "does not exist" in low:
            hint = "create that database first (e.g. `createdb NAME`), or fix the URL"
        elif "no such table" in low or ("relation" in low and "does not exist" in low):
            hint = (
                "the database is not at the schema this shipyard expects; "
                "was it migrated by another tool or partly deleted?"
            )
        elif "file is not a database" in low or "disk image is malformed" in low:
            path = sqlite_path(self._url)
            hint = (
                f"the state file {path} is damaged or is not a shipyard state database: "
                "put back a good copy (from a backup); to start a new, empty history on "
                f"purpose, move it aside and create it empty: `mv {path} {path}.broken && "
                f"touch {path}`"
            )
        elif isinstance(exc, DBAPIError) and exc.connection_invalidated:
            hint = "the connection to the database was lost; retry"
        else:
            hint = (
                "check that the database is running and reachable and that the URL is right "
                "(`state` in [project] of shipyard.toml, or $SHIPYARD_STATE_URL)"
            )
        if unreachable:
            return StoreError(f"state store {self._masked} is unreachable: {text}", hint=hint)
        return StoreError(f"state store {self._masked}: could not {action}: {text}", hint=hint)

    @contextlib.contextmanager
    def batch(self, action: str) -> Iterator[None]:
        """The writes this thread makes inside the block share one transaction: all are
        stored, or none (StoreError). For the engine's journal writer: one commit for the
        events and records queued meanwhile instead of one each."""
        self._check_open()
        with self._mutex, self._translating(action), self._engine.begin() as conn:
            self._batch.conn = conn
            try:
                yield
            finally:
                self._batch.conn = None

    @contextlib.contextmanager
    def _write(self, action: str, integrity_hint: str | None = None) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: the file's write lock up front)."""
        self._check_open()
        batched: Connection | None = getattr(self._batch, "conn", None)
        if batched is not None:
            with self._translating(action, integrity_hint):
                yield batched
            return
        with self._mutex, self._translating(action, integrity_hint), self._engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        """A read-only transaction (a deferred BEGIN on SQLite: takes no write lock)."""
        self._check_open()
        with self._mutex, self._translating(action), self._engine.connect() as conn:
            conn.execution_options(**{migrate.READ_ONLY: True})
            with conn.begin():
                yield conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(
                f"state store {self._masked} is closed",
                hint="open it again with Store.open(url)",
            )


# -------------------------------------------------------------------- engine


def _owner_only(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600), and tighten an existing one.

    The journal holds error messages and command output; SQLite gives its -wal and -shm
    files the database file's mode, so they follow. An existing file is never opened here:
    closing a descriptor would drop the POSIX locks this process's connections hold on it.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "application_name" not in url.query:
        connect_args["application_name"] = "shipyard"
    return create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,
        json_serializer=_json_dumps,
    )


def _sqlite_engine(url: URL) -> Engine:
    memory = is_memory_sqlite(url)
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        "json_serializer": _json_dumps,
    }
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin hook below emit BEGIN, instead of pysqlite's implicit
        # (and late) one, so transactions really are transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not memory:
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(migrate.READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _enable_wal(cursor: Any) -> None:
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


# -------------------------------------------------------------------- rows → records


def _canonical_prefix(value: str) -> str | None:
    """A lowercase id prefix, hyphenated like a UUID; None when it cannot be one."""
    text = value.lower()
    if not _HEX_PREFIX.fullmatch(text):
        return None
    digits = text.replace("-", "")
    if len(digits) < MIN_PREFIX:
        return None
    if "-" in text:
        return text
    parts, start = [], 0
    for width in (8, 4, 4, 4, 12):
        chunk = digits[start : start + width]
        if not chunk:
            break
        parts.append(chunk)
        start += width
        if len(chunk) < width:
            break
    return "-".join(parts)


def _check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0:
        raise ValueError(f"lock ttl_s must be positive, got {ttl_s!r}")


def _locked_error(held: LockRecord, now: datetime) -> LockedError:
    env = held.environment
    return LockedError(
        f"environment {env!r} is locked by deployment {held.deployment_id} "
        f"({held.owner}) since {iso(held.acquired_at)} ({_ago(now - held.acquired_at)} ago); "
        f"last heartbeat {_ago(now - held.heartbeat_at)} ago, "
        f"lease expires in {_ago(held.expires_at - now)}",
        hint="wait for it to finish (`--wait-lock DURATION` waits for the lock), or, if you "
        f"are sure that process is dead, run `shipyard lock release --env {env} --force`",
    )


def _deployment(row: Row[Any]) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        environment=row.environment,
        kind=row.kind,
        commit=row.commit,
        status=row.status,
        base_commit=row.base_commit,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        plan_hash=row.plan_hash,
        dirty=bool(row.dirty),
        rollback_of=row.rollback_of,
        promoted_from=row.promoted_from,
        created_by=row.created_by,
        options=dict(row.options or {}),
        created_at=row.created_at,
    )


def _component(row: Row[Any]) -> ComponentRecord:
    return ComponentRecord(
        deployment_id=row.deployment_id,
        component=row.component,
        host=row.host,
        status=row.status,
        release=row.release,
        previous_release=row.previous_release,
        artifact=row.artifact,
        port=row.port,
        started_at=row.started_at,
        finished_at=row.finished_at,
        health=row.health,
        error=row.error,
    )


def _event(row: Row[Any]) -> EventRecord:
    return EventRecord(
        deployment_id=row.deployment_id,
        seq=row.seq,
        at=row.at,
        kind=row.kind,
        step=row.step,
        component=row.component,
        status=row.status,
        message=row.message,
        data=row.data,
    )


def _artifact(row: Row[Any]) -> ArtifactRecord:
    return ArtifactRecord(
        component=row.component,
        digest=row.digest,
        path=row.path,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        build_command=row.build_command,
        commit=row.commit,
        dirty=bool(row.dirty),
    )


def _lock(row: Row[Any]) -> LockRecord:
    return LockRecord(
        environment=row.environment,
        deployment_id=row.deployment_id,
        owner=LockOwner(user=row.owner_user, host=row.owner_host, pid=row.owner_pid),
        acquired_at=row.acquired_at,
        heartbeat_at=row.heartbeat_at,
        expires_at=row.expires_at,
    )


def _lock_event(row: Row[Any]) -> LockEventRecord:
    owner = (
        None
        if row.owner_user is None
        else LockOwner(user=row.owner_user, host=row.owner_host or "", pid=row.owner_pid or 0)
    )
    return LockEventRecord(
        id=row.id,
        environment=row.environment,
        action=row.action,
        at=row.at,
        deployment_id=row.deployment_id,
        owner=owner,
        by=row.by,
        detail=row.detail,
    )
