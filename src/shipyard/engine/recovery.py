"""Crash recovery: finish the rollback of a deployment whose orchestrator died.

The journal says which deployment was running; its snapshot says what was active
before; `restore` compares that with what the host actually runs and undoes the
rest. Recovery is idempotent: running it twice, or after a partial rollback, is safe.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shipyard.engine.runner import EngineContext, _journal_for, restore
from shipyard.engine.states import DEPLOYMENT_TRANSITIONS, check_transition
from shipyard.errors import RollbackFailed, StoreError
from shipyard.store.records import DeploymentRecord


def _now() -> datetime:
    return datetime.now(UTC)


async def recover_deployment(ctx: EngineContext, deployment_id: str) -> DeploymentRecord:
    """Roll an interrupted deployment back to its snapshot; the caller holds the lock."""
    record = ctx.store.get_deployment(deployment_id)
    if record is None:
        raise StoreError(f"deployment {deployment_id} is not in the state store")
    if record.status not in ("pending", "running", "rolling_back", "rollback_failed"):
        return record
    journal = _journal_for(ctx, deployment_id)
    reason = "the orchestrator died (recovered)"
    status = record.status

    def move(new: str, **fields: object) -> None:
        nonlocal status
        check_transition(DEPLOYMENT_TRANSITIONS, status, new)
        ctx.store.update_deployment(deployment_id, status=new, **fields)
        status = new
        journal("deployment", status=new, message=reason)

    if status == "pending":
        move("failed", error=reason, started_at=record.started_at or _now(), finished_at=_now())
        return _get(ctx, deployment_id)
    if status == "running":
        move("failed", error=record.error or reason)
    if status != "rolling_back":
        move("rolling_back")
    components = [e.component for e in ctx.store.snapshot(deployment_id)]
    try:
        await restore(ctx, None, components, deployment_id=deployment_id)
    except RollbackFailed as exc:
        move(
            "rollback_failed",
            error=f"{record.error or reason}; rollback: {exc.message}",
            finished_at=_now(),
        )
        raise
    move("rolled_back", error=record.error or reason, finished_at=_now())
    return _get(ctx, deployment_id)


def _get(ctx: EngineContext, deployment_id: str) -> DeploymentRecord:
    record = ctx.store.get_deployment(deployment_id)
    assert record is not None
    return record
