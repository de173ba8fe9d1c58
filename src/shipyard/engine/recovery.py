"""Crash recovery: finish the rollback of a deployment whose orchestrator died.

The journal says which deployment was running; its snapshot says what was active
before; `restore` compares that with what the host actually runs and undoes the
rest. Recovery is idempotent: running it twice, or after a partial rollback, is safe.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, datetime

from shipyard.engine.runner import (
    EngineContext,
    _end_lease_quietly,
    _journal_for,
    finish_deployment,
    prune_releases,
    restore,
    use_host_pool,
)
from shipyard.engine.states import DEPLOYMENT_TRANSITIONS, check_transition
from shipyard.errors import LockedError, RollbackFailed, ShipyardError, StoreError
from shipyard.store.records import DeploymentRecord, LockOwner


async def hold_lock(ctx: EngineContext, holder_id: str, *, wait: float = 0.0) -> list[str]:
    """Take the environment's lock for `holder_id`, then recover what a crash left behind.

    A lock whose holder ran on this machine and is gone is taken over at once (no
    need to wait for the lease to expire); one held elsewhere is waited for up to
    `wait` seconds, then LockedError. Once the lock is ours, any deployment still
    marked unfinished is dead, so its rollback is finished first. Returns their ids.
    """
    # Every run of the engine (deploy, rollback, recover) starts here, on its own loop.
    use_host_pool(ctx.config.project.max_parallel)
    deadline = ctx.monotonic() + wait
    while True:
        try:
            ctx.store.acquire_lock(ctx.env.name, holder_id, ctx.owner, ctx.lock_ttl)
            break
        except LockedError:
            lock = ctx.store.get_lock(ctx.env.name)
            if lock is not None and owner_is_dead(lock.owner):
                ctx.store.force_release_lock(
                    ctx.env.name, by=f"{ctx.owner} (holder pid {lock.owner.pid} is dead)"
                )
                continue
            if ctx.monotonic() >= deadline:
                raise
            await ctx.sleep(0.5)
    recovered = []
    try:
        for record in ctx.store.unfinished_deployments(ctx.env.name):
            if record.id != holder_id:
                await recover_deployment(ctx, record.id)
                recovered.append(record.id)
    except BaseException:
        ctx.store.release_lock(ctx.env.name, holder_id)
        raise
    return recovered


def owner_is_dead(owner: LockOwner) -> bool:
    """True only when the holder ran on this machine and its process is gone."""
    if owner.host != socket.gethostname():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _now() -> datetime:
    return datetime.now(UTC)


async def recover_deployment(
    ctx: EngineContext, deployment_id: str, only: list[str] | None = None
) -> DeploymentRecord:
    """Roll an interrupted deployment back to its snapshot (`only` these components, when a
    newer deployment replaced the others), or finish it forward once past its commit point.
    The caller holds the lock."""
    record = ctx.store.get_deployment(deployment_id)
    if record is None:
        raise StoreError(f"deployment {deployment_id} is not in the state store")
    if record.status not in ("pending", "running", "rolling_back", "rollback_failed"):
        return record
    journal = _journal_for(ctx, deployment_id)
    interrupted = _open_steps(ctx, deployment_id)
    during = f" during {', '.join(interrupted)}" if interrupted else ""
    reason = f"the orchestrator died{during} (recovered)"
    status = record.status
    # The journal is append-only: the steps the dead orchestrator was running end here.
    for step, component in interrupted.items():
        journal("step", step=step, component=component, status="cancelled", message=reason)

    def move(new: str, **fields: object) -> None:
        nonlocal status
        check_transition(DEPLOYMENT_TRANSITIONS, status, new)
        if isinstance(fields.get("error"), str):
            fields["error"] = ctx.redact(str(fields["error"]))
        ctx.store.update_deployment(deployment_id, status=new, **fields)
        status = new
        journal("deployment", status=new, message=reason)

    if status == "pending":
        move("failed", error=reason, started_at=record.started_at or _now(), finished_at=_now())
        return _get(ctx, deployment_id)
    if status == "running" and _committed(ctx, deployment_id):
        # Past the commit point the new releases serve and were verified: finish forward.
        snapshot = {e.component: e for e in ctx.store.snapshot(deployment_id)}
        new = {
            c.component: c.release or deployment_id
            for c in ctx.store.components(deployment_id)
            if c.component in snapshot
        }
        problems = await finish_deployment(ctx, deployment_id, new, snapshot, journal)
        if problems:
            journal("finish", step="finish", status="incomplete", message="; ".join(problems))
        for c in ctx.store.components(deployment_id):
            if c.finished_at is None:
                ctx.store.set_component(c.replace(finished_at=_now()))
        reason = "the orchestrator died after the commit point (finished forward by recovery)"
        await asyncio.to_thread(_end_lease_quietly, ctx, deployment_id)
        move("succeeded", finished_at=_now())
        await prune_releases(ctx, list(new))
        return _get(ctx, deployment_id)
    if status == "running":
        move("failed", error=record.error or reason)
    if status != "rolling_back":
        move("rolling_back")
    components = [
        e.component
        for e in ctx.store.snapshot(deployment_id)
        if only is None or e.component in only
    ]
    try:
        try:
            await restore(ctx, None, components, deployment_id=deployment_id)
        finally:
            # If the host already undid the switch when the lease lapsed, restore found it so.
            await asyncio.to_thread(_end_lease_quietly, ctx, deployment_id)
    except Exception as exc:  # whatever went wrong, the deployment says so and stays retryable
        said = exc.message if isinstance(exc, ShipyardError) else f"{type(exc).__name__}: {exc}"
        move(
            "rollback_failed",
            error=f"{record.error or reason}; rollback: {said}",
            finished_at=_now(),
        )
        if isinstance(exc, RollbackFailed):
            raise
        raise RollbackFailed(
            f"the rollback of deployment {deployment_id} failed: {said}",
            hint=f"fix the cause, then `shipyard recover --env {ctx.env.name}` tries again",
        ) from None
    move("rolled_back", error=record.error or reason, finished_at=_now())
    return _get(ctx, deployment_id)


def supersede(ctx: EngineContext, deployment_id: str, reason: str) -> None:
    """Close a rollback_failed deployment that a newer good deployment made moot."""
    record = _get(ctx, deployment_id)
    check_transition(DEPLOYMENT_TRANSITIONS, record.status, "superseded")
    error = f"{record.error}; {reason}" if record.error else reason
    ctx.store.update_deployment(deployment_id, status="superseded", error=error)
    _journal_for(ctx, deployment_id)("deployment", status="superseded", message=reason)


def _committed(ctx: EngineContext, deployment_id: str) -> bool:
    """True when the journal shows the deployment passed its commit point."""
    return any(e.kind == "committed" for e in ctx.store.events(deployment_id))


def _open_steps(ctx: EngineContext, deployment_id: str) -> dict[str, str | None]:
    """Steps the journal shows started but not finished (step id → component)."""
    running: dict[str, str | None] = {}
    for event in ctx.store.events(deployment_id):
        if event.kind != "step" or event.step is None:
            continue
        if event.status == "running":
            running[event.step] = event.component
        else:
            running.pop(event.step, None)
    return running


def _get(ctx: EngineContext, deployment_id: str) -> DeploymentRecord:
    record = ctx.store.get_deployment(deployment_id)
    assert record is not None
    return record
