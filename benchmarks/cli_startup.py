"""CLI start-up: the time each command takes before (and besides) doing its work.

    .venv/bin/python benchmarks/cli_startup.py [--runs 15] [--json FILE] [--before-src DIR]

With `--before-src DIR` (the `src` folder of another checkout, e.g. `git archive main src |
tar -x -C /tmp/before`) every command also runs with that code on PYTHONPATH, alternating
run by run with this checkout's, so both sides meet the same load: the ratios are the figures.

On a generated 3-component project, deployed once (so `status` and `history` read a real
store and ask a running agent), it runs each command `--runs` times as a user would (the
console script, a fresh interpreter each time) and reports the median wall time and the
median CPU time (user + system, which a loaded machine inflates less than wall time),
next to a bare `python -c pass`. Then `python -X importtime` (three runs, each module's
least self time) says which packages the command imported and what they cost (self time
summed per top-level package, shipyard per module), and whether the heavy ones (SQLAlchemy,
Alembic, the engine…) were among them. Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _project as P

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
HEAVY = (
    "sqlalchemy",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql",
    "alembic",
    "pydantic",
    "asyncio",
    "shipyard.store.store",
    "shipyard.store.sql",
    "shipyard.engine.runner",
    "shipyard.agent.client",
)
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def commands(project: Path) -> dict[str, list[str]]:
    p = ["-C", str(project)]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": [SHIPYARD, "--help"],
        "--version": [SHIPYARD, "--version"],
        "validate": [SHIPYARD, *p, "validate"],
        "graph": [SHIPYARD, *p, "graph"],
        "--json validate": [SHIPYARD, *p, "--json", "validate"],
        "status": [SHIPYARD, *p, "status"],
        "history": [SHIPYARD, *p, "history"],
        "plan": [SHIPYARD, *p, "plan"],
    }


def environments(before_src: str | None) -> dict[str, dict[str, str]]:
    """side → the environment its commands run in (`after` is this checkout).

    Without PYTHONDONTWRITEBYTECODE: the warm-up run writes the bytecode caches, as an
    installed shipyard has them; otherwise every run would compile every module again.
    """
    unset = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    mine = {k: v for k, v in os.environ.items() if k not in unset}
    if before_src is None:
        return {"after": mine}
    return {"before": {**mine, "PYTHONPATH": str(Path(before_src).resolve())}, "after": mine}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-500:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def import_profile(argv: list[str], env: dict[str, str], repeats: int = 3) -> dict[str, Any]:
    """Top import costs (self µs per top-level package) and which heavy modules were loaded.

    Each module's self time is its minimum over `repeats` runs: one run's figures jump with
    the machine's load, the minimum is close to what the import itself costs.
    """
    if argv[0] == SHIPYARD:
        argv = [sys.executable, "-X", "importtime", "-m", "shipyard", *argv[1:]]
    else:
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    least: dict[str, int] = {}
    for _ in range(repeats):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        for line in done.stderr.splitlines():
            match = IMPORT_LINE.match(line)
            if match:
                own, name = int(match.group(1)), match.group(4)
                least[name] = min(own, least.get(name, own))
    per_package: Counter[str] = Counter()
    for name, own in least.items():
        per_package[name if name.startswith("shipyard") else name.split(".")[0]] += own
    return {
        "imported_ms": round(sum(per_package.values()) / 1000, 1),
        "top": [(k, round(v / 1000, 1)) for k, v in per_package.most_common(8)],
        "heavy_loaded": [h for h in HEAVY if h in least],
    }


def measure(argv: list[str], envs: dict[str, dict[str, str]], runs: int) -> dict[str, Any]:
    """side → wall and CPU medians and the import profile; the sides alternate run by run."""
    walls: dict[str, list[float]] = {side: [] for side in envs}
    cpus: dict[str, list[float]] = {side: [] for side in envs}
    for env in envs.values():
        timed(argv, env)  # warm the page cache and the bytecode
    for _ in range(runs):
        for side, env in envs.items():
            wall, cpu = timed(argv, env)
            walls[side].append(wall)
            cpus[side].append(cpu)
    return {
        side: {
            "wall_s": P.median(walls[side]),
            "cpu_s": P.median(cpus[side]),
            "wall_min_s": min(walls[side]),
            **import_profile(argv, env),
        }
        for side, env in envs.items()
    }


def report(figures: dict[str, Any]) -> None:
    sides = list(next(iter(figures["commands"].values())))
    print(f"{'command':<18}" + "".join(f" {s + ': wall (min) / cpu / imports':>36}" for s in sides))
    for name, by_side in figures["commands"].items():
        cells = [
            f"{f['wall_s'] * 1000:5.0f} ({f['wall_min_s'] * 1000:4.0f}) / "
            f"{f['cpu_s'] * 1000:4.0f} / {f['imported_ms']:4.0f} ms"
            for f in by_side.values()
        ]
        ratio = ""
        if len(by_side) == 2 and by_side["before"]["cpu_s"] > 0:
            after, before = by_side["after"], by_side["before"]
            ratio = (
                f"   after/before: wall {after['wall_s'] / before['wall_s']:.2f}, "
                f"cpu {after['cpu_s'] / before['cpu_s']:.2f}"
            )
        print(f"{name:<18}" + "".join(f" {c:>36}" for c in cells) + ratio)
    for side in sides:
        print(f"\n{side}: heavy modules, top imports (self ms per package)")
        for name, by_side in figures["commands"].items():
            f = by_side[side]
            print(f"  {name:<16} {', '.join(f['heavy_loaded']) or '-'}")
            print(f"  {'':<16} " + ", ".join(f"{k} {v}" for k, v in f["top"][:6]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="repetitions (default 15)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    parser.add_argument("--before-src", metavar="DIR", help="another checkout's src folder")
    args = parser.parse_args()
    envs = environments(args.before_src)
    figures: dict[str, Any] = {"machine": P.machine(), "commands": {}}
    if args.before_src:
        figures["before_src"] = args.before_src
    with P.short_tmp() as folder:
        gen = P.generate_project(folder, width=3, depth=1)
        with P.session(gen.path) as sy:
            plan = sy.plan(P.ENV)
            sy.deploy(plan)
            for name, argv in commands(gen.path).items():
                figures["commands"][name] = measure(argv, envs, args.runs)
    figures["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    report(figures)
    P.write_json(args.json, figures)


if __name__ == "__main__":
    main()
