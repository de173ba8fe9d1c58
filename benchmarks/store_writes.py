"""CPU of the store's writes on SQLite: sqlite3 (`SqliteWrites`) vs SQLAlchemy (`SqlStore`).

    SHIPYARD_OTHER_SRC=/work/main/src .venv/bin/python benchmarks/store_writes.py [--runs 3]

1. In one process, on the same kind of file: a deployment's worth of writes (per component,
   20 journal events and 4 component records, in journal-writer batches of 6, then 5 single
   writes), through each layer alternately; CPU (process time) per write.
2. `shipyard deploy --full -y` of the demo shop (a copy on free ports): CPU
   of the CLI process (user + sys, from wait4) with this checkout's `src` and, if given,
   another checkout's (`$SHIPYARD_OTHER_SRC`, e.g. main before this change), alternately.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from _project import arguments, copy_shop, machine, median, rounded, short_tmp, show, write_json

from shipyard.store import ComponentRecord, DeploymentRecord, Store, new_id
from shipyard.store.sql import SqlStore
from shipyard.store.urls import normalize_url

SRC = Path(__file__).resolve().parent.parent / "src"
COMPONENTS = 30


def _through_sqlalchemy(url: str) -> Store:
    parsed = normalize_url(url)
    store = Store(parsed, url, Store.open(url).now)  # migrated by Store.open
    store._sql_store = SqlStore.connect(parsed, store.url, store.now)
    return store


def _writes(store: Store) -> int:
    d = DeploymentRecord(id=new_id(), environment="production", kind="full")
    store.create_deployment(d)
    count = 1
    for i in range(COMPONENTS):
        name = f"c{i}"
        for _ in range(4):
            with store.batch("journal"):
                for k in range(5):
                    store.append_event(d.id, "step", component=name, data={"k": k})
                store.set_component(ComponentRecord(d.id, name, "local", "starting", release="r1"))
            count += 6
        for _ in range(5):
            store.update_deployment(d.id, status="running")
            count += 1
    return count


def per_write(folder: Path, runs: int) -> dict[str, float]:
    url = f"sqlite:///{folder}/state.db"
    Store.open(url).close()
    times: dict[str, list[float]] = {"sqlite3": [], "sqlalchemy": []}
    for _ in range(runs):
        for side, opener in (("sqlite3", Store.open), ("sqlalchemy", _through_sqlalchemy)):
            with opener(url) as store:
                start = time.process_time()
                count = _writes(store)
                times[side].append((time.process_time() - start) / count * 1000)
    result = {f"{side}_ms_per_write": median(v) for side, v in times.items()}
    result["ratio"] = result["sqlalchemy_ms_per_write"] / result["sqlite3_ms_per_write"]
    return result


def _cli_cpu(src: Path, project: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "shipyard", "-C", str(project), *args]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        errors = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(args)} failed with {src}: {errors}")
    return usage.ru_utime + usage.ru_stime


def deploy_cpu(folder: Path, runs: int, other: Path | None) -> dict[str, float]:
    sides = {"this": SRC, **({"other": other} if other else {})}
    times: dict[str, list[float]] = {side: [] for side in sides}
    projects = {side: copy_shop(folder / side) for side in sides}
    try:
        for side, src in sides.items():
            _cli_cpu(src, projects[side], "deploy", "-y")  # migrate, build, start
        for _ in range(runs):
            for side, src in sides.items():
                deploy = ("deploy", "--full", "-y")
                times[side].append(_cli_cpu(src, projects[side], *deploy))
    finally:
        for side, src in sides.items():
            _cli_cpu(src, projects[side], "down")
    result = {f"{side}_cpu_s": median(v) for side, v in times.items()}
    if other:
        result["ratio_other_over_this"] = result["other_cpu_s"] / result["this_cpu_s"]
    return result


def main() -> int:
    parser_args = arguments(__doc__ or "", runs=3)
    other = os.environ.get("SHIPYARD_OTHER_SRC")
    with short_tmp() as folder:
        data = {
            "machine": machine(),
            "load": os.getloadavg(),
            "per_write": per_write(folder, parser_args.runs),
            "deploy_full_shop": deploy_cpu(
                folder, parser_args.runs, Path(other) if other else None
            ),
        }
    show(rounded(data))
    write_json(parser_args.json, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
