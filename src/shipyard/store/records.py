"""Plain, frozen records the store reads and writes.

No SQLAlchemy type appears here: the engine, the service and the adapters only
ever see these dataclasses. Every timestamp is a timezone-aware datetime in UTC
(naive datetimes are refused when a record is built). `to_dict()` gives the
JSON shapes of the CLI contract (docs/cli.md), with ISO 8601 timestamps.

Building a record only checks that its datetimes are aware; `validate()` checks
the enumerated values (kind, status) and is called by the store when it writes.
The store does not enforce start ≤ finish: the engine owns that invariant.

Secrets are never stored: no record has a field for environment values, and
`options`, `data` and `health` must only hold names, fingerprints and flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "COMPONENT_STATUSES",
    "DEPLOYMENT_KINDS",
    "DEPLOYMENT_STATUSES",
    "FINISHED_STATUSES",
    "LOCK_ACTIONS",
    "UNFINISHED_STATUSES",
    "ArtifactRecord",
    "ComponentRecord",
    "DeploymentRecord",
    "EventRecord",
    "LockEventRecord",
    "LockOwner",
    "LockRecord",
    "ReleaseSpecRecord",
    "SnapshotEntry",
    "iso",
]

DEPLOYMENT_KINDS = frozenset({"full", "partial", "promote", "rollback", "reconcile"})
DEPLOYMENT_STATUSES = frozenset(
    {
        "pending",
        "running",
        "succeeded",
        "failed",
        "rolling_back",
        "rolled_back",
        "rollback_failed",
        "superseded",
    }
)
UNFINISHED_STATUSES = frozenset({"pending", "running", "rolling_back"})
FINISHED_STATUSES = DEPLOYMENT_STATUSES - UNFINISHED_STATUSES
COMPONENT_STATUSES = frozenset(
    {
        "pending",
        "building",
        "built",
        "migrating",
        "starting",
        "healthy",
        "active",
        "failed",
        "rolled_back",
        "skipped",
    }
)
LOCK_ACTIONS = frozenset({"acquired", "released", "taken_over", "forced_release"})


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime (in UTC), or None."""
    return None if value is None else value.astimezone(UTC).isoformat()


def _check_aware(record: object, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if value is None:
            continue
        if not isinstance(value, datetime):
            raise TypeError(f"{type(record).__name__}.{name} must be a datetime, got {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{type(record).__name__}.{name} must be timezone-aware (UTC), got {value!r}"
            )


def _check_choice(record: object, name: str, allowed: frozenset[str]) -> None:
    value = getattr(record, name)
    if value not in allowed:
        raise ValueError(
            f"{type(record).__name__}.{name} must be one of {', '.join(sorted(allowed))}; "
            f"got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """One run of the pipeline against one environment.

    `created_at` is filled in by the store (from its clock) when left as None;
    records read back from the store always have it. `options` is JSON: the
    flags the deployment ran with (never secret values).
    """

    id: str
    environment: str
    kind: str
    status: str = "pending"
    commit: str | None = None
    base_commit: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    plan_hash: str | None = None
    dirty: bool = False
    rollback_of: str | None = None
    created_by: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    promoted_from: str | None = None  # promote: the deployment whose artifacts it deployed

    def __post_init__(self) -> None:
        _check_aware(self, "started_at", "finished_at", "created_at")

    def validate(self) -> None:
        """Raise ValueError for an unknown kind or status (the store calls it on writes).

        Not run when a record is read back, so history written by a newer shipyard
        with a status this one does not know stays readable.
        """
        _check_choice(self, "kind", DEPLOYMENT_KINDS)
        _check_choice(self, "status", DEPLOYMENT_STATUSES)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish; None until both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def replace(self, **changes: Any) -> DeploymentRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The cli.md deployment shape, without `components` (the caller adds them)."""
        duration = self.duration_s
        return {
            "id": self.id,
            "environment": self.environment,
            "kind": self.kind,
            "status": self.status,
            "commit": self.commit,
            "base_commit": self.base_commit,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": None if duration is None else round(duration, 3),
            "error": self.error,
            "plan_hash": self.plan_hash,
            "dirty": self.dirty,
            "rollback_of": self.rollback_of,
            "promoted_from": self.promoted_from,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "options": dict(self.options),
        }


@dataclass(frozen=True, slots=True)
class ComponentRecord:
    """The state of one component on one host within a deployment."""

    deployment_id: str
    component: str
    host: str = "local"
    status: str = "pending"
    release: str | None = None
    previous_release: str | None = None
    artifact: str | None = None
    port: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    health: dict[str, Any] | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        _check_aware(self, "started_at", "finished_at")

    def validate(self) -> None:
        """Raise ValueError for an unknown status (the store calls it on writes)."""
        _check_choice(self, "status", COMPONENT_STATUSES)

    def replace(self, **changes: Any) -> ComponentRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The `components[]` item shape of docs/cli.md (plus host, timings and health)."""
        return {
            "name": self.component,
            "host": self.host,
            "status": self.status,
            "release": self.release,
            "previous_release": self.previous_release,
            "artifact": self.artifact,
            "port": self.port,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "health": None if self.health is None else dict(self.health),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of a deployment's append-only journal; `seq` counts from 1."""

    deployment_id: str
    seq: int
    at: datetime
    kind: str
    step: str | None = None
    component: str | None = None
    status: str | None = None
    message: str | None = None
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_aware(self, "at")

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "seq": self.seq,
            "at": iso(self.at),
            "kind": self.kind,
            "step": self.step,
            "component": self.component,
            "status": self.status,
            "message": self.message,
            "data": None if self.data is None else dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """What was active for one component on one host before a deployment.

    `deployment_id` is the deployment that made that release active (None when
    unknown, e.g. nothing was deployed yet).
    """

    component: str
    host: str = "local"
    release: str | None = None
    artifact: str | None = None
    migration_revision: str | None = None
    commit: str | None = None
    deployment_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ReleaseSpecRecord:
    """One release's spec: its component's resolved settings at its commit (no secret values,
    only secret names). `created_at` is filled in by the store when left as None."""

    environment: str
    component: str
    release: str
    commit: str | None
    spec: dict[str, Any]
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "component": self.component,
            "release": self.release,
            "commit": self.commit,
            "spec": self.spec,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """The built output of one component at one input digest.

    `created_at` is filled in by the store (from its clock) when left as None.
    """

    component: str
    digest: str
    path: str
    size_bytes: int
    created_at: datetime | None = None
    build_command: str | None = None
    commit: str | None = None
    dirty: bool = False

    def __post_init__(self) -> None:
        _check_aware(self, "created_at")

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "digest": self.digest,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "created_at": iso(self.created_at),
            "build_command": self.build_command,
            "commit": self.commit,
            "dirty": self.dirty,
        }


@dataclass(frozen=True, slots=True)
class LockOwner:
    """The process holding (or asking for) a lock: `user@host pid N`."""

    user: str
    host: str
    pid: int

    @classmethod
    def current(cls) -> LockOwner:
        """The owner describing this process."""
        import getpass
        import os
        import socket

        try:
            user = getpass.getuser()
        except Exception:  # no login name (containers without passwd entry)
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        return cls(user=user, host=socket.gethostname(), pid=os.getpid())

    def __str__(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid}"

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "host": self.host, "pid": self.pid}


@dataclass(frozen=True, slots=True)
class LockRecord:
    """The per-environment lease: held by one deployment until `expires_at`."""

    environment: str
    deployment_id: str
    owner: LockOwner
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        _check_aware(self, "acquired_at", "heartbeat_at", "expires_at")

    def expired(self, now: datetime) -> bool:
        """True once the lease ran out without a heartbeat (its holder is presumed dead)."""
        return now >= self.expires_at

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "environment": self.environment,
            "deployment_id": self.deployment_id,
            "owner": self.owner.to_dict(),
            "acquired_at": iso(self.acquired_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "expires_at": iso(self.expires_at),
        }
        if now is not None:
            out["expired"] = self.expired(now)
        return out


@dataclass(frozen=True, slots=True)
class LockEventRecord:
    """One audit entry about a lock: acquired, released, taken_over or forced_release.

    `owner`/`deployment_id` describe whose lock it was; `by` is who acted (for a
    forced release: the person given to `force_release_lock`; for a takeover: the
    new owner).
    """

    id: int
    environment: str
    action: str
    at: datetime
    deployment_id: str | None
    owner: LockOwner | None
    by: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        _check_aware(self, "at")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "action": self.action,
            "at": iso(self.at),
            "deployment_id": self.deployment_id,
            "owner": None if self.owner is None else self.owner.to_dict(),
            "by": self.by,
            "detail": self.detail,
        }
