"""Orchestration overhead of the deployment engine on a generated 30-component project.

    .venv/bin/python benchmarks/engine_overhead.py [--runs 3] [--json FILE]

The project: 3 levels of 10 components; each depends on 1–3 components of the level above;
every component is a tiny stdlib HTTP server (instant start, `/health`), with a fast health
check (interval 20ms, stable_for 0s) and `project.max_parallel = 10`. Per run, on fresh
projects:

1. instant builds (`build = "true"`):
   - cold deploy: the first deploy (starts the host agent, nothing running yet);
   - warm deploy: a change to a global input, so all 30 rebuild and replace running releases;
   - no-change redeploy: `--changed` (nothing to deploy; library and CLI) and `--full`
     (every artifact reused);
2. `build = "sleep 1"`: cold and warm deploys against the critical-path bound.

Where the time goes comes from the journal (`store.events`): per component the build step
minus the build command (its cost is measured separately, run the same way), the release
step, and the activate step minus the app's own start-up (each app logs when its process was
created and when it listened). The critical-path bound is the longest path through the
plan's steps when only build commands and app start-ups take time.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _project as P

from shipyard.core.plan import Plan

RUNS = 3


def app_startup_baseline(runs: int = 5) -> float:
    """Median spawn → listening of one component app started alone (no shipyard)."""
    values = []
    with P.short_tmp() as folder:
        app = folder / "app.py"
        app.write_text(P.APP_SOURCE)
        for i in range(runs):
            log = folder / f"starts-{i}.jsonl"
            (port,) = P.free_ports(1)
            env = {
                **os.environ,
                "PORT": str(port),
                "BENCH_STARTS": str(log),
                "SHIPYARD_RELEASE": "baseline",
                "SHIPYARD_COMPONENT": "baseline",
            }
            proc = subprocess.Popen(
                [sys.executable, "app.py"], cwd=folder, env=env, start_new_session=True
            )
            try:
                deadline = time.monotonic() + 10
                while not log.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(0.01)
                entry = P.read_starts(log)[("baseline", "baseline")]
                values.append(entry["listening"] - entry["spawned"])
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    return P.median(values)


def critical_path(plan: Plan, weight: dict[str, float]) -> float:
    """Longest path through the plan's steps, each step taking weight[step id] (default 0)."""
    finish: dict[str, float] = {}
    for step in plan.steps:  # steps come in an order where `after` is already placed
        start = max((finish[a] for a in step.after), default=0.0)
        finish[step.id] = start + weight.get(step.id, 0.0)
    return max(finish.values())


def analyse(
    sy: P.Shipyard, plan: Plan, deployment_id: str, gen: P.Generated, build_cmd: float
) -> dict[str, Any]:
    """Split one deployment's time into app, build command and shipyard, from the journal."""
    events = sy.store.events(deployment_id)
    steps = P.step_times(events)
    starts = P.read_starts(gen.starts_log)
    first = P.ts(events[0])
    last = P.ts(events[-1])
    per: list[dict[str, float]] = []
    weight: dict[str, float] = {}
    reused = 0
    for name in plan.components:
        build = steps[f"build:{name}"]
        built = any(e.kind == "build" and e.status == "built" for e in build.events)
        reused += not built
        cmd = build_cmd if built else 0.0
        release = steps[f"release:{name}"]
        act = steps[f"activate:{name}"]
        start = starts[(name, deployment_id)]
        app = start["listening"] - start["spawned"]
        healthy = next(P.ts(e) for e in act.events if e.kind == "health" and e.status == "ok")
        weight[build.step] = cmd
        weight[act.step] = app
        per.append(
            {
                "build_step": build.duration,
                "build_shipyard": build.duration - cmd,
                "release_step": release.duration,
                "activate_step": act.duration,
                "app_startup": app,
                "activate_shipyard": act.duration - app,
                "request_to_spawn": start["spawned"] - act.start,
                "listening_to_healthy": healthy - start["listening"],
                "healthy_to_step_end": (act.end or 0) - healthy,
                "shipyard": build.duration - cmd + release.duration + act.duration - app,
            }
        )
    global_steps = {s: steps[s].duration for s in ("preflight", "snapshot", "switch", "verify")}
    global_steps["finish"] = steps["finish"].duration
    n = len(plan.components)
    shipyard_serial = sum(c["shipyard"] for c in per) + sum(global_steps.values())
    columns = per[0].keys() if per else []
    return {
        "journal_span_s": last - first,
        "components": n,
        "reused_artifacts": reused,
        "per_component_median_s": {k: P.median([c[k] for c in per]) for k in columns},
        "global_steps_s": global_steps,
        "shipyard_per_component_s": shipyard_serial / n,
        "critical_path_s": critical_path(plan, weight),
        "app_startup_median_s": P.median([c["app_startup"] for c in per]),
    }


def cpu_now(sy: P.Shipyard) -> dict[str, float]:
    """CPU seconds so far: this process (the engine), its waited children, the host agent."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid = P.agent_pid(sy)
    return {
        "engine": own.ru_utime + own.ru_stime,
        "children": kids.ru_utime + kids.ru_stime,
        "agent": P.process_cpu(pid) if pid else 0.0,
    }


def timed_deploy(
    sy: P.Shipyard, selection: str | None
) -> tuple[Plan, Any, float, float, dict[str, float]]:
    """Plan and deploy; (plan, view, plan seconds, deploy seconds, CPU seconds of the deploy)."""
    started = time.perf_counter()
    plan = sy.plan(P.ENV, selection=selection)  # type: ignore[arg-type]
    planned = time.perf_counter()
    before = cpu_now(sy)
    view = sy.deploy(plan) if plan.components else None
    elapsed = time.perf_counter() - planned
    after = cpu_now(sy)
    return plan, view, planned - started, elapsed, {k: after[k] - before[k] for k in after}


def cli_no_change(project: Path) -> tuple[float, dict[str, Any]]:
    shipyard = Path(sys.executable).with_name("shipyard")
    started = time.perf_counter()
    done = subprocess.run(
        [str(shipyard), "-C", str(project), "--json", "deploy", "--changed"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return elapsed, json.loads(done.stdout)


def change_global_input(gen: P.Generated, value: str) -> None:
    (gen.path / "global.txt").write_text(value + "\n")
    P.commit_all(gen.path, f"global input {value}")


def run_instant(build_cmd: float) -> dict[str, Any]:
    with P.short_tmp() as folder:
        gen = P.generate_project(folder, build="true")
        with P.session(gen.path) as sy:
            out: dict[str, Any] = {}
            plan, view, plan_s, deploy_s, cpu = timed_deploy(sy, None)
            assert view is not None and view.record.status == "succeeded", view
            out["cold"] = {
                "plan_s": plan_s,
                "deploy_s": deploy_s,
                "cpu_s": cpu,
                **analyse(sy, plan, view.record.id, gen, build_cmd),
            }
            change_global_input(gen, "2")
            plan, view, plan_s, deploy_s, cpu = timed_deploy(sy, "changed")
            assert view is not None and view.record.status == "succeeded", view
            assert len(plan.components) == 30, plan.why
            out["warm"] = {
                "plan_s": plan_s,
                "deploy_s": deploy_s,
                "cpu_s": cpu,
                **analyse(sy, plan, view.record.id, gen, build_cmd),
            }
            plan, view, plan_s, _, _ = timed_deploy(sy, "changed")
            assert view is None and not plan.components, plan.why
            cli_s, cli_out = cli_no_change(gen.path)
            assert cli_out["deployed"] is False and cli_out["components"] == [], cli_out
            out["no_change_changed"] = {"plan_s": plan_s, "cli_s": cli_s}
            plan, view, plan_s, deploy_s, cpu = timed_deploy(sy, "full")
            assert view is not None and view.record.status == "succeeded", view
            analysed = analyse(sy, plan, view.record.id, gen, build_cmd)
            assert analysed["reused_artifacts"] == 30, analysed
            out["no_change_full"] = {
                "plan_s": plan_s,
                "deploy_s": deploy_s,
                "cpu_s": cpu,
                **analysed,
            }
            started = time.perf_counter()
        out["down_s"] = time.perf_counter() - started
        return out


def run_sleep(build_cmd: float) -> dict[str, Any]:
    with P.short_tmp() as folder:
        gen = P.generate_project(folder, build="sleep 1")
        with P.session(gen.path) as sy:
            out: dict[str, Any] = {}
            for label, selection in (("cold", None), ("warm", "changed")):
                if label == "warm":
                    change_global_input(gen, "2")
                plan, view, plan_s, deploy_s, cpu = timed_deploy(sy, selection)
                assert view is not None and view.record.status == "succeeded", view
                assert len(plan.components) == 30, plan.why
                out[label] = {
                    "plan_s": plan_s,
                    "deploy_s": deploy_s,
                    "cpu_s": cpu,
                    **analyse(sy, plan, view.record.id, gen, build_cmd),
                }
        return out


def median_tree(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric leaf across runs (same keys in every row)."""
    out: dict[str, Any] = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = median_tree([r[key] for r in rows])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = P.median([float(r[key]) for r in rows])
    return out


def main() -> int:
    args = P.arguments(__doc__.splitlines()[0], RUNS)
    info = P.machine()
    print(f"machine: {info}")
    true_s = P.command_time("true", 20)
    sleep_s = P.command_time("sleep 1", 3)
    app_s = app_startup_baseline()
    print(
        f"baselines: build `true` {true_s * 1000:.1f} ms, `sleep 1` {sleep_s:.3f} s, "
        f"one app alone spawn→listening {app_s * 1000:.0f} ms"
    )
    instant, sleepy = [], []
    for run in range(args.runs):
        instant.append(run_instant(true_s))
        i = instant[-1]
        print(
            f"run {run + 1} instant builds: cold {i['cold']['deploy_s']:.2f}s, warm "
            f"{i['warm']['deploy_s']:.2f}s, no change: --changed "
            f"{i['no_change_changed']['plan_s']:.2f}s "
            f"(CLI {i['no_change_changed']['cli_s']:.2f}s), "
            f"--full {i['no_change_full']['deploy_s']:.2f}s"
        )
        sleepy.append(run_sleep(sleep_s))
        s = sleepy[-1]
        print(
            f"run {run + 1} sleep 1: cold {s['cold']['deploy_s']:.2f}s "
            f"(bound {s['cold']['critical_path_s']:.2f}s), warm {s['warm']['deploy_s']:.2f}s "
            f"(bound {s['warm']['critical_path_s']:.2f}s)"
        )

    figures: dict[str, Any] = {"machine": info, "runs": args.runs}
    figures["baselines_s"] = {"build_true": true_s, "build_sleep_1": sleep_s, "app_alone": app_s}
    # the strict bound of the sleep-1 project: 3 levels of the measured `sleep 1` + one app
    # starting alone (the start-ups of the lower levels overlap the builds above them)
    strict = 3 * sleep_s + app_s
    for prefix, rows, labels in (
        ("instant", instant, ("cold", "warm", "no_change_full")),
        ("sleep1", sleepy, ("cold", "warm")),
    ):
        for label in labels:
            derived = []
            for r in rows:
                d = dict(r[label])
                n = d["components"]
                d["wall_overhead_per_component_s"] = (d["deploy_s"] - d["critical_path_s"]) / n
                d["ratio_to_critical_path"] = d["deploy_s"] / d["critical_path_s"]
                d["cpu_per_component_s"] = {k: v / n for k, v in d["cpu_s"].items()}
                if prefix == "sleep1":
                    d["bound_strict_s"] = strict
                    d["ratio_to_strict_bound"] = d["deploy_s"] / strict
                derived.append(d)
            figures[f"{prefix}_{label}"] = {
                **median_tree(derived),
                "deploy_s_runs": [round(d["deploy_s"], 3) for d in derived],
            }
    figures["no_change_changed"] = median_tree([r["no_change_changed"] for r in instant])
    figures["down_30_s"] = P.median([r["down_s"] for r in instant])
    P.show(figures)
    P.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
