"""The durable state store: one `Store` over SQLite (default) or PostgreSQL.

Layers underneath (docs/architecture.md, "The store's layers"): on a SQLite file,
`sqlite_reads.SqliteReads` and `sqlite_writes.SqliteWrites` run every operation through
the standard library, so a SQLite store at the current schema never imports SQLAlchemy
(most of what `status` and `deploy` would otherwise spend starting up); `sql.SqlStore`
runs them through SQLAlchemy Core on PostgreSQL and on in-memory or URI-style SQLite URLs,
and migrates a SQLite file below the current schema.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shipyard.errors import StoreError
from shipyard.store.failure import closed_store
from shipyard.store.migrate import HEAD_REVISION
from shipyard.store.records import (
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
from shipyard.store.sqlite_reads import SqliteReads
from shipyard.store.sqlite_writes import SqliteWrites
from shipyard.store.urls import StoreUrl, mask_url, normalize_url, sqlite_path

if TYPE_CHECKING:
    from shipyard.store.sql import SqlStore

__all__ = ["Clock", "Store"]

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    masked, plus a hint; nothing from SQLAlchemy or sqlite3 leaks out. Records are the
    frozen dataclasses of `shipyard.store.records`.

    Groups of methods:

    - deployments: `create_deployment`, `update_deployment` (returns the new record),
      `get_deployment` (exact id or a unique prefix of at least 4 characters, like git),
      `list_deployments` (newest first), `last_good_deployment`, `unfinished_deployments`;
    - components of a deployment, per host: `set_component` (upsert), `components`;
    - the journal: `append_event` (per-deployment `seq` from 1, assigned atomically;
      `at` from the clock), `events`;
    - `save_snapshot` / `snapshot`: what was active before a deployment;
    - release specs: `save_release_spec`, `release_spec`;
    - saved plans (deploy exactly what was shown): `save_plan`, `get_plan`;
    - artifacts: `record_artifact` (idempotent on component+digest), `get_artifact`,
      `list_artifacts`;
    - the per-environment lease: `acquire_lock`, `heartbeat`, `release_lock`, `get_lock`,
      `force_release_lock`, and the audit trail `lock_events`;
    - `batch`: this thread's writes in one transaction.

    Time: every timestamp the store writes comes from the injectable `clock` (aware
    UTC); lock expiry is judged with that clock too, so machines sharing a PostgreSQL
    store need synchronized clocks (NTP) and TTLs much longer than their skew.

    Only the engine's state machine decides a deployment's status; the store saves
    what it is told (it validates values, not transitions).

    Secrets are never stored: no table has a column for environment values, and
    `options`, event `data` and `health` must hold only names, fingerprints and flags.

    Thread-safe: share one Store between the engine's worker threads.
    """

    def __init__(
        self,
        url: StoreUrl,
        display: str,
        clock: Clock,
        reads: SqliteReads | None = None,
        writes: SqliteWrites | None = None,
        sql: SqlStore | None = None,
    ) -> None:
        """Use `Store.open`. `display` is the URL as the user wrote it (shown masked);
        `reads` and `writes` use a SQLite file through sqlite3; `sql` is made on first need."""
        self._url = url
        self._masked = mask_url(display)
        self._clock = clock
        self._reads = reads
        self._writes = writes
        self._sql_store = sql
        self._opening = threading.Lock()
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, url: str, *, clock: Clock | None = None) -> Store:
        """Connect, create the SQLite file's folders, migrate to the current schema.

        Raises StoreError when the database is unreachable, the URL unusable, or the
        schema newer than this code.
        """
        parsed = normalize_url(url)
        store = cls(parsed, url.strip(), clock or _utcnow)
        path = sqlite_path(parsed)
        try:
            if path is not None:
                store._prepare_file(path)
                if not parsed.query:  # options (uri, mode…) are SQLAlchemy's to read
                    store._reads = SqliteReads.connect(path, parsed, store._masked)
                    store._writes = SqliteWrites(path, parsed, store._masked, store.now)
                    if store._reads.revisions() == (HEAD_REVISION,):
                        return store  # the common case: no SQLAlchemy, no Alembic
            store._sql().migrate()
        except BaseException:
            store.close()
            raise
        return store

    def _prepare_file(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"state store {self._masked}: cannot create the folder {path.parent}: "
                f"{exc.strerror or exc}",
                hint="check the path in `state` of shipyard.toml and the folder's permissions",
            ) from None
        try:
            _owner_only(path)
        except OSError as exc:
            raise StoreError(
                f"state store {self._masked}: cannot create or protect the file {path}: "
                f"{exc.strerror or exc}",
                hint="check the path in `state` of shipyard.toml and the file's permissions",
            ) from None

    def _sql(self) -> SqlStore:
        """The SQLAlchemy layer (what `_reads` and `_writes` do not do), made once."""
        self._check_open()
        if self._sql_store is not None:
            return self._sql_store
        with self._opening:
            if self._sql_store is None:
                from shipyard.store.sql import SqlStore

                self._sql_store = SqlStore.connect(self._url, self._masked, self.now)
            return self._sql_store

    def _reader(self) -> SqliteReads | SqlStore:
        self._check_open()
        return self._reads if self._reads is not None else self._sql()

    def _writer(self) -> SqliteWrites | SqlStore:
        self._check_open()
        return self._writes if self._writes is not None else self._sql()

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._reads is not None:
            self._reads.close()
        if self._writes is not None:
            self._writes.close()
        if self._sql_store is not None:
            self._sql_store.close()

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
        return self._url.backend

    def now(self) -> datetime:
        """The store's clock: an aware datetime in UTC."""
        value = self._clock()
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the store clock returned a naive datetime: {value!r}")
        return value.astimezone(UTC)

    def ping(self) -> None:
        """Check the store is reachable (raises StoreError otherwise)."""
        self._reader().ping()

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        return self._reader().schema_revision()

    def _check_open(self) -> None:
        if self._closed:
            raise closed_store(self._masked)

    # ---------------------------------------------------------------- deployments

    def create_deployment(self, d: DeploymentRecord) -> None:
        """Insert a new deployment; `created_at` defaults to now. Its id must be new."""
        self._writer().create_deployment(d)

    def update_deployment(self, deployment_id: str, **fields: Any) -> DeploymentRecord:
        """Change some fields of a deployment; returns the record as stored now."""
        return self._writer().update_deployment(deployment_id, **fields)

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        """A deployment by id, or by a unique prefix of its id (at least 4 characters).

        Raises StoreError when the prefix matches several deployments.
        """
        return self._reader().get_deployment(deployment_id)

    def list_deployments(
        self, environment: str | None = None, limit: int | None = 20
    ) -> list[DeploymentRecord]:
        """Deployments, newest first (all environments unless one is given)."""
        return self._reader().list_deployments(environment, limit)

    def last_good_deployment(self, environment: str) -> DeploymentRecord | None:
        """The newest deployment of the environment that succeeded."""
        return self._reader().last_good_deployment(environment)

    def unfinished_deployments(self, environment: str) -> list[DeploymentRecord]:
        """Deployments still pending, running or rolling back; newest first."""
        return self._reader().unfinished_deployments(environment)

    # ---------------------------------------------------------------- components

    def set_component(self, rec: ComponentRecord) -> None:
        """Insert or replace the state of one component on one host of a deployment."""
        self._writer().set_component(rec)

    def components(self, deployment_id: str) -> list[ComponentRecord]:
        """The components of a deployment, by component name then host."""
        return self._reader().components(deployment_id)

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
        return self._writer().append_event(
            deployment_id,
            kind,
            step=step,
            component=component,
            status=status,
            message=message,
            data=data,
            at=at,
        )

    def events(
        self, deployment_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """The journal of a deployment in order, from `after_seq + 1` (for `logs --follow`)."""
        return self._reader().events(deployment_id, after_seq, limit)

    # ---------------------------------------------------------------- snapshots

    def save_snapshot(self, deployment_id: str, entries: Iterable[SnapshotEntry]) -> None:
        """Record what was active before a deployment (replaces an earlier snapshot of it)."""
        self._writer().save_snapshot(deployment_id, entries)

    def snapshot(self, deployment_id: str) -> list[SnapshotEntry]:
        """The snapshot taken before a deployment, by component then host ([] if none)."""
        return self._reader().snapshot(deployment_id)

    # ---------------------------------------------------------------- release specs

    def save_release_spec(self, rec: ReleaseSpecRecord) -> None:
        """Keep a release's spec; a release is immutable, so saving it again is a no-op."""
        self._writer().save_release_spec(rec)

    def release_spec(
        self, environment: str, component: str, release: str
    ) -> ReleaseSpecRecord | None:
        """The spec saved for one release (None for a release made before specs were kept)."""
        return self._reader().release_spec(environment, component, release)

    # ---------------------------------------------------------------- artifacts

    def record_artifact(self, a: ArtifactRecord) -> None:
        """Remember a built artifact; recording the same component+digest again is a no-op."""
        self._writer().record_artifact(a)

    def get_artifact(self, component: str, digest: str) -> ArtifactRecord | None:
        return self._reader().get_artifact(component, digest)

    def list_artifacts(self, component: str | None = None) -> list[ArtifactRecord]:
        """Recorded artifacts, newest first (of one component if given)."""
        return self._reader().list_artifacts(component)

    # ---------------------------------------------------------------- saved plans

    def save_plan(self, rec: PlanRecord) -> None:
        """Keep a plan for a later `deploy(plan_id)`; its id must be new."""
        self._writer().save_plan(rec)

    def prune_plans(self, max_age: timedelta, keep: int, protect: Iterable[str] = ()) -> int:
        """Delete the saved plans older than `max_age` and those beyond each environment's
        newest `keep`, but none of an environment in `protect`; return how many went."""
        return self._writer().prune_plans(max_age, keep, protect)

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """A saved plan by its exact id (None if there is none)."""
        return self._reader().get_plan(plan_id)

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
        return self._writer().acquire_lock(environment, deployment_id, owner, ttl_s)

    def heartbeat(self, environment: str, deployment_id: str, ttl_s: float) -> None:
        """Extend our lease to now + `ttl_s`; raises LockedError if the lock is not ours."""
        self._writer().heartbeat(environment, deployment_id, ttl_s)

    def release_lock(self, environment: str, deployment_id: str) -> None:
        """Give the lock back; does nothing if this deployment does not hold it."""
        self._writer().release_lock(environment, deployment_id)

    def get_lock(self, environment: str) -> LockRecord | None:
        """The environment's lock (possibly expired: see `LockRecord.expired(now)`)."""
        return self._reader().get_lock(environment)

    def force_release_lock(self, environment: str, by: str) -> LockRecord | None:
        """Remove whatever lock the environment has, recording `by` in the audit trail.

        Returns the lock that was released (None if there was none).
        """
        return self._writer().force_release_lock(environment, by)

    def lock_events(
        self, environment: str | None = None, limit: int | None = 50
    ) -> list[LockEventRecord]:
        """The lock audit trail, newest first."""
        return self._reader().lock_events(environment, limit)

    # ---------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def batch(self, action: str) -> Iterator[None]:
        """The writes this thread makes inside the block share one transaction: all are
        stored, or none (StoreError). For the engine's journal writer: one commit for the
        events and records queued meanwhile instead of one each."""
        with self._writer().batch(action):
            yield


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
