"""Rollback time of the deployment engine on the demo (a copy of examples/shop).

    .venv/bin/python benchmarks/engine_rollback.py [--runs 3] [--json FILE]

Per run, on a fresh copy of the demo with v1 deployed and three clients polling the public
ports (keep-alive, 127.0.0.1, every few ms) for the release that answers:

1. after-switch failure: v2's admin passes its activation check (private port) but fails the
   final `verify` through the public router, so traffic already moved to v2 and has to move
   back. Measured from the failing health event of `verify` (the journal) to the `routed`
   events of step "rollback", to the final `rolled_back` state, and to the moment every
   polling client sees v1 again (wall clock).
2. activation failure: v2's admin never becomes healthy (deadline 2s); no switch happened, so
   v1 serves throughout. Measured from the failing health event to `rolled_back`.
3. `shipyard rollback` right after a good v2, inside v1's `warm_for` (the demo's default, 30 s):
   time until every public port serves v1 again (a route switch);
4. the same once the agent has stopped the old releases (after the window): they start again.

Goal: under 1 s from the failed check to the previous release serving.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _project as P

from shipyard.errors import DeploymentFailed

RUNS = 3
HEALTH = 'health = { http = "/health" }'
HEALTH_2S = 'health = { http = "/health", deadline = "2s" }'


def journal(sy: P.Shipyard, deployment_id: str) -> list[P.EventRecord]:
    return sy.store.events(deployment_id)


def times(events: list[P.EventRecord], **match: str) -> list[float]:
    """Timestamps of the events whose fields equal `match`."""
    return [P.ts(e) for e in events if all(getattr(e, k) == v for k, v in match.items())]


def back_on(
    poll: P.Load, component: str, old: str, new: str, since: float
) -> tuple[float | None, int]:
    """When `component` answered `old` again after its last `new` answer; how many `new`."""
    answers = [a for a in poll.answers if a.component == component and a.at >= since]
    news = [a.at for a in answers if a.release == new]
    after = max(news, default=since)
    olds = [a.at for a in answers if a.release == old and a.at > after]
    return (min(olds) if olds else None), len(news)


def failing_deploy(sy: P.Shipyard) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        view = sy.deploy(sy.plan(P.ENV, selection="full"))
    except DeploymentFailed:
        pass
    else:
        raise AssertionError(f"the broken deployment succeeded: {view.record}")
    elapsed = time.perf_counter() - started
    deployment_id = P.last_deployment_id(sy)
    record = sy.store.get_deployment(deployment_id)
    assert record is not None and record.status == "rolled_back", record
    return deployment_id, elapsed


def wait_retired(sy: P.Shipyard, release: str, limit: float = 120.0) -> float:
    """Wait until the agent stopped every process of `release` (after its warm_for)."""
    started = time.perf_counter()
    target = sy.target(sy.environment(P.ENV))
    while time.perf_counter() - started < limit:
        live = [
            key for key, r in target.running().items() if key[1] == release and r.state != "stopped"
        ]
        if not live:
            return time.perf_counter() - started
        time.sleep(0.2)
    raise AssertionError(f"release {release} still runs after {limit:g}s")


def manual_rollback(
    sy: P.Shipyard, project: P.Path, poll: P.Load, ports: Any, old: str, new: str
) -> dict[str, Any]:
    """`Shipyard.rollback` (as `shipyard rollback` runs it, without the CLI's start-up):
    time until every polling client is answered by the `old` release again."""
    started_wall = time.time()
    started = time.perf_counter()
    with P.opened(project) as fresh:
        back = fresh.rollback(P.ENV)
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    assert back.record.status == "succeeded", back.record
    ev = journal(sy, back.record.id)
    client = {c: back_on(poll, c, old, new, started_wall) for c in ports}
    seen_back = [t for t, _ in client.values()]
    routed = times(ev, kind="routed", step="switch")
    return {
        "rollback_call_s": elapsed,
        "call_to_last_routed_s": max(routed) - started_wall,
        "call_to_clients_on_v1_s": (
            max(seen_back) - started_wall if None not in seen_back else None
        ),
        "longest_activate_step_s": max(
            s.duration for s in P.step_times(ev).values() if s.step.startswith("activate:")
        ),
        "poll": P.tally(
            poll.between(started_wall, started_wall + elapsed + 0.5), {old: "v1", new: "v2"}
        ),
    }


def run_once() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with P.short_tmp() as folder:
        project = P.copy_shop(folder)
        ports = P.shop_ports(project)
        with P.session(project) as sy:
            v1 = sy.deploy(sy.plan(P.ENV)).record.id
            paths = P.SHOP_VERSION_PATHS
            with P.Load(ports, paths, keepalive=3, fresh=0, pause=0.002) as poll:
                time.sleep(0.3)
                # 1. failure after the switch
                good_admin = P.break_admin(project)
                (project / "backend" / "NOTES.md").write_text("v2\n")
                P.commit_all(project, "v2: admin unhealthy behind the router")
                dep, elapsed = failing_deploy(sy)
                time.sleep(0.5)  # let the pollers see v1 settle
                ev = journal(sy, dep)
                switched = max(times(ev, kind="routed", step="switch"))
                failed = min(times(ev, kind="health", step="verify", status="failing"))
                step_failed = min(times(ev, kind="step", step="verify", status="failed"))
                routed_back = times(ev, kind="routed", step="rollback")
                final = min(times(ev, kind="deployment", status="rolled_back"))
                client = {c: back_on(poll, c, v1, dep, switched) for c in ports}
                seen_back = [t for t, _ in client.values()]
                out["after_switch"] = {
                    "deploy_call_s": elapsed,
                    "switch_to_failed_check_s": failed - switched,
                    "failed_check_to_step_failed_s": step_failed - failed,
                    "failed_check_to_first_routed_back_s": min(routed_back) - failed,
                    "failed_check_to_last_routed_back_s": max(routed_back) - failed,
                    "routed_back_components": len(routed_back),
                    "failed_check_to_rolled_back_s": final - failed,
                    "failed_check_to_clients_on_v1_s": (
                        max(seen_back) - failed if None not in seen_back else None
                    ),
                    "v2_answers_seen": {c: n for c, (_, n) in client.items()},
                    "poll": P.tally(poll.between(switched - 1, final + 0.5), {v1: "v1", dep: "v2"}),
                }
                (project / "admin" / "app.py").write_text(good_admin)
                # 2. failure during activation (no switch yet)
                P.break_admin(project, "True")
                config = project / "shipyard.toml"
                config.write_text(config.read_text().replace(HEALTH, HEALTH_2S))
                P.commit_all(project, "v2: admin never healthy")
                with P.opened(project) as fresh:  # it reads the changed deadline
                    dep, elapsed = failing_deploy(fresh)
                ev = journal(sy, dep)
                failed = min(times(ev, kind="health", status="failing"))
                final = min(times(ev, kind="deployment", status="rolled_back"))
                started = min(times(ev, kind="deployment", status="running"))
                window = poll.between(started, final + 0.3)
                out["during_activation"] = {
                    "deploy_call_s": elapsed,
                    "failed_check_to_rolled_back_s": final - failed,
                    "poll": P.tally(window, {v1: "v1", dep: "v2"}),
                }
                (project / "admin" / "app.py").write_text(good_admin)
                # 3. `shipyard rollback` after a good v2, inside v1's warm window
                P.commit_all(project, "v2: fixed")
                with P.opened(project) as fresh:
                    v2 = fresh.deploy(fresh.plan(P.ENV, selection="full")).record.id
                time.sleep(0.3)
                out["manual_rollback"] = manual_rollback(sy, project, poll, ports, v1, v2)
                # 4. the same after the window: the old releases were stopped by the agent
                (project / "backend" / "NOTES.md").write_text("v3\n")
                P.commit_all(project, "v3")
                with P.opened(project) as fresh:
                    v3 = fresh.deploy(fresh.plan(P.ENV, selection="full")).record.id
                waited = wait_retired(sy, v1)
                out["manual_rollback_after_window"] = {
                    **manual_rollback(sy, project, poll, ports, v1, v3),
                    "waited_for_retirement_s": waited,
                }
    return out


def main() -> int:
    args = P.arguments(__doc__.splitlines()[0], RUNS)
    info = P.machine()
    print(f"machine: {info}")
    runs = []
    for run in range(args.runs):
        r = run_once()
        runs.append(r)
        a, b, c = r["after_switch"], r["during_activation"], r["manual_rollback"]
        d = r["manual_rollback_after_window"]
        print(
            f"run {run + 1}: after switch: failed check → routed back "
            f"{a['failed_check_to_last_routed_back_s']:.3f}s, → clients on v1 "
            f"{a['failed_check_to_clients_on_v1_s']}, → rolled_back "
            f"{a['failed_check_to_rolled_back_s']:.3f}s; during activation → rolled_back "
            f"{b['failed_check_to_rolled_back_s']:.3f}s; manual rollback: clients on v1 after "
            f"{c['call_to_clients_on_v1_s']}, call {c['rollback_call_s']:.2f}s; after the warm "
            f"window: clients on v1 after {d['call_to_clients_on_v1_s']}"
        )

    def col(section: str, key: str) -> dict[str, Any]:
        return P.summary([r[section][key] for r in runs if r[section][key] is not None])

    figures: dict[str, Any] = {"machine": info, "runs": args.runs}
    for section, keys in {
        "after_switch": (
            "switch_to_failed_check_s",
            "failed_check_to_step_failed_s",
            "failed_check_to_first_routed_back_s",
            "failed_check_to_last_routed_back_s",
            "failed_check_to_clients_on_v1_s",
            "failed_check_to_rolled_back_s",
            "deploy_call_s",
        ),
        "during_activation": ("failed_check_to_rolled_back_s", "deploy_call_s"),
        "manual_rollback": (
            "call_to_last_routed_s",
            "call_to_clients_on_v1_s",
            "longest_activate_step_s",
            "rollback_call_s",
        ),
        "manual_rollback_after_window": (
            "call_to_last_routed_s",
            "call_to_clients_on_v1_s",
            "longest_activate_step_s",
            "rollback_call_s",
            "waited_for_retirement_s",
        ),
    }.items():
        figures[section] = {k: col(section, k) for k in keys}
        figures[section]["failed_requests"] = sum(r[section]["poll"]["failures"] for r in runs)
        figures[section]["requests"] = sum(r[section]["poll"]["requests"] for r in runs)
    figures["detail"] = runs
    P.show({k: v for k, v in figures.items() if k != "detail"})
    P.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
