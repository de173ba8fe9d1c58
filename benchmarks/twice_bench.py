"""Work done twice or growing needlessly (issue 10): before and after, side by side in one run.

    .venv/bin/python benchmarks/twice_bench.py [--quick] [--only secrets,migrate,...] [--json FILE]

Each side is a real process: *before* is the code of `--before` (default 00e549e, the base of
this work) extracted with `git archive` and put first on PYTHONPATH, *after* is this checkout;
the same venv runs both. Sections:

- `secrets`: a `command` secrets source that appends to a counter file: its runs per
  `shipyard deploy` (two environments, one deployed) and per `secrets check`;
- `migrate`: release Python processes per migrate step (the step's state read, then
  `migrate`), per tool, counted by a `python` on the release PATH that logs each run;
- `leaks`: the preflight's leak scan of a commit's tree (site-packages of this venv,
  committed into a temp repository): first scan, and the same tree again;
- `status`: `shipyard --json status` on a project whose `.shipyard/` holds thousands of files
  (hard links of this venv's site-packages as a Python environment);
- `plans`: rows in the `plans` table after N saved plans, and the time per save;
- `logline`: what the serve log redactor costs per line (a static Redactor vs the live one).

Wall times on a shared machine are noisy: counts are exact, CPU times steadier, and each
ratio compares sides measured in the same minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
SITE = Path(next(p for p in sys.path if p.endswith("site-packages")))
GIT_ENV = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@example.com",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@example.com",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, check=True
    )
    return done.stdout.decode().strip()


def commit(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def side_env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def cli(src: Path | None, *args: str, timeout: float = 300) -> tuple[float, float, str]:
    """(wall, CPU of the command, stdout) of one `shipyard` run on one side."""
    before, start = os.times(), time.perf_counter()
    done = subprocess.run(
        [SHIPYARD, *args], env=side_env(src), capture_output=True, text=True, timeout=timeout
    )
    wall, after = time.perf_counter() - start, os.times()
    if done.returncode != 0:
        raise RuntimeError(f"shipyard {' '.join(args)}: {done.stdout}{done.stderr}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, done.stdout


def worker(src: Path | None, name: str, *args: str) -> dict[str, Any]:
    """Run a `--worker` section of this script on one side; its JSON answer."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", name, *args],
        env=side_env(src),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {name}: {done.stdout}{done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


# --- secrets -----------------------------------------------------------------------------


def bench_secrets(sides: dict[str, Path | None], tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side, src in sides.items():
        root, runs = tmp / f"secrets-{side}", tmp / f"runs-{side}"
        (root / "web").mkdir(parents=True)
        runs.mkdir()
        for env in ("local", "staging"):
            (runs / f"{env}.env").write_text(f"API_TOKEN=tok-{env}-Zq8rVb2KxW4mNp7LdS3f\n")
        (root / "web" / "index.html").write_text("v1\n")
        sources = {
            env: f'{{ command = "echo run >> {runs}/{env}; cat {runs}/{env}.env" }}'
            for env in ("local", "staging")
        }
        (root / "shipyard.toml").write_text(
            f'[project]\nname = "s"\ndefault_environment = "local"\n\n'
            f'[environments.local]\ntarget = "local"\nroot = ".shipyard/local"\n'
            f"secrets = {sources['local']}\n\n"
            f'[environments.staging]\ntarget = "local"\nroot = ".shipyard/staging"\n'
            f"secrets = {sources['staging']}\n\n"
            f'[components.web]\npath = "web"\n'
            f'start = "python3 -m http.server $PORT --bind 127.0.0.1"\nport = {free_port()}\n'
            f'secrets = ["API_TOKEN"]\nhealth = {{ http = "/", interval = "100ms" }}\n'
        )
        (root / ".gitignore").write_text(".shipyard/\n")
        git(root, "init", "-q")
        commit(root, "v1")

        def count(env: str, runs: Path = runs) -> int:
            file = runs / env
            return len(file.read_text().splitlines()) if file.exists() else 0

        try:
            wall, cpu, _ = cli(src, "-C", str(root), "--json", "deploy", "--yes")
            deployed = {"local": count("local"), "staging": count("staging")}
            cli(src, "-C", str(root), "--json", "secrets", "check")
            checked = {e: count(e) - deployed[e] for e in deployed}
        finally:
            subprocess.run([SHIPYARD, "-C", str(root), "down"], env=side_env(src), check=False,
                           capture_output=True)  # fmt: skip
        out[side] = {"deploy_runs": deployed, "check_runs": checked, "deploy_wall_s": wall,
                     "deploy_cpu_s": cpu}  # fmt: skip
    return out


# --- migrate -----------------------------------------------------------------------------


def bench_migrate(sides: dict[str, Path | None], tmp: Path, runs: int) -> dict[str, Any]:
    return {
        side: worker(src, "migrate", str(tmp / f"migrate-{side}"), str(runs))
        for side, src in sides.items()
    }


def worker_migrate(folder: str, runs: str) -> dict[str, Any]:
    import inspect

    from shipyard.config import Migrations
    from shipyard.targets.local import LocalTarget

    projects = REPO / "tests" / "migration_projects"
    base = Path(folder)
    bin_dir, log = base / "bin", base / "python.log"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho run >> {log}\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", os.defpath)])
    env = {"DATABASE_URL": "sqlite:///shared/app.db", "PATH": path}
    takes_state = "known" in inspect.signature(LocalTarget.migrate).parameters
    result: dict[str, Any] = {}
    for tool in ("alembic", "django", "command"):
        times, processes = [], 0
        for _ in range(int(runs)):
            root = base / "root"
            shutil.rmtree(root, ignore_errors=True)
            release = root / "api" / "releases" / "r1"
            (release / "shared").mkdir(parents=True)
            if tool == "alembic":
                shutil.copy(projects / "alembic" / "alembic.ini", release)
                shutil.copytree(projects / "alembic" / "migrations", release / "migrations")
                (release / "migrations" / "versions").mkdir(exist_ok=True)
                for name in ("a1_products", "a2_price"):
                    shutil.copy(release / "migrations" / "pool" / f"{name}.py",
                                release / "migrations" / "versions")  # fmt: skip
                spec = Migrations(tool="alembic", config="alembic.ini")
            elif tool == "django":
                shutil.copytree(projects / "django", release, dirs_exist_ok=True)
                versions = release / "shop" / "migrations"
                shutil.rmtree(versions, ignore_errors=True)
                versions.mkdir()
                (versions / "__init__.py").touch()
                for name in ("0001_initial", "0002_product_price"):
                    shutil.copy(release / "shop" / "migrations_pool" / f"{name}.py", versions)
                spec = Migrations(tool="django")
            else:
                counter = "python -c pass; "  # the command tool's own runs, counted alike
                spec = Migrations(
                    tool="command",
                    up=counter + "touch shared/up",
                    current=counter + "test -e shared/up && echo 1 || true",
                    down=counter + "rm -f shared/up",
                )
            target = LocalTarget(root)
            log.unlink(missing_ok=True)
            start = time.perf_counter()
            state = target.migration_state("api", "r1", spec, env)  # the step: journal, check
            if takes_state:
                target.migrate("api", "r1", spec, env, None, state)  # type: ignore[call-arg]
            else:
                target.migrate("api", "r1", spec, env, None)
            times.append(time.perf_counter() - start)
            processes = len(log.read_text().splitlines())
        result[tool] = {"python_processes": processes, "median_s": statistics.median(times)}
    return result


# --- leaks -------------------------------------------------------------------------------


def leak_repo(tmp: Path, mb: int) -> tuple[Path, int, int]:
    """A repository of this venv's site-packages (packages in name order, no `__pycache__`)
    until `mb` MB: (path, files, bytes)."""
    root = tmp / "leak-repo"
    root.mkdir()
    total = files = 0
    for entry in sorted(SITE.iterdir()):
        if total >= mb * 1_000_000:
            break
        if not entry.is_dir() or entry.name == "__pycache__":
            continue
        shutil.copytree(entry, root / entry.name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for folder, _dirs, names in os.walk(root / entry.name):
            for name in names:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
                    files += 1
    git(root, "init", "-q")
    commit(root, "site-packages")
    return root, files, total


def bench_leaks(sides: dict[str, Path | None], tmp: Path, mb: int) -> dict[str, Any]:
    root, files, size = leak_repo(tmp, mb)
    out: dict[str, Any] = {"tree_files": files, "tree_bytes": size}
    for side, src in sides.items():
        shutil.rmtree(tmp / f"cache-{side}", ignore_errors=True)
        out[side] = worker(src, "leaks", str(root), str(tmp / f"cache-{side}"))
    return out


def worker_leaks(repo: str, cache_dir: str) -> dict[str, Any]:
    from shipyard.core.secrets import Fingerprinter
    from shipyard.effects import leaks

    root = Path(repo)
    head = git(root, "rev-parse", "HEAD")
    scanner = leaks.Scanner()
    make_cache: Callable[[], Any] = lambda: None  # noqa: E731
    if hasattr(leaks, "CleanBlobs"):
        key = scanner.cache_key(Fingerprinter(b"k" * 32))
        make_cache = lambda: leaks.CleanBlobs(Path(cache_dir), key)  # noqa: E731
    result: dict[str, Any] = {}
    for run in ("first", "again"):
        start, cpu = time.perf_counter(), time.process_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cache = make_cache()
        found = (
            leaks.scan_commit_tree(scanner, root, head, "", cache)
            if cache is not None
            else leaks.scan_commit_tree(scanner, root, head)
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result[run] = {
            "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "git_cpu_s": (after.ru_utime - children.ru_utime)
            + (after.ru_stime - children.ru_stime),
            "findings": len(found),
        }
    return result


# --- status ------------------------------------------------------------------------------


def bench_status(
    sides: dict[str, Path | None], tmp: Path, runs: int, copies: int
) -> dict[str, Any]:
    root = tmp / "status"
    (root / "web").mkdir(parents=True)
    (root / "web" / "index.html").write_text("v1\n")
    (root / "shipyard.toml").write_text(
        '[project]\nname = "d"\ndefault_environment = "local"\n\n'
        '[environments.local]\ntarget = "local"\nroot = ".shipyard/local"\n\n'
        '[components.web]\npath = "web"\nstart = "python3 -m http.server $PORT"\n'
    )
    (root / ".gitignore").write_text(".shipyard/\n")
    git(root, "init", "-q")
    commit(root, "v1")
    # A few Python environments' worth of files: hard links of this venv's site-packages,
    # as the wheel cache (gc keeps it), so `status` has tens of thousands of files to walk.
    cache = root / ".shipyard" / "cache"
    for copy in range(copies):
        shutil.copytree(SITE, cache / f"site{copy}", copy_function=os.link, symlinks=True)
    files = sum(len(names) for _f, _d, names in os.walk(cache))
    cli(None, "-C", str(root), "--json", "gc")  # after: records the disk
    out: dict[str, Any] = {"files": files}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    cpus: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(runs):
        for side, src in sides.items():
            wall, cpu, _ = cli(src, "-C", str(root), "--json", "status")
            walls[side].append(wall)
            cpus[side].append(cpu)
    for side in sides:
        out[side] = {"median_wall_s": statistics.median(walls[side]),
                     "median_cpu_s": statistics.median(cpus[side])}  # fmt: skip
    wall, cpu, _ = cli(None, "-C", str(root), "--json", "status", "--disk")
    out["after_status_disk"] = {"wall_s": wall, "cpu_s": cpu}
    return out


# --- plans -------------------------------------------------------------------------------


def bench_plans(sides: dict[str, Path | None], tmp: Path, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side, src in sides.items():
        root = tmp / f"plans-{side}"
        (root / "web").mkdir(parents=True)
        (root / "web" / "index.html").write_text("v1\n")
        (root / "shipyard.toml").write_text(
            '[project]\nname = "p"\ndefault_environment = "local"\n\n'
            '[environments.local]\ntarget = "local"\nroot = ".shipyard/local"\n\n'
            '[components.web]\npath = "web"\nstart = "python3 -m http.server $PORT"\n'
        )
        (root / ".gitignore").write_text(".shipyard/\n")
        git(root, "init", "-q")
        commit(root, "v1")
        out[side] = worker(src, "plans", str(root), str(count))
    return out


def worker_plans(project: str, count: str) -> dict[str, Any]:
    from shipyard.service import PlanRequest, Shipyard

    svc = Shipyard(Path(project))
    plan = svc.plan("local")
    times = []
    for _ in range(int(count)):
        start = time.perf_counter()
        svc.save_plan(plan, PlanRequest("local"))
        times.append(time.perf_counter() - start)
    svc.close()
    db = Path(project) / ".shipyard" / "state.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT count(*) FROM plans").fetchone()[0]
    return {"rows": rows, "median_save_ms": statistics.median(times) * 1000,
            "db_bytes": db.stat().st_size}  # fmt: skip


# --- logline -----------------------------------------------------------------------------


def bench_logline(tmp: Path, lines: int) -> dict[str, Any]:
    import logging

    from shipyard.api.log_redactor import LogRedactor
    from shipyard.cli.serve import RedactingFormatter
    from shipyard.core.secrets import Redactor

    root = tmp / "logline"
    root.mkdir()
    (root / "shipyard.toml").write_text(
        '[project]\nname = "l"\n\n[environments.local]\ntarget = "local"\n'
        'secrets = { dotenv = ".env.local" }\n[environments.prod]\ntarget = "local"\n'
        'secrets = { dotenv = ".env.prod" }\n\n[components.web]\npath = "."\nstart = "true"\n'
    )
    for env in ("local", "prod"):
        (root / f".env.{env}").write_text(
            "".join(f"KEY_{n}=value-{env}-{n}-Zq8rVb2KxW4m\n" for n in range(20))
        )
    message = "deployment %s succeeded in %s"
    record = logging.LogRecord(
        "shipyard.api", logging.INFO, __file__, 1, message, ("0190abcd", "3.2 s"), None
    )
    out: dict[str, Any] = {}
    for name, redact in (("static", Redactor({"K": "value-local-1-Zq8rVb2KxW4m"})),
                         ("live", LogRedactor(root))):  # fmt: skip
        formatter = RedactingFormatter(redact, "%(asctime)s %(name)s %(message)s")
        start = time.perf_counter()
        for _ in range(lines):
            formatter.format(record)
        out[name] = {"us_per_line": (time.perf_counter() - start) / lines * 1e6}
    return out


# --- main --------------------------------------------------------------------------------


def extract(ref: str, tmp: Path) -> Path:
    dest = tmp / "before"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=REPO, capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="00e549e", help="git ref of the before side")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--only", default="secrets,migrate,leaks,status,plans,logline")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, *rest = args.worker
        answer = {"migrate": worker_migrate, "leaks": worker_leaks, "plans": worker_plans}[name](
            *rest
        )
        print(json.dumps(answer))
        return
    only = set(args.only.split(","))
    figures: dict[str, Any] = {"load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="sy-twice-", dir="/tmp") as name:
        tmp = Path(name)
        sides: dict[str, Path | None] = {"before": extract(args.before, tmp), "after": None}
        if "secrets" in only:
            figures["secrets"] = bench_secrets(sides, tmp)
        if "migrate" in only:
            figures["migrate"] = bench_migrate(sides, tmp, 1 if args.quick else 3)
        if "leaks" in only:
            figures["leaks"] = bench_leaks(sides, tmp, 20 if args.quick else 100)
        if "status" in only:
            figures["status"] = bench_status(sides, tmp, 2 if args.quick else 7, 3)
        if "plans" in only:
            figures["plans"] = bench_plans(sides, tmp, 100 if args.quick else 500)
        if "logline" in only:
            figures["logline"] = bench_logline(tmp, 2_000 if args.quick else 20_000)
    figures["load_average_end"] = os.getloadavg()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
