"""Shared helpers of the deployment-engine benchmarks (not a benchmark itself).

Projects live in short temporary folders (`/tmp/sy-XXXX`: unix socket paths are limited to
107 bytes), each in its own git repository, on free 127.0.0.1 ports. `session()` stops
everything a benchmark started (`Shipyard.down` plus a check of /proc for leftovers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHOP = REPO / "examples" / "shop"
try:  # the venv has shipyard installed (editable); PYTHONPATH may point at another copy
    import shipyard  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "src"))

from shipyard.service import Shipyard  # noqa: E402
from shipyard.store import EventRecord  # noqa: E402

ENV = "local"


# --- machine and output ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "loadavg_at_start": os.getloadavg()[0],
    }


def arguments(description: str, runs: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs, help=f"repetitions (default {runs})")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    return parser.parse_args()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """median, min, max and every run, rounded to the millisecond."""
    values = list(values)
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def rounded(value: Any, digits: int = 3) -> Any:
    """`value` with every float rounded (for printing and JSON)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def show(data: dict[str, Any]) -> None:
    print(json.dumps(rounded(data), indent=2))


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(rounded(data), indent=2, sort_keys=True) + "\n")
        print(f"\nfigures written to {path}")


# --- folders, ports, git -----------------------------------------------------------------


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sy-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (bound together, then released)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
        },
    )
    return done.stdout.strip()


def commit_all(cwd: Path, message: str) -> str:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "--allow-empty", "-m", message)
    return git(cwd, "rev-parse", "HEAD")


def init_repo(project: Path) -> str:
    git(project, "init", "-q")
    return commit_all(project, "v1")


# --- the demo ------------------------------------------------------------------------------


def copy_shop(folder: Path) -> Path:
    """A copy of examples/shop in its own git repository, on free ports."""
    project = folder / "shop"
    shutil.copytree(SHOP, project, ignore=shutil.ignore_patterns(".shipyard", "__pycache__"))
    config = project / "shipyard.toml"
    text = config.read_text()
    olds = (
        "port = 4000",
        "port = 4001",
        "port = 4003",
        "port = 5000",
        "port = 5001",
        "port = 5003",
    )
    for old, new in zip(olds, free_ports(len(olds)), strict=True):
        text = text.replace(old, f"port = {new}")
    config.write_text(text)
    init_repo(project)
    return project


def shop_ports(project: Path) -> dict[str, int]:
    import tomllib

    config = tomllib.loads((project / "shipyard.toml").read_text())
    return {name: c["port"] for name, c in config["components"].items()}


# The path that answers the release id, per demo component (JSON with a "release" key).
SHOP_VERSION_PATHS = {"backend": "/api/version", "admin": "/version", "marketing": "/version"}

ADMIN_HEALTH_LINE = '            elif path == "/health":\n'
BEHIND_ROUTER = (
    'self.headers.get("X-Forwarded-For")'  # the router adds it; the agent's probe does not
)


def break_admin(project: Path, condition: str = BEHIND_ROUTER) -> str:
    """Make the demo admin answer /health with 503 when `condition` holds; return the old source.

    With the default condition the admin passes its activation check (the agent probes its
    private port) and fails `verify` (through the public router, after the switch), so the
    rollback has to move traffic back. With "True" it never becomes healthy.
    """
    app = project / "admin" / "app.py"
    good = app.read_text()
    assert ADMIN_HEALTH_LINE in good, "examples/shop/admin/app.py changed: update the benchmark"
    broken = (
        f'            elif path == "/health" and {condition}:  # bench: broken health\n'
        "                self.send(HTTPStatus.SERVICE_UNAVAILABLE, b'{\"ok\": false}', "
        '"application/json")\n'
    )
    app.write_text(good.replace(ADMIN_HEALTH_LINE, broken + ADMIN_HEALTH_LINE, 1))
    return good


# --- a generated project -------------------------------------------------------------------

# A component's app: stdlib only. It answers /health and /version, and appends one JSON line to
# $BENCH_STARTS with when its process was created (from /proc, 10 ms resolution) and when it
# started listening, so the benchmark can tell app start-up from shipyard's own time.
APP_SOURCE = """\
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def process_age():
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = int(fields[19])  # field 22: starttime, clock ticks since boot
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")


SPAWNED = time.time() - process_age()
RELEASE = os.environ.get("SHIPYARD_RELEASE", "")
BODY = json.dumps({"ok": True, "release": RELEASE}).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
LISTENING = time.time()
line = {
    "component": os.environ.get("SHIPYARD_COMPONENT"),
    "release": RELEASE,
    "spawned": SPAWNED,
    "listening": LISTENING,
}
with open(os.environ["BENCH_STARTS"], "a") as log:
    log.write(json.dumps(line) + "\\n")
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.1)
server.server_close()
"""

# Health settings of the generated components: probe often, no stable window, so the
# activation waits for the app and for shipyard, not for a configured delay.
FAST_HEALTH = (
    'health = { http = "/health", interval = "20ms", timeout = "1s", deadline = "30s", '
    'stable_for = "0s" }'
)


@dataclass
class Generated:
    path: Path
    levels: list[list[str]]
    depends_on: dict[str, list[str]]
    starts_log: Path
    build: str

    @property
    def components(self) -> list[str]:
        return [name for level in self.levels for name in level]


def generate_project(
    folder: Path,
    *,
    width: int = 10,
    depth: int = 3,
    build: str = "true",
    max_parallel: int = 10,
    seed: int = 7,
    health: str = FAST_HEALTH,
) -> Generated:
    """`depth` levels of `width` components; each depends on 1–3 components of the level above."""
    rng = random.Random(seed)
    project = folder / "gen"
    project.mkdir()
    starts_log = folder / "starts.jsonl"  # outside the work tree: it must not make it dirty
    levels = [[f"l{lv}c{i}" for i in range(width)] for lv in range(depth)]
    depends_on: dict[str, list[str]] = {}
    ports = free_ports(width * depth)
    lines = [
        "[project]",
        'name = "bench"',
        'default_environment = "local"',
        'state = "sqlite:///.shipyard/state.db"',
        f"max_parallel = {max_parallel}",
        'global_inputs = ["shipyard.toml", "global.txt"]',
        "",
        "[environments.local]",
        'target = "local"',
        'root = ".shipyard/local"',
        "",
    ]
    for lv, level in enumerate(levels):
        for name in level:
            deps = sorted(rng.sample(levels[lv - 1], rng.randint(1, 3))) if lv else []
            depends_on[name] = deps
            (project / name).mkdir()
            (project / name / "app.py").write_text(APP_SOURCE)
            lines += [
                f"[components.{name}]",
                f'path = "{name}"',
                *([f"depends_on = {json.dumps(deps)}"] if deps else []),
                f"build = {json.dumps(build)}",
                'start = "python app.py"',
                f"port = {ports.pop()}",
                f'env = {{ BENCH_STARTS = "{starts_log}" }}',
                health,
                "",
            ]
    (project / "shipyard.toml").write_text("\n".join(lines))
    (project / "global.txt").write_text("1\n")
    (project / ".gitignore").write_text(".shipyard/\n__pycache__/\n")
    init_repo(project)
    return Generated(project, levels, depends_on, starts_log, build)


def read_starts(log: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(component, release) → {spawned, listening} as the apps wrote them."""
    starts: dict[tuple[str, str], dict[str, float]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            starts[(entry["component"], entry["release"])] = entry
    return starts


# --- running and stopping ---------------------------------------------------------------


@contextlib.contextmanager
def session(project: Path, env: str = ENV) -> Iterator[Shipyard]:
    """A Shipyard for `project`; on exit `down` stops every release and the agent."""
    sy = Shipyard(project)
    try:
        yield sy
    finally:
        try:
            if (project / ".shipyard" / env / "agent").exists():
                Shipyard(project).down(env)
        except Exception as exc:  # report, then fall back to the /proc sweep below
            print(f"warning: shipyard down failed: {exc}", file=sys.stderr)
        sy.close()
        left = leftover_processes(project)
        for pid, cmd in left:
            print(f"warning: killing leftover process {pid}: {cmd}", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if left:
            raise RuntimeError(f"{len(left)} process(es) survived `shipyard down`")


@contextlib.contextmanager
def opened(project: Path) -> Iterator[Shipyard]:
    """A fresh Shipyard (as one CLI command would have): it reads shipyard.toml anew."""
    sy = Shipyard(project)
    try:
        yield sy
    finally:
        sy.close()


def leftover_processes(project: Path) -> list[tuple[int, str]]:
    """Processes whose working folder or command line is inside `project` (ours, still alive)."""
    mark = str(project.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (mark in cwd or mark in cmd):
            found.append((int(entry.name), cmd.strip()))
    return found


# --- the journal ---------------------------------------------------------------------------


def ts(event: EventRecord) -> float:
    return event.at.timestamp()


@dataclass
class StepTimes:
    step: str
    component: str | None
    start: float
    end: float | None = None
    status: str = "running"
    events: list[EventRecord] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return (self.end or self.start) - self.start


def step_times(events: list[EventRecord]) -> dict[str, StepTimes]:
    """step id → when it started and finished, from the journal's step events."""
    steps: dict[str, StepTimes] = {}
    for e in events:
        if e.kind == "step" and e.step:
            if e.status == "running":
                steps[e.step] = StepTimes(e.step, e.component, ts(e))
            elif e.step in steps:
                steps[e.step].end = ts(e)
                steps[e.step].status = e.status or "?"
        elif e.step in steps:
            steps[e.step].events.append(e)
    return steps


def last_deployment_id(sy: Shipyard, env: str = ENV) -> str:
    return sy.store.list_deployments(env, limit=1)[0].id


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_pid(sy: Shipyard, env: str = ENV) -> int | None:
    """The pid of the environment's host agent, if it runs (never starts one)."""
    if not (sy.project_dir / ".shipyard" / env / "agent" / "agent.sock").exists():
        return None
    return int(sy.target(sy.environment(env)).agent.ping()["pid"])


# --- command baselines ---------------------------------------------------------------------


def command_time(command: str, runs: int) -> float:
    """Median wall time of `command` run the way builds run (asyncio, /bin/sh, pipes)."""

    async def once() -> float:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        await process.communicate()
        return time.perf_counter() - started

    return median([asyncio.run(once()) for _ in range(runs)])


# --- clients on the public ports --------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request: when it finished, to which component, which release answered, or the error."""

    at: float
    component: str
    release: str | None
    error: str | None
    fresh: bool  # sent on a new connection (else on a kept-alive one)


class Load:
    """A bounded load loop on 127.0.0.1: threads that ask each component which release answers.

    `keepalive` threads reuse one HTTP/1.1 connection per component, `fresh` threads open a new
    connection per request. Each thread pauses `pause` seconds between requests; the loop stops
    by itself after `max_seconds` or `max_requests`, whichever comes first.
    """

    def __init__(
        self,
        ports: dict[str, int],
        paths: dict[str, str],
        *,
        keepalive: int = 2,
        fresh: int = 2,
        pause: float = 0.005,
        timeout: float = 5.0,
        max_seconds: float = 300.0,
        max_requests: int = 200_000,
    ) -> None:
        self.ports, self.paths = ports, paths
        self.kinds = [False] * keepalive + [True] * fresh
        self.pause, self.timeout = pause, timeout
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for index, fresh in enumerate(self.kinds):
            thread = threading.Thread(target=self._loop, args=(index, fresh), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def _loop(self, index: int, fresh: bool) -> None:
        names = list(self.ports)
        conns: dict[str, http.client.HTTPConnection] = {}
        turn = index
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            if len(self.answers) >= self.max_requests:
                break
            name = names[turn % len(names)]
            turn += 1
            conn = None if fresh else conns.get(name)
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.ports[name], timeout=self.timeout
                )
            release = error = None
            try:
                conn.request("GET", self.paths[name])
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    error = f"HTTP {response.status}"
                else:
                    release = json.loads(body)["release"]
                if fresh or response.will_close:
                    conn.close()
                    conns.pop(name, None)
                else:
                    conns[name] = conn
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conns.pop(name, None)
            self.answers.append(Answer(time.time(), name, release, error, fresh))
            self._stop.wait(self.pause)
        for conn in conns.values():
            conn.close()

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end]


def tally(answers: list[Answer], names: dict[str, str] | None = None) -> dict[str, Any]:
    """Requests, failures (with their reasons) and which releases answered, per component."""
    names = names or {}
    out: dict[str, Any] = {
        "requests": len(answers),
        "keepalive": sum(not a.fresh for a in answers),
        "fresh_connections": sum(a.fresh for a in answers),
        "failures": sum(a.error is not None for a in answers),
        "errors": dict(Counter(a.error for a in answers if a.error)),
        "answered_by": {},
    }
    for a in answers:
        if a.release is not None:
            label = names.get(a.release, a.release)
            per = out["answered_by"].setdefault(a.component, {})
            per[label] = per.get(label, 0) + 1
    return out
