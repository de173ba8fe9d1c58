"""The router: one listener per public port, forwarding to the routed release's private port.

HTTP mode is an HTTP/1.1 reverse proxy (`proxy` holds the connections, `http1` the parsing).
The upstream is chosen per request, so a switch applies to the next request, even on a client's
existing keep-alive connection. Requests in flight on the previous release hold a lease on its
upstream; the previous release drains until its leases are gone (or drain_timeout cuts them).

TCP mode (and an HTTP connection after a successful `Upgrade:`) is a byte pipe; the upstream is
chosen per connection and the connection holds its lease until it closes.

Everything runs on the agent's single asyncio loop: a switch is one assignment, so no request
can see half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from . import procinfo
from .errors import AgentRequestError
from .proxy import CRASH_POLL, HttpClient, TcpClient, Upstream, UpstreamConn

__all__ = [
    "DEFAULT_CRASH_WAIT",
    "LISTEN_BACKLOG",
    "ROUTERS",
    "Route",
    "Router",
    "Upstream",
    "bind_listener",
]

# What serves a route: this process (the default, nothing to install) or a HAProxy it steers.
ROUTERS = ("builtin", "haproxy")

# A request for a release that is restarting after a crash waits this long for it by default.
DEFAULT_CRASH_WAIT = 10.0
# The public sockets' listen backlog (the kernel caps it at net.core.somaxconn). Python's
# default, 100, leaves a burst of new connections retrying SYNs after 1 s, 3 s, ...
LISTEN_BACKLOG = 1024
# How long a port this agent unrouted may still be held by the keeper's copy of its socket.
DROP_SETTLE_S = 1.0
# A TCP-mode connection draining from a release is closed once it has been at rest this long
# (the release spoke last, nothing moved since): see `Tunnel.at_rest`.
TCP_REST_S = 0.5
_REST_POLL = 0.05
# A release that is down refuses connections (or resets them while its listener goes away).
_REFUSED = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED})


class Route:
    """One component's public port and where it currently sends traffic."""

    router_kind = "builtin"

    def __init__(
        self,
        component: str,
        host: str,
        public_port: int,
        mode: str,
        drain_timeout: float,
        logger: logging.Logger,
        crash_wait: float = DEFAULT_CRASH_WAIT,
        recovering: Optional[Callable[[str], bool]] = None,
    ) -> None:
        self.component = component
        self.host = host
        self.public_port = public_port
        self.mode = mode
        self.drain_timeout = drain_timeout
        # How long a request waits for a release that is restarting after a crash.
        self.crash_wait = crash_wait
        # Asked when a release refuses a connection: is it restarting (worth waiting for)?
        self.recovering: Callable[[str], bool] = recovering or (lambda release: False)
        self.log = logger
        self.current: Optional[Upstream] = None
        self.draining: List[Upstream] = []
        self.sock: Optional[socket.socket] = None
        self.server: Optional[asyncio.AbstractServer] = None
        self.clients: Set[asyncio.Transport] = set()
        # HTTP connections accepted whose first request has not arrived yet.
        self.fresh: Set[asyncio.Transport] = set()
        self.error: Optional[str] = None
        self.closing = False  # set when handing over to a re-executed agent
        self.stats = {
            "connections": 0,
            "requests": 0,
            "retries": 0,
            "upstream_errors": 0,
            "crash_waits": 0,
        }

    @property
    def key(self) -> str:
        """ "host:port" of the listening socket (how the keeper and a re-exec name it)."""
        return f"{self.host}:{self.public_port}"

    # ------------------------------------------------------------ lifecycle

    async def listen(self, sock: Optional[socket.socket]) -> None:
        assert sock is not None  # bound by Router.listen
        self.sock = sock
        client = HttpClient if self.mode == "http" else TcpClient
        # create_server calls listen() again on `sock`: without `backlog` it would shrink to 100.
        self.server = await asyncio.get_running_loop().create_server(
            lambda: client(self), sock=sock, backlog=LISTEN_BACKLOG
        )
        self.error = None

    def serving(self) -> bool:
        """Its public port is being served."""
        return self.server is not None

    async def apply(self, release: str, port: int) -> Optional[str]:
        """`switch`, for a route already serving (one that steers another process awaits)."""
        return self.switch(release, port)

    def switch(self, release: str, port: int) -> Optional[str]:
        """Send new requests to `release` from now on; the previous upstream starts draining."""
        previous = self.current
        if previous is not None and previous.release == release and previous.port == port:
            return previous.release
        upstream: Optional[Upstream] = None
        for candidate in self.draining:
            if candidate.release == release and candidate.port == port:
                upstream = candidate  # switching back before it finished draining: reuse it
        if upstream is not None:
            self.draining.remove(upstream)
            if upstream.drain_task is not None:
                upstream.drain_task.cancel()
                upstream.drain_task = None
            upstream.pooling = True
        else:
            upstream = Upstream(release, port)
        self.current = upstream
        if previous is None:
            return None
        self._start_drain(previous)
        return previous.release

    def _start_drain(self, upstream: Upstream) -> None:
        upstream.stop_pooling()
        self.draining.append(upstream)
        upstream.drain_task = asyncio.ensure_future(self._drain(upstream))

    async def _idle(self, upstreams: List[Upstream], timeout: float) -> bool:
        """Until nothing is in flight on `upstreams` (True), or `timeout` (False).

        HTTP: until their requests are answered (idle keep-alive connections hold nothing).
        TCP: a connection has no request boundaries, so an idle client would hold the drain
        for the whole timeout; each connection is closed instead once it is at rest (the
        release answered last, then nothing moved for TCP_REST_S), and one with an exchange
        under way is waited for.
        """
        if self.mode != "tcp":
            try:
                waits = asyncio.gather(*(u.idle_event.wait() for u in upstreams))
                await asyncio.wait_for(waits, timeout)
            except asyncio.TimeoutError:
                return False
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for upstream in upstreams:
                for lease in list(upstream.leases):
                    if lease.tunnel is not None and lease.tunnel.at_rest(TCP_REST_S):
                        lease.tunnel.end()
            if not any(u.leases for u in upstreams):
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(_REST_POLL, left))

    async def _drain(self, upstream: Upstream) -> None:
        timeout = self.drain_timeout  # the budget of the switch that started this drain
        try:
            idle = await self._idle([upstream], timeout)
        except asyncio.CancelledError:
            return  # switched back to it
        if not idle:
            self.log.warning(
                "%s: %d request(s) on %s still in flight after %gs: cut",
                self.component,
                len(upstream.leases),
                upstream.release,
                timeout,
            )
            upstream.abort_all(f"cut: still running {timeout:g}s after a switch")
        if upstream in self.draining:
            self.draining.remove(upstream)
        upstream.drain_task = None
        upstream.retired.set()

    def _pause_accepting(self) -> None:
        # Not Server.close(): that drops connections accepted in the same loop turn but not yet
        # attached (asyncio leaks them and they end in a reset). close() comes once they're served.
        if self.sock is not None and self.server is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())

    async def close(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then cut every connection.

        Until the end, requests still arriving on open connections are served, each with
        `Connection: close`.
        """
        self.closing = True
        self._pause_accepting()
        await _settle()
        upstreams = ([self.current] if self.current else []) + list(self.draining)
        for upstream in upstreams:
            if upstream.drain_task is not None:
                upstream.drain_task.cancel()
                upstream.drain_task = None
        await self._idle(upstreams, drain_timeout)
        self.current = None
        if self.server is not None:
            self.server.close()
        self.sock = None
        for upstream in upstreams:
            upstream.stop_pooling()
            upstream.abort_all("cut: the route was closed")
            upstream.retired.set()
        self.draining.clear()
        for transport in list(self.clients):
            transport.abort()
        self.clients.clear()

    def detach_for_reexec(self) -> Optional[int]:
        """Hand the listening socket over to a re-executed agent; returns its inheritable fd.

        The socket is duplicated before this loop stops accepting on it, so it never stops
        listening: connections arriving until the next agent accepts wait in the backlog.
        Responses from now on carry `Connection: close`, so keep-alive clients reconnect (into
        that backlog) instead of reusing a connection about to be cut.
        """
        if self.sock is None:
            return None
        fd = os_dup_inheritable(self.sock.fileno())
        self.closing = True
        self._pause_accepting()
        return fd

    def info(self) -> Dict[str, Any]:
        return {
            "component": self.component,
            "public_port": self.public_port,
            "host": self.host,
            "mode": self.mode,
            "router": self.router_kind,
            "release": self.current.release if self.current else None,
            "upstream_port": self.current.port if self.current else None,
            "draining": [u.release for u in self.draining],
            "drain_timeout": self.drain_timeout,
            "crash_wait": self.crash_wait,
            "listening": self.server is not None and self.error is None,
            "error": self.error,
            "stats": dict(self.stats),
        }

    async def connect(self, upstream: Upstream) -> UpstreamConn:
        """A new connection to `upstream`; while its release is restarting after a crash (it
        refuses connections and the supervisor says a restart is under way), keep trying for
        up to `crash_wait` seconds instead of failing the request.
        """
        loop = asyncio.get_running_loop()
        deadline: Optional[float] = None
        while True:
            try:
                return await upstream.open()
            except OSError as exc:
                if exc.errno not in _REFUSED or not self.recovering(upstream.release):
                    raise
                now = loop.time()
                if deadline is None:
                    deadline = now + self.crash_wait
                    self.stats["crash_waits"] += 1
                    self.log.info(
                        "%s: %s is restarting; requests wait up to %gs",
                        self.component,
                        upstream.release,
                        self.crash_wait,
                    )
                if now >= deadline:
                    raise
            await asyncio.sleep(CRASH_POLL)

    def bad_gateway(self, client: HttpClient, upstream: Optional[Upstream], reason: str) -> None:
        """Answer 502 (the client connection closes after it), and say why in the log."""
        self.stats["upstream_errors"] += 1
        if upstream is None:
            text = f"502 Bad Gateway: component {self.component!r} has no routed release"
        else:
            text = (
                f"502 Bad Gateway: release {upstream.release!r} of {self.component!r}"
                f" did not answer on {upstream.host}:{upstream.port} ({reason})"
            )
        self.log.warning("%s", text)
        client.send_error(502, text)


async def _settle() -> None:
    """Let connections accepted just before the listener was paused reach their handler.

    That takes a few loop iterations (accept, transport, protocol, task). Yield iterations, not
    wall-clock time: after the process was descheduled, a timer can fire before that chain ran.
    """
    for _ in range(20):
        await asyncio.sleep(0)


def os_dup_inheritable(fd: int) -> int:
    """A duplicate of `fd` that survives exec."""
    new = os.dup(fd)
    os.set_inheritable(new, True)
    return new


def port_in_use(host: str, port: int) -> AgentRequestError:
    """The error for a public port another process holds, naming that process if visible."""
    owner = procinfo.find_port_owner(port)
    if owner is not None:
        who = f" by pid {owner[0]} ({owner[1][:120] or '?'})"
    else:
        who = " by another process (not visible to this user)"
    return AgentRequestError(
        "port_in_use",
        f"cannot listen on {host}:{port}: port already in use{who}",
        "stop that process, or change the component's port in shipyard.toml",
    )


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket on host:port (SO_REUSEADDR, so TIME_WAIT is no obstacle)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it a response written in two pieces waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Router:
    """Every route of the agent, by component."""

    def __init__(self, logger: Optional[logging.Logger] = None) -> None:
        self.log = logger or logging.getLogger("shipyard.agent")
        self.routes: Dict[str, Route] = {}
        # (component, release) -> is that release restarting after a crash?
        self.recovering: Callable[[str, str], bool] = lambda component, release: False
        # Told about every listening socket bound ("host:port", socket) and closed for good
        # ("host:port"): the keeper holds them so they outlive this process.
        self.on_listen: Callable[[str, socket.socket], None] = lambda key, sock: None
        self.on_close: Callable[[str], None] = lambda key: None
        # "host:port" -> when this process let it go: the keeper closes its copy on its own
        # time, so binding the port again right away may briefly find it still held.
        self.dropped: Dict[str, float] = {}
        # Where routes served by HAProxy keep their config, pid and admin socket.
        self.haproxy_dir = Path("haproxy")

    def new_route(
        self,
        component: str,
        host: str,
        public_port: int,
        mode: str,
        drain_timeout: float,
        crash_wait: float = DEFAULT_CRASH_WAIT,
        router: str = "builtin",
    ) -> Route:
        """A Route wired to this router's hooks (also used for link listeners)."""
        if router == "haproxy":
            from .haproxy import HaproxyRoute  # it builds on Route

            folder = self.haproxy_dir / component
            return HaproxyRoute(
                component, host, public_port, mode, drain_timeout, self.log, folder, crash_wait
            )
        hook = self.recovering
        return Route(
            component,
            host,
            public_port,
            mode,
            drain_timeout,
            self.log,
            crash_wait=crash_wait,
            recovering=lambda release: hook(component, release),
        )

    def get(self, component: str) -> Route:
        route = self.routes.get(component)
        if route is None:
            raise AgentRequestError(
                "unknown_route",
                f"component {component!r} is not routed",
                "route it first (op `route`)",
            )
        return route

    def routed_release(self, component: str) -> Optional[str]:
        route = self.routes.get(component)
        return route.current.release if route and route.current else None

    def is_draining(self, component: str, release: str) -> bool:
        route = self.routes.get(component)
        return route is not None and any(u.release == release for u in route.draining)

    async def wait_drained(self, component: str, release: str) -> None:
        route = self.routes.get(component)
        if route is None:
            return
        waits = [u.retired.wait() for u in route.draining if u.release == release]
        if waits:
            await asyncio.gather(*waits)

    def public_ports(self) -> Set[int]:
        return {r.public_port for r in self.routes.values()}

    def _check_port_free(self, component: str, host: str, port: int) -> None:
        for other in self.routes.values():
            if other.component != component and other.public_port == port:
                raise AgentRequestError(
                    "port_in_use",
                    f"public port {port} is already routed for component {other.component!r}",
                    "give each component its own port in shipyard.toml",
                )

    async def route(
        self,
        component: str,
        *,
        host: str,
        public_port: int,
        mode: str,
        drain_timeout: float,
        release: str,
        upstream_port: int,
        sock: Optional[socket.socket] = None,
        crash_wait: float = DEFAULT_CRASH_WAIT,
        router: str = "builtin",
    ) -> Optional[str]:
        """Route `component`'s public port to `release`; returns the previously routed release."""
        route = self.routes.get(component)
        if route is not None:
            was = (route.public_port, route.host, route.mode, route.router_kind)
            if was != (public_port, host, mode, router):
                raise AgentRequestError(
                    "route_conflict",
                    f"component {component!r} is routed on {route.host}:{route.public_port}"
                    f" ({route.mode}, {route.router_kind} router), not {host}:{public_port}"
                    f" ({mode}, {router} router)",
                    "unroute it first (shipyard down) to change its public port, host, mode"
                    " or router",
                )
            route.drain_timeout = drain_timeout
            route.crash_wait = crash_wait
            if not route.serving():
                await self.listen(route, sock)
            previous = await route.apply(release, upstream_port)
            if previous != release:
                self.log.info("%s: %s -> %s (port %d)", component, previous, release, public_port)
            return previous
        self._check_port_free(component, host, public_port)
        route = self.new_route(
            component, host, public_port, mode, drain_timeout, crash_wait, router
        )
        # Upstream first: the listener may accept (a backlog kept across a re-exec, say) and
        # serve a request before this coroutine resumes.
        route.switch(release, upstream_port)
        await self.listen(route, sock)
        self.routes[component] = route
        self.log.info("%s: listening on %s:%d -> %s", component, host, public_port, release)
        return None

    async def listen(self, route: Route, sock: Optional[socket.socket]) -> None:
        """Bind `route`'s port (or take `sock`, inherited) and serve it; the keeper gets a copy."""
        if route.router_kind != "builtin":
            await route.listen(sock)  # the other process binds the port (and keeps it)
            return
        if sock is None:
            try:
                sock = await self._bind(route)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise port_in_use(route.host, route.public_port) from exc
                raise AgentRequestError(
                    "listen_failed",
                    f"cannot listen on {route.host}:{route.public_port}: {exc.strerror}",
                    "check the host address and that ports below 1024 need privileges",
                ) from exc
        await route.listen(sock)
        self.on_listen(route.key, sock)

    async def _bind(self, route: Route) -> socket.socket:
        """Bind the route's port; a port this agent let go of a moment ago is tried again for
        up to DROP_SETTLE_S while the keeper closes its copy (bound, not refused)."""
        let_go = self.dropped.get(route.key)
        deadline = (let_go + DROP_SETTLE_S) if let_go is not None else 0.0
        while True:
            try:
                return bind_listener(route.host, route.public_port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.02)

    def _let_go(self, key: str) -> None:
        self.on_close(key)
        now = time.monotonic()
        self.dropped = {k: t for k, t in self.dropped.items() if now - t < DROP_SETTLE_S}
        self.dropped[key] = now

    def restore(self, route: Route) -> None:
        """Register a route whose listener could not be bound yet (retried by `retry_listen`)."""
        self.routes[route.component] = route

    async def retry_listen(self) -> bool:
        """Try again to bind routes restored from state whose port was busy; True if any did."""
        bound = False
        for route in self.routes.values():
            if not route.serving() and route.current is not None:
                try:
                    await self.listen(route, None)
                except AgentRequestError as exc:
                    route.error = exc.message
                    continue
                self.log.info(
                    "%s: listening on %s:%d again", route.component, route.host, route.public_port
                )
                bound = True
        return bound

    async def unroute(self, component: str, drain_timeout: Optional[float]) -> Route:
        route = self.get(component)
        del self.routes[component]
        await route.close(route.drain_timeout if drain_timeout is None else drain_timeout)
        self._let_go(route.key)
        self.log.info("%s: unrouted port %d", component, route.public_port)
        return route

    async def close_all(self, drain_timeout: float) -> None:
        routes = list(self.routes.values())
        self.routes.clear()
        await asyncio.gather(*(r.close(drain_timeout) for r in routes))
        for route in routes:
            self._let_go(route.key)

    def infos(self, component: Optional[str] = None) -> List[Dict[str, Any]]:
        return [
            r.info()
            for name, r in sorted(self.routes.items())
            if component is None or name == component
        ]

    async def quiesce(
        self, timeout: float, fresh_grace: float = 1.0, extra: Iterable[Route] = ()
    ) -> None:
        """Wait (bounded) until nothing is in flight: no request or tunnel holding an upstream,
        and no just-accepted connection still to send its first request (up to `fresh_grace`).
        `extra` are routes not registered here (link listeners).
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        routes = list(self.routes.values()) + list(extra)
        await _settle()
        while True:
            elapsed = loop.time() - start
            busy = any(
                upstream.leases
                for route in routes
                for upstream in ([route.current] if route.current else []) + route.draining
            )
            fresh = elapsed < fresh_grace and any(r.fresh for r in routes)
            if (not busy and not fresh) or elapsed >= timeout:
                return
            await asyncio.sleep(0.01)
