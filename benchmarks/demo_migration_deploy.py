"""Requests failed by a deploy of the demo that adds a migration, before and after.

    .venv/bin/python benchmarks/demo_migration_deploy.py [--runs 3] [--before b2f25dc] [--json F]

Each run deploys two copies of the demo, one after the other, on fresh projects:

- **before**: the demo as it was at `--before` (default b2f25dc, whose backend answers 503 "this
  code needs 0002" to any other schema revision), taken from git history;
- **after**: the demo of this checkout, without its migration 0003.

Both deploy v1 (schema 0002), then, under load, v2 = v1 plus this checkout's additive migration
0003 (`products.stock`) and a visible change (the admin page's heading). The load loop runs on
127.0.0.1 only: `--clients` threads on kept-alive connections ask each public port in turn
(backend `/api/products`, the admin page, which reads the backend's products, and the
marketing page), 5 ms apart, until the deploy returns plus 0.3 s (bounded: 5 minutes, 200,000
requests). A failure is anything but a 200 (refused, reset, timed out, 5xx).
"""

from __future__ import annotations

import argparse
import http.client
import io
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _project as P

RUNS = 3
BEFORE = "b2f25dc"
TARGETS = (("backend", "/api/products"), ("admin", "/"), ("marketing", "/"))
MIGRATION = sorted((P.SHOP / "backend" / "migrations").glob("0003_*.sql"))
MAX_SECONDS = 300.0
MAX_REQUESTS = 200_000


@dataclass
class Answer:
    at: float
    component: str
    error: str | None


@dataclass
class Load:
    """Kept-alive clients on every public port (see the module docstring)."""

    ports: dict[str, int]
    clients: int
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        deadline = time.monotonic() + MAX_SECONDS
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def _client(self, index: int, deadline: float) -> None:
        conns: dict[str, http.client.HTTPConnection] = {}
        turn = index
        while not self._stop.is_set() and time.monotonic() < deadline:
            if len(self.answers) >= MAX_REQUESTS:
                break
            component, path = TARGETS[turn % len(TARGETS)]
            turn += 1
            conn = conns.get(component) or http.client.HTTPConnection(
                "127.0.0.1", self.ports[component], timeout=10
            )
            error = None
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    error = f"{component} HTTP {response.status}"
                if response.will_close:
                    conn.close()
                    conns.pop(component, None)
                else:
                    conns[component] = conn
            except (OSError, http.client.HTTPException) as exc:
                error = f"{component} {type(exc).__name__}"
                conn.close()
                conns.pop(component, None)
            self.answers.append(Answer(time.time(), component, error))
            self._stop.wait(0.005)
        for conn in conns.values():
            conn.close()


def old_demo(rev: str, folder: Path) -> Path:
    """examples/shop as it was at commit `rev` of this repository, extracted into `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(P.REPO), "archive", "--format=tar", rev, "examples/shop"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder / "old", filter="data")
    return folder / "old" / "examples" / "shop"


def project_from(source: Path, folder: Path) -> Path:
    """A copy of the demo at `source` without migration 0003, on free ports, committed as v1."""
    project = folder / "shop"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns(".shipyard", "__pycache__"))
    for path in project.glob("backend/migrations/0003_*"):
        path.unlink()
    config = project / "shipyard.toml"
    text = config.read_text()
    olds = [f"port = {p}" for p in (4000, 4001, 4003, 5000, 5001, 5003)]
    for old, new in zip(olds, P.free_ports(len(olds)), strict=True):
        text = text.replace(old, f"port = {new}")
    config.write_text(text)
    P.init_repo(project)
    return project


def run_once(variant: str, before: str) -> dict[str, Any]:
    with P.short_tmp() as folder:
        source = old_demo(before, folder) if variant == "before" else P.SHOP
        project = project_from(source, folder)
        ports = P.shop_ports(project)
        with P.session(project) as sy:
            v1 = sy.deploy(sy.plan(P.ENV))
            assert v1.record.status == "succeeded", v1.record
            for path in MIGRATION:
                shutil.copy2(path, project / "backend" / "migrations" / path.name)
            admin = project / "admin" / "app.py"
            admin.write_text(admin.read_text().replace("<h1>shop admin</h1>", "<h1>admin v2</h1>"))
            P.commit_all(project, "v2: migration 0003, admin heading")
            with Load(ports, clients=4) as load:
                time.sleep(0.5)
                started = time.time()
                with P.opened(project) as fresh:
                    v2 = fresh.deploy(fresh.plan(P.ENV))
                ended = time.time()
                time.sleep(0.3)  # requests sent just before the deploy returned
            assert v2.record.status == "succeeded", v2.record
    during = [a for a in load.answers if started <= a.at <= ended + 0.3]
    failed = [a for a in during if a.error]
    return {
        "deploy_seconds": ended - started,
        "requests": len(during),
        "failed": len(failed),
        "failing_for_seconds": failed[-1].at - failed[0].at if failed else 0.0,
        "errors": dict(Counter(a.error for a in failed)),
        "failed_by_component": dict(Counter(a.component for a in failed)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"pairs of runs (default {RUNS})")
    parser.add_argument("--before", default=BEFORE, help=f"commit of the old demo ({BEFORE})")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = parser.parse_args()
    info = P.machine()
    print(f"machine: {info}")
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for run in range(args.runs):  # interleaved: before, after, before, ...
        for variant in runs:
            result = run_once(variant, args.before)
            runs[variant].append(result)
            print(
                f"run {run + 1} {variant}: {result['failed']} failed of {result['requests']} "
                f"requests, deploy {result['deploy_seconds']:.1f} s, failing for "
                f"{result['failing_for_seconds']:.1f} s {result['errors']}",
                flush=True,
            )
    figures: dict[str, Any] = {"machine": info, "runs": args.runs, "before_commit": args.before}
    for variant, rows in runs.items():
        figures[variant] = {
            "failed": P.summary([r["failed"] for r in rows]),
            "requests": P.summary([r["requests"] for r in rows]),
            "failing_for_seconds": P.summary([r["failing_for_seconds"] for r in rows]),
            "deploy_seconds": P.summary([r["deploy_seconds"] for r in rows]),
            "failed_total": sum(r["failed"] for r in rows),
            "requests_total": sum(r["requests"] for r in rows),
        }
    figures["detail"] = runs
    P.show({k: v for k, v in figures.items() if k != "detail"})
    P.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
