"""CLI start-up: the time each command takes before (and besides) doing its work.

    .venv/bin/python benchmarks/cli_startup.py [--runs 15] [--json FILE]

On a generated 3-component project, deployed once (so `status` and `history` read a real
store and ask a running agent), it runs each command `--runs` times as a user would (the
console script, a fresh interpreter each time) and reports the median wall time and the
median CPU time (user + system, which a loaded machine inflates less than wall time),
next to a bare `python -c pass`. Then, once per command, `python -X importtime` says which
packages the command imported and what they cost (self time summed per top-level package,
shipyard per module), and whether the heavy ones (SQLAlchemy, Alembic, the engine…) were
among them. Everything it started is stopped at the end.
"""

from __future__ import annotations

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


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-500:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def import_profile(argv: list[str]) -> dict[str, Any]:
    """Top import costs (self µs per top-level package) and which heavy modules were loaded."""
    if argv[0] == SHIPYARD:
        argv = [sys.executable, "-X", "importtime", "-m", "shipyard", *argv[1:]]
    else:
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    per_package: Counter[str] = Counter()
    modules = set()
    for line in done.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        own, name = int(match.group(1)), match.group(4)
        modules.add(name)
        key = name if name.startswith("shipyard") else name.split(".")[0]
        per_package[key] += own
    return {
        "imported_ms": round(sum(per_package.values()) / 1000, 1),
        "top": [(k, round(v / 1000, 1)) for k, v in per_package.most_common(8)],
        "heavy_loaded": [h for h in HEAVY if h in modules],
    }


def main() -> None:
    args = P.arguments(__doc__ or "", runs=15)
    figures: dict[str, Any] = {"machine": P.machine(), "commands": {}}
    with P.short_tmp() as folder:
        gen = P.generate_project(folder, width=3, depth=1)
        with P.session(gen.path) as sy:
            plan = sy.plan(P.ENV)
            sy.deploy(plan)
            for name, argv in commands(gen.path).items():
                timed(argv)  # warm the page cache and the bytecode
                walls, cpus = [], []
                for _ in range(args.runs):
                    wall, cpu = timed(argv)
                    walls.append(wall)
                    cpus.append(cpu)
                figures["commands"][name] = {
                    "wall_s": P.median(walls),
                    "cpu_s": P.median(cpus),
                    "wall_min_s": min(walls),
                    **import_profile(argv),
                }
    figures["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    print(f"{'command':<18} {'wall':>8} {'min':>8} {'cpu':>8} {'imports':>9}  heavy modules")
    for name, f in figures["commands"].items():
        print(
            f"{name:<18} {f['wall_s'] * 1000:7.0f}ms {f['wall_min_s'] * 1000:7.0f}ms "
            f"{f['cpu_s'] * 1000:7.0f}ms {f['imported_ms']:8.0f}ms  "
            f"{', '.join(f['heavy_loaded']) or '-'}"
        )
    print("\ntop imports per command (self ms per package):")
    for name, f in figures["commands"].items():
        print(f"  {name:<16} " + ", ".join(f"{k} {v}" for k, v in f["top"][:6]))
    P.write_json(args.json, figures)


if __name__ == "__main__":
    main()
