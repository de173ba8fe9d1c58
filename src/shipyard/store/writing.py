"""What both write paths (`sql.SqlStore`, `sqlite_writes.SqliteWrites`) share, so that they
store the same values and fail with the same words: the deployment fields, the JSON encoding,
the lock's errors and audit texts. Standard library only. Private to the store."""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from shipyard.errors import LockedError, StoreError
from shipyard.store.records import (
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    LockEventRecord,
    LockRecord,
    PlanRecord,
    ReleaseSpecRecord,
    iso,
)

__all__ = [
    "DEPLOYMENT_FIELDS",
    "UPDATABLE",
    "artifact_row",
    "check_ttl",
    "check_updatable",
    "component_row",
    "forced_detail",
    "json_dumps",
    "lock_changed_hands",
    "locked_error",
    "lost_lock_error",
    "no_deployment",
    "plan_row",
    "release_spec_row",
    "taken_over_detail",
]

DEPLOYMENT_FIELDS = (
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
UPDATABLE = frozenset(DEPLOYMENT_FIELDS) - {"id", "created_at"}


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


def deployment_row(d: DeploymentRecord, now: datetime) -> dict[str, Any]:
    """The `deployments` row of a new deployment (validated first; its journal empty)."""
    d.validate()
    row = {name: getattr(d, name) for name in DEPLOYMENT_FIELDS}
    row["created_at"] = d.created_at or now
    row["options"] = dict(d.options)
    row["event_seq"] = 0
    return row


def changed_fields(record: DeploymentRecord, fields: Iterable[str]) -> dict[str, Any]:
    """The columns an update of `fields` writes, from the record as it is after it."""
    values = {name: getattr(record, name) for name in fields}
    if "options" in values:
        values["options"] = dict(values["options"])
    return values


def component_row(rec: ComponentRecord) -> dict[str, Any]:
    """The `deployment_components` row of a record (validated first)."""
    rec.validate()
    return {
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


def release_spec_row(rec: ReleaseSpecRecord, now: datetime) -> dict[str, Any]:
    return {
        "environment": rec.environment,
        "component": rec.component,
        "release": rec.release,
        "commit": rec.commit,
        "spec": dict(rec.spec),
        "created_at": rec.created_at or now,
    }


def artifact_row(a: ArtifactRecord, now: datetime) -> dict[str, Any]:
    return {
        "component": a.component,
        "digest": a.digest,
        "path": a.path,
        "size_bytes": a.size_bytes,
        "created_at": a.created_at or now,
        "build_command": a.build_command,
        "commit": a.commit,
        "dirty": a.dirty,
    }


def plan_row(rec: PlanRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": rec.id,
        "environment": rec.environment,
        "plan_hash": rec.plan_hash,
        "commit": rec.commit,
        "plan": dict(rec.plan),
        "created_at": rec.created_at or now,
        "created_by": rec.created_by,
    }


def json_dumps(value: object) -> str:
    """The text a JSON column holds (compact; paths, enums, sets and dates made plain)."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def check_updatable(fields: object) -> None:
    unknown = sorted(set(fields) - UPDATABLE)  # type: ignore[call-overload]
    if unknown:
        raise TypeError(
            f"update_deployment() cannot change {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(UPDATABLE))}"
        )


def check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0:
        raise ValueError(f"lock ttl_s must be positive, got {ttl_s!r}")


def no_deployment(deployment_id: str, masked: str) -> StoreError:
    return StoreError(
        f"no deployment {deployment_id} in the state store {masked}",
        hint="`shipyard history` lists the stored deployments",
    )


def _ago(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"


def locked_error(held: LockRecord, now: datetime) -> LockedError:
    env = held.environment
    return LockedError(
        f"environment {env!r} is locked by deployment {held.deployment_id} "
        f"({held.owner}) since {iso(held.acquired_at)} ({_ago(now - held.acquired_at)} ago); "
        f"last heartbeat {_ago(now - held.heartbeat_at)} ago, "
        f"lease expires in {_ago(held.expires_at - now)}",
        hint="wait for it to finish (`--wait-lock DURATION` waits for the lock), or, if you "
        f"are sure that process is dead, run `shipyard lock release --env {env} --force`",
    )


def lost_lock_error(
    environment: str,
    deployment_id: str,
    held: LockRecord | None,
    last_forced: LockEventRecord | None,
) -> LockedError:
    """A heartbeat's error when the lock is no longer this deployment's."""
    message = f"deployment {deployment_id} no longer holds the lock of environment {environment!r}"
    if last_forced is not None:
        verb = "force-released" if last_forced.action == "forced_release" else "taken over"
        message += f": it was {verb} by {last_forced.by} at {iso(last_forced.at)}"
    if held is not None:
        message += (
            f"; it is now held by deployment {held.deployment_id} ({held.owner}) "
            f"since {iso(held.acquired_at)}"
        )
    return LockedError(
        message,
        hint="stop this deployment: another process owns the environment now "
        "(and will recover this deployment if it needs to)",
    )


def taken_over_detail(held: LockRecord, deployment_id: str) -> str:
    return f"lease expired at {iso(held.expires_at)}; taken over by deployment {deployment_id}"


def forced_detail(held: LockRecord, now: datetime) -> str:
    state = "expired" if held.expired(now) else "not expired"
    return (
        f"held since {iso(held.acquired_at)}, last heartbeat "
        f"{iso(held.heartbeat_at)}, lease {state} ({iso(held.expires_at)})"
    )


def lock_changed_hands(masked: str, environment: str) -> StoreError:
    return StoreError(
        f"state store {masked}: could not lock environment {environment}: "
        "the lock changed hands five times in a row",
        hint="retry; another shipyard process is taking and releasing this lock rapidly",
    )
