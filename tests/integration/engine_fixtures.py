"""Small generated projects for the engine property tests (test_engine_properties.py).

A generated project is a real git repository in a short temp folder (unix socket paths
are limited to 107 bytes) with 2–5 components wired by a random DAG. Every component
is the same stdlib HTTP server (`syprop_app.py`) plus a `build.py`; what one version of
a component does is decided by `behaviour.json` committed next to them, so each version
is a commit and a failure is injected by committing a behaviour:

    ok         healthy
    build      `python build.py` exits 1
    crash      the app exits at start (the agent restarts it; it never listens)
    unhealthy  /health answers 500
    flap       /health answers 200 for FLAP_HEALTHY_FOR s after its first probe, then 500
    verify     /health answers 200 to a direct probe and 500 through the agent's router
               (the router adds X-Forwarded-For): activation passes, the final verify,
               which probes the public port, fails
    deadline   the app sleeps DEADLINE_SLEEP s (longer than the health deadline) before listening

The failure "killed" is not the app's: the orchestrator (`shipyard deploy` in a subprocess)
is killed with SIGKILL while it activates the failing component, and `recover` cleans up.

An optional "build_sleep" (seconds) in behaviour.json makes `build.py` take that long.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.conftest import commit_all, free_ports, git

FAILURES = ("none", "build", "crash", "unhealthy", "flap", "verify", "deadline", "killed")
CONFIG_CHANGES = ("none", "health_path", "env", "start", "stop_timeout")
APP_MODES = ("ok", "build", "crash", "unhealthy", "flap", "verify", "deadline")
ENV = "local"
APP_FILE = "syprop_app.py"  # a distinctive name, so a leftover process is easy to spot

# Health timings. The flap app is healthy for FLAP_HEALTHY_FOR after the first probe; it can
# only be judged healthy if a probe answer produced in that window reached the engine
# STABLE_FOR - FLAP_HEALTHY_FOR (0.4 s) late, so the stable window catches it reliably.
INTERVAL = "50ms"
PROBE_TIMEOUT = "1s"
DEADLINE = "2s"
STABLE_FOR = "500ms"
FLAP_HEALTHY_FOR = 0.1
DEADLINE_SLEEP = 3.5  # > DEADLINE, with a margin for a slow first probe
WARM_FOR = "1s"  # old releases stay running this long after a deployment (agent-side timer)

APP_SOURCE = '''\
"""A generated component for the shipyard engine property tests (stdlib only)."""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "behaviour.json"), encoding="utf-8") as handle:
    BEHAVIOUR = json.load(handle)
MODE = BEHAVIOUR["mode"]
HEALTH_PATH = BEHAVIOUR.get("health_path", "/health")


def _stop(signum, frame):
    sys.exit(0)


signal.signal(signal.SIGTERM, _stop)

if MODE == "crash":
    print("crashing at start, as told", flush=True)
    sys.exit(3)
if MODE == "deadline":
    print("sleeping before listening, as told", flush=True)
    time.sleep(BEHAVIOUR["sleep"])

FIRST_PROBE = []
LOCK = threading.Lock()


def dependencies_answer():
    """With "check_deps": each SHIPYARD_URL_* must answer /dep-check with 200."""
    import urllib.request

    for key, url in os.environ.items():
        if key.startswith("SHIPYARD_URL_"):
            try:
                with urllib.request.urlopen(url + "/dep-check", timeout=2) as answer:
                    if answer.status != 200:
                        return False
            except Exception:
                return False
    return True


def healthy(headers):
    if MODE == "unhealthy":
        return False
    if BEHAVIOUR.get("check_deps") and not dependencies_answer():
        return False
    if MODE == "flap":
        with LOCK:
            now = time.monotonic()
            if not FIRST_PROBE:
                FIRST_PROBE.append(now)
            return now - FIRST_PROBE[0] < BEHAVIOUR["healthy_for"]
    if MODE == "verify":
        return headers.get("X-Forwarded-For") is None
    return True


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == HEALTH_PATH:
            ok = healthy(self.headers)
            body = {"ok": ok}
            if not ok and BEHAVIOUR.get("echo_env"):  # as careless error pages do
                body["env"] = os.environ.get(BEHAVIOUR["echo_env"])
            self._send(200 if ok else 500, body)
        elif self.path == "/dep-check":
            ok = BEHAVIOUR.get("serves_dependents", True)
            self._send(200 if ok else 500, {"ok": ok})
        elif self.path == "/":
            self._send(
                200,
                {
                    "component": BEHAVIOUR["component"],
                    "version": BEHAVIOUR["version"],
                    "release": os.environ.get("SHIPYARD_RELEASE"),
                    "greeting": os.environ.get("GREETING"),
                },
            )
        else:
            self._send(404, {"error": "not found"})


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
try:
    server.serve_forever(poll_interval=0.1)
finally:
    server.server_close()
'''

BUILD_SOURCE = """\
import json
import sys
import time

with open("behaviour.json", encoding="utf-8") as handle:
    behaviour = json.load(handle)
time.sleep(behaviour.get("build_sleep", 0))
if behaviour["mode"] == "build":
    print("build fails, as told", file=sys.stderr)
    sys.exit(1)
print("built", behaviour["component"], behaviour["version"])
"""


@dataclass(frozen=True)
class Scenario:
    """One example: a DAG, a v2 that changes some components, one injected failure."""

    deps: dict[str, tuple[str, ...]]  # component -> its direct dependencies
    failure: str  # one of FAILURES
    failing: str  # the component that gets the failure
    changed: frozenset[str]  # components whose files v2 changes (always includes `failing`)
    config_change: str = "none"  # one of CONFIG_CHANGES, made to `failing` in v2's config
    failed_before: int = 0  # failed deploys before v2 (they fill keep_releases = 1)

    @property
    def names(self) -> list[str]:
        return list(self.deps)

    def dependents(self, name: str) -> set[str]:
        """Every component that depends on `name`, directly or not."""
        found: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            for other, deps in self.deps.items():
                if current in deps and other not in found:
                    found.add(other)
                    todo.append(other)
        return found

    def dependencies(self, name: str) -> set[str]:
        """Every component `name` depends on, directly or not."""
        found: set[str] = set()
        todo = [name]
        while todo:
            for dep in self.deps[todo.pop()]:
                if dep not in found:
                    found.add(dep)
                    todo.append(dep)
        return found

    def affected(self) -> set[str]:
        """The naive reference for a changed deploy: changed plus all transitive dependents."""
        result = set(self.changed)
        for name in self.changed:
            result |= self.dependents(name)
        return result


@st.composite
def scenarios(draw: st.DrawFn, failure: str) -> Scenario:
    """A random DAG of 2–5 components (edges only to earlier ones: acyclic by construction)."""
    count = draw(st.integers(min_value=2, max_value=5))
    names = [f"c{i}" for i in range(count)]
    deps: dict[str, tuple[str, ...]] = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        chosen = draw(st.sets(st.sampled_from(earlier), max_size=2)) if earlier else set()
        deps[name] = tuple(sorted(chosen))
    failing = draw(st.sampled_from(names))
    others = draw(st.sets(st.sampled_from(names), max_size=count))
    return Scenario(
        deps=deps,
        failure=failure,
        failing=failing,
        changed=frozenset(others | {failing}),
        config_change=draw(st.sampled_from(CONFIG_CHANGES)),
        failed_before=draw(st.integers(min_value=0, max_value=2)),
    )


def change_config(project: Project, name: str, change: str) -> dict[str, Any]:
    """Change `name`'s settings in shipyard.toml (v2); returns what its behaviour must add."""
    path = project.folder / "shipyard.toml"
    text = path.read_text()
    head = f"[components.{name}]\n"
    start = text.index(head) + len(head)
    extra: dict[str, Any] = {}
    if change == "health_path":
        old = 'http = "/health"'
        at = text.index(old, start)
        text = text[:at] + 'http = "/healthz"' + text[at + len(old) :]
        extra["health_path"] = "/healthz"
    elif change == "env":
        text = text[:start] + 'env = { GREETING = "v2" }\n' + text[start:]
    elif change == "start":
        (project.folder / name / "app_v2.py").write_text(APP_SOURCE)
        old = f"python {APP_FILE}"
        at = text.index(old, start)
        text = text[:at] + "python app_v2.py" + text[at + len(old) :]
    elif change == "stop_timeout":
        text = text[:start] + text[start:].replace('stop_timeout = "2s"', 'stop_timeout = "3s"', 1)
    path.write_text(text)
    return extra


def behaviour(component: str, version: str, mode: str = "ok") -> dict[str, Any]:
    assert mode in APP_MODES, mode
    return {
        "component": component,
        "version": version,
        "mode": mode,
        "healthy_for": FLAP_HEALTHY_FOR,
        "sleep": DEADLINE_SLEEP,
    }


def _toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def config_text(
    deps: Mapping[str, tuple[str, ...]],
    ports: Mapping[str, int],
    marker: str,
    keep: int = 5,
    lock_ttl: str = "15s",
) -> str:
    """The project's shipyard.toml; `marker` goes on each app's command line (for `ps`)."""
    lines = [
        "[project]",
        'name = "prop"',
        f"keep_releases = {keep}",
        f'lock_ttl = "{lock_ttl}"',
        f'default_environment = "{ENV}"',
        'state = "sqlite:///.shipyard/state.db"',
        "",
        f"[environments.{ENV}]",
        'target = "local"',
        f'root = ".shipyard/{ENV}"',
    ]
    health = (
        f'{{ http = "/health", interval = "{INTERVAL}", timeout = "{PROBE_TIMEOUT}", '
        f'deadline = "{DEADLINE}", stable_for = "{STABLE_FOR}" }}'
    )
    for name, its_deps in deps.items():
        lines += [
            "",
            f"[components.{name}]",
            f'path = "{name}"',
            'build = "python build.py"',
            f'start = "python {APP_FILE} {marker}"',
            f"port = {ports[name]}",
            f"depends_on = {_toml_list(its_deps)}",
            f"health = {health}",
            'stop_timeout = "2s"',
            f'warm_for = "{WARM_FOR}"',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Project:
    """A generated project on disk: `folder` is its git repository."""

    scratch: Path  # the short temp folder holding it (removed by `remove`)
    folder: Path
    ports: dict[str, int]

    def write_behaviour(self, component: str, body: Mapping[str, Any]) -> None:
        path = self.folder / component / "behaviour.json"
        path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")

    def commit(self, message: str) -> str:
        return commit_all(self.folder, message)

    def remove(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def make_project(
    deps: Mapping[str, tuple[str, ...]], keep_releases: int = 5, lock_ttl: str = "15s"
) -> Project:
    """Write and commit v1 (every component healthy) of a project with these components."""
    scratch = Path(tempfile.mkdtemp(prefix="sy-", dir="/tmp"))
    folder = scratch / "p"
    folder.mkdir()
    ports = dict(zip(deps, quiet_ports(len(deps)), strict=True))
    (folder / "shipyard.toml").write_text(
        config_text(deps, ports, str(scratch), keep=keep_releases, lock_ttl=lock_ttl)
    )
    (folder / ".gitignore").write_text(".shipyard/\n__pycache__/\n")
    project = Project(scratch, folder, ports)
    for name in deps:
        (folder / name).mkdir()
        (folder / name / APP_FILE).write_text(APP_SOURCE)
        (folder / name / "build.py").write_text(BUILD_SOURCE)
        project.write_behaviour(name, behaviour(name, "v1"))
    git(folder, "init", "-q")
    project.commit("v1")
    return project


def quiet_ports(count: int) -> list[int]:
    """Free loopback ports above the kernel's ephemeral range, reserved for this process."""
    return free_ports(count)


def get_json(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, Any]:
    """GET a path on a loopback port: (status, parsed JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def processes_under(folder: Path) -> list[str]:
    """Our own live processes whose command line or working directory is under `folder`
    (the host agent is `python -m shipyard.agent start --root <folder>/…`; the apps run in
    their release folders). Zombies are ignored: they hold no port and run no code."""
    marker = str(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                cwd = ""
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours
        if marker in cmdline or cwd == marker or cwd.startswith(marker + "/"):
            found.append(f"{entry.name}: {cmdline} (cwd {cwd})")
    return found


def wait_no_processes_under(folder: Path, timeout: float = 10.0) -> list[str]:
    """Wait until no process runs under `folder`; the ones still left at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_under(folder)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)
