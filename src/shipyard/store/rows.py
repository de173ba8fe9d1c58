"""Rows → records, shared by both read paths.

A row is a mapping from column name to a Python value already decoded (aware UTC datetimes,
JSON as Python objects): SQLAlchemy's `Row._mapping`, or a row of `sqlite_reads`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

# Keys are column names (SQLAlchemy types its row mappings with Any keys: columns also work).
Row = Mapping[Any, Any]


def deployment(row: Row) -> DeploymentRecord:
    return DeploymentRecord(
        id=row["id"],
        environment=row["environment"],
        kind=row["kind"],
        commit=row["commit"],
        status=row["status"],
        base_commit=row["base_commit"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        plan_hash=row["plan_hash"],
        dirty=bool(row["dirty"]),
        rollback_of=row["rollback_of"],
        promoted_from=row["promoted_from"],
        created_by=row["created_by"],
        options=dict(row["options"] or {}),
        created_at=row["created_at"],
    )


def component(row: Row) -> ComponentRecord:
    return ComponentRecord(
        deployment_id=row["deployment_id"],
        component=row["component"],
        host=row["host"],
        status=row["status"],
        release=row["release"],
        previous_release=row["previous_release"],
        artifact=row["artifact"],
        port=row["port"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        health=row["health"],
        error=row["error"],
    )


def event(row: Row) -> EventRecord:
    return EventRecord(
        deployment_id=row["deployment_id"],
        seq=row["seq"],
        at=row["at"],
        kind=row["kind"],
        step=row["step"],
        component=row["component"],
        status=row["status"],
        message=row["message"],
        data=row["data"],
    )


def snapshot_entry(row: Row) -> SnapshotEntry:
    return SnapshotEntry(
        component=row["component"],
        host=row["host"],
        release=row["release"],
        artifact=row["artifact"],
        migration_revision=row["migration_revision"],
        commit=row["commit"],
        deployment_id=row["active_deployment_id"],
    )


def release_spec(row: Row) -> ReleaseSpecRecord:
    return ReleaseSpecRecord(
        environment=row["environment"],
        component=row["component"],
        release=row["release"],
        commit=row["commit"],
        spec=dict(row["spec"]),
        created_at=row["created_at"],
    )


def plan(row: Row) -> PlanRecord:
    return PlanRecord(
        id=row["id"],
        environment=row["environment"],
        plan_hash=row["plan_hash"],
        commit=row["commit"],
        plan=dict(row["plan"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def artifact(row: Row) -> ArtifactRecord:
    return ArtifactRecord(
        component=row["component"],
        digest=row["digest"],
        path=row["path"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        build_command=row["build_command"],
        commit=row["commit"],
        dirty=bool(row["dirty"]),
    )


def lock(row: Row) -> LockRecord:
    return LockRecord(
        environment=row["environment"],
        deployment_id=row["deployment_id"],
        owner=LockOwner(user=row["owner_user"], host=row["owner_host"], pid=row["owner_pid"]),
        acquired_at=row["acquired_at"],
        heartbeat_at=row["heartbeat_at"],
        expires_at=row["expires_at"],
    )


def lock_event(row: Row) -> LockEventRecord:
    owner = (
        None
        if row["owner_user"] is None
        else LockOwner(
            user=row["owner_user"], host=row["owner_host"] or "", pid=row["owner_pid"] or 0
        )
    )
    return LockEventRecord(
        id=row["id"],
        environment=row["environment"],
        action=row["action"],
        at=row["at"],
        deployment_id=row["deployment_id"],
        owner=owner,
        by=row["by"],
        detail=row["detail"],
    )
