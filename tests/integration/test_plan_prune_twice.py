"""Saved plans do not pile up: each save prunes those older than a day or beyond each
environment's newest `PLAN_KEEP`, but never one of an environment where a deployment runs
(an MCP `deploy(plan_id)` may have been started from it)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from shipyard.mcp import build_server
from shipyard.service import PLAN_KEEP, PlanRequest, Shipyard
from shipyard.store import PlanRecord, Store, new_id
from tests.conftest import commit_all
from tests.integration.mcp_project import client, ok, project, run

if TYPE_CHECKING:
    from tests.integration.conftest_store import FakeClock

pytest_plugins = ["tests.integration.conftest_store"]
__all__ = ["project"]  # the fixture, imported for pytest


def _save(store: Store, environment: str) -> str:
    plan_id = new_id()
    store.save_plan(PlanRecord(plan_id, environment, "0123456789abcdef", "a" * 40, {}))
    return plan_id


def test_old_plans_and_plans_beyond_the_newest_go_but_a_protected_environments_stay(
    store: Store, clock: FakeClock
) -> None:
    day = timedelta(days=1)
    old = _save(store, "staging")
    clock.advance(3600)
    ours = [_save(store, "local") for _ in range(5)]
    kept = _save(store, "prod")
    clock.advance(2 * 86400)
    fresh = [_save(store, "local") for _ in range(3)]
    assert store.prune_plans(day, 4, protect=["prod"]) == 6  # staging's, local's 5 older
    assert store.get_plan(old) is None and all(store.get_plan(p) is None for p in ours)
    assert store.get_plan(kept) is not None  # older than a day, but protected
    assert all(store.get_plan(p) is not None for p in fresh)
    assert store.prune_plans(day, 2) == 2  # prod's, and local's oldest of three
    assert [store.get_plan(p) is not None for p in fresh] == [False, True, True]


def test_a_plan_a_running_mcp_deploy_was_started_from_survives_pruning(
    project: Path, short_tmp: Path
) -> None:
    gate = short_tmp / "gate"
    config = project / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'path = "web"\n',
            f'path = "web"\nbuild = "while [ ! -e {gate} ]; do sleep 0.05; done"\n',
        )
    )
    commit_all(project, "a build that waits for the test")
    other = Shipyard(project)  # another client's plan calls, while the deploy runs

    def lock_held() -> None:
        deadline = time.monotonic() + 60
        while other.store.get_lock("local") is None:
            assert time.monotonic() < deadline, "the deployment never took the lock"
            time.sleep(0.05)

    def plans_made_meanwhile() -> None:
        made = other.plan("local")
        for _ in range(PLAN_KEEP + 5):
            other.save_plan(made, PlanRequest("local"))

    done: dict[str, object] = {}

    async def body() -> None:
        async with client(build_server(project), "2026-07-28") as c:
            plan_id = ok(await c.call_tool("plan", {"environment": "local"}))["plan_id"]
            done["plan_id"] = plan_id

            async def deploy() -> None:
                done["deployed"] = ok(await c.call_tool("deploy", {"plan_id": plan_id}))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(deploy)
                try:
                    await anyio.to_thread.run_sync(lock_held)
                    await anyio.to_thread.run_sync(plans_made_meanwhile)
                    assert other.store.get_plan(plan_id) is not None  # the deploy's plan stays
                finally:
                    gate.touch()  # the build ends whatever happened

    run(body)
    deployed = done["deployed"]
    assert isinstance(deployed, dict) and deployed["status"] == "succeeded"
    # Nothing runs now: the next save prunes it (PLAN_KEEP newer plans exist).
    other.save_plan(other.plan("local"), PlanRequest("local"))
    assert other.store.get_plan(str(done["plan_id"])) is None
    other.close()
