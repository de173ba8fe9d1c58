"""The store's operations in SQLAlchemy Core: everything on PostgreSQL (and on an
in-memory or URI-style SQLite URL), and the schema migrations of a SQLite file.

On a SQLite file at head `Store` (store.py) reads through `sqlite_reads` and writes through
`sqlite_writes`, and never imports this module. Private to the store.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.pool import StaticPool

from shipyard.errors import StoreError
from shipyard.store import migrate, rows, sqlite, tables, writing
from shipyard.store.failure import BUSY_TIMEOUT_MS, closed_store, os_failure, store_error
from shipyard.store.ids import ambiguous_prefix, canonical_prefix
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
)
from shipyard.store.urls import StoreUrl, is_memory_sqlite

__all__ = ["SqlStore"]

Clock = Callable[[], datetime]

PG_CONNECT_TIMEOUT_S = 5

_deployments = tables.deployments
_components = tables.components
_events = tables.events
_snapshots = tables.snapshots
_artifacts = tables.artifacts
_release_specs = tables.release_specs
_locks = tables.locks
_lock_events = tables.lock_events
_plans = tables.plans


class SqlStore:
    """Every operation of `Store` over a SQLAlchemy engine (SQLite or PostgreSQL).

    `Store` documents them; this class is its SQLAlchemy half and is not used directly.
    """

    def __init__(self, engine: Engine, url: StoreUrl, masked: str, now: Clock) -> None:
        """Use `SqlStore.connect`. `now` is the store's clock (aware UTC)."""
        self._engine = engine
        self._url = url
        self._masked = masked
        self.now: Clock = now
        self._closed = False
        self._batch = threading.local()  # the connection of a `batch()` in this thread
        # An in-memory SQLite database is one shared connection: serialize its users.
        self._mutex: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if is_memory_sqlite(url) else contextlib.nullcontext()
        )

    @classmethod
    def connect(cls, url: StoreUrl, masked: str, now: Clock) -> SqlStore:
        """An engine for `url`, checked by connecting once (StoreError if unreachable)."""
        engine = _create_engine(url)
        store = cls(engine, url, masked, now)
        try:
            with store._translating("connect", unreachable=True):
                engine.connect().close()
        except BaseException:
            engine.dispose()
            raise
        return store

    def migrate(self) -> None:
        """Bring the schema to head (Alembic; refuses a schema newer than this code)."""
        with self._translating("migrate the schema"):
            migrate.upgrade(self._engine, self._masked)

    def close(self) -> None:
        """Close every pooled connection; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

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
        values = writing.deployment_row(d, self.now())
        with self._write(
            f"create deployment {d.id}",
            integrity_hint="deployment ids must be unique (use shipyard.store.new_id()) "
            "and rollback_of must name a stored deployment",
        ) as conn:
            conn.execute(insert(_deployments).values(values))

    def update_deployment(self, deployment_id: str, **fields: Any) -> DeploymentRecord:
        """Change some fields of a deployment; returns the record as stored now."""
        writing.check_updatable(fields)
        with self._write(f"update deployment {deployment_id}") as conn:
            row = conn.execute(
                select(_deployments).where(_deployments.c.id == deployment_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise self._no_deployment(deployment_id)
            record = rows.deployment(row._mapping).replace(**fields)
            record.validate()
            if fields:
                values = writing.changed_fields(record, fields)
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
                return rows.deployment(row._mapping)
            prefix = canonical_prefix(wanted)
            if prefix is None:
                return None
            found = conn.execute(
                select(_deployments)
                .where(_deployments.c.id.startswith(prefix, autoescape=True))
                .order_by(_deployments.c.id)
                .limit(6)
            ).all()
        if not found:
            return None
        if len(found) > 1:
            raise ambiguous_prefix(wanted, [r.id for r in found])
        return rows.deployment(found[0]._mapping)

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
            return [rows.deployment(r._mapping) for r in conn.execute(query)]

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
        return None if row is None else rows.deployment(row._mapping)

    def unfinished_deployments(self, environment: str) -> list[DeploymentRecord]:
        """Deployments still pending, running or rolling back; newest first."""
        query = (
            select(_deployments)
            .where(_deployments.c.environment == environment)
            .where(_deployments.c.status.in_(sorted(UNFINISHED_STATUSES)))
            .order_by(_deployments.c.created_at.desc(), _deployments.c.id.desc())
        )
        with self._read(f"find unfinished deployments of {environment}") as conn:
            return [rows.deployment(r._mapping) for r in conn.execute(query)]

    # ---------------------------------------------------------------- components

    def set_component(self, rec: ComponentRecord) -> None:
        """Insert or replace the state of one component on one host of a deployment."""
        values = writing.component_row(rec)
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
            return [rows.component(r._mapping) for r in conn.execute(query)]

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
            return [rows.event(r._mapping) for r in conn.execute(query)]

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
            return [rows.snapshot_entry(r._mapping) for r in conn.execute(query)]

    # ---------------------------------------------------------------- release specs

    def save_release_spec(self, rec: ReleaseSpecRecord) -> None:
        """Keep a release's spec; a release is immutable, so saving it again is a no-op."""
        values = writing.release_spec_row(rec, self.now())
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
        return None if row is None else rows.release_spec(row._mapping)

    # ---------------------------------------------------------------- artifacts

    def record_artifact(self, a: ArtifactRecord) -> None:
        """Remember a built artifact; recording the same component+digest again is a no-op."""
        values = writing.artifact_row(a, self.now())
        with self._write(f"record artifact {a.component}@{a.digest}") as conn:
            conn.execute(self._upsert(_artifacts, values, ("component", "digest"), replace=False))

    def get_artifact(self, component: str, digest: str) -> ArtifactRecord | None:
        query = select(_artifacts).where(
            _artifacts.c.component == component, _artifacts.c.digest == digest
        )
        with self._read(f"read artifact {component}@{digest}") as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else rows.artifact(row._mapping)

    def list_artifacts(self, component: str | None = None) -> list[ArtifactRecord]:
        """Recorded artifacts, newest first (of one component if given)."""
        query = select(_artifacts).order_by(
            _artifacts.c.created_at.desc(), _artifacts.c.component, _artifacts.c.digest
        )
        if component is not None:
            query = query.where(_artifacts.c.component == component)
        with self._read("list artifacts") as conn:
            return [rows.artifact(r._mapping) for r in conn.execute(query)]

    # ---------------------------------------------------------------- saved plans

    def save_plan(self, rec: PlanRecord) -> None:
        """Keep a plan for a later `deploy(plan_id)`; its id must be new."""
        values = writing.plan_row(rec, self.now())
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
        return None if row is None else rows.plan(row._mapping)

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
        writing.check_ttl(ttl_s)
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
                held = rows.lock(row._mapping)
                if held.deployment_id == deployment_id and held.owner == owner:
                    conn.execute(
                        update(_locks)
                        .where(_locks.c.environment == environment)
                        .values(heartbeat_at=now, expires_at=expires)
                    )
                    return None
                if not held.expired(now):
                    raise writing.locked_error(held, now)
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
                    detail=writing.taken_over_detail(held, deployment_id),
                )
                return held
        raise writing.lock_changed_hands(self._masked, environment)

    def heartbeat(self, environment: str, deployment_id: str, ttl_s: float) -> None:
        """Extend our lease to now + `ttl_s`; raises LockedError if the lock is not ours."""
        writing.check_ttl(ttl_s)
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
        raise writing.lost_lock_error(
            environment,
            deployment_id,
            None if row is None else rows.lock(row._mapping),
            None if last_forced is None else rows.lock_event(last_forced._mapping),
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
            held = rows.lock(row._mapping)
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
        return None if row is None else rows.lock(row._mapping)

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
            held = rows.lock(row._mapping)
            now = self.now()
            conn.execute(delete(_locks).where(_locks.c.environment == environment))
            self._audit(
                conn,
                environment,
                "forced_release",
                now,
                held.deployment_id,
                held.owner,
                by=by,
                detail=writing.forced_detail(held, now),
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
            return [rows.lock_event(r._mapping) for r in conn.execute(query)]

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
        if self._url.backend == "postgresql":
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
        return writing.no_deployment(deployment_id, self._masked)

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
            raise os_failure(self._masked, action, exc) from None

    def _store_error(
        self,
        action: str,
        exc: SQLAlchemyError,
        integrity_hint: str | None,
        unreachable: bool = False,
    ) -> StoreError:
        orig = getattr(exc, "orig", None) if isinstance(exc, StatementError) else None
        return store_error(
            self._masked,
            self._url,
            action,
            str(orig if orig is not None else exc) or type(exc).__name__,
            integrity=isinstance(exc, IntegrityError),
            integrity_hint=integrity_hint,
            invalidated=isinstance(exc, DBAPIError) and exc.connection_invalidated,
            unreachable=unreachable,
        )

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
            raise closed_store(self._masked)


# -------------------------------------------------------------------- engine


def _create_engine(url: StoreUrl) -> Engine:
    if url.backend == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "application_name" not in url.query:
        connect_args["application_name"] = "shipyard"
    return create_engine(
        url.sqlalchemy(),
        connect_args=connect_args,
        pool_pre_ping=True,
        json_serializer=writing.json_dumps,
    )


def _sqlite_engine(url: StoreUrl) -> Engine:
    memory = is_memory_sqlite(url)
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        "json_serializer": writing.json_dumps,
    }
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url.sqlalchemy(), **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        sqlite.configure(dbapi_connection, memory=memory)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(migrate.READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
