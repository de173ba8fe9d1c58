"""The agent process: control socket, op handlers, the watch loop and its lifecycle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from . import logfiles, probe, protocol
from .errors import AgentRequestError
from .paths import AgentPaths, check_name, unix_address
from .protocol import Args
from .router import Route, Router
from .state import STATE_VERSION, atomic_write_json, read_state
from .supervisor import PortAllocator, RestartPolicy, Supervisor, base_environment

__all__ = ["LISTEN_FDS_ENV", "Agent", "ExitPlan", "agent_version"]

# Set by `reexec` for the new image: {"host:port": fd} of inherited listening sockets.
LISTEN_FDS_ENV = "SHIPYARD_AGENT_LISTEN_FDS"
_TICK = 0.1
_REEXEC_DRAIN = 5.0


def agent_version() -> str:
    try:
        from shipyard import __version__  # only the version: the agent ships without the rest

        return str(__version__)
    except ImportError:
        return "unknown"


class ExitPlan:
    """What the process should do once the agent's loop has ended."""

    def __init__(self, reexec: bool = False, listen_fds: Optional[Dict[str, int]] = None) -> None:
        self.reexec = reexec
        self.listen_fds = listen_fds or {}


Handler = Callable[[Args], Awaitable[Dict[str, Any]]]


class Agent:
    """One agent for one root. `await agent.run()` serves until shutdown, SIGTERM or reexec."""

    def __init__(
        self,
        paths: AgentPaths,
        *,
        policy: Optional[RestartPolicy] = None,
        log_policy: Optional[logfiles.LogPolicy] = None,
        ports: Optional[PortAllocator] = None,
        base_env: Optional[Dict[str, str]] = None,
        inherited_fds: Optional[Dict[str, int]] = None,
        on_ready: Callable[[], None] = lambda: None,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self.paths = paths
        self.log = logger or logging.getLogger("shipyard.agent")
        self.base_env = base_environment() if base_env is None else base_env
        self.supervisor = Supervisor(
            paths,
            policy=policy,
            log_policy=log_policy,
            ports=ports,
            base_env=self.base_env,
            on_change=self.changed,
            logger=self.log,
        )
        self.router = Router(self.log)
        self.supervisor.reserved_ports = self.router.public_ports
        self.inherited_fds = dict(inherited_fds or {})
        self.on_ready = on_ready
        self.started = time.time()
        self._stop: Optional[asyncio.Event] = None
        self._exit = ExitPlan()
        self._after_response: Optional[Callable[[], None]] = None
        self._busy = 0  # control requests being handled
        self._stopping = False
        self._lock_fd: Optional[int] = None
        self._dirty = False
        self._save_pending = False
        self._save_task: Optional[asyncio.Future[None]] = None
        # Created in run(): on Python 3.9 asyncio primitives bind to the loop current at creation.
        self._save_lock: Optional[asyncio.Lock] = None
        # One writer thread: state files are written in order, never two at once.
        self._save_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="state-writer"
        )
        self._ops: Dict[str, Handler] = {
            "ping": self.op_ping,
            "start": self.op_start,
            "stop": self.op_stop,
            "list": self.op_list,
            "route": self.op_route,
            "unroute": self.op_unroute,
            "logs": self.op_logs,
            "probe": self.op_probe,
            "shutdown": self.op_shutdown,
            "reexec": self.op_reexec,
        }

    # ------------------------------------------------------------------ lifecycle

    def _acquire_lock(self) -> None:
        fd = os.open(str(self.paths.lock), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.read(fd, 32).decode().strip() or "?"
            finally:
                os.close(fd)
            raise AgentRequestError(
                "already_running",
                f"another agent (pid {other}) is already running for {self.paths.root}",
                f"stop it first: shipyard agent stop --root {self.paths.root}",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _snapshot(self) -> Dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "agent": {"pid": os.getpid(), "started_at": self.started},
            "releases": self.supervisor.to_state(),
            "routes": self.router.to_state(),
        }

    def _write(self, data: Dict[str, Any]) -> None:
        try:
            atomic_write_json(self.paths.state, data)
        except OSError as exc:
            self.log.error("cannot save %s: %s", self.paths.state, exc)

    async def persist(self) -> None:
        """Save releases and routes, and return once state.json is on disk.

        The write (with its fsyncs, milliseconds on a busy disk) runs in a worker thread so the
        router keeps proxying meanwhile. Concurrent callers share writes: whoever finds a change
        not yet written writes the state as it is then, which includes every earlier change.
        """
        self._dirty = True
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        async with self._save_lock:
            if not self._dirty:
                return  # a write that started after our change already covered it
            self._dirty = False
            data = self._snapshot()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._save_executor, self._write, data)

    def changed(self) -> None:
        """Something changed outside an op (a crash, a restart): save soon, in the background."""
        self._dirty = True
        if self._stop is not None and not self._save_pending:
            self._save_pending = True
            self._save_task = asyncio.ensure_future(self._background_persist())

    async def _background_persist(self) -> None:
        self._save_pending = False
        await self.persist()

    async def run(self) -> ExitPlan:
        """Serve until told to stop; returns what to do next (exit, or re-execute)."""
        self.paths.ensure()
        self._acquire_lock()
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        state = read_state(self.paths.state)
        if state.get("corrupt"):
            self.log.error("state.json was not valid JSON; moved aside to state.json.corrupt")
        self.supervisor.adopt(state.get("releases", []))
        await self._restore_routes(state.get("routes", []))
        await self.persist()

        if self.paths.sock.exists() or self.paths.sock.is_symlink():
            self.paths.sock.unlink()  # stale: we hold the lock, so nobody else serves it
        with unix_address(self.paths.sock) as address:
            server = await asyncio.start_unix_server(
                self._serve_control, path=address, limit=protocol.MAX_LINE
            )
        os.chmod(self.paths.sock, 0o600)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, False)
        loop.add_signal_handler(signal.SIGHUP, self._request_stop, True)
        self.log.info("agent %s (pid %d) serving %s", agent_version(), os.getpid(), self.paths.sock)
        watch = asyncio.ensure_future(self._watch())
        self.on_ready()
        try:
            await self._stop.wait()
        finally:
            server.close()
            # Let the request that asked for this (and any other in progress) get its answer.
            deadline = time.monotonic() + 30.0
            while self._busy and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            watch.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._wind_down()
            with contextlib.suppress(FileNotFoundError):
                self.paths.sock.unlink()
            self._save_executor.shutdown(wait=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
        return self._exit

    def _request_stop(self, reexec: bool) -> None:
        if reexec:
            self._exit.reexec = True
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    async def _wind_down(self) -> None:
        # Save with the routes still in place: the next agent (re-executed or restarted later)
        # binds them again. Releases keep running.
        await self.persist()
        if self._exit.reexec:
            # Keep the public sockets for the next image (inheritable duplicates) and stop
            # accepting on them here: connections arriving from now on wait in the listen
            # backlog for the next image, the ones already accepted are served first.
            for route in self.router.routes.values():
                fd = route.detach_for_reexec()
                if fd is not None:
                    self._exit.listen_fds[f"{route.host}:{route.public_port}"] = fd
            await self.router.quiesce(_REEXEC_DRAIN)
        for route in list(self.router.routes.values()):
            await route.close(0.0)

    async def _restore_routes(self, records: List[Dict[str, Any]]) -> None:
        inherited = self.inherited_fds
        self.inherited_fds = {}
        for data in records:
            try:
                component = str(data["component"])
                release = data.get("release")
                host = str(data.get("host", "127.0.0.1"))
                public_port = int(data["public_port"])
                mode = str(data.get("mode", "http"))
                drain_timeout = float(data.get("drain_timeout", 30.0))
            except (KeyError, TypeError, ValueError) as exc:
                self.log.error("ignoring unreadable route record %r: %s", data, exc)
                continue
            fd = inherited.pop(f"{host}:{public_port}", None)
            sock = None
            if fd is not None:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                os.set_inheritable(fd, False)
            rel = self.supervisor.releases.get((component, str(release)))
            if rel is None or rel.desired != "running":
                self.log.warning(
                    "%s: routed release %s is not running; route dropped", component, release
                )
                if sock is not None:
                    sock.close()
                continue
            try:
                await self.router.route(
                    component,
                    host=host,
                    public_port=public_port,
                    mode=mode,
                    drain_timeout=drain_timeout,
                    release=rel.release,
                    upstream_port=rel.port,
                    sock=sock,
                )
            except AgentRequestError as exc:
                # Keep the route (it is what the user asked for) and retry binding it.
                self.log.error("%s: %s", component, exc.message)
                route = Route(component, host, public_port, mode, drain_timeout, self.log)
                route.switch(rel.release, rel.port)
                route.error = exc.message
                self.router.restore(route)
        for fd in inherited.values():
            os.close(fd)

    async def _watch(self) -> None:
        last_listen_retry = 0.0
        while True:
            try:
                if self.supervisor.tick():
                    self.changed()
                now = time.monotonic()
                if now - last_listen_retry >= 1.0:
                    last_listen_retry = now
                    if await self.router.retry_listen():
                        self.changed()
            except Exception:  # the watch loop must survive anything one release throws at it
                self.log.exception("watch loop error")
            await asyncio.sleep(_TICK)

    # ------------------------------------------------------------------ control socket

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while not self._stopping:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE
                    error = AgentRequestError("bad_request", "request line too long")
                    writer.write(protocol.encode(protocol.error_response(None, error)))
                    break
                if not line:
                    break
                self._busy += 1
                try:
                    response = await self._dispatch(line)
                    writer.write(protocol.encode(response))
                    await writer.drain()
                finally:
                    self._busy -= 1
                if self._after_response is not None:
                    action, self._after_response = self._after_response, None
                    action()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> Dict[str, Any]:
        request_id: Any = None
        try:
            request = protocol.decode(line)
            request_id = request.get("id")
            op = request.get("op")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise AgentRequestError(
                    "unknown_op",
                    f"unknown op {op!r}",
                    f"ops: {', '.join(protocol.OPS)} (agent {agent_version()})",
                )
            if self._stopping and op not in ("ping", "list"):
                raise AgentRequestError(
                    "shutting_down", "the agent is shutting down", "retry once it is back"
                )
            result = await handler(Args(str(op), request))
            return protocol.ok_response(request_id, result)
        except AgentRequestError as exc:
            return protocol.error_response(request_id, exc)
        except Exception as exc:  # a bug: answer, log the traceback, keep serving
            self.log.exception("op failed")
            return protocol.error_response(
                request_id,
                AgentRequestError(
                    "internal",
                    f"internal error: {type(exc).__name__}: {exc}",
                    f"this is a bug; the traceback is in {self.paths.log}",
                ),
            )

    # ------------------------------------------------------------------ ops

    async def op_ping(self, args: Args) -> Dict[str, Any]:
        args.finish()
        return {
            "pid": os.getpid(),
            "version": agent_version(),
            "protocol": protocol.PROTOCOL_VERSION,
            "root": str(self.paths.root),
            "uptime_s": round(time.time() - self.started, 3),
            "python": sys.version.split()[0],
            # Where the running agent code comes from (a .pyz on remote hosts): which copy runs.
            "code": os.path.dirname(os.path.abspath(__file__)),
        }

    async def op_start(self, args: Args) -> Dict[str, Any]:
        component = check_name("component", args.text("component"))
        release = check_name("release", args.text("release"))
        cwd = args.text("cwd")
        command = args.opt_text("command")
        argv = args.opt_str_list("argv")
        env = args.str_dict("env")
        env_file = args.opt_text("env_file")
        stop_timeout = args.seconds("stop_timeout", 10.0)
        args.finish()
        if (command is None) == (argv is None):
            raise AgentRequestError(
                "bad_args",
                "op 'start' needs exactly one of 'command' (a shell command) and 'argv' (a list)",
            )
        rel = await self.supervisor.start(
            component,
            release,
            cwd,
            command=command,
            argv=argv,
            env=env,
            env_file=env_file,
            stop_timeout=stop_timeout,
        )
        await self.persist()
        return rel.info()

    async def op_stop(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        release = args.text("release")
        timeout = args.opt_seconds("timeout")
        force = args.flag("force", False)
        args.finish()
        rel = self.supervisor.get(component, release)
        if self.router.routed_release(component) == release and not force:
            route = self.router.get(component)
            raise AgentRequestError(
                "release_routed",
                f"release {release!r} is receiving the traffic of {component!r}"
                f" (public port {route.public_port})",
                "route the component to another release first, or pass force: true",
            )
        if rel.desired == "stopped" and rel.pid is None:
            return rel.info()
        if self.router.is_draining(component, release):
            # Let requests it is still answering finish first (bounded by the drain timeout).
            await self.router.wait_drained(component, release)
        await self.supervisor.stop(rel, timeout)
        await self.persist()
        return rel.info()

    async def op_list(self, args: Args) -> Dict[str, Any]:
        component = args.opt_text("component")
        args.finish()
        return {
            "releases": self.supervisor.listing(component),
            "routes": self.router.infos(component),
        }

    async def op_route(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        public_port = args.integer("public_port", low=1)
        release = args.text("release")
        mode = args.choice("mode", ("http", "tcp"), "http")
        drain_timeout = args.seconds("drain_timeout", 30.0)
        host = args.text("host", "127.0.0.1")
        args.finish()
        rel = self.supervisor.get(component, release)
        if rel.desired != "running" or rel.state == "crashed":
            raise AgentRequestError(
                "release_not_running",
                f"release {release!r} of {component!r} is {rel.state}: nothing would answer",
                "start it (op `start`) and check its health before routing to it",
            )
        previous = await self.router.route(
            component,
            host=host,
            public_port=public_port,
            mode=mode,
            drain_timeout=drain_timeout,
            release=release,
            upstream_port=rel.port,
        )
        await self.persist()
        return {
            "component": component,
            "public_port": public_port,
            "release": release,
            "previous_release": previous,
            "upstream_port": rel.port,
        }

    async def op_unroute(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        drain_timeout = args.opt_seconds("drain_timeout")
        args.finish()
        route = self.router.get(component)
        release = route.current.release if route.current else None
        await self.router.unroute(component, drain_timeout)
        await self.persist()
        return {"component": component, "public_port": route.public_port, "release": release}

    async def op_logs(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        release = args.text("release")
        lines = args.integer("lines", 50, low=0, high=100000)
        args.finish()
        rel = self.supervisor.get(component, release)
        loop = asyncio.get_running_loop()
        return {"lines": await loop.run_in_executor(None, logfiles.tail, rel.log_path, lines)}

    async def op_probe(self, args: Args) -> Dict[str, Any]:
        kind = args.choice("kind", ("http", "tcp", "command"), "http")
        host = args.text("host", "127.0.0.1")
        port = args.opt_integer("port", low=1)
        component = args.opt_text("component")
        release = args.opt_text("release")
        path = args.text("path", "/")
        expect = args.status_set("expect_status")
        timeout = args.seconds("timeout", 2.0)
        command = args.opt_text("command")
        cwd = args.opt_text("cwd")
        env = args.str_dict("env")
        args.finish()
        if kind == "command":
            if command is None:
                raise AgentRequestError("bad_args", "a command probe needs 'command'")
            folder = self.supervisor.resolve_cwd(cwd) if cwd else self.paths.root
            full_env = dict(self.base_env)
            full_env.update(env)
            return await probe.command_probe(command, folder, full_env, timeout)
        if port is None:
            if component is None or release is None:
                raise AgentRequestError(
                    "bad_args",
                    f"a {kind} probe needs 'port', or 'component' and 'release'",
                )
            port = self.supervisor.get(component, release).port
        if kind == "tcp":
            return await probe.tcp_probe(host, port, timeout)
        if not path.startswith("/"):
            raise AgentRequestError("bad_args", f"probe path must start with '/': {path!r}")
        return await probe.http_probe(host, port, path, timeout, expect)

    async def op_shutdown(self, args: Args) -> Dict[str, Any]:
        stop_processes = args.flag("stop_processes", True)
        drain_timeout = args.seconds("drain_timeout", 5.0)
        args.finish()
        stopped: List[str] = []
        self._stopping = True  # refuse new work while winding down
        if stop_processes:
            await self.router.close_all(drain_timeout)
            running = [
                r for r in self.supervisor.releases.values() if r.desired == "running" or r.pid
            ]
            stopped = [f"{r.component}/{r.release}" for r in running]
            await self.supervisor.stop_all()
            await self.persist()
        else:
            await self.persist()
        self._after_response = lambda: self._request_stop(False)
        return {"stopped": stopped}

    async def op_reexec(self, args: Args) -> Dict[str, Any]:
        args.finish()
        self._after_response = lambda: self._request_stop(True)
        return {"pid": os.getpid()}


def parse_listen_fds(value: Optional[str]) -> Dict[str, int]:
    """Decode $SHIPYARD_AGENT_LISTEN_FDS ({"host:port": fd}); garbage yields {}."""
    if not value:
        return {}
    try:
        data = json.loads(value)
        return {str(k): int(v) for k, v in dict(data).items()}
    except (ValueError, TypeError):
        return {}
