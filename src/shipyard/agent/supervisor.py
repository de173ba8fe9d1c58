"""Release processes: spawn, watch, restart with backoff, stop, and adopt after an agent restart.

Each release runs in its own session and process group (`start_new_session=True`), so a stop
signals the whole group and the release outlives the agent. Exits are noticed by polling, not
SIGCHLD: a process adopted by a restarted agent is no longer its child, and polling treats both
kinds the same way (waitpid for children, /proc start time for the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Container, Dict, Iterable, List, Optional, Set, Tuple

from . import logfiles, procinfo
from .errors import AgentRequestError
from .paths import AgentPaths

__all__ = [
    "ALLOWED_BASE_ENV",
    "PortAllocator",
    "Release",
    "RestartPolicy",
    "Supervisor",
    "Taken",
    "base_environment",
]

# Variables a release inherits from the agent's own environment. Everything else comes from the
# release's `env`: the agent may have been started from a shell holding other environments'
# secrets, and a release must run the same whether the agent came from a shell or from systemd.
ALLOWED_BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")


def read_env_file(path: str) -> Dict[str, str]:
    """KEY=value lines of a release's env file; a value starting with '"' is a JSON string."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise AgentRequestError(
            "env_file_unreadable",
            f"cannot read the env file {path!r}: {exc.strerror}",
            "redeploy the release (its .env is written when it starts)",
        ) from None
    values: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or key.lstrip().startswith("#"):
            continue
        if value.startswith('"'):
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = value
            value = decoded if isinstance(decoded, str) else value
        values[key.strip()] = value
    return values


def base_environment(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The part of the agent's environment every release starts from."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k in ALLOWED_BASE_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    if sys.prefix != sys.base_prefix:  # the agent runs from shipyard's venv: never a release's
        own = os.path.realpath(os.path.join(sys.prefix, "bin"))
        kept = [p for p in env["PATH"].split(os.pathsep) if p and os.path.realpath(p) != own]
        env["PATH"] = os.pathsep.join(kept) or os.defpath
    return env


class RestartPolicy:
    """When a crashed release is restarted, and when that counts as a crash loop."""

    def __init__(
        self,
        initial_backoff: float = 0.2,
        max_backoff: float = 10.0,
        reset_after: float = 10.0,
        crash_loop_after: int = 5,
        crash_loop_window: float = 60.0,
        running_after: float = 1.0,
    ) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        # A release that stayed up this long has recovered: its crash count starts again at 0.
        self.reset_after = reset_after
        # This many consecutive crashes (or restarts within the window) is a crash loop.
        self.crash_loop_after = crash_loop_after
        self.crash_loop_window = crash_loop_window
        # A process alive this long after being spawned counts as `running` rather than `starting`.
        self.running_after = running_after

    def backoff(self, consecutive_crashes: int) -> float:
        """Delay before restart number `consecutive_crashes` (1-based): doubling, capped."""
        exponent = max(0, min(consecutive_crashes - 1, 30))
        return float(min(self.initial_backoff * (2**exponent), self.max_backoff))


class PortAllocator:
    """Chooses private loopback ports for releases.

    Ports come from a range below the kernel's ephemeral range, so an outgoing connection (the
    router's own upstream connections, for instance) can never be holding the port a crashed
    release needs again when it restarts.
    """

    def __init__(
        self, low: int = 20000, high: int = 32767, rng: Optional[random.Random] = None
    ) -> None:
        self.low = low
        self.high = high
        self.rng = rng or random.Random()

    @staticmethod
    def _ephemeral_range() -> Tuple[int, int]:
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                low, high = f.read().split()
            return int(low), int(high)
        except (OSError, ValueError):
            return 32768, 60999

    @staticmethod
    def is_free(port: int) -> bool:
        """True if nothing is bound to 127.0.0.1:`port` right now."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def allocate(self, taken: Container[int]) -> int:
        """A free port not in `taken` (ports already given to other releases or routes)."""
        eph_low, eph_high = self._ephemeral_range()
        for _ in range(500):
            port = self.rng.randint(self.low, self.high)
            if port in taken or eph_low <= port <= eph_high:
                continue
            if self.is_free(port):
                return port
        # Range exhausted or unusable: let the kernel choose.
        for _ in range(50):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            finally:
                probe.close()
            if port not in taken:
                return port
        raise AgentRequestError("no_free_port", "could not find a free private loopback port")


def _iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def describe_exit(code: Optional[int]) -> str:
    """'exit code 3', 'signal 9 (SIGKILL)' or 'unknown exit status' (adopted processes)."""
    if code is None:
        return "unknown exit status (not a child of this agent)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"signal {-code} ({name})"
    return f"exit code {code}"


class Release:
    """One supervised release: what to run, and what is known about its process."""

    def __init__(
        self,
        component: str,
        release: str,
        cwd: str,
        command: Optional[str],
        argv: Optional[List[str]],
        env: Dict[str, str],
        stop_timeout: float,
        port: int,
        log_path: Path,
        env_file: Optional[str] = None,
    ) -> None:
        self.component = component
        self.release = release
        self.cwd = cwd
        self.command = command
        self.argv = argv
        self.env = env
        self.env_file = env_file
        self.stop_timeout = stop_timeout
        self.port = port
        self.log_path = log_path
        self.desired = "running"
        self.state = "starting"
        self.pid: Optional[int] = None
        self.start_ticks: Optional[int] = None
        self.popen: Optional["subprocess.Popen[bytes]"] = None
        self.started_at: Optional[float] = None
        self.restarts = 0
        self.consecutive_crashes = 0
        self.crash_times: List[float] = []
        self.last_exit_code: Optional[int] = None
        self.last_exit_at: Optional[float] = None
        self.next_restart_at: Optional[float] = None  # time.monotonic()
        self.error: Optional[str] = None
        self.created_at = time.time()
        self.stopped_at: Optional[float] = None
        # Set while start() or stop() owns the process, so the watch loop leaves it alone.
        self.busy = False

    @property
    def key(self) -> Tuple[str, str]:
        return (self.component, self.release)

    def uptime(self, now: float) -> float:
        if self.pid is None or self.started_at is None:
            return 0.0
        return max(0.0, now - self.started_at)

    def info(self) -> Dict[str, Any]:
        """The release as the protocol reports it (never its environment: it holds secrets)."""
        now = time.time()
        next_in: Optional[float] = None
        if self.next_restart_at is not None and self.pid is None:
            next_in = round(max(0.0, self.next_restart_at - time.monotonic()), 3)
        return {
            "component": self.component,
            "release": self.release,
            "pid": self.pid,
            "port": self.port,
            "state": self.state,
            "desired": self.desired,
            "restarts": self.restarts,
            "consecutive_crashes": self.consecutive_crashes,
            "started_at": _iso(self.started_at) if self.pid is not None else None,
            "uptime_s": round(self.uptime(now), 3),
            "log_path": str(self.log_path),
            "last_exit_code": self.last_exit_code,
            "last_exit": describe_exit(self.last_exit_code) if self.last_exit_at else None,
            "next_restart_in_s": next_in,
            "error": self.error,
            "cwd": self.cwd,
            "command": self.command,
            "argv": self.argv,
        }

    def to_state(self) -> Dict[str, Any]:
        return {
            "component": self.component,
            "release": self.release,
            "cwd": self.cwd,
            "command": self.command,
            "argv": self.argv,
            "env": self.env,
            "env_file": self.env_file,
            "stop_timeout": self.stop_timeout,
            "port": self.port,
            "log_path": str(self.log_path),
            "desired": self.desired,
            "state": self.state,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "consecutive_crashes": self.consecutive_crashes,
            "crash_times": self.crash_times,
            "last_exit_code": self.last_exit_code,
            "last_exit_at": self.last_exit_at,
            "error": self.error,
            "created_at": self.created_at,
            "stopped_at": self.stopped_at,
        }

    @classmethod
    def from_state(cls, data: Dict[str, Any]) -> "Release":
        rel = cls(
            component=str(data["component"]),
            release=str(data["release"]),
            cwd=str(data["cwd"]),
            command=data.get("command"),
            argv=data.get("argv"),
            env=dict(data.get("env") or {}),
            stop_timeout=float(data.get("stop_timeout", 10.0)),
            port=int(data["port"]),
            log_path=Path(data["log_path"]),
            env_file=data.get("env_file"),
        )
        rel.desired = str(data.get("desired", "stopped"))
        rel.state = str(data.get("state", "stopped"))
        rel.pid = data.get("pid")
        rel.start_ticks = data.get("start_ticks")
        rel.started_at = data.get("started_at")
        rel.restarts = int(data.get("restarts", 0))
        rel.consecutive_crashes = int(data.get("consecutive_crashes", 0))
        rel.crash_times = [float(t) for t in data.get("crash_times", [])]
        rel.last_exit_code = data.get("last_exit_code")
        rel.last_exit_at = data.get("last_exit_at")
        rel.error = data.get("error")
        rel.created_at = float(data.get("created_at", time.time()))
        rel.stopped_at = data.get("stopped_at")
        return rel


_SHELL = os.path.realpath("/bin/sh")


def _exec_done(pid: int) -> bool:
    """Whether the shell `pid` has started a program (Linux /proc): it replaced itself with
    it, or a child of it runs something other than the shell (a found command)."""
    try:
        if os.path.realpath(os.readlink(f"/proc/{pid}/exe")) != _SHELL:
            return True
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = handle.read().split()
        return any(
            os.path.realpath(os.readlink(f"/proc/{child}/exe")) != _SHELL for child in children
        )
    except OSError:  # no /proc, or a process is exiting: not known yet
        return False


class Taken:
    """A container of ports given by a membership test (nothing is listed)."""

    def __init__(self, test: Callable[[int], bool]) -> None:
        self.test = test

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.test(port)


class Supervisor:
    """Owns every release process of one agent."""

    # Stopped releases kept per component (for `list` and `logs`); older ones are forgotten.
    KEEP_STOPPED = 10
    # A release process refusing connections this soon after its spawn is taken to be still
    # starting (requests wait for it, bounded by the route's crash_wait).
    LISTEN_GRACE = 30.0
    # How long `start` watches a shell command for "not found" (exit 127) before answering.
    COMMAND_CHECK_S = 0.25

    def __init__(
        self,
        paths: AgentPaths,
        *,
        policy: Optional[RestartPolicy] = None,
        log_policy: Optional[logfiles.LogPolicy] = None,
        ports: Optional[PortAllocator] = None,
        base_env: Optional[Dict[str, str]] = None,
        on_change: Callable[[Tuple[str, str]], None] = lambda key: None,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self.paths = paths
        self.policy = policy or RestartPolicy()
        self.log_policy = log_policy or logfiles.LogPolicy()
        self.ports = ports or PortAllocator()
        self.base_env = base_environment() if base_env is None else base_env
        self.on_change = on_change  # told which release changed (its state is to be saved)
        self.log = logger or logging.getLogger("shipyard.agent")
        self.releases: Dict[Tuple[str, str], Release] = {}
        # Indexes, so that a step looks at one component's releases, not at every release.
        self._of_component: Dict[str, Dict[str, Release]] = {}
        self._by_port: Dict[int, Set[Tuple[str, str]]] = {}
        # The releases that are to run: the only ones the watch loop looks at.
        self._watched: Dict[Tuple[str, str], Release] = {}
        # Ports taken by something other than releases (public routes, links).
        self.reserved: Callable[[int], bool] = lambda port: False
        self._last_rotation_check = 0.0

    # ----------------------------------------------------------------- queries

    def get(self, component: str, release: str) -> Release:
        """The release, or `unknown_release`."""
        rel = self.releases.get((component, release))
        if rel is None:
            known = sorted(r.release for r in self.of_component(component))
            raise AgentRequestError(
                "unknown_release",
                f"the agent knows no release {release!r} of component {component!r}",
                f"known releases of {component!r}: {', '.join(known)}"
                if known
                else "start it first (op `start`)",
            )
        return rel

    def _put(self, rel: Release) -> None:
        old = self.releases.get(rel.key)
        if old is not None:
            self._drop(old)
        self.releases[rel.key] = rel
        if rel.desired == "running":
            self._watched[rel.key] = rel
        self._of_component.setdefault(rel.component, {})[rel.release] = rel
        self._by_port.setdefault(rel.port, set()).add(rel.key)

    def _drop(self, rel: Release) -> None:
        del self.releases[rel.key]
        self._watched.pop(rel.key, None)
        del self._of_component[rel.component][rel.release]
        if not self._of_component[rel.component]:
            del self._of_component[rel.component]
        users = self._by_port[rel.port]
        users.discard(rel.key)
        if not users:
            del self._by_port[rel.port]

    def of_component(self, component: str) -> List[Release]:
        return list(self._of_component.get(component, {}).values())

    def port_used(self, port: int, running_only: bool = True) -> bool:
        """Whether a release (one that is to run, or any it knows) has `port`."""
        return any(
            not running_only or self.releases[key].desired == "running"
            for key in self._by_port.get(port, ())
        )

    def listing(self, component: Optional[str] = None) -> List[Dict[str, Any]]:
        rels = list(self.releases.values()) if component is None else self.of_component(component)
        rels.sort(key=lambda r: (r.component, r.created_at, r.release))
        return [r.info() for r in rels]

    def to_state(self) -> List[Dict[str, Any]]:
        return [r.to_state() for r in self.releases.values()]

    # ----------------------------------------------------------------- start

    def resolve_cwd(self, cwd: str) -> Path:
        """Absolute `cwd` as given, relative ones under the agent root; symlinks resolved."""
        path = Path(cwd)
        if not path.is_absolute():
            path = self.paths.root / path
        resolved = path.resolve()
        if not resolved.is_dir():
            raise AgentRequestError(
                "cwd_missing",
                f"working directory {str(path)!r} does not exist or is not a directory",
                "unpack the release there first, or pass the release's folder as cwd",
            )
        return resolved

    async def start(
        self,
        component: str,
        release: str,
        cwd: str,
        *,
        command: Optional[str],
        argv: Optional[List[str]],
        env: Dict[str, str],
        stop_timeout: float,
        env_file: Optional[str] = None,
    ) -> Release:
        """Spawn a new release (or start a stopped one again) and return it."""
        existing = self.releases.get((component, release))
        # A `crashed` release (it could not be restarted) may be started again, like a stopped one.
        if existing is not None and (
            existing.busy or (existing.desired == "running" and existing.state != "crashed")
        ):
            raise AgentRequestError(
                "already_running",
                f"release {release!r} of {component!r} is already running (pid {existing.pid},"
                f" state {existing.state})",
                "stop it first, or start the new version under a new release id",
            )
        resolved = self.resolve_cwd(cwd)
        port = self.ports.allocate(Taken(lambda p: self.port_used(p) or self.reserved(p)))
        rel = Release(
            component,
            release,
            str(resolved),
            command,
            argv,
            dict(env),
            stop_timeout,
            port,
            self.paths.release_log(component, release),
            env_file,
        )
        if existing is not None:
            rel.created_at = existing.created_at
        rel.busy = True
        self._put(rel)
        try:
            self._spawn(rel)
            if command is not None:
                await self._check_shell_found(rel)
        except AgentRequestError:
            if existing is not None:
                self._put(existing)
            else:
                self._drop(rel)
            self.on_change(rel.key)
            raise
        finally:
            rel.busy = False
        self._prune_stopped(component)
        self.on_change(rel.key)
        return rel

    def _spawn(self, rel: Release) -> None:
        env = dict(self.base_env)
        if rel.env_file is not None:
            env.update(read_env_file(os.path.join(rel.cwd, rel.env_file)))
        env.update(rel.env)
        env["PORT"] = str(rel.port)  # the agent's choice wins over whatever env said
        args = ["/bin/sh", "-c", rel.command] if rel.command is not None else list(rel.argv or [])
        log_fd = logfiles.open_for_process(rel.log_path)
        try:
            logfiles.append_marker(rel.log_path, f"starting on port {rel.port}: {args!r}")
            popen = subprocess.Popen(
                args,
                cwd=rel.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            if not os.path.isdir(rel.cwd):
                raise AgentRequestError(
                    "cwd_missing",
                    f"working directory {rel.cwd!r} disappeared",
                    "redeploy the release",
                ) from exc
            raise AgentRequestError(
                "command_not_found",
                f"command not found: {args[0]!r} (PATH={env.get('PATH', '')})",
                "check the component's start command, or use an absolute path",
            ) from exc
        except PermissionError as exc:
            raise AgentRequestError(
                "command_not_found",
                f"command is not executable: {args[0]!r} ({exc.strerror})",
                "check the file's execute permission, or run it through an interpreter",
            ) from exc
        finally:
            os.close(log_fd)
        rel.popen = popen
        rel.pid = popen.pid
        rel.start_ticks = procinfo.start_ticks(popen.pid)
        rel.started_at = time.time()
        rel.next_restart_at = None
        rel.error = None
        self.log.info(
            "%s/%s: started pid %d on port %d", rel.component, rel.release, rel.pid, rel.port
        )

    async def _check_shell_found(self, rel: Release) -> None:
        """`sh -c` reports a missing command by exiting 127 right away: wait briefly for that.

        The wait ends as soon as the shell runs the program (exec'd, or as its child): the
        program was found, and whether it works is for the health check to say. A script run
        by the shell itself (no other program yet) waits the full COMMAND_CHECK_S.
        """
        deadline = time.monotonic() + self.COMMAND_CHECK_S
        while time.monotonic() < deadline:
            if rel.desired != "running":
                # Stopped meanwhile (a rollback undoing this very start): that exit is the
                # stop's doing, not a crash, and the stop sets the state.
                return
            exited, code = self._poll_exit(rel)
            if not exited and rel.pid is not None and _exec_done(rel.pid):
                return
            if exited:
                if code in (126, 127):
                    rel.pid = None
                    rel.popen = None
                    last = logfiles.tail(rel.log_path, 1)
                    detail = last[0] if last else f"exit code {code}"
                    raise AgentRequestError(
                        "command_not_found",
                        f"{rel.component}/{rel.release}: the shell could not run"
                        f" {rel.command!r}: {detail}",
                        "check the component's start command and that its program is on PATH"
                        f" ({self.base_env.get('PATH', '')}) or in the release folder",
                    )
                # Any other immediate exit is an ordinary crash: supervision restarts it.
                self._on_exit(rel, code)
                return
            await asyncio.sleep(0.01)

    def _prune_stopped(self, component: str) -> None:
        stopped = [r for r in self.of_component(component) if r.desired == "stopped"]
        stopped.sort(key=lambda r: r.stopped_at or 0.0)
        for rel in stopped[: max(0, len(stopped) - self.KEEP_STOPPED)]:
            self._drop(rel)
            self.on_change(rel.key)

    # ----------------------------------------------------------------- watching

    def _poll_exit(self, rel: Release) -> Tuple[bool, Optional[int]]:
        """(exited, exit code) of the release's main process; code None if it is not our child."""
        if rel.pid is None:
            return True, rel.last_exit_code
        if rel.popen is not None:
            code = rel.popen.poll()
            return code is not None, code
        try:
            pid, status = os.waitpid(rel.pid, os.WNOHANG)
        except ChildProcessError:
            return (not procinfo.is_same_process(rel.pid, rel.start_ticks)), None
        if pid == 0:
            return False, None
        return True, os.waitstatus_to_exitcode(status)

    def _kill_leftovers(self, pgid: int) -> None:
        # The main process is gone; children it left in the group would hold the port.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _on_exit(self, rel: Release, code: Optional[int]) -> None:
        now = time.time()
        pid = rel.pid
        uptime = rel.uptime(now)
        if pid is not None:
            self._kill_leftovers(pid)
        if uptime >= self.policy.reset_after:
            rel.consecutive_crashes = 0
        rel.consecutive_crashes += 1
        window = self.policy.crash_loop_window
        rel.crash_times = [t for t in rel.crash_times if now - t < window] + [now]
        rel.last_exit_code = code
        rel.last_exit_at = now
        rel.pid = None
        rel.popen = None
        rel.start_ticks = None
        delay = self.policy.backoff(rel.consecutive_crashes)
        rel.next_restart_at = time.monotonic() + delay
        looping = (
            rel.consecutive_crashes >= self.policy.crash_loop_after
            or len(rel.crash_times) >= self.policy.crash_loop_after
        )
        rel.state = "crash-loop" if looping else "backing-off"
        what = describe_exit(code)
        logfiles.append_marker(
            rel.log_path,
            f"pid {pid} ended ({what}) after {uptime:.1f}s; restart in {delay:.1f}s"
            + (" [crash loop]" if looping else ""),
        )
        self.log.warning(
            "%s/%s: pid %s ended (%s) after %.1fs; restart in %.1fs%s",
            rel.component,
            rel.release,
            pid,
            what,
            uptime,
            delay,
            " [crash loop]" if looping else "",
        )

    def _restart(self, rel: Release) -> None:
        rel.restarts += 1
        try:
            self._spawn(rel)
        except AgentRequestError as exc:
            # Restarting cannot help when the release folder or program is gone: stop trying,
            # and say so in `list`.
            rel.state = "crashed"
            rel.error = exc.message
            rel.next_restart_at = None
            self.log.error("%s/%s: cannot restart: %s", rel.component, rel.release, exc.message)
            return
        looping = rel.consecutive_crashes >= self.policy.crash_loop_after
        rel.state = "crash-loop" if looping else "starting"

    def restarting(self, component: str, release: str) -> bool:
        """True while the release is down but coming back: its process crashed (noticed now or
        earlier) and a restart is scheduled, or it was (re)spawned so recently that it may not
        listen yet. The router holds requests for it meanwhile instead of failing them.
        """
        rel = self.releases.get((component, release))
        if rel is None or rel.busy or rel.desired != "running" or rel.state == "crashed":
            return False
        if rel.pid is None:
            return rel.next_restart_at is not None
        exited, code = self._poll_exit(rel)
        if exited:
            self._on_exit(rel, code)  # noticed before the watch loop: restart it sooner
            self.on_change(rel.key)
            return True
        # Alive but refusing: a process spawned this recently may still be starting up (an
        # interpreter on a busy host can take seconds before it listens).
        return (
            rel.state in ("starting", "crash-loop") or rel.uptime(time.time()) < self.LISTEN_GRACE
        )

    def tick(self) -> None:
        """One watch pass over the releases that are to run; each one changed is passed to
        `on_change`."""
        now = time.time()
        mono = time.monotonic()
        for rel in list(self._watched.values()):
            if rel.busy or rel.desired != "running":
                continue
            changed = False
            if rel.pid is not None:
                exited, code = self._poll_exit(rel)
                if exited:
                    self._on_exit(rel, code)
                    self.on_change(rel.key)
                    continue
                uptime = rel.uptime(now)
                if rel.consecutive_crashes and uptime >= self.policy.reset_after:
                    rel.consecutive_crashes = 0
                    changed = True
                if (
                    rel.state in ("starting", "crash-loop")
                    and uptime >= self.policy.running_after
                    and rel.consecutive_crashes < self.policy.crash_loop_after
                ):
                    rel.state = "running"
                    changed = True
            elif rel.next_restart_at is not None and mono >= rel.next_restart_at:
                self._restart(rel)
                changed = True
            if changed:
                self.on_change(rel.key)
        if mono - self._last_rotation_check >= 1.0:
            self._last_rotation_check = mono
            for rel in self._watched.values():
                if rel.pid is not None:
                    logfiles.rotate_if_needed(rel.log_path, self.log_policy)

    # ----------------------------------------------------------------- stop

    async def stop(self, rel: Release, timeout: Optional[float] = None) -> None:
        """SIGTERM the release's group, SIGKILL what is left after `timeout`; mark it stopped."""
        rel.desired = "stopped"
        if self._watched.get(rel.key) is rel:
            del self._watched[rel.key]
        rel.next_restart_at = None
        rel.busy = True
        try:
            if rel.pid is not None:
                await self._terminate(rel, rel.stop_timeout if timeout is None else timeout)
        finally:
            rel.busy = False
        rel.state = "stopped"
        rel.pid = None
        rel.popen = None
        rel.start_ticks = None
        rel.stopped_at = time.time()
        self.on_change(rel.key)

    async def _terminate(self, rel: Release, timeout: float) -> None:
        pid = rel.pid
        assert pid is not None
        logfiles.append_marker(rel.log_path, f"stopping pid {pid} (SIGTERM, {timeout:g}s grace)")
        self._signal_group(pid, signal.SIGTERM)
        if not await self._wait_group_gone(rel, pid, timeout):
            logfiles.append_marker(rel.log_path, f"pid {pid} still running: SIGKILL")
            self.log.warning("%s/%s: SIGKILL after %gs", rel.component, rel.release, timeout)
            self._signal_group(pid, signal.SIGKILL)
            await self._wait_group_gone(rel, pid, 5.0)
        exited, code = self._poll_exit(rel)
        if exited and code is not None:
            rel.last_exit_code = code
            rel.last_exit_at = time.time()
        logfiles.append_marker(rel.log_path, f"pid {pid} stopped")

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    async def _wait_group_gone(self, rel: Release, pgid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._poll_exit(rel)  # reaps our child so it does not linger as a zombie
            if not procinfo.group_alive(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def stop_all(self) -> None:
        """Stop every running release (used by `shutdown` with stop_processes)."""
        running = [r for r in self.releases.values() if r.pid is not None or r.desired == "running"]
        await asyncio.gather(*(self.stop(r) for r in running))

    # ----------------------------------------------------------------- adoption

    def adopt(self, records: Iterable[Dict[str, Any]]) -> None:
        """Take over the releases a previous agent recorded: keep live ones, restart dead ones."""
        for data in records:
            try:
                rel = Release.from_state(data)
            except (KeyError, TypeError, ValueError) as exc:
                self.log.error("ignoring unreadable release record %r: %s", data, exc)
                continue
            self._put(rel)
            alive = rel.pid is not None and procinfo.is_same_process(rel.pid, rel.start_ticks)
            if rel.desired != "running":
                if alive and rel.pid is not None:
                    # The previous agent died in the middle of stopping it: finish the job.
                    self.log.warning(
                        "%s/%s: killing leftover pid %d of a stopped release",
                        rel.component,
                        rel.release,
                        rel.pid,
                    )
                    self._signal_group(rel.pid, signal.SIGKILL)
                rel.pid = None
                rel.state = "stopped"
                continue
            if alive:
                self.log.info("%s/%s: adopted pid %s", rel.component, rel.release, rel.pid)
                logfiles.append_marker(rel.log_path, f"agent restarted; adopted pid {rel.pid}")
                if rel.state not in ("starting", "running", "crash-loop"):
                    rel.state = "running"
            else:
                if rel.pid is not None:
                    logfiles.append_marker(
                        rel.log_path, f"pid {rel.pid} is gone (ended while the agent was down)"
                    )
                    self.log.warning(
                        "%s/%s: pid %s ended while the agent was down; restarting",
                        rel.component,
                        rel.release,
                        rel.pid,
                    )
                rel.pid = None
                rel.start_ticks = None
                rel.state = "backing-off"
                rel.next_restart_at = time.monotonic()
