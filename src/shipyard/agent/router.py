"""The router: one listener per public port, forwarding to the routed release's private port.

HTTP mode is an HTTP/1.1 reverse proxy. Clients' requests are parsed by h11 only (one strict
parser decides their framing: no request smuggling through the proxy); the request is written
to the release from h11's events, with Content-Length dropped when Transfer-Encoding is there.
The release's response (our own process, not a client) is read by a small strict parser here
instead of h11, which was most of the router's CPU per request: status line and header fields
are checked against the RFC 9110 grammar, and the body is framed by no-body status/HEAD,
Transfer-Encoding: chunked, Content-Length, or the end of the connection, in that order (RFC
9112 §6.3). It is re-framed for the client as h11 would: as is, or chunked for an HTTP/1.1
client when it had no length, or close-delimited for an HTTP/1.0 one.
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
import re
import socket
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Type, Union

import h11

from . import procinfo
from .errors import AgentRequestError

__all__ = ["DEFAULT_CRASH_WAIT", "LISTEN_BACKLOG", "Route", "Router", "Upstream", "bind_listener"]

# The public sockets' listen backlog (the kernel caps it at net.core.somaxconn). Python's
# default, 100, leaves a burst of new connections retrying SYNs after 1 s, 3 s, ...
LISTEN_BACKLOG = 1024

# A request for a release that is restarting after a crash waits this long for it by default.
DEFAULT_CRASH_WAIT = 10.0
# How often a waiting request tries to connect to a restarting release again.
_CRASH_POLL = 0.02

# Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded. Content-Length and Transfer-Encoding
# are forwarded: h11 re-frames the body from them on each side.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
# Methods that may be sent twice (RFC 9110 §9.2.2): retried once on a dead pooled connection.
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# A request body is kept for a possible retry up to this size; larger ones are not retried.
_MAX_REPLAY = 1024 * 1024
_READ = 65536
_MAX_IDLE_PER_UPSTREAM = 64
# A release that is down refuses connections (or resets them while its listener goes away).
_REFUSED = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED})
# Largest request head (h11) or response head (ours) accepted.
_MAX_HEAD = 64 * 1024
# Client writes are not awaited until this much is buffered for a slow client.
_HIGH_WATER = 256 * 1024
_CONNECT_TIMEOUT = 5.0
# A client keep-alive connection with no request for this long is closed.
_CLIENT_IDLE_TIMEOUT = 120.0

H11Event = Union[h11.Event, Type[h11.NEED_DATA], Type[h11.PAUSED]]


class _Lease:
    """One in-flight request or tunnel on an upstream; aborting it cuts its connections."""

    __slots__ = ("cut_reason", "upstream", "writers")

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.writers: List[asyncio.StreamWriter] = []
        self.cut_reason: Optional[str] = None

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

    def abort(self, reason: str) -> None:
        self.cut_reason = reason
        for writer in self.writers:
            writer.transport.abort()

    def release(self) -> None:
        self.upstream.release_lease(self)


class _UpstreamConn:
    """A connection from the router to a release.

    Requests are written by hand from events h11 already parsed and validated on the client
    side; responses are parsed by `_relay_response` (the release is ours, and its framing is
    read strictly: Content-Length, chunked, or close-delimited, never guessed).
    """

    __slots__ = ("keep", "out", "reader", "received", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.out: List[bytes] = []
        self.received = 0  # bytes received in the current request/response cycle
        self.keep = False  # the last response ended cleanly and allows another request

    def flush(self) -> None:
        if self.out:
            self.writer.write(b"".join(self.out))
            self.out.clear()

    def reusable(self) -> bool:
        return self.keep and not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.transport.abort()


class Upstream:
    """One release's private port as seen by one route: a pool of idle connections and leases."""

    def __init__(self, release: str, port: int, host: str = "127.0.0.1") -> None:
        self.release = release
        self.port = port
        self.host = host
        self.idle: List[_UpstreamConn] = []
        self.leases: Set[_Lease] = set()
        self.idle_event = asyncio.Event()
        self.idle_event.set()
        self.retired = asyncio.Event()  # set once it stopped draining (or was unrouted)
        self.pooling = True
        self.drain_task: Optional[asyncio.Task[None]] = None

    def lease(self) -> _Lease:
        lease = _Lease(self)
        self.leases.add(lease)
        self.idle_event.clear()
        return lease

    def release_lease(self, lease: _Lease) -> None:
        self.leases.discard(lease)
        if not self.leases:
            self.idle_event.set()

    async def open(self) -> _UpstreamConn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=_READ * 4), _CONNECT_TIMEOUT
        )
        return _UpstreamConn(reader, writer)

    def take_idle(self) -> Optional[_UpstreamConn]:
        while self.idle:
            conn = self.idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        return None

    def give_back(self, conn: _UpstreamConn) -> None:
        if self.pooling and len(self.idle) < _MAX_IDLE_PER_UPSTREAM and conn.reusable():
            conn.received = 0
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


class _Client:
    """The router's side of one client connection: reader, writer, h11 server state."""

    __slots__ = ("conn", "empty", "idle_since", "ip", "out", "reader", "responded", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.out: List[bytes] = []
        # Part of a response went out by hand (not through h11, which still thinks it is ours
        # to send): nothing else may be written for this request.
        self.responded = False
        self.empty = False  # h11 holds no received byte: no need to ask it before reading
        self.idle_since: Optional[float] = None  # waiting for a request since (loop time)
        peer = writer.get_extra_info("peername")
        self.ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    def renew(self) -> None:
        """After a response written by hand: a fresh h11 state for the next request.

        h11 saw the whole request (their side is DONE), and keeps the bytes received past it
        (a pipelined next request), which the new state starts from.
        """
        data, closed = self.conn.trailing_data
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.responded = False
        self.empty = not data and not closed
        if data:
            self.conn.receive_data(data)
        if closed:
            self.conn.receive_data(b"")

    def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.out.append(data)

    def flush(self) -> None:
        if self.out:
            self.writer.write(b"".join(self.out))
            self.out.clear()

    async def next_event(self, flush_first: Optional[_UpstreamConn] = None) -> H11Event:
        if self.empty:
            self.empty = False
            self.flush()
            self.conn.receive_data(await self.reader.read(_READ))
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            # Nothing parsed: before waiting, push out what we have for the other side.
            if flush_first is not None:
                flush_first.flush()
            self.flush()
            self.conn.receive_data(await self.reader.read(_READ))


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY on an accepted connection, whatever asyncio decided (see bind_listener)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _connection_tokens(headers: Iterable[Tuple[bytes, bytes]]) -> Set[bytes]:
    tokens: Set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def _request_headers(
    request: h11.Request,
    client_ip: str,
    listed: Optional[Set[bytes]] = None,
    *,
    upgrade: bool = False,
    raw: Optional[List[Tuple[bytes, bytes]]] = None,
) -> List[Tuple[bytes, bytes]]:
    """The request's headers as the release should see them.

    `listed` are the request's Connection tokens (found here when not given). h11 validated
    the headers (names lowercase, one Content-Length value, Transfer-Encoding only `chunked`);
    when Transfer-Encoding is present it wins and Content-Length is dropped (RFC 9112 §6.3),
    so the release cannot frame the body differently from h11.
    """
    if raw is None:
        raw = list(request.headers)
    if listed is None:
        listed = _connection_tokens(raw)
    out: List[Tuple[bytes, bytes]] = []
    forwarded_for: Optional[bytes] = None
    has_proto = False
    has_host = False
    chunked = False
    content_length = False
    for name, value in raw:
        if name in _HOP_BY_HOP or name in listed:
            if upgrade and name in (b"connection", b"upgrade"):
                out.append((name, value))
            continue
        if name == b"expect":  # the router answered 100-continue itself
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            continue
        if name == b"x-forwarded-proto":
            has_proto = True
        elif name == b"host":
            has_host = True
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            content_length = True
        out.append((name, value))
    ip = client_ip.encode()
    out.append((b"x-forwarded-for", ip if forwarded_for is None else forwarded_for + b", " + ip))
    if not has_proto:
        out.append((b"x-forwarded-proto", b"http"))
    if not has_host:
        out.append((b"host", b"localhost"))  # HTTP/1.1 requires Host (an HTTP/1.0 client may not)
    if chunked and content_length:
        out = [(n, v) for n, v in out if n != b"content-length"]
    return out


def _request_head(method: bytes, target: bytes, headers: List[Tuple[bytes, bytes]]) -> bytes:
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# Response framing from the release (RFC 9112 §6.3).
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*"
    rb"[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?\r")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class _BadResponse(Exception):
    pass


class _ResponseHead:
    """A release's response head, parsed strictly; `framing` says how its body ends.

    `lines` are the header lines to forward, `(lowercase name, line)`: hop-by-hop headers and
    those the release listed in Connection are left out.
    """

    __slots__ = ("framing", "keep_alive", "length", "lines", "reason", "status")

    def __init__(self, block: bytes, method: bytes) -> None:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")  # a lone CR is left to fail the patterns
        lines = block.split(b"\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise _BadResponse("bad status line")
        major, minor, status, reason = match.groups()
        self.status = int(status)
        self.reason = reason or b""
        headers: List[Tuple[bytes, bytes]] = []
        lengths: Set[bytes] = set()
        codings: List[bytes] = []
        tokens: Set[bytes] = set()
        for line in lines[1:]:
            header = _HEADER_LINE.fullmatch(line)
            if header is None:
                if line[:1] not in (b" ", b"\t") or not headers:
                    raise _BadResponse(f"bad header line {line[:80]!r}")
                # Obsolete line folding: the value goes on, after one space.
                previous = headers.pop()[1]
                line = previous.rstrip(b" \t") + b" " + line.strip(b" \t")
                header = _HEADER_LINE.fullmatch(line)
                if header is None:
                    raise _BadResponse(f"bad header line {line[:80]!r}")
            name, value = header.groups()
            lname = name.lower()
            if lname in _FRAMING_HEADERS:
                if lname == b"content-length":
                    lengths.update(v.strip() for v in value.split(b","))
                elif lname == b"transfer-encoding":
                    codings += (v.strip().lower() for v in value.split(b",") if v.strip())
                else:
                    tokens.update(v.strip().lower() for v in value.split(b","))
                    continue
            elif lname in _HOP_BY_HOP:
                continue
            headers.append((lname, line))
        self.length = 0
        if codings:
            if codings != [b"chunked"]:
                raise _BadResponse(f"unsupported transfer-encoding {b', '.join(codings)!r}")
            self.framing = _CHUNKED
        elif lengths:
            value = lengths.pop()
            if lengths or _DIGITS.fullmatch(value) is None:
                raise _BadResponse("bad content-length")
            self.framing = _LENGTH
            self.length = int(value)
        else:
            self.framing = _UNTIL_CLOSE
        no_body = method == b"HEAD" or self.status in (204, 304) or self.status < 200
        if no_body or (self.framing == _LENGTH and self.length == 0):
            self.framing = _NO_BODY
        self.keep_alive = (
            major == b"1"
            and minor != b"0"
            and b"close" not in tokens
            and self.framing != _UNTIL_CLOSE
        )
        if tokens:  # headers the release listed in Connection are hop-by-hop too
            headers = [h for h in headers if h[0] not in tokens]
        self.lines = headers


def _response_headers(
    response: Union[h11.Response, h11.InformationalResponse],
) -> List[Tuple[bytes, bytes]]:
    raw = list(response.headers)
    listed = _connection_tokens(raw)
    return [(n, v) for n, v in raw if n not in _HOP_BY_HOP and n not in listed]


class _UpstreamFailed(Exception):
    """The release's connection failed while we waited for (or copied) its response."""

    def __init__(self, why: str, started: bool, broken: bool = True) -> None:
        super().__init__(why)
        self.why = why
        self.started = started  # part of the response already went to the client
        self.broken = broken  # the connection died (not: the release answered garbage)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_READ)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()  # half-close: let the other side finish its answer
    except (ConnectionError, OSError):
        writer.transport.abort()


async def _tunnel(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer))


class Route:
    """One component's public port and where it currently sends traffic."""

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
        self.clients: Set[asyncio.StreamWriter] = set()
        # HTTP connections accepted whose first request has not arrived yet.
        self.fresh: Set[asyncio.StreamWriter] = set()
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

    async def listen(self, sock: socket.socket) -> None:
        self.sock = sock
        handler = self._serve_http if self.mode == "http" else self._serve_tcp
        # start_server calls listen() again on `sock`: without `backlog` it would shrink to 100.
        self.server = await asyncio.start_server(
            handler, sock=sock, limit=_READ * 4, backlog=LISTEN_BACKLOG
        )
        self.error = None

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

    async def _drain(self, upstream: Upstream) -> None:
        timeout = self.drain_timeout  # the budget of the switch that started this drain
        try:
            await asyncio.wait_for(upstream.idle_event.wait(), timeout)
        except asyncio.TimeoutError:
            self.log.warning(
                "%s: %d request(s) on %s still in flight after %gs: cut",
                self.component,
                len(upstream.leases),
                upstream.release,
                timeout,
            )
            upstream.abort_all(f"cut: still running {timeout:g}s after a switch")
        except asyncio.CancelledError:
            return  # switched back to it
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
        waits = [asyncio.ensure_future(u.idle_event.wait()) for u in upstreams]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=drain_timeout)
            for wait in pending:
                wait.cancel()
        self.current = None
        if self.server is not None:
            self.server.close()
        self.sock = None
        for upstream in upstreams:
            upstream.stop_pooling()
            upstream.abort_all("cut: the route was closed")
            upstream.retired.set()
        self.draining.clear()
        for writer in list(self.clients):
            writer.transport.abort()
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
            "release": self.current.release if self.current else None,
            "upstream_port": self.current.port if self.current else None,
            "draining": [u.release for u in self.draining],
            "drain_timeout": self.drain_timeout,
            "crash_wait": self.crash_wait,
            "listening": self.server is not None and self.error is None,
            "error": self.error,
            "stats": dict(self.stats),
        }

    async def connect(self, upstream: Upstream) -> _UpstreamConn:
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
            await asyncio.sleep(_CRASH_POLL)

    # ------------------------------------------------------------ HTTP

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        self.fresh.add(writer)
        self.stats["connections"] += 1
        _no_delay(writer)
        client = _Client(reader, writer)
        loop = asyncio.get_running_loop()

        # Between requests only: an idle keep-alive connection is closed after a while. One
        # timer per connection, pushed back when it finds the connection busy or recently so.
        def check_idle() -> None:
            since = client.idle_since
            left = _CLIENT_IDLE_TIMEOUT
            if since is not None:
                left = since + _CLIENT_IDLE_TIMEOUT - loop.time()
            if left <= 0:
                writer.transport.abort()
            else:
                timer[0] = loop.call_later(left, check_idle)

        timer = [loop.call_later(_CLIENT_IDLE_TIMEOUT, check_idle)]
        try:
            first = True
            while True:
                client.idle_since = loop.time()
                event = await client.next_event()
                client.idle_since = None
                if first:
                    self.fresh.discard(writer)
                    first = False
                if type(event) is not h11.Request:
                    break  # ConnectionClosed (or garbage h11 already refused)
                self.stats["requests"] += 1
                if not await self._proxy_request(client, event):
                    break
                if self.closing:  # handing over to a new agent: that was the last request
                    break
                if client.responded:  # the response went out by hand, keep-alive decided
                    client.renew()
                elif client.conn.our_state is h11.DONE and client.conn.their_state is h11.DONE:
                    client.conn.start_next_cycle()
                else:
                    break
        except h11.RemoteProtocolError as exc:
            self._send_error(client, exc.error_status_hint, f"bad request: {exc}")
        except (ConnectionError, OSError, h11.LocalProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            timer[0].cancel()
            self.clients.discard(writer)
            self.fresh.discard(writer)
            with contextlib.suppress(ConnectionError, OSError):
                client.flush()
            writer.close()

    def _send_error(self, client: _Client, status: int, text: str) -> None:
        """A short plain-text error from the router itself (502, 400, ...)."""
        if client.responded or client.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
        try:
            client.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                )
            )
            client.send(h11.Data(data=body))
            client.send(h11.EndOfMessage())
            client.flush()
        except (h11.LocalProtocolError, ConnectionError, OSError):
            pass

    def _bad_gateway(self, client: _Client, upstream: Optional[Upstream], why: str) -> None:
        self.stats["upstream_errors"] += 1
        if upstream is None:
            text = f"502 Bad Gateway: component {self.component!r} has no routed release"
        else:
            text = (
                f"502 Bad Gateway: release {upstream.release!r} of {self.component!r}"
                f" did not answer on {upstream.host}:{upstream.port} ({why})"
            )
        self.log.warning("%s", text)
        self._send_error(client, 502, text)

    async def _proxy_request(self, client: _Client, request: h11.Request) -> bool:
        """Forward one request and its response; False if the client connection must close."""
        upstream = self.current  # chosen per request: this is where a switch takes effect
        if upstream is None:
            self._bad_gateway(client, None, "")
            return False
        raw = list(request.headers)  # h11's Headers is a Sequence: iterating it is slow
        listed = _connection_tokens(raw)
        if b"upgrade" in listed and any(name == b"upgrade" for name, _ in raw):
            return await self._proxy_upgrade(client, request, upstream, listed)
        if client.conn.they_are_waiting_for_100_continue:
            # We read the whole body before asking the release, so say "go on" ourselves.
            client.send(h11.InformationalResponse(status_code=100, headers=[]))
        lease = upstream.lease()
        try:
            return await self._exchange(client, request, upstream, lease, listed, raw)
        finally:
            lease.release()

    async def _exchange(
        self,
        client: _Client,
        request: h11.Request,
        upstream: Upstream,
        lease: _Lease,
        listed: Set[bytes],
        raw: List[Tuple[bytes, bytes]],
    ) -> bool:
        headers = _request_headers(request, client.ip, listed, raw=raw)
        chunked = any(name == b"transfer-encoding" for name, _ in headers)
        method = request.method
        head = _request_head(method, request.target, headers)
        # h11 keeps an HTTP/1.1 client's connection open unless it said `Connection: close`,
        # and never an HTTP/1.0 client's: the response written by hand does the same.
        client_11 = request.http_version == b"1.1"
        client_keep = client_11 and b"close" not in listed
        replay: Optional[List[bytes]] = [] if method in _IDEMPOTENT else None
        replay_size = 0

        uconn = upstream.take_idle()
        if uconn is None:
            try:
                uconn = await self.connect(upstream)
            except (OSError, asyncio.TimeoutError) as exc:
                self._bad_gateway(client, upstream, _why(exc))
                return False
        lease.attach(uconn.writer)
        uconn.received = 0
        send_ok = True
        try:
            uconn.out.append(head)
            # Request body, streamed as it arrives (and kept for a retry while it is small).
            while True:
                event = await client.next_event(flush_first=uconn)
                if type(event) is h11.Data:
                    wire = _chunk(event.data) if chunked else event.data
                    if replay is not None:
                        replay.append(wire)
                        replay_size += len(wire)
                        if replay_size > _MAX_REPLAY:
                            replay = None
                    if send_ok:
                        uconn.out.append(wire)
                        if len(uconn.out) > 16:
                            uconn.flush()
                            try:
                                await uconn.writer.drain()
                            except (ConnectionError, OSError):
                                send_ok = False  # the release may still answer (e.g. 413)
                elif type(event) is h11.EndOfMessage:
                    if chunked:
                        trailers = [n + b": " + v + b"\r\n" for n, v in event.headers]
                        wire = b"0\r\n" + b"".join(trailers) + b"\r\n"
                        if replay is not None:
                            replay.append(wire)
                        if send_ok:
                            uconn.out.append(wire)
                    if send_ok:
                        uconn.flush()
                    break
                else:  # the client went away mid-request
                    uconn.close()
                    return False
        except (h11.LocalProtocolError, ConnectionError, OSError):
            uconn.close()
            raise

        retries = 0
        crash_deadline: Optional[float] = None
        while True:
            try:
                keep = await self._relay_response(client, uconn, method, client_11, client_keep)
            except _UpstreamFailed as failure:
                uconn.close()
                if (
                    replay is not None
                    and not failure.started
                    and failure.broken
                    and lease.cut_reason is None  # cut on purpose (drain timeout): not again
                    and self._may_retry(upstream, retries, crash_deadline)
                ):
                    # The connection died before the client saw any byte of the response (a
                    # pooled connection the release had closed, or the release itself died):
                    # send it once more on a fresh connection, safe for an idempotent method.
                    # If the release crashed, `connect` waits for its restart; a connection
                    # the dying process still accepted is retried while it restarts.
                    if retries:
                        await asyncio.sleep(_CRASH_POLL)
                    else:
                        crash_deadline = asyncio.get_running_loop().time() + self.crash_wait
                    retries += 1
                    self.stats["retries"] += 1
                    try:
                        uconn = await self.connect(upstream)
                    except (OSError, asyncio.TimeoutError) as exc:
                        self._bad_gateway(client, upstream, _why(exc))
                        return False
                    lease.attach(uconn.writer)
                    uconn.writer.write(b"".join([head, *replay]))
                    continue
                if failure.started:
                    return False  # part of the response is already out: only closing is honest
                self._bad_gateway(client, upstream, lease.cut_reason or failure.why)
                return False
            except BaseException:
                uconn.close()  # the client went away (or we are cancelled) mid-response
                raise
            if uconn.keep and send_ok:
                upstream.give_back(uconn)
            else:
                uconn.close()
            return keep

    def _may_retry(self, upstream: Upstream, retries: int, deadline: Optional[float]) -> bool:
        """Once always; again only while the release is restarting after a crash (bounded)."""
        if retries == 0:
            return True
        return (
            deadline is not None
            and asyncio.get_running_loop().time() < deadline
            and self.recovering(upstream.release)
        )

    async def _relay_response(
        self,
        client: _Client,
        uconn: _UpstreamConn,
        method: bytes,
        client_11: bool,
        client_keep: bool,
    ) -> bool:
        """Copy the release's response to the client; True if the client connection goes on.

        Raises _UpstreamFailed(why, started) when the release fails before the response ended.
        Sets `uconn.keep` when the release's connection can take another request.
        """
        reader = uconn.reader
        uconn.keep = False
        started = False
        buf = b""
        pos = 0

        async def more() -> bytes:
            if client.writer.transport.get_write_buffer_size() > _HIGH_WATER:
                await client.writer.drain()
            try:
                data = await reader.read(_READ)
            except (ConnectionError, OSError) as exc:
                raise _UpstreamFailed(_why(exc), started) from exc
            if not data:
                raise _UpstreamFailed("connection closed before a complete response", started)
            uconn.received += len(data)
            return data

        # The head, after any 1xx interim responses (the client did not ask for them).
        while True:
            end = _HEAD_END.search(buf, pos)
            while end is None:
                if len(buf) - pos > _MAX_HEAD:
                    raise _UpstreamFailed("invalid response: head too large", False, False)
                buf = buf[pos:] + await more()
                pos = 0
                end = _HEAD_END.search(buf)
            try:
                head = _ResponseHead(buf[pos : end.start()], method)
            except _BadResponse as exc:
                raise _UpstreamFailed(f"invalid response: {exc}", False, False) from exc
            pos = end.end()
            if head.status >= 200:
                break
            if head.status == 101:
                raise _UpstreamFailed(
                    "invalid response: 101 to a request without Upgrade", False, False
                )

        framing = head.framing
        keep = client_keep and not self.closing
        chunk_out = False  # re-frame the body as chunks for the client
        lines = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason)]
        drop: Tuple[bytes, ...] = ()
        if framing in (_CHUNKED, _UNTIL_CLOSE):
            drop = (b"content-length", b"transfer-encoding")
            if client_11:
                chunk_out = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                keep = False  # an HTTP/1.0 client reads the body until the connection closes
        for lname, line in head.lines:
            if lname not in drop:
                lines += (line, b"\r\n")
        lines.append(b"\r\n" if keep else b"connection: close\r\n\r\n")
        out: List[bytes] = client.out
        mark = len(out)
        out += lines
        client.responded = started = True
        write = client.writer.write
        extra = False  # the release sent bytes past the end of its response

        if framing == _LENGTH and pos == len(buf):
            # Only the head so far: hold it until the body starts, so that a release dying
            # between its head and its body (a crash) costs a retry, not the response.
            try:
                buf = await more()
            except _UpstreamFailed as failure:
                del out[mark:]
                client.responded = False
                raise _UpstreamFailed(failure.why, False) from None
            pos = 0

        if framing == _NO_BODY:
            extra = pos < len(buf)
        elif framing == _LENGTH:
            remaining = head.length
            while True:
                available = len(buf) - pos
                if available:
                    if available >= remaining:
                        out.append(buf[pos : pos + remaining])
                        extra = available > remaining
                        break
                    out.append(buf[pos:] if pos else buf)
                    remaining -= available
                write(b"".join(out))
                out.clear()
                buf = await more()
                pos = 0
        elif framing == _CHUNKED:
            while True:
                # chunk-size [; extensions] CRLF
                eol = buf.find(b"\n", pos)
                while eol < 0:
                    if len(buf) - pos > 4096:
                        raise _UpstreamFailed("invalid chunked body", True)
                    if out:
                        write(b"".join(out))
                        out.clear()
                    buf = buf[pos:] + await more()
                    pos = 0
                    eol = buf.find(b"\n")
                size_line = _CHUNK_SIZE.fullmatch(buf, pos, eol)
                if size_line is None:
                    raise _UpstreamFailed("invalid chunked body", True)
                size = int(size_line.group(1), 16)
                pos = eol + 1
                if size == 0:
                    break
                while size:
                    if pos >= len(buf):
                        if out:
                            write(b"".join(out))
                            out.clear()
                        buf = await more()
                        pos = 0
                    piece = buf[pos : pos + size]
                    pos += len(piece)
                    size -= len(piece)
                    out.append(_chunk(piece) if chunk_out else piece)
                while len(buf) - pos < 2:
                    if out:
                        write(b"".join(out))
                        out.clear()
                    buf = buf[pos:] + await more()
                    pos = 0
                if buf[pos : pos + 2] != b"\r\n":
                    raise _UpstreamFailed("invalid chunked body", True)
                pos += 2
            # Trailer fields (not forwarded), up to the empty line.
            while True:
                eol = buf.find(b"\n", pos)
                while eol < 0:
                    if len(buf) - pos > _MAX_HEAD:
                        raise _UpstreamFailed("invalid chunked body", True)
                    buf = buf[pos:] + await more()
                    pos = 0
                    eol = buf.find(b"\n")
                line = buf[pos:eol]
                pos = eol + 1
                if line in (b"", b"\r"):
                    break
            if chunk_out:
                out.append(b"0\r\n\r\n")
            extra = pos < len(buf)
        else:  # _UNTIL_CLOSE: the body ends when the release closes the connection
            if pos < len(buf):
                piece = buf[pos:]
                out.append(_chunk(piece) if chunk_out else piece)
            while True:
                write(b"".join(out))
                out.clear()
                if client.writer.transport.get_write_buffer_size() > _HIGH_WATER:
                    await client.writer.drain()
                try:
                    data = await reader.read(_READ)
                except (ConnectionError, OSError) as exc:
                    raise _UpstreamFailed(_why(exc), True) from exc
                if not data:
                    break
                out.append(_chunk(data) if chunk_out else data)
            if chunk_out:
                out.append(b"0\r\n\r\n")
        write(b"".join(out))
        out.clear()
        uconn.keep = head.keep_alive and not extra
        return keep

    async def _proxy_upgrade(
        self, client: _Client, request: h11.Request, upstream: Upstream, listed: Set[bytes]
    ) -> bool:
        """Forward an `Upgrade:` request; on 101 the connection becomes a byte pipe."""
        lease = upstream.lease()
        try:
            try:
                uconn = await self.connect(upstream)
            except (OSError, asyncio.TimeoutError) as exc:
                self._bad_gateway(client, upstream, _why(exc))
                return False
            lease.attach(uconn.writer)
            lease.attach(client.writer)
            # The rare path: h11 on the release's side too.
            hconn = h11.Connection(h11.CLIENT)

            def send(event: h11.Event) -> None:
                data = hconn.send(event)
                if data:
                    uconn.out.append(data)

            send(
                h11.Request(
                    method=request.method,
                    target=request.target,
                    headers=_request_headers(request, client.ip, listed, upgrade=True),
                )
            )
            while True:
                event = await client.next_event(flush_first=uconn)
                if type(event) is h11.Data:
                    send(event)
                elif type(event) is h11.EndOfMessage:
                    send(event)
                    uconn.flush()
                    break
                else:
                    uconn.close()
                    return False
            while True:
                event = hconn.next_event()
                if event is h11.NEED_DATA:
                    client.flush()
                    data = await uconn.reader.read(_READ)
                    hconn.receive_data(data)
                    continue
                if type(event) is h11.InformationalResponse and event.status_code == 101:
                    client.send(
                        h11.InformationalResponse(
                            status_code=101, headers=list(event.headers), reason=event.reason
                        )
                    )
                    client.flush()
                    # Bytes either side sent right after the handshake, already buffered by h11.
                    client_rest = client.conn.trailing_data[0]
                    upstream_rest = hconn.trailing_data[0]
                    if upstream_rest:
                        client.writer.write(upstream_rest)
                    if client_rest:
                        uconn.writer.write(client_rest)
                    await _tunnel(client.reader, client.writer, uconn.reader, uconn.writer)
                    uconn.close()
                    return False
                if type(event) is h11.InformationalResponse:
                    continue
                if type(event) is h11.Response:
                    # Upgrade declined: an ordinary response, then the connection goes on.
                    client.send(
                        h11.Response(
                            status_code=event.status_code,
                            headers=_response_headers(event),
                            reason=event.reason,
                        )
                    )
                    while True:
                        event = hconn.next_event()
                        if event is h11.NEED_DATA:
                            client.flush()
                            hconn.receive_data(await uconn.reader.read(_READ))
                        elif type(event) is h11.Data:
                            client.send(event)
                        elif type(event) is h11.EndOfMessage:
                            client.send(h11.EndOfMessage())
                            client.flush()
                            uconn.close()
                            return True
                        else:
                            uconn.close()
                            return False
                self._bad_gateway(client, upstream, "connection closed during upgrade")
                uconn.close()
                return False
        except (ConnectionError, OSError, h11.RemoteProtocolError):
            return False
        finally:
            lease.release()

    # ------------------------------------------------------------ TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        self.stats["connections"] += 1
        _no_delay(writer)
        upstream = self.current  # chosen per connection
        try:
            if upstream is None:
                return
            lease = upstream.lease()
            try:
                lease.attach(writer)
                try:
                    uconn = await self.connect(upstream)
                except (OSError, asyncio.TimeoutError) as exc:
                    self.stats["upstream_errors"] += 1
                    self.log.warning(
                        "%s: tcp upstream %s:%d (%s): %s",
                        self.component,
                        upstream.host,
                        upstream.port,
                        upstream.release,
                        _why(exc),
                    )
                    return
                lease.attach(uconn.writer)
                try:
                    await _tunnel(reader, writer, uconn.reader, uconn.writer)
                finally:
                    uconn.writer.close()
            finally:
                lease.release()
        finally:
            self.clients.discard(writer)
            writer.close()


async def _settle() -> None:
    """Let connections accepted just before the listener was paused reach their handler.

    That takes a few loop iterations (accept, transport, protocol, task). Yield iterations, not
    wall-clock time: after the process was descheduled, a timer can fire before that chain ran.
    """
    for _ in range(20):
        await asyncio.sleep(0)


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def os_dup_inheritable(fd: int) -> int:
    """A duplicate of `fd` that survives exec."""
    new = os.dup(fd)
    os.set_inheritable(new, True)
    return new


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

    def new_route(
        self,
        component: str,
        host: str,
        public_port: int,
        mode: str,
        drain_timeout: float,
        crash_wait: float = DEFAULT_CRASH_WAIT,
    ) -> Route:
        """A Route wired to this router's hooks (also used for link listeners)."""
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

    def _port_in_use(self, host: str, port: int, exc: OSError) -> AgentRequestError:
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
    ) -> Optional[str]:
        """Route `component`'s public port to `release`; returns the previously routed release."""
        route = self.routes.get(component)
        if route is not None:
            if (route.public_port, route.host, route.mode) != (public_port, host, mode):
                raise AgentRequestError(
                    "route_conflict",
                    f"component {component!r} is routed on {route.host}:{route.public_port}"
                    f" ({route.mode}), not {host}:{public_port} ({mode})",
                    "unroute it first to change its public port, host or mode",
                )
            route.drain_timeout = drain_timeout
            route.crash_wait = crash_wait
            if route.server is None:
                await self.listen(route, sock)
            previous = route.switch(release, upstream_port)
            if previous != release:
                self.log.info("%s: %s -> %s (port %d)", component, previous, release, public_port)
            return previous
        self._check_port_free(component, host, public_port)
        route = self.new_route(component, host, public_port, mode, drain_timeout, crash_wait)
        # Upstream first: the listener may accept (a backlog kept across a re-exec, say) and
        # serve a request before this coroutine resumes.
        route.switch(release, upstream_port)
        await self.listen(route, sock)
        self.routes[component] = route
        self.log.info("%s: listening on %s:%d -> %s", component, host, public_port, release)
        return None

    async def listen(self, route: Route, sock: Optional[socket.socket]) -> None:
        """Bind `route`'s port (or take `sock`, inherited) and serve it; the keeper gets a copy."""
        if sock is None:
            try:
                sock = bind_listener(route.host, route.public_port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise self._port_in_use(route.host, route.public_port, exc) from exc
                raise AgentRequestError(
                    "listen_failed",
                    f"cannot listen on {route.host}:{route.public_port}: {exc.strerror}",
                    "check the host address and that ports below 1024 need privileges",
                ) from exc
        await route.listen(sock)
        self.on_listen(route.key, sock)

    def restore(self, route: Route) -> None:
        """Register a route whose listener could not be bound yet (retried by `retry_listen`)."""
        self.routes[route.component] = route

    async def retry_listen(self) -> bool:
        """Try again to bind routes restored from state whose port was busy; True if any did."""
        bound = False
        for route in self.routes.values():
            if route.server is None and route.current is not None:
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
        self.on_close(route.key)
        self.log.info("%s: unrouted port %d", component, route.public_port)
        return route

    async def close_all(self, drain_timeout: float) -> None:
        routes = list(self.routes.values())
        self.routes.clear()
        await asyncio.gather(*(r.close(drain_timeout) for r in routes))
        for route in routes:
            self.on_close(route.key)

    def infos(self, component: Optional[str] = None) -> List[Dict[str, Any]]:
        return [
            r.info()
            for name, r in sorted(self.routes.items())
            if component is None or name == component
        ]

    def to_state(self) -> List[Dict[str, Any]]:
        return [
            {
                "component": r.component,
                "public_port": r.public_port,
                "host": r.host,
                "mode": r.mode,
                "drain_timeout": r.drain_timeout,
                "crash_wait": r.crash_wait,
                "release": r.current.release if r.current else None,
            }
            for r in self.routes.values()
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
