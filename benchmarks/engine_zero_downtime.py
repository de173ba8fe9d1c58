"""Zero downtime: failed requests while the demo (a copy of examples/shop) is redeployed.

    .venv/bin/python benchmarks/engine_zero_downtime.py [--runs 3] [--json FILE]

Per run, on a fresh copy of the demo with v1 deployed, a bounded load loop runs on 127.0.0.1:
two threads on kept-alive connections and two opening a new connection per request, each
asking every component in turn which release answers (backend /api/version, admin and
marketing /version), a few ms apart; it stops by itself after 5 minutes at most. Under that
load:

1. deploy: v2 (a backend change, so all three components get new releases);
2. rollback: `shipyard rollback` back to v1;
3. failed deploy: v3 whose admin fails the final check behind the router, after the switch,
   so the automatic rollback moves traffic back to v1.

A failure is any request that does not get a 200 with a release id (refused, reset, timed
out, 5xx). Goal: 0.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _project as P

from shipyard.errors import DeploymentFailed

RUNS = 3


def run_once() -> dict[str, Any]:
    phases: dict[str, Any] = {}
    with P.short_tmp() as folder:
        project = P.copy_shop(folder)
        ports = P.shop_ports(project)
        with P.session(project) as sy:
            v1 = sy.deploy(sy.plan(P.ENV)).record.id
            labels = {v1: "v1"}
            with P.Load(ports, P.SHOP_VERSION_PATHS, keepalive=2, fresh=2, pause=0.005) as load:

                def phase(name: str, action: Any) -> Any:
                    started = time.time()
                    try:
                        return action()
                    finally:
                        time.sleep(0.3)  # requests sent just before the call returned
                        window = load.between(started, time.time())
                        phases[name] = {"seconds": time.time() - started, "labels": labels}
                        phases[name]["load"] = window

                time.sleep(0.5)
                (project / "backend" / "NOTES.md").write_text("v2\n")
                P.commit_all(project, "v2")
                with P.opened(project) as fresh:
                    v2 = phase("deploy", lambda: fresh.deploy(fresh.plan(P.ENV)))
                assert v2.record.status == "succeeded", v2.record
                labels[v2.record.id] = "v2"
                with P.opened(project) as fresh:
                    back = phase("rollback", lambda: fresh.rollback(P.ENV))
                assert back.record.status == "succeeded", back.record
                P.break_admin(project)
                (project / "backend" / "NOTES.md").write_text("v3\n")
                P.commit_all(project, "v3: admin unhealthy behind the router")

                def failing() -> None:
                    with P.opened(project) as fresh:
                        try:
                            fresh.deploy(fresh.plan(P.ENV, selection="full"))
                        except DeploymentFailed:
                            return
                    raise AssertionError("the broken v3 deployed")

                phase("failed_deploy_auto_rollback", failing)
                v3 = P.last_deployment_id(sy)
                labels[v3] = "v3"
                record = sy.store.get_deployment(v3)
                assert record is not None and record.status == "rolled_back", record
    return {
        name: {"seconds": p["seconds"], **P.tally(p["load"], p["labels"])}
        for name, p in phases.items()
    }


def main() -> int:
    args = P.arguments(__doc__.splitlines()[0], RUNS)
    info = P.machine()
    print(f"machine: {info}")
    runs = []
    for run in range(args.runs):
        r = run_once()
        runs.append(r)
        print(
            f"run {run + 1}: "
            + "; ".join(
                f"{name}: {p['failures']} failed of {p['requests']} in {p['seconds']:.1f}s "
                f"(answered by {p['answered_by']})"
                for name, p in r.items()
            )
        )
    figures: dict[str, Any] = {"machine": info, "runs": args.runs}
    for name in runs[0]:
        rows = [r[name] for r in runs]
        answered: dict[str, dict[str, int]] = {}
        for row in rows:
            for component, per in row["answered_by"].items():
                for label, count in per.items():
                    slot = answered.setdefault(component, {})
                    slot[label] = slot.get(label, 0) + count
        errors: dict[str, int] = {}
        for row in rows:
            for error, count in row["errors"].items():
                errors[error] = errors.get(error, 0) + count
        figures[name] = {
            "requests": sum(r["requests"] for r in rows),
            "keepalive": sum(r["keepalive"] for r in rows),
            "fresh_connections": sum(r["fresh_connections"] for r in rows),
            "failures": sum(r["failures"] for r in rows),
            "errors": errors,
            "answered_by": answered,
            "seconds": P.summary([r["seconds"] for r in rows]),
        }
    figures["detail"] = runs
    P.show({k: v for k, v in figures.items() if k != "detail"})
    P.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
