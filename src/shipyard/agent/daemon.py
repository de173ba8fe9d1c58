"""The agent process: control socket, op handlers, the watch loop and its lifecycle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Tuple

from . import logfiles, probe, protocol
from .errors import AgentRequestError
from .lease import Lapse, Lease, iso, lease_info
from .links import LINK_HOST, Link, Links
from .paths import AgentPaths, check_name, hold_pid_lock, unix_address
from .protocol import Args
from .retire import RetireItem, RetireSchedule
from .router import DEFAULT_CRASH_WAIT, ROUTERS, Route, Router
from .state import STATE_VERSION, StateFile
from .supervisor import (
    PortAllocator,
    Release,
    RestartPolicy,
    Supervisor,
    Taken,
    base_environment,
)

if TYPE_CHECKING:
    from .keeper import KeeperChannel

__all__ = ["LISTEN_FDS_ENV", "Agent", "ExitPlan", "agent_version"]

# Set by `reexec` for the new image: {"host:port": fd} of inherited listening sockets.
LISTEN_FDS_ENV = "SHIPYARD_AGENT_LISTEN_FDS"
_TICK = 0.1
_REEXEC_DRAIN = 5.0
_LOCK_WAIT = 5.0


def agent_version() -> str:
    try:
        from shipyard import __version__  # only the version: the agent ships without the rest

        return str(__version__)
    except ImportError:
        return "unknown"


def raise_open_file_limit() -> Tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after).

    Every proxied connection costs the router two descriptors (client and release): with the
    1,024 many systems give a service, a few hundred concurrent clients would get 502 "too many
    open files". Releases started from here inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft  # a hard limit above what the kernel allows (nr_open): keep ours
    return soft, hard


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
        keeper: Optional[KeeperChannel] = None,
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
            on_change=self._release_changed,
            logger=self.log,
        )
        self.router = Router(self.log)
        self.router.recovering = self.supervisor.restarting
        self.router.haproxy_dir = paths.dir / "haproxy"
        self.keeper = keeper
        if keeper is not None:
            self.router.on_listen = keeper.hold
            self.router.on_close = keeper.drop
        self.links = Links(self.router, self.log, on_change=self.mark)
        self.supervisor.reserved = self._port_reserved
        self.ports = self.supervisor.ports
        # The active release of components without a public route (set by `activate`; `route`
        # sets it too): what following links reach.
        self.active: Dict[str, str] = {}
        self.retire = RetireSchedule(on_change=lambda key: self.mark("retire", key))
        # Retirements in progress, by release (several at once: see RetireSchedule.due).
        self._retiring: Dict[Tuple[str, str], asyncio.Future[None]] = {}
        # Stops in progress, by release: a second request for one waits for the first.
        self._stops: Dict[Tuple[str, str], asyncio.Future[None]] = {}
        self.lease: Optional[Lease] = None
        self.lapse: Optional[Lapse] = None
        self._lapsing: Optional[asyncio.Future[None]] = None
        self._undoing = False  # a lapsed lease's actions are being carried out
        self.inherited_fds = dict(inherited_fds or {})
        self.on_ready = on_ready
        self.started = time.time()
        self._stop: Optional[asyncio.Event] = None
        self._exit = ExitPlan()
        self._after_response: Optional[Callable[[], None]] = None
        self._busy = 0  # control requests being handled
        self._stopping = False
        self._lock_fd: Optional[int] = None
        self.state = StateFile(paths.state)
        # Records changed since the last save, (kind, id) in order: what the next save writes.
        self._marks: Dict[Tuple[str, Any], None] = {}
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
            "lease": self.op_lease,
            "lease_end": self.op_lease_end,
            "retire": self.op_retire,
            "link": self.op_link,
            "unlink": self.op_unlink,
            "activate": self.op_activate,
        }

    # ------------------------------------------------------------------ lifecycle

    def _port_reserved(self, port: int) -> bool:
        return port in self.links.ports() or port in self.router.public_ports()

    def _acquire_lock(self) -> None:
        # A worker whose keeper just died may still be winding down: give it a moment.
        wait = _LOCK_WAIT if self.keeper is not None else 0.0
        self._lock_fd = hold_pid_lock(self.paths.lock, self.paths.root, "pid", wait)

    def _snapshot(self) -> Dict[str, Any]:
        """The whole state (at start-up: every record written afresh)."""
        return {
            "version": STATE_VERSION,
            "agent": {"pid": os.getpid(), "started_at": self.started},
            "releases": self.supervisor.to_state(),
            "routes": [_route_record(r) for r in self.router.routes.values()],
            "links": self.links.to_state(),
            "closed_link_ports": self.links.closed_to_state(),
            "active": dict(self.active),
            "retire": self.retire.to_state(),
            "lease": self.lease.to_state() if self.lease else None,
            "lapse": self.lapse.to_state() if self.lapse else None,
        }

    def mark(self, kind: str, key: Any) -> None:
        """Record (kind, key) changed: the next save writes it as it is then."""
        self._marks[(kind, key)] = None

    def _record(self, kind: str, key: Any) -> Any:
        """The current value of one record (None: it is gone)."""
        if kind == "release":
            rel = self.supervisor.releases.get(key)
            return rel.to_state() if rel else None
        if kind == "route":
            route = self.router.routes.get(key)
            return _route_record(route) if route else None
        if kind == "link":
            link = self.links.links.get(key)
            return link.to_state() if link else None
        if kind == "closed":
            return self.links.closed_ports.get(key)
        if kind == "active":
            return self.active.get(key)
        if kind == "retire":
            item = self.retire.items.get(key)
            return item.to_state() if item else None
        if kind == "lease":
            return self.lease.to_state() if self.lease else None
        if kind == "lapse":
            return self.lapse.to_state() if self.lapse else None
        raise ValueError(f"unknown state record kind {kind!r}")

    def _write(self, job: Callable[[], None]) -> None:
        try:
            job()
        except OSError as exc:
            self.log.error("cannot save %s: %s", self.paths.state, exc)

    async def persist(self, whole: bool = False) -> None:
        """Save what changed, and return once it is on disk.

        The write (with its fsync, milliseconds on a busy disk) runs in a worker thread so the
        router keeps proxying meanwhile. Concurrent callers share writes: whoever finds changes
        not yet written writes them as they are then, which includes every earlier change.
        `whole`: rewrite the whole state as a new snapshot (at start-up).
        """
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        async with self._save_lock:
            if whole:
                self._marks.clear()
                job = functools.partial(self.state.rewrite, self._snapshot())
            elif not self._marks:
                return  # a write that started after our change already covered it
            else:
                changes = [(kind, key, self._record(kind, key)) for kind, key in self._marks]
                self._marks.clear()
                job = functools.partial(self.state.append, changes)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._save_executor, self._write, job)

    def _release_changed(self, key: Tuple[str, str]) -> None:
        """A release changed outside an op (a crash, a restart): save soon, in the background."""
        self.mark("release", key)
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
        before, after = raise_open_file_limit()
        if after != before:
            self.log.info("open-file limit raised from %d to %d", before, after)
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        state = self.state.load()
        if state.get("corrupt"):
            self.log.error("state.json was not valid JSON; moved aside to state.json.corrupt")
        self.supervisor.adopt(state.get("releases", []))
        inherited = self.inherited_fds
        self.inherited_fds = {}
        self._restore_orchestration(state)
        await self._restore_routes(state.get("routes", []), inherited)
        await self._restore_links(state.get("links", []), inherited)
        for key, fd in inherited.items():
            # A socket no route or link wants any more (its worker died between closing it
            # and telling the keeper): the keeper must let it go too, or the port stays bound.
            os.close(fd)
            if self.keeper is not None:
                self.keeper.drop(key)
        self._repoint_links()
        await self.persist(whole=True)

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
        if self.keeper is not None:
            self.keeper.watch(self._keeper_gone)
        self.on_ready()
        try:
            await self._stop.wait()
        finally:
            if self.keeper is not None:
                self.keeper.unwatch()
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
            self.state.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            if self.keeper is not None and not self._exit.reexec:
                self.keeper.exiting()  # on purpose: the keeper stops too
        return self._exit

    def _keeper_gone(self) -> None:
        # Without a keeper nothing would restart this worker or hold its sockets: exit like on
        # SIGTERM (releases keep running), so that the next command starts a whole agent.
        self.log.error("the keeper is gone; the agent exits (releases keep running)")
        self._request_stop(False)

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
            for route in self._listeners():
                fd = route.detach_for_reexec()
                if fd is not None:
                    self._exit.listen_fds[route.key] = fd
            await self.router.quiesce(
                _REEXEC_DRAIN, extra=[link.route for link in self.links.links.values()]
            )
        for route in self._listeners():
            await route.close(0.0)

    def _listeners(self) -> List[Route]:
        return list(self.router.routes.values()) + [
            link.route for link in self.links.links.values()
        ]

    def _restore_orchestration(self, state: Dict[str, Any]) -> None:
        """Active releases, the retire schedule and the lease, as the last agent left them."""
        try:
            self.active = {str(k): str(v) for k, v in dict(state.get("active") or {}).items()}
            self.retire.restore(list(state.get("retire") or []))
            self.links.restore_closed(list(state.get("closed_link_ports") or []))
            if state.get("lease"):
                self.lease = Lease.from_state(state["lease"])
            if state.get("lapse"):
                self.lapse = Lapse.from_state(state["lapse"])
        except (KeyError, TypeError, ValueError) as exc:
            self.log.error("ignoring unreadable lease/retire/active records: %s", exc)

    @staticmethod
    def _take_fd(inherited: Dict[str, int], key: str) -> Optional[socket.socket]:
        fd = inherited.pop(key, None)
        if fd is None:
            return None
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        return sock

    async def _restore_links(
        self, records: List[Dict[str, Any]], inherited: Dict[str, int]
    ) -> None:
        for data in records:
            try:
                component = str(data["component"])
                consumer = str(data["consumer"])
                port = int(data["port"])
                mode = str(data.get("mode", "http"))
                pinned = None if data.get("release") is None else str(data["release"])
            except (KeyError, TypeError, ValueError) as exc:
                self.log.error("ignoring unreadable link record %r: %s", data, exc)
                continue
            link = self.links.restore(component, consumer, pinned, mode, port)
            sock = self._take_fd(inherited, f"{LINK_HOST}:{port}")
            try:
                await self.router.listen(link.route, sock)
            except AgentRequestError as exc:
                # Keep the link (its port is in a running release's environment): retried.
                self.log.error("link %s -> %s: %s", consumer, component, exc.message)
                link.route.error = exc.message

    async def _restore_routes(
        self, records: List[Dict[str, Any]], inherited: Dict[str, int]
    ) -> None:
        for data in records:
            try:
                component = str(data["component"])
                release = data.get("release")
                host = str(data.get("host", "127.0.0.1"))
                public_port = int(data["public_port"])
                mode = str(data.get("mode", "http"))
                drain_timeout = float(data.get("drain_timeout", 30.0))
                crash_wait = float(data.get("crash_wait", DEFAULT_CRASH_WAIT))
                router = str(data.get("router", "builtin"))
                if router not in ROUTERS:
                    raise ValueError(f"unknown router {router!r}")
            except (KeyError, TypeError, ValueError) as exc:
                self.log.error("ignoring unreadable route record %r: %s", data, exc)
                continue
            sock = self._take_fd(inherited, f"{host}:{public_port}")
            rel = self.supervisor.releases.get((component, str(release)))
            if rel is None or rel.desired != "running":
                self.log.warning(
                    "%s: routed release %s is not running; route dropped", component, release
                )
                if sock is not None:
                    sock.close()
                self.router.on_close(f"{host}:{public_port}")  # the keeper lets it go too
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
                    crash_wait=crash_wait,
                    router=router,
                )
            except AgentRequestError as exc:
                # Keep the route (it is what the user asked for) and retry binding it.
                self.log.error("%s: %s", component, exc.message)
                route = self.router.new_route(
                    component, host, public_port, mode, drain_timeout, crash_wait, router
                )
                route.switch(rel.release, rel.port)
                route.error = exc.message
                self.router.restore(route)

    async def _watch(self) -> None:
        last_listen_retry = 0.0
        while True:
            try:
                self.supervisor.tick()
                now = time.monotonic()
                if now - last_listen_retry >= 1.0:
                    last_listen_retry = now
                    await self.router.retry_listen()
                    await self.links.retry_listen()
                self._check_lease()
                self._check_retire()
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
            "keeper_pid": self.keeper.keeper_pid if self.keeper else None,
            "lease": lease_info(self.lease, self.lapse, time.time()),
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
        self.retire.cancel(component, release)  # started again: wanted again
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
        self._repoint_links(component)  # links to it reach its new port
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
        await self._stop_release(rel, timeout)
        await self.persist()
        return rel.info()

    async def _stop_release(self, rel: Release, timeout: Optional[float] = None) -> None:
        """Stop a release on request: after its drain, then close the links it used.

        A release already being stopped (a rollback's stop meeting the lease's lapse, or a
        retirement) is not stopped twice: the second caller waits for the first stop's end.
        """
        self.retire.cancel(rel.component, rel.release)
        stopping = self._stops.get(rel.key)
        if stopping is None:
            stopping = asyncio.ensure_future(self._stop_once(rel, timeout))
            self._stops[rel.key] = stopping
            stopping.add_done_callback(lambda _: self._stops.pop(rel.key, None))
        await asyncio.shield(stopping)

    async def _stop_once(self, rel: Release, timeout: Optional[float]) -> None:
        if not (rel.desired == "stopped" and rel.pid is None):
            if self.router.is_draining(rel.component, rel.release):
                # Let requests it is still answering finish first (bounded by the drain timeout).
                await self.router.wait_drained(rel.component, rel.release)
            link_drains = [
                upstream.retired.wait()
                for link in self.links.to_component(rel.component)
                for upstream in link.route.draining
                if upstream.release == rel.release
            ]
            if link_drains:  # and those it answers through links re-pointed away from it
                await asyncio.gather(*link_drains)
            await self.supervisor.stop(rel, timeout)
        await self.links.close_consumer(f"{rel.component}/{rel.release}")

    async def op_list(self, args: Args) -> Dict[str, Any]:
        component = args.opt_text("component")
        args.finish()
        releases = self.supervisor.listing(component)
        for info in releases:
            stop_at = self.retire.stop_at(info["component"], info["release"])
            info["stop_at"] = None if stop_at is None else iso(stop_at)
        if component is None:
            routes = self.router.infos()
            active = dict(sorted(self.active.items()))
        else:  # one component's: a step's listing must not grow with the project
            route = self.router.routes.get(component)
            routes = [] if route is None else [route.info()]
            active = {component: self.active[component]} if component in self.active else {}
        return {
            "releases": releases,
            "routes": routes,
            "links": self.links.infos(component),
            "active": active,
            "lease": lease_info(self.lease, self.lapse, time.time()),
        }

    async def op_route(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        public_port = args.integer("public_port", low=1)
        release = args.text("release")
        mode = args.choice("mode", ("http", "tcp"), "http")
        drain_timeout = args.seconds("drain_timeout", 30.0)
        host = args.text("host", "127.0.0.1")
        crash_wait = args.seconds("crash_wait", DEFAULT_CRASH_WAIT)
        router = args.choice("router", ROUTERS, "builtin")
        args.finish()
        rel = self._running(component, release)
        previous = await self.router.route(
            component,
            host=host,
            public_port=public_port,
            mode=mode,
            drain_timeout=drain_timeout,
            release=release,
            upstream_port=rel.port,
            crash_wait=crash_wait,
            router=router,
        )
        self.mark("route", component)
        self._set_active(component, release)
        await self.persist()
        return {
            "component": component,
            "public_port": public_port,
            "release": release,
            "previous_release": previous,
            "upstream_port": rel.port,
        }

    def _running(self, component: str, release: str) -> Release:
        """The release, if it runs (or is restarting): something will answer it."""
        rel = self.supervisor.get(component, release)
        if rel.desired != "running" or rel.state == "crashed":
            raise AgentRequestError(
                "release_not_running",
                f"release {release!r} of {component!r} is {rel.state}: nothing would answer",
                "start it (op `start`) and check its health before routing to it",
            )
        return rel

    def _set_active(self, component: str, release: Optional[str]) -> None:
        """`release` is now what `component`'s users reach: re-point its following links, and
        do not stop it later (it is wanted again)."""
        if release is None:
            self.active.pop(component, None)
        else:
            self.active[component] = release
            self.retire.cancel(component, release)
        self.mark("active", component)
        self._repoint_links(component)

    def _link_target(self, link: Link) -> Optional[Tuple[str, int]]:
        release = link.pinned or self.active.get(link.component)
        if release is None:
            return None
        rel = self.supervisor.releases.get((link.component, release))
        if rel is None or rel.desired != "running":
            return None
        return rel.release, rel.port

    def _repoint_links(self, component: Optional[str] = None) -> None:
        """Point the links to `component` (all: None) at their target (the pinned release, or
        the dependency's active one)."""
        links = (
            self.links.links.values() if component is None else self.links.to_component(component)
        )
        for link in links:
            target = self._link_target(link)
            current = link.route.current
            if target is not None and (
                current is None or (current.release, current.port) != target
            ):
                previous = link.route.switch(*target)
                if previous != target[0]:
                    self.log.info(
                        "link %s -> %s: %s -> %s (port %d)",
                        link.consumer,
                        link.component,
                        previous,
                        target[0],
                        link.port,
                    )

    async def op_unroute(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        drain_timeout = args.opt_seconds("drain_timeout")
        args.finish()
        route = self.router.get(component)
        release = route.current.release if route.current else None
        await self.router.unroute(component, drain_timeout)
        self.mark("route", component)
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
            for component in self.router.routes:
                self.mark("route", component)
            await self.router.close_all(drain_timeout)
            await self.links.close_all(drain_timeout)
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

    # ------------------------------------------------------------------ links

    async def op_link(self, args: Args) -> Dict[str, Any]:
        component = check_name("component", args.text("component"))
        consumer = args.text("consumer")
        release = args.opt_text("release")
        mode = args.choice("mode", ("http", "tcp"), "http")
        args.finish()
        owner, slash, owner_release = consumer.partition("/")
        if not slash:
            raise AgentRequestError(
                "bad_args",
                f"consumer {consumer!r} must be '<component>/<release>'",
                "name the release that will use the link",
            )
        check_name("consumer component", owner)
        check_name("consumer release", owner_release)
        if release is not None:
            self.supervisor.get(component, release)  # unknown_release
        link = self.links.links.get((component, consumer))
        if link is not None and link.route.mode != mode:
            await self.links.close(component, consumer)
            link = None
        if link is None:
            taken = Taken(
                lambda p: self.supervisor.port_used(p, running_only=False) or self._port_reserved(p)
            )
            port = self.links.closed_ports.get((component, consumer))
            if port is None or port in taken or not self.ports.is_free(port):
                port = self.ports.allocate(taken)
            link = await self.links.open(component, consumer, release, mode, port)
        link.pinned = release
        self.mark("link", (component, consumer))
        self._repoint_links(component)
        await self.persist()
        return link.info()

    async def op_unlink(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        consumer = args.text("consumer")
        args.finish()
        link = await self.links.close(component, consumer)
        await self.persist()
        return {"component": component, "consumer": consumer, "port": link.port}

    async def op_activate(self, args: Args) -> Dict[str, Any]:
        component = args.text("component")
        release = args.opt_text("release")
        args.finish()
        if release is not None:
            self._running(component, release)
        previous = self.active.get(component)
        self._set_active(component, release)
        await self.persist()
        return {"component": component, "release": release, "previous_release": previous}

    # ------------------------------------------------------------------ retire

    async def op_retire(self, args: Args) -> Dict[str, Any]:
        items = args.records("items", {"component": "text", "release": "text", "after": "seconds"})
        args.finish()
        now = time.time()
        for item in items:
            self.supervisor.get(item["component"], item["release"])  # unknown_release
        for item in items:
            self.retire.add(RetireItem(item["component"], item["release"], now + item["after"]))
        await self.persist()
        return {"scheduled": len(items)}

    def _check_retire(self) -> None:
        if not self.retire.items:
            return
        due = self.retire.due(time.time(), self._consumers_of, set(self._retiring))
        for item in due:
            self._retiring[item.key] = asyncio.ensure_future(self._retire_one(item))

    def _consumers_of(self, component: str) -> List[str]:
        return [link.consumer for link in self.links.to_component(component)]

    async def _retire_one(self, item: RetireItem) -> None:
        try:
            rel = self.supervisor.releases.get((item.component, item.release))
            if self.router.routed_release(item.component) == item.release:
                self.log.info("%s/%s: routed again; not retired", item.component, item.release)
            elif self.active.get(item.component) == item.release:
                self.log.info("%s/%s: active again; not retired", item.component, item.release)
            elif rel is not None:
                self.log.info("%s/%s: warm time over, stopping", item.component, item.release)
                await self._stop_release(rel)
        except Exception:
            self.log.exception("retiring %s/%s failed", item.component, item.release)
        finally:
            self._retiring.pop(item.key, None)
            if self.retire.items.get(item.key) is item:
                self.retire.cancel(item.component, item.release)
            await self.persist()

    # ------------------------------------------------------------------ lease

    async def op_lease(self, args: Args) -> Dict[str, Any]:
        holder = args.text("holder")
        ttl = args.seconds("ttl")
        revert = args.records("revert", {"component": "text", "release": "text?"})
        discard = args.records("discard", {"component": "text", "release": "text"})
        args.finish()
        if ttl <= 0:
            raise AgentRequestError("bad_args", "op 'lease': 'ttl' must be more than 0 seconds")
        now = time.time()
        lease = self.lease
        if self._undoing:
            raise AgentRequestError(
                "lease_lapsed",
                f"the lease of {self.lapse.holder if self.lapse else holder!r} lapsed and is"
                " being undone",
                "wait for the agent to finish, then recover",
            )
        if lease is not None and lease.holder != holder and lease.expires_at > now:
            raise AgentRequestError(
                "lease_held",
                f"the agent's lease is held by {lease.holder!r}"
                f" for {lease.expires_in(now):g}s more",
                "another deployment runs on this host; wait for it, or let its lease lapse",
            )
        if lease is None and self.lapse is not None and self.lapse.holder == holder:
            raise AgentRequestError(
                "lease_lapsed",
                f"the lease of {holder!r} lapsed at {iso(self.lapse.at)}; the agent undid:"
                f" {'; '.join(self.lapse.actions) or 'nothing'}",
                "recover the deployment (the switch was undone); end it with lease_end",
            )
        self.lease = Lease(
            holder,
            ttl,
            now + ttl,
            [(r["component"], r["release"]) for r in revert],
            [(r["component"], r["release"]) for r in discard],
        )
        if self.lapse is not None and self.lapse.holder != holder:
            self.lapse = None  # a new deployment: the old lapse has been dealt with
        self._lease_changed()
        await self.persist()
        return {"holder": holder, "expires_in_s": self.lease.expires_in(now)}

    async def op_lease_end(self, args: Args) -> Dict[str, Any]:
        holder = args.text("holder")
        args.finish()
        lease = self.lease
        if lease is not None and lease.holder != holder:
            raise AgentRequestError(
                "lease_held",
                f"the agent's lease is held by {lease.holder!r}, not {holder!r}",
                "only its holder ends a lease",
            )
        ended = lease is not None
        self.lease = None
        lapse = self.lapse
        if lapse is not None and lapse.holder == holder:
            self.lapse = None
        self._lease_changed()
        await self.persist()
        return {
            "holder": holder,
            "ended": ended,
            "lapsed": lapse.info() if lapse is not None and lapse.holder == holder else None,
        }

    def _lease_changed(self) -> None:
        self.mark("lease", None)
        self.mark("lapse", None)

    def _check_lease(self) -> None:
        lease = self.lease
        if lease is None or lease.expires_at > time.time():
            return
        if self._lapsing is None or self._lapsing.done():
            self._lapsing = asyncio.ensure_future(self._lapse(lease))

    async def _lapse(self, lease: Lease) -> None:
        """The orchestrator is gone: route back to the snapshot releases, stop the new ones."""
        self.log.warning("lease of %r lapsed: undoing its deployment", lease.holder)
        self._undoing = True
        # All components at once, as a deploy's switch and finish do: with many components, one
        # after another would leave the site half old, half new for longer.
        reverted = await asyncio.gather(
            *(self._revert_logged(component, release) for component, release in lease.revert)
        )
        discarded = await asyncio.gather(
            *(self._discard(component, release) for component, release in lease.discard)
        )
        actions = [*reverted, *(action for action in discarded if action is not None)]
        self.lease = None
        self.lapse = Lapse(lease.holder, time.time(), actions)
        self._undoing = False
        self.log.warning("lease of %r lapsed: %s", lease.holder, "; ".join(actions) or "nothing")
        self._lease_changed()
        await self.persist()

    async def _revert_logged(self, component: str, release: Optional[str]) -> str:
        try:
            return await self._revert(component, release)
        except Exception as exc:
            self.log.exception("lease lapse: reverting %s failed", component)
            return f"{component}: could not revert: {exc}"

    async def _discard(self, component: str, release: str) -> Optional[str]:
        """Stop a lapsed deployment's new release unless it is stopped or still routed."""
        rel = self.supervisor.releases.get((component, release))
        if rel is None or (rel.desired == "stopped" and rel.pid is None):
            return None
        if self.router.routed_release(component) == release:
            return f"{component}/{release}: still routed, left running"
        try:
            await self._stop_release(rel)
        except Exception as exc:
            self.log.exception("lease lapse: stopping %s/%s failed", component, release)
            return f"{component}/{release}: could not stop: {exc}"
        return f"{component}/{release}: stopped"

    async def _revert(self, component: str, release: Optional[str]) -> str:
        route = self.router.routes.get(component)
        current = self.router.routed_release(component) or self.active.get(component)
        if release is None:
            if route is not None:
                await self.router.unroute(component, min(route.drain_timeout, 5.0))
                self.mark("route", component)
            self._set_active(component, None)
            return f"{component}: unrouted" if route is not None else f"{component}: deactivated"
        rel = self.supervisor.releases.get((component, release))
        if rel is None or rel.desired != "running" or rel.state == "crashed":
            return f"{component}: {release} is not running; left on {current}"
        if route is not None:
            await self.router.route(
                component,
                host=route.host,
                public_port=route.public_port,
                mode=route.mode,
                drain_timeout=route.drain_timeout,
                release=release,
                upstream_port=rel.port,
                crash_wait=route.crash_wait,
                router=route.router_kind,  # the route's own: HAProxy stays HAProxy
            )
            self.mark("route", component)
        self._set_active(component, release)
        return f"{component}: back on {release}" + (f" (was {current})" if current else "")


def _route_record(route: Route) -> Dict[str, Any]:
    """A route's state record: what a restarted agent needs to bind and route it again."""
    return {
        "component": route.component,
        "public_port": route.public_port,
        "host": route.host,
        "mode": route.mode,
        "router": route.router_kind,
        "drain_timeout": route.drain_timeout,
        "crash_wait": route.crash_wait,
        "release": route.current.release if route.current else None,
    }


def parse_listen_fds(value: Optional[str]) -> Dict[str, int]:
    """Decode $SHIPYARD_AGENT_LISTEN_FDS ({"host:port": fd}); garbage yields {}."""
    if not value:
        return {}
    try:
        data = json.loads(value)
        return {str(k): int(v) for k, v in dict(data).items()}
    except (ValueError, TypeError):
        return {}
