"""What a migrate step costs with each tool: state, upgrade to the head, downgrade to the base.

Every adapter runs through the local target on an SQLite database in a temporary release folder
(the projects under tests/migration_projects/), `--runs` times; the figures are medians. The
`sql` tool runs in shipyard's process; the others start the release's Python for every call, so
a bare `python -c pass` is measured alongside as the floor.

    .venv/bin/python benchmarks/migration_tools.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shipyard.config import Migrations
from shipyard.effects.migrations import Migrator, migrate_to
from shipyard.targets.local import LocalTarget

PROJECTS = Path(__file__).resolve().parent.parent / "tests" / "migration_projects"
PATH = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
COMMAND_TOOL = """\
import os, sqlite3, sys
db = sqlite3.connect("shared/app.db")
db.execute("CREATE TABLE IF NOT EXISTS version (n INTEGER)")
now = db.execute("SELECT max(n) FROM version").fetchone()[0] or 0
if sys.argv[1] == "current":
    print(now or "")
elif sys.argv[1] == "up":
    for n in range(now + 1, 3):
        db.execute(f"CREATE TABLE t{n} (id INTEGER)")
        db.execute("INSERT INTO version VALUES (?)", (n,))
else:
    for n in range(now, int(os.environ["SHIPYARD_TARGET_REVISION"] or 0), -1):
        db.execute(f"DROP TABLE t{n}")
        db.execute("DELETE FROM version WHERE n = ?", (n,))
db.commit()
"""


def release(root: Path, tool: str) -> Migrator:
    folder = root / "api" / "releases" / "r1"
    shutil.rmtree(root, ignore_errors=True)
    (folder / "shared").mkdir(parents=True)
    if tool == "sql":
        m = folder / "migrations"
        m.mkdir()
        for n in (1, 2):
            (m / f"000{n}_t{n}.up.sql").write_text(f"CREATE TABLE t{n} (id INTEGER);")
            (m / f"000{n}_t{n}.down.sql").write_text(f"DROP TABLE t{n};")
        spec = Migrations(tool="sql", dir="migrations")
    elif tool == "alembic":
        shutil.copy(PROJECTS / "alembic" / "alembic.ini", folder)
        shutil.copytree(PROJECTS / "alembic" / "migrations", folder / "migrations")
        (folder / "migrations" / "versions").mkdir()
        for name in ("a1_products", "a2_price"):
            shutil.copy(
                folder / "migrations" / "pool" / f"{name}.py", folder / "migrations/versions"
            )
        spec = Migrations(tool="alembic", config="alembic.ini")
    elif tool == "django":
        shutil.copytree(PROJECTS / "django", folder, dirs_exist_ok=True)
        (folder / "shop" / "migrations").mkdir()
        (folder / "shop" / "migrations" / "__init__.py").touch()
        for name in ("0001_initial", "0002_product_price"):
            shutil.copy(
                folder / "shop" / "migrations_pool" / f"{name}.py", folder / "shop/migrations"
            )
        spec = Migrations(tool="django")
    else:
        (folder / "tool.py").write_text(COMMAND_TOOL)
        spec = Migrations(
            tool="command",
            up="python tool.py up",
            down="python tool.py down",
            current="python tool.py current",
        )
    env = {"DATABASE_URL": "sqlite:///shared/app.db", "PATH": PATH}
    return LocalTarget(root).migrator("api", "r1", spec, env)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    floor = [
        timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
        for _ in range(args.runs)
    ]
    results["python -c pass"] = {"state_s": statistics.median(floor)}
    with tempfile.TemporaryDirectory(prefix="sy-bench-") as tmp:
        for tool in ("sql", "command", "alembic", "django"):
            samples: dict[str, list[float]] = {"state_s": [], "upgrade_s": [], "downgrade_s": []}
            for _ in range(args.runs):
                migrator = release(Path(tmp) / tool, tool)
                samples["state_s"].append(timed(migrator.state))
                samples["upgrade_s"].append(timed(lambda m=migrator: migrate_to(m, None)))
                samples["downgrade_s"].append(timed(lambda m=migrator: migrate_to(m, "")))
            results[tool] = {k: round(statistics.median(v), 4) for k, v in samples.items()}
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"load_average_1m": load, "results": results}, indent=2))
        return
    print(f"medians of {args.runs} runs, load average {load:.1f}")
    for tool, figures in results.items():
        shown = "  ".join(f"{k[:-2]} {v * 1000:7.0f} ms" for k, v in figures.items())
        print(f"  {tool:15} {shown}")


if __name__ == "__main__":
    main()
