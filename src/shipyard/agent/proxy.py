"""The router's connections: asyncio Protocols, so a proxied request costs no task switch.

A client's bytes arrive in `HttpClient.data_received`, are parsed there (`http1`), and the
request goes out on a pooled connection to the release in the same callback; the release's
bytes arrive in `UpstreamConn.data_received` and go out to the client in that callback. On the
usual path (a keep-alive request on a pooled upstream connection) a request is one callback
each way and no coroutine at all: a task only runs what must wait, opening a connection to
the release (and waiting for it while it restarts after a crash) or retrying a request.

Flow control is by the transports' write-buffer limits: when one side's output backs up, the
other side's reading pauses until it drains.

An upgraded connection (`Upgrade:` answered by 101) and a TCP-mode connection are a `Tunnel`:
bytes either way, half-closes passed on, ended when both sides are done or either one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING, List, Optional, Set, Union, cast

from .http1 import (
    CHUNKED,
    LENGTH,
    MAX_HEAD,
    NO_BODY,
    UNTIL_CLOSE,
    BadMessage,
    ChunkedReader,
    RequestHead,
    ResponseHead,
    chunk,
    field_lines,
    find_head_end,
    request_head_bytes,
    request_headers,
)

if TYPE_CHECKING:
    from .router import Route

__all__ = ["HttpClient", "Lease", "TcpClient", "Upstream", "UpstreamConn", "why"]

# Methods that may be sent twice (RFC 9110 §9.2.2): retried once on a dead pooled connection.
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# A request body is kept for a possible retry up to this size; larger ones are not retried.
_MAX_REPLAY = 1024 * 1024
_MAX_IDLE_PER_UPSTREAM = 64
# A side's output buffer above this pauses reading from the other side.
_HIGH_WATER = 256 * 1024
_CONNECT_TIMEOUT = 5.0
# A client keep-alive connection with no request for this long is closed.
_CLIENT_IDLE_TIMEOUT = 120.0
# How often a retried request tries again while its release restarts after a crash.
CRASH_POLL = 0.02

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large", 501: b"Not Implemented"}
_REASONS.update({502: b"Bad Gateway", 505: b"HTTP Version Not Supported"})


def why(exc: BaseException) -> str:
    """A short reason for a failed connection, for a 502 or a log line."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on an accepted connection, whatever asyncio decided (see bind_listener)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Lease:
    """One in-flight request or tunnel on an upstream; aborting it cuts its connections."""

    __slots__ = ("cut_reason", "released", "transports", "tunnel", "upstream")

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transports: List[asyncio.Transport] = []
        self.cut_reason: Optional[str] = None
        self.released = False
        self.tunnel: Optional[Tunnel] = None  # a TCP-mode connection's pipe, once connected

    def attach(self, transport: asyncio.Transport) -> None:
        self.transports.append(transport)

    def abort(self, reason: str) -> None:
        self.cut_reason = reason
        for transport in self.transports:
            transport.abort()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.upstream.release_lease(self)


class _Sink:
    """What an upstream connection's events go to: an HTTP exchange, or a tunnel."""

    def upstream_data(self, data: bytes) -> None:
        raise NotImplementedError

    def upstream_eof(self) -> bool:
        return False

    def upstream_lost(self, conn: UpstreamConn, exc: Optional[Exception]) -> None:
        raise NotImplementedError

    def upstream_backed_up(self, full: bool) -> None:
        """The connection to the release cannot take more for now (or can again)."""


class UpstreamConn(asyncio.Protocol):
    """A connection from the router to a release; its events go to its current sink."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.sink: Optional[_Sink] = None
        self.keep = False  # the last response ended cleanly and allows another request
        self.closed = False
        self.eof = False
        self.pooled = False  # it served a request: bytes with no request asked are garbage
        # What came before a sink was bound (a TCP release greets first): (data, eof, lost).
        self.early: List[bytes] = []
        self.lost: Optional[Exception] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def bind(self, sink: _Sink) -> None:
        """Send this connection's events to `sink`, first what arrived before it was bound."""
        self.sink = sink
        early, self.early = self.early, []
        for data in early:
            sink.upstream_data(data)
        half_open = self.eof and self.sink is sink and not self.closed
        if half_open and not sink.upstream_eof() and self.transport is not None:
            self.transport.close()
        if self.closed and self.sink is sink:
            sink.upstream_lost(self, self.lost)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_data(data)
        elif self.pooled:  # bytes on an idle pooled connection: it is of no use any more
            self.close()
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.sink is not None:
            return self.sink.upstream_eof()
        return not self.pooled  # a new connection waits for its sink to decide

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.lost = exc
        if self.sink is not None:
            self.sink.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_backed_up(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_backed_up(False)

    def reusable(self) -> bool:
        return (
            self.keep
            and not self.closed
            and not self.eof
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Upstream:
    """One release's private port as seen by one route: a pool of idle connections and leases."""

    def __init__(self, release: str, port: int, host: str = "127.0.0.1") -> None:
        self.release = release
        self.port = port
        self.host = host
        self.idle: List[UpstreamConn] = []
        self.leases: Set[Lease] = set()
        self.idle_event = asyncio.Event()
        self.idle_event.set()
        self.retired = asyncio.Event()  # set once it stopped draining (or was unrouted)
        self.pooling = True
        self.drain_task: Optional[asyncio.Task[None]] = None

    def lease(self) -> Lease:
        lease = Lease(self)
        self.leases.add(lease)
        self.idle_event.clear()
        return lease

    def release_lease(self, lease: Lease) -> None:
        self.leases.discard(lease)
        if not self.leases:
            self.idle_event.set()

    async def open(self) -> UpstreamConn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(UpstreamConn, self.host, self.port), _CONNECT_TIMEOUT
        )
        return conn

    def take_idle(self) -> Optional[UpstreamConn]:
        while self.idle:
            conn = self.idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        return None

    def give_back(self, conn: UpstreamConn) -> None:
        conn.sink = None
        if self.pooling and len(self.idle) < _MAX_IDLE_PER_UPSTREAM and conn.reusable():
            assert conn.transport is not None
            conn.transport.resume_reading()  # a paused connection would not see its EOF
            conn.pooled = True
            self.idle.append(conn)
        else:
            conn.close()

    def stop_pooling(self) -> None:
        self.pooling = False
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def abort_all(self, reason: str) -> None:
        for lease in list(self.leases):
            lease.abort(reason)


class Tunnel(_Sink):
    """Bytes both ways between a client and a release (TCP mode, or after an upgrade)."""

    def __init__(self, client: asyncio.Transport, conn: UpstreamConn, lease: Lease) -> None:
        assert conn.transport is not None
        self.client = client
        self.conn = conn
        self.upstream: asyncio.Transport = conn.transport
        self.lease = lease
        self.client_eof = False
        self.upstream_done = False
        self.ended = False
        # Who sent the last bytes, and when: what `at_rest` decides on.
        self.release_spoke_last = False
        self.last_bytes = time.monotonic()

    def at_rest(self, quiet: float) -> bool:
        """The client has what the release last sent, and neither side sent a byte since
        (for `quiet` seconds): closing now is what a server closing an idle connection does,
        which a TCP client must cope with anyway. A client whose bytes the release has not
        answered yet, or that has sent nothing at all, is not at rest.
        """
        return (
            self.release_spoke_last
            and time.monotonic() - self.last_bytes >= quiet
            and not self.client.get_write_buffer_size()
            and not self.upstream.get_write_buffer_size()
        )

    def client_data(self, data: bytes) -> None:
        self.release_spoke_last = False
        self.last_bytes = time.monotonic()
        self.upstream.write(data)

    def client_eof_received(self) -> bool:
        self.client_eof = True
        if self.upstream.can_write_eof() and not self.upstream.is_closing():
            self.upstream.write_eof()  # half-close: let the release finish its answer
        if self.upstream_done:
            self.end()
        return True

    def client_backed_up(self, full: bool) -> None:
        if full:
            self.upstream.pause_reading()
        else:
            self.upstream.resume_reading()

    def upstream_data(self, data: bytes) -> None:
        self.release_spoke_last = True
        self.last_bytes = time.monotonic()
        self.client.write(data)

    def upstream_eof(self) -> bool:
        self.upstream_done = True
        if self.client.can_write_eof() and not self.client.is_closing():
            self.client.write_eof()
        if self.client_eof:
            self.end()
        return True

    def upstream_lost(self, conn: UpstreamConn, exc: Optional[Exception]) -> None:
        self.end()

    def upstream_backed_up(self, full: bool) -> None:
        if full:
            self.client.pause_reading()
        else:
            self.client.resume_reading()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.conn.sink = None
        self.upstream.close()
        self.client.close()
        self.lease.release()


class _Client(asyncio.Protocol):
    """What both kinds of client connection share: registration with the route."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.transport: Optional[asyncio.Transport] = None
        self.tunnel: Optional[Tunnel] = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's too (see UpstreamConn)
        self.route.clients.add(self.transport)
        self.route.stats["connections"] += 1
        _no_delay(transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        if self.transport is not None:
            self.route.clients.discard(self.transport)
        if self.tunnel is not None:
            self.tunnel.end()


class TcpClient(_Client):
    """A TCP-mode connection: the upstream is chosen per connection, which holds its lease."""

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self.connecting: Optional[asyncio.Future[None]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        upstream = self.route.current
        if upstream is None:
            self.transport.close()
            return
        self.transport.pause_reading()  # until the release's side is there
        self.connecting = asyncio.ensure_future(self._connect(upstream))

    async def _connect(self, upstream: Upstream) -> None:
        assert self.transport is not None
        lease = upstream.lease()
        lease.attach(self.transport)
        try:
            conn = await self.route.connect(upstream)
        except (OSError, asyncio.TimeoutError) as exc:
            self.route.stats["upstream_errors"] += 1
            self.route.log.warning(
                "%s: tcp upstream %s:%d (%s): %s",
                self.route.component,
                upstream.host,
                upstream.port,
                upstream.release,
                why(exc),
            )
            lease.release()
            self.transport.close()
            return
        except BaseException:
            lease.release()
            raise
        assert conn.transport is not None
        lease.attach(conn.transport)
        self.tunnel = lease.tunnel = Tunnel(self.transport, conn, lease)
        if self.closed:
            self.tunnel.end()
        else:
            self.transport.resume_reading()
            conn.bind(self.tunnel)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.client_data(data)

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return self.tunnel.client_eof_received()
        return False

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client_backed_up(True)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client_backed_up(False)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)
        if self.tunnel is None and self.connecting is not None:
            self.connecting.cancel()


class HttpClient(_Client):
    """One client connection in HTTP mode: requests parsed here, one exchange at a time."""

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self.buf = b""
        self.exchange: Optional[_Exchange] = None
        self.ip = "unknown"
        self.first = True  # no request yet (the route counts it as fresh)
        self.eof = False
        self.paused = False  # reading paused by us (pipelined bytes pile up, body backed up)
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.idle_since: Optional[float] = loop.time()  # waiting for a request since
        self.timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.route.fresh.add(self.transport)
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.timer = self.loop.call_later(_CLIENT_IDLE_TIMEOUT, self._check_idle)

    def _check_idle(self) -> None:
        # Between requests only: an idle keep-alive connection is closed after a while. One
        # timer per connection, pushed back when it finds the connection busy or recently so.
        since = self.idle_since
        left = _CLIENT_IDLE_TIMEOUT
        if since is not None:
            left = since + _CLIENT_IDLE_TIMEOUT - self.loop.time()
        if left <= 0:
            assert self.transport is not None
            self.transport.abort()
        else:
            self.timer = self.loop.call_later(left, self._check_idle)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.route.fresh.discard(self.transport)
        if self.exchange is not None:
            self.exchange.client_gone()
            self.exchange = None

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client_backed_up(True)
        elif self.exchange is not None:
            self.exchange.client_backed_up(True)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client_backed_up(False)
        elif self.exchange is not None:
            self.exchange.client_backed_up(False)

    def pause(self, on: bool) -> None:
        if self.paused != on and self.transport is not None and not self.closed:
            self.paused = on
            if on:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        self.buf = self.buf + data if self.buf else data
        self.process()

    def eof_received(self) -> bool:
        self.eof = True
        if self.tunnel is not None:
            return self.tunnel.client_eof_received()
        exchange = self.exchange
        if exchange is None:
            return False  # between requests (a partial head is dropped)
        if not exchange.body_done:
            exchange.client_gone()  # the client went away mid-request
            self.exchange = None
            return False
        return True  # answer what was asked, then close

    def process(self) -> None:
        """Parse what the client sent: the current request's body, or the next request."""
        exchange = self.exchange
        if exchange is not None:
            if not exchange.body_done:
                exchange.feed_body()
            if exchange.body_done and len(self.buf) > MAX_HEAD:
                self.pause(True)  # pipelined requests pile up: wait for this response
            return
        buf = self.buf
        if not buf or self.closed:
            return
        if buf[:1] in (b"\r", b"\n"):
            buf = self.buf = buf.lstrip(b"\r\n")  # empty lines before a request are ignored
        found = find_head_end(buf)
        if found is None:
            if len(buf) > MAX_HEAD:
                self.reject(431, "bad request: request head too large")
            return
        self.idle_since = None
        if self.first:
            self.first = False
            assert self.transport is not None
            self.route.fresh.discard(self.transport)
        try:
            head = RequestHead(buf[: found[0]])
        except BadMessage as exc:
            self.reject(exc.status, f"bad request: {exc}")
            return
        self.buf = buf[found[1] :]
        route = self.route
        route.stats["requests"] += 1
        upstream = route.current  # chosen per request: this is where a switch takes effect
        if upstream is None:
            route.bad_gateway(self, None, "")
            self.finish(False)
            return
        self.exchange = _Exchange(self, head, upstream)
        self.exchange.start()

    def reject(self, status: int, text: str) -> None:
        self.send_error(status, text)
        self.finish(False)

    def send_error(self, status: int, text: str) -> None:
        """A short plain-text response from the router itself (502, 400, ...), then close."""
        if self.transport is None or self.closed:
            return
        body = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
        head = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n" % (
            status,
            _REASONS.get(status, b""),
        )
        self.transport.write(
            head + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )

    def finish(self, keep: bool) -> None:
        """The current response went out: next request, or close (after what is buffered)."""
        self.exchange = None
        if self.closed or self.transport is None:
            return
        if not keep or self.eof or self.route.closing:
            self.transport.close()
            return
        self.idle_since = self.loop.time()
        self.pause(False)
        if self.buf:
            self.process()

    def become_tunnel(self, tunnel: Tunnel, rest: bytes) -> None:
        self.exchange = None
        self.tunnel = tunnel
        self.pause(False)
        if rest:
            tunnel.client_data(rest)
        if self.closed:
            tunnel.end()
        elif self.eof:
            tunnel.client_eof_received()


class _Exchange(_Sink):
    """One request and its response, between a client connection and a release."""

    def __init__(self, client: HttpClient, head: RequestHead, upstream: Upstream) -> None:
        self.client = client
        self.route = client.route
        self.head = head
        self.upstream = upstream
        self.lease = upstream.lease()
        self.upgrade = head.upgrade
        fields = request_headers(head, client.ip, upgrade=self.upgrade)
        self.wire_head = request_head_bytes(head, fields)
        idempotent = head.method in _IDEMPOTENT and not self.upgrade
        self.replay: Optional[List[bytes]] = [] if idempotent else None
        self.replay_size = 0
        self.body_done = head.framing == NO_BODY
        self.body_left = head.length
        self.chunks: Optional[ChunkedReader] = ChunkedReader() if head.framing == CHUNKED else None
        self.conn: Optional[UpstreamConn] = None
        self.pending: List[bytes] = [self.wire_head]  # for the release, once connected
        self.pending_size = 0
        self.send_ok = True
        self.lost: Union[bool, Exception, None] = None  # the release's side died mid-request
        self.retries = 0
        self.crash_deadline: Optional[float] = None
        self.task: Optional[asyncio.Future[None]] = None
        self.finished = False
        # The response.
        self.rbuf = b""
        self.rhead: Optional[ResponseHead] = None
        self.held: Optional[bytes] = None
        self.started = False  # part of the response went to the client
        self.body_chunks: Optional[ChunkedReader] = None
        self.resp_left = 0
        self.chunk_out = False
        self.keep = False
        self.extra = False  # the release sent bytes past the end of its response

    # ------------------------------------------------------------ request

    def start(self) -> None:
        if self.head.expect_continue:
            # The body is read before the release is asked, so say "go on" ourselves.
            assert self.client.transport is not None
            self.client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn = None if self.upgrade else self.upstream.take_idle()
        if conn is not None:
            self.attach(conn)
        else:
            self.task = asyncio.ensure_future(self._connect())
        self.feed_body()

    def attach(self, conn: UpstreamConn) -> None:
        assert conn.transport is not None
        self.conn = conn
        conn.keep = False
        self.lease.attach(conn.transport)
        if self.pending:
            conn.transport.write(b"".join(self.pending))
            self.pending = []
            self.pending_size = 0
            self.client.pause(False)
        conn.bind(self)

    async def _connect(self) -> None:
        try:
            conn = await self.route.connect(self.upstream)
        except (OSError, asyncio.TimeoutError) as exc:
            self.task = None
            if not self.finished:
                self.bad_gateway(why(exc))
            return
        self.task = None
        if self.finished:
            conn.close()
            return
        self.attach(conn)

    def send(self, data: bytes) -> None:
        """Request bytes for the release (kept for a retry while the request is small)."""
        if self.replay is not None:
            self.replay.append(data)
            self.replay_size += len(data)
            if self.replay_size > _MAX_REPLAY:
                self.replay = None
        conn = self.conn
        if conn is None:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > _HIGH_WATER:
                self.client.pause(True)  # until the connection to the release is there
        elif self.send_ok:
            assert conn.transport is not None
            if conn.transport.is_closing():
                self.send_ok = False  # the release may still answer (a 413, say)
            else:
                conn.transport.write(data)

    def feed_body(self) -> None:
        client = self.client
        while not self.body_done and client.buf:
            data = client.buf
            if self.chunks is None:
                piece = data[: self.body_left]
                client.buf = data[len(piece) :]
                self.body_left -= len(piece)
                self.send(piece)
                self.body_done = not self.body_left
                continue
            try:
                pieces = self.chunks.feed(data)
                trailers = field_lines(self.chunks.trailers) if self.chunks.done else []
            except BadMessage as exc:
                self.client_gone()
                client.reject(400, f"bad request: {exc}")
                return
            client.buf = b""
            for piece in pieces:
                self.send(chunk(piece))
            if self.chunks.done:
                lines = [n + b": " + v + b"\r\n" for n, v in trailers]
                self.send(b"0\r\n" + b"".join(lines) + b"\r\n")
                client.buf = self.chunks.rest
                self.body_done = True
        if self.body_done:
            self._body_sent()

    def _body_sent(self) -> None:
        # The response is read once the whole request went (as a release may answer early).
        if self.rbuf and self.conn is not None:
            data, self.rbuf = self.rbuf, b""
            self.upstream_data(data)
        if self.lost is not None and not self.finished:
            lost, self.lost = self.lost, None
            self._lost(lost if isinstance(lost, Exception) else None)

    # ------------------------------------------------------------ response

    def upstream_data(self, data: bytes) -> None:
        if self.finished:
            return
        if not self.body_done:
            self.rbuf += data
            return
        try:
            self._response(data)
        except BadMessage as exc:
            started = self.started
            if self.rhead is None:
                self._failed(f"invalid response: {exc}", started, broken=False)
            else:
                self._failed(str(exc), started, broken=True)

    def _response(self, data: bytes) -> None:
        if self.rhead is None:
            buf = self.rbuf + data if self.rbuf else data
            while True:  # the head, after any 1xx interim responses (not asked for)
                found = find_head_end(buf)
                if found is None:
                    if len(buf) > MAX_HEAD:
                        raise BadMessage("head too large")
                    self.rbuf = buf
                    return
                head = ResponseHead(buf[: found[0]], self.head.method)
                if head.status >= 200:
                    break
                if head.status == 101:
                    if self.upgrade:
                        self._upgraded(buf[: found[1]], buf[found[1] :])
                        return
                    raise BadMessage("101 to a request without Upgrade")
                buf = buf[found[1] :]
            data = buf[found[1] :]
            self.rbuf = b""
            self._start_response(head)
            if head.framing == NO_BODY:
                self.extra = bool(data)
                self._write([])
                self._done()
                return
            if head.framing == LENGTH and not data:
                # Only the head so far: hold it until the body starts, so that a release dying
                # between its head and its body (a crash) costs a retry, not the response.
                return
        assert self.rhead is not None
        out: List[bytes] = []
        framing = self.rhead.framing
        if framing == LENGTH:
            piece = data[: self.resp_left]
            out.append(piece)
            self.resp_left -= len(piece)
            if not self.resp_left:
                self.extra = len(data) > len(piece)
                self._write(out)
                self._done()
                return
        elif framing == CHUNKED:
            reader = self.body_chunks
            assert reader is not None
            try:
                pieces = reader.feed(data)
            except BadMessage:
                self._write(out)
                raise
            if self.chunk_out:
                out += (chunk(p) for p in pieces if p)
            else:
                out += pieces
            if reader.done:
                if self.chunk_out:
                    out.append(b"0\r\n\r\n")
                self.extra = bool(reader.rest)
                self._write(out)
                self._done()
                return
        elif data:  # UNTIL_CLOSE
            out.append(chunk(data) if self.chunk_out else data)
        self._write(out)

    def _start_response(self, head: ResponseHead) -> None:
        self.rhead = head
        self.resp_left = head.length
        keep = self.head.keep_alive and not self.route.closing
        lines = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason)]
        framed_by_us = head.framing in (CHUNKED, UNTIL_CLOSE)
        if head.framing == CHUNKED:
            self.body_chunks = ChunkedReader()
        if framed_by_us:
            if self.head.version11:
                self.chunk_out = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                keep = False  # an HTTP/1.0 client reads the body until the connection closes
        for lname, line in head.lines:
            if not (framed_by_us and lname in (b"content-length", b"transfer-encoding")):
                lines += (line, b"\r\n")
        lines.append(b"\r\n" if keep else b"connection: close\r\n\r\n")
        self.keep = keep
        self.held = b"".join(lines)

    def _write(self, out: List[bytes]) -> None:
        if self.held is not None:
            out.insert(0, self.held)
            self.held = None
            self.started = True
        if out and self.client.transport is not None:
            self.client.transport.write(b"".join(out))

    def _done(self) -> None:
        """The whole response went to the client."""
        conn, self.conn = self.conn, None
        head = self.rhead
        assert conn is not None and head is not None
        conn.sink = None
        if head.keep_alive and not self.extra and self.send_ok and not self.upgrade:
            conn.keep = True
            self.upstream.give_back(conn)
        else:
            conn.close()
        self._end(self.keep)

    def _end(self, keep: bool) -> None:
        if self.finished:
            return
        self.finished = True
        self.lease.release()
        self.client.finish(keep)

    def upstream_lost(self, conn: UpstreamConn, exc: Optional[Exception]) -> None:
        if conn is not self.conn or self.finished:
            return
        if not self.body_done:
            self.send_ok = False  # read the rest of the request, then see (retry, or 502)
            self.lost = exc if exc is not None else True
            return
        self._lost(exc)

    def _lost(self, exc: Optional[Exception]) -> None:
        head = self.rhead
        if head is not None and head.framing == UNTIL_CLOSE:
            # The body ends when the release closes the connection.
            assert self.conn is not None
            self.conn.sink = None
            self.conn = None
            self._write([b"0\r\n\r\n"] if self.chunk_out else [])
            self._end(self.keep)
            return
        reason = why(exc) if exc is not None else "connection closed before a complete response"
        self._failed(reason, self.started, broken=True)

    def _failed(self, reason: str, started: bool, broken: bool) -> None:
        """The release's connection failed before the response ended."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.sink = None
            conn.close()
        if (
            self.replay is not None
            and not started
            and broken
            and self.lease.cut_reason is None  # cut on purpose (drain timeout): not again
            and self._may_retry()
        ):
            # The connection died before the client saw any byte of the response (a pooled
            # connection the release had closed, or the release itself died): send it once
            # more on a fresh connection, safe for an idempotent method. If the release
            # crashed, `connect` waits for its restart; a connection the dying process still
            # accepted is retried while it restarts.
            self.rhead = None
            self.held = None
            self.rbuf = b""
            self.body_chunks = None
            self.chunk_out = False
            self.pending = [self.wire_head, *self.replay]
            self.retries += 1
            self.route.stats["retries"] += 1
            self.task = asyncio.ensure_future(self._retry())
            return
        if started:
            self._end(False)  # part of the response is already out: only closing is honest
            return
        self.bad_gateway(self.lease.cut_reason or reason)

    def _may_retry(self) -> bool:
        """Once always; again only while the release is restarting after a crash (bounded)."""
        loop = asyncio.get_running_loop()
        if self.retries == 0:
            self.crash_deadline = loop.time() + self.route.crash_wait
            return True
        return (
            self.crash_deadline is not None
            and loop.time() < self.crash_deadline
            and self.route.recovering(self.upstream.release)
        )

    async def _retry(self) -> None:
        if self.retries > 1:
            await asyncio.sleep(CRASH_POLL)
        await self._connect()

    def bad_gateway(self, reason: str) -> None:
        self.route.bad_gateway(self.client, self.upstream, reason)
        self._end(False)

    def client_backed_up(self, full: bool) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None:
            if full:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    def upstream_backed_up(self, full: bool) -> None:
        self.client.pause(full)

    def client_gone(self) -> None:
        """The client connection closed (or sent garbage) mid-exchange: drop the release's side."""
        if self.finished:
            return
        self.finished = True
        if self.task is not None:
            self.task.cancel()
            self.task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.sink = None
            conn.close()
        self.lease.release()

    # ------------------------------------------------------------ upgrade

    def _upgraded(self, head: bytes, rest: bytes) -> None:
        """101: the client gets the release's answer as is, then both become a byte pipe."""
        conn, self.conn = self.conn, None
        client = self.client
        assert conn is not None and client.transport is not None
        self.finished = True
        client.transport.write(head + rest if rest else head)
        self.lease.attach(client.transport)
        tunnel = Tunnel(client.transport, conn, self.lease)
        conn.sink = tunnel
        leftover, client.buf = client.buf, b""
        client.become_tunnel(tunnel, leftover)
