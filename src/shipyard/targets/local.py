"""The local target: releases on this machine, run and routed by the host agent.

Layout under the environment's root:

    <root>/<component>/releases/<release>/   the unpacked artifact, `.env` (0600), `shared` link
    <root>/<component>/current -> releases/<release>
    <root>/<component>/shared/               persistent data, linked into every release
    <root>/agent/                            the host agent's socket, state and logs

Agent errors are translated into shipyard errors here, at the boundary.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shipyard.agent.client import AgentClient
from shipyard.agent.errors import AgentRequestError
from shipyard.agent.lifecycle import ensure_agent
from shipyard.config import Migrations
from shipyard.effects.artifacts import link_tree
from shipyard.effects.migrations import MigrationState, Migrator, migrate_to, open_migrator
from shipyard.effects.process import TAIL_LINES, child_path
from shipyard.errors import AgentError, CommandFailed, DeploymentFailed, PreflightError
from shipyard.targets.base import Observation, ProbeSpec, RunningRelease

ENV_FILE = ".env"
RELEASE_DOCUMENT = "release.json"


@contextmanager
def _agent_errors(what: str) -> Iterator[None]:
    try:
        yield
    except AgentRequestError as exc:
        raise AgentError(f"{what}: {exc.message}", code=exc.code, hint=exc.hint) from None


class LocalTarget:
    """This machine, under `root`."""

    host = "local"

    def __init__(
        self, root: Path, *, python: str = sys.executable, router: str = "builtin"
    ) -> None:
        self.root = root.resolve()
        self.python = python
        self.router = router  # what serves the public ports: "builtin" or "haproxy"
        self._client: AgentClient | None = None
        self._had_agent = _agent_was_serving(self.root / "agent" / "state.json")
        self.agent_restarted = False  # set when this target had to start a dead agent again

    # --- the agent ------------------------------------------------------------------------

    @property
    def agent(self) -> AgentClient:
        if self._client is None:
            with _agent_errors(f"cannot start the host agent under {self.root}"):
                self._client, started = ensure_agent(self.root, python=self.python)
            # An environment that had an agent (a state file) but none answered was down.
            self.agent_restarted = started and self._had_agent
        return self._client

    def stopped_on_purpose(self) -> bool:
        """No agent answers and its last state serves nothing (`shipyard down`): reading
        commands then report what is stopped without starting an agent that would keep
        running. A dead agent that was serving is not this: it is restarted, and said so."""
        if self._client is not None or self._had_agent:
            return False
        try:
            AgentClient(self.root, timeout=5.0).ping()
        except AgentRequestError:
            return True
        return False

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".shipyard-write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise PreflightError(
                f"cannot write to the environment root {self.root}: {exc.strerror}",
                hint="fix its permissions or change `root` in shipyard.toml",
            ) from None
        with _agent_errors("the host agent does not answer"):
            self.agent.ping()

    # --- releases on disk -------------------------------------------------------------------

    def _component_dir(self, component: str) -> Path:
        return self.root / component

    def release_dir(self, component: str, release: str) -> Path:
        return self._component_dir(component) / "releases" / release

    def has_release(self, component: str, release: str) -> bool:
        return self.release_dir(component, release).is_dir()

    def install(self, component: str, release: str, artifact: Path, env: Mapping[str, str]) -> None:
        final = self.release_dir(component, release)
        if final.is_dir():
            return  # idempotent: a retried step finds the release already unpacked
        shared = self._component_dir(component) / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        staging = final.with_name(f".{release}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        # Hard links to the artifact's files: a release costs folders, not a copy of its data.
        link_tree(artifact, staging)
        link = staging / "shared"
        if not link.exists() and not link.is_symlink():
            link.symlink_to(shared)
        _write_env_file(staging / ENV_FILE, env)
        os.replace(staging, final)

    def write_release_document(
        self, component: str, release: str, document: Mapping[str, object]
    ) -> None:
        folder = self.release_dir(component, release)
        tmp = folder / f".{RELEASE_DOCUMENT}.tmp"
        tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / RELEASE_DOCUMENT)

    def read_release_document(self, component: str, release: str) -> dict[str, Any] | None:
        path = self.release_dir(component, release) / RELEASE_DOCUMENT
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def current(self, component: str) -> str | None:
        link = self._component_dir(component) / "current"
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def set_current(self, component: str, release: str | None) -> None:
        link = self._component_dir(component) / "current"
        if release is None:
            link.unlink(missing_ok=True)
            return
        # New symlink, then rename over the old one: `current` is never missing.
        tmp = link.with_name(".current.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("releases") / release)
        os.replace(tmp, link)

    def prune(self, component: str, keep: int, protect: set[str]) -> list[str]:
        releases_dir = self._component_dir(component) / "releases"
        if not releases_dir.is_dir():
            return []
        releases = sorted(p.name for p in releases_dir.iterdir() if not p.name.startswith("."))
        older = [r for r in releases[: max(0, len(releases) - keep)] if r not in protect]
        if not older:
            return []  # nothing to remove: the agent need not be asked what runs
        live = {r.release for r in self._releases_of(component) if r.state != "stopped"}
        keep_always = protect | live | {self.current(component) or ""}
        removed = []
        for name in older:
            if name not in keep_always:
                shutil.rmtree(releases_dir / name, ignore_errors=True)
                removed.append(name)
        return removed

    # --- processes and routes ---------------------------------------------------------------

    def start(
        self,
        component: str,
        release: str,
        command: str,
        env: Mapping[str, str],
        stop_timeout: float,
    ) -> RunningRelease:
        existing = next((r for r in self._releases_of(component) if r.release == release), None)
        if existing is not None and existing.state not in ("stopped", "crashed"):
            return existing
        if not self.has_release(component, release):
            raise DeploymentFailed(
                f"{component} release {release} is no longer on this host "
                f"({self.release_dir(component, release)} is missing)",
                hint="it was removed by hand or pruned; deploy its commit again",
            )
        # Every value (secrets too) goes to the release's .env (0600), which the agent reads at
        # each spawn; the agent itself keeps only the file's path, never the values.
        _write_env_file(self.release_dir(component, release) / ENV_FILE, env)
        with _agent_errors(f"cannot start {component} release {release}"):
            info = self.agent.start_release(
                component,
                release,
                str(self.release_dir(component, release)),
                command=command,
                env_file=ENV_FILE,
                stop_timeout=stop_timeout,
            )
        return _running(info)

    def stop(self, component: str, release: str) -> None:
        with _agent_errors(f"cannot stop {component} release {release}"):
            try:
                self.agent.stop_release(component, release, force=True)
            except AgentRequestError as exc:
                if exc.code != "unknown_release":
                    raise

    def running(self, component: str | None = None) -> dict[tuple[str, str], RunningRelease]:
        return {(r.component, r.release): r for r in self._releases_of(component)}

    def _releases_of(self, component: str | None) -> list[RunningRelease]:
        """The agent's releases of one component (a listing of all grows with the project),
        or of every component."""
        with _agent_errors("cannot list releases"):
            listing = self.agent.list_releases(component)
        return [_running(r) for r in listing["releases"]]

    def routes(self) -> dict[str, str]:
        with _agent_errors("cannot list routes"):
            listing = self.agent.list_releases()
        return {r["component"]: r["release"] for r in listing["routes"] if r.get("release")}

    def routed_ports(self) -> dict[str, int]:
        with _agent_errors("cannot list routes"):
            listing = self.agent.list_releases()
        return {r["component"]: int(r["public_port"]) for r in listing["routes"]}

    def port_available(self, port: int) -> bool:
        # SO_REUSEADDR, as the agent binds: a port whose only sockets are in TIME-WAIT (an
        # outgoing connection that used it as its source port) can be listened on.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def route(
        self,
        component: str,
        public_port: int,
        release: str,
        *,
        http: bool,
        drain_timeout: float,
    ) -> None:
        with _agent_errors(f"cannot route port {public_port} to {component} release {release}"):
            self.agent.route(
                component,
                public_port,
                release,
                mode="http" if http else "tcp",
                drain_timeout=drain_timeout,
                router=self.router,
            )

    def unroute(self, component: str) -> None:
        with _agent_errors(f"cannot close the public port of {component}"):
            try:
                self.agent.unroute(component)
            except AgentRequestError as exc:
                if exc.code != "unknown_route":
                    raise

    def lease(
        self,
        holder: str,
        ttl: float,
        revert: list[tuple[str, str | None]],
        discard: list[tuple[str, str]],
    ) -> None:
        with _agent_errors("cannot hold the deployment's lease on the host agent"):
            self.agent.lease(holder, ttl, revert=revert, discard=discard)

    def lease_end(self, holder: str) -> None:
        with _agent_errors("cannot end the deployment's lease on the host agent"):
            self.agent.lease_end(holder)

    def retire(self, items: list[tuple[str, str, float]]) -> None:
        with _agent_errors("cannot schedule the old releases' stop"):
            self.agent.retire(items)

    def link(self, component: str, consumer: str, release: str | None) -> int:
        with _agent_errors(f"cannot link {consumer} to {component}"):
            info = self.agent.link(component, consumer, release)
        return int(info["port"])

    def activate(self, component: str, release: str | None) -> None:
        with _agent_errors(f"cannot make {component} release {release} active"):
            self.agent.activate(component, release)

    def probe(self, spec: ProbeSpec) -> Observation:
        args: dict[str, Any] = {"kind": spec.kind, "timeout": spec.timeout}
        if spec.kind == "http":
            args.update(port=spec.port, path=spec.path)
            if spec.status:
                args["expect_status"] = list(spec.status)
        elif spec.kind == "tcp":
            args["port"] = spec.port
        else:
            args["command"] = spec.command
            # The agent's own PATH may hold shipyard's venv (the shell that started it).
            args["env"] = {"PATH": child_path()}
            if spec.cwd:
                args["cwd"] = spec.cwd
        with _agent_errors("health probe failed to run"):
            result = self.agent.probe(**args)
        return Observation(
            ok=bool(result["ok"]),
            status=result.get("status"),
            latency_ms=float(result.get("latency_ms", 0.0)),
            detail=str(result.get("detail", "")),
        )

    def logs(self, component: str, release: str, lines: int = 20) -> list[str]:
        try:
            return self.agent.logs(component, release, lines)
        except AgentRequestError:
            return []

    def down(self, component: str | None = None) -> list[str]:
        """Close the public ports, then stop every release at once: each stop waits for its
        drain and its process to exit, and one after another that added up."""
        agent = self.agent
        with _agent_errors("cannot stop the environment"):
            listing = agent.list_releases(component)
            routed = [
                route["component"]
                for route in listing["routes"]
                if component is None or route["component"] == component
            ]
            todo = [
                (r["component"], r["release"])
                for r in listing["releases"]
                if (component is None or r["component"] == component) and r["state"] != "stopped"
            ]
            with ThreadPoolExecutor(max_workers=32) as pool:
                list(pool.map(agent.unroute, routed))
                list(pool.map(lambda cr: agent.stop_release(*cr, force=True), todo))
        return [f"{c}/{r}" for c, r in todo]

    def shutdown_agent(self) -> None:
        """Stop the agent itself (after `down`), if it runs."""
        from shipyard.agent.lifecycle import stop_agent

        with _agent_errors("cannot stop the host agent"):
            stop_agent(self.root, stop_processes=True)
        self._client = None

    # --- migrations -------------------------------------------------------------------------

    def _migration_cwd(self, component: str, release: str) -> Path:
        # Relative database paths (sqlite:///shared/app.db) resolve the same from a release
        # folder and from the component folder, because `shared` is linked into each release.
        path = self.release_dir(component, release) if release else None
        if path is not None and path.is_dir():
            return path
        folder = self._component_dir(component)
        (folder / "shared").mkdir(parents=True, exist_ok=True)
        return folder

    def migrator(
        self, component: str, release: str, spec: Migrations, env: Mapping[str, str]
    ) -> Migrator:
        """The component's migration tool, on the files of `release`, with its env."""
        cwd = self._migration_cwd(component, release)
        folder = self.release_dir(component, release) if release else cwd
        where = f"{spec.tool} migrations of {component}"
        return open_migrator(
            component,
            spec,
            release_dir=folder,
            cwd=cwd,
            env=env,
            run=lambda argv, extra: _run_in(folder, argv, {**env, **extra}, where),
        )

    def migration_revision(
        self, component: str, release: str, spec: Migrations, env: Mapping[str, str]
    ) -> str | None:
        return self.migrator(component, release, spec, env).current()

    def migration_state(
        self, component: str, release: str, spec: Migrations, env: Mapping[str, str]
    ) -> MigrationState:
        return self.migrator(component, release, spec, env).state()

    def migrate(
        self,
        component: str,
        release: str,
        spec: Migrations,
        env: Mapping[str, str],
        target: str | None,
        known: MigrationState | None = None,
    ) -> tuple[str | None, str | None]:
        return migrate_to(self.migrator(component, release, spec, env), target, known)


MIGRATION_TIMEOUT_S = 10 * 60.0
_NOT_FOR_RELEASES = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")


def _run_in(folder: Path, argv: Sequence[str], env: Mapping[str, str], where: str) -> str:
    """Run a migration command in a release folder; its stdout, or CommandFailed with the tail."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SHIPYARD_") and k not in _NOT_FOR_RELEASES
    }
    shown = " ".join(a if len(a) < 80 and "\n" not in a else "<script>" for a in argv)
    try:
        done = subprocess.run(
            list(argv),
            cwd=folder,
            env={**base, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=MIGRATION_TIMEOUT_S,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(
            shown, exit_code=None, output_tail=_tail(exc.stdout, exc.stderr), where=where
        ) from None
    except OSError as exc:
        raise DeploymentFailed(
            f"{where}: cannot run `{shown}`: {exc.strerror or exc}",
            hint="is the tool installed in the release's environment (on its PATH)?",
        ) from None
    if done.returncode != 0:
        raise CommandFailed(
            shown,
            exit_code=done.returncode,
            output_tail=_tail(done.stdout, done.stderr),
            where=where,
            hint="the lines above are the end of its output; run it by hand in the release "
            "folder to see more",
        )
    return done.stdout


def _tail(*outputs: str | bytes | None) -> list[str]:
    lines: list[str] = []
    for output in outputs:
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
        lines += (output or "").splitlines()
    return lines[-TAIL_LINES:]


def _write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """KEY=value lines, values as JSON strings (the agent's format), mode 0600 from the start."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for key, value in sorted(env.items()):
            handle.write(f"{key}={json.dumps(value)}\n")
    os.replace(tmp, path)


def _running(info: Mapping[str, Any]) -> RunningRelease:
    return RunningRelease(
        component=str(info["component"]),
        release=str(info["release"]),
        pid=info.get("pid"),
        port=info.get("port"),
        state=str(info.get("state", "unknown")),
        restarts=int(info.get("restarts", 0)),
    )


def _agent_was_serving(state_file: Path) -> bool:
    """Whether the agent's last saved state routes a port or wants a release running: a
    dead agent then left something down. After `shipyard down` (nothing routed, every
    release stopped on request) starting it again is no news."""
    from shipyard.agent.state import read_state

    saved = read_state(state_file)
    releases = saved.get("releases") or []
    return bool(saved.get("routes")) or any(
        isinstance(r, dict) and r.get("desired") == "running" for r in releases
    )
