"""The agent's router on real loopback sockets: zero-downtime switching, draining, TCP, Upgrade."""

from __future__ import annotations

import http.client
import itertools
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.agent_fixtures.agent_harness import (
    ROUTERS,
    AgentHarness,
    free_port,
    http_get,
    start_app,
    try_get,
    wait_for,
)

pytest_plugins = ["tests.agent_fixtures.agent_plugin"]


def _route_info(agent: AgentHarness, component: str) -> dict[str, object]:
    routes = agent.client.list_releases(component)["routes"]
    assert len(routes) == 1
    return dict(routes[0])


@pytest.mark.parametrize("router", ROUTERS)
def test_zero_failed_requests_while_switching_under_load(agent: AgentHarness, router: str) -> None:
    client = agent.client
    start_app(client, "web", "blue")
    start_app(client, "web", "green")
    public = free_port()
    client.route("web", public, "blue", router=router)

    # (called, returned, release): from `returned` on, new requests must reach `release`.
    switches: list[tuple[float, float, str]] = [(0.0, time.monotonic(), "blue")]
    results: list[tuple[float, float, int | None, str]] = []
    stop = threading.Event()

    def worker(keep_alive: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", public, timeout=10)
        while not stop.is_set():
            if not keep_alive:
                conn = http.client.HTTPConnection("127.0.0.1", public, timeout=10)
            t0 = time.monotonic()
            try:
                conn.request("GET", "/", headers={} if keep_alive else {"Connection": "close"})
                response = conn.getresponse()
                body = response.read().decode()
                results.append((t0, time.monotonic(), response.status, body))
            except (OSError, http.client.HTTPException) as exc:
                results.append((t0, time.monotonic(), None, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", public, timeout=10)
            if not keep_alive:
                conn.close()
        conn.close()

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        for i in range(10):
            target = "green" if i % 2 == 0 else "blue"
            called = time.monotonic()
            result = client.route("web", public, target, router=router)
            switches.append((called, time.monotonic(), target))
            assert result["previous_release"] == ("blue" if target == "green" else "green")
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)

    failed = [r for r in results if r[2] != 200]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert len(results) > 200
    assert {r[3] for r in results} == {"blue", "green"}
    # A request sent after a switch returned (and done before the next one began) must have
    # reached the newly routed release: the switch applies to the very next request, even on
    # a keep-alive connection.
    checked = 0
    for t0, t1, _, body in results:
        for (_, returned, release), (next_called, _, _) in itertools.pairwise(switches):
            if returned <= t0 and t1 <= next_called:
                assert body == release, (t0, t1, body, release)
                checked += 1
    assert checked > len(results) // 2
    stats = _route_info(agent, "web")["stats"]
    assert isinstance(stats, dict) and stats["upstream_errors"] == 0


@pytest.mark.parametrize("router", ROUTERS)
def test_inflight_request_drains_on_the_old_release(agent: AgentHarness, router: str) -> None:
    client = agent.client
    start_app(client, "web", "blue")
    start_app(client, "web", "green")
    public = free_port()
    client.route("web", public, "blue", router=router)
    slow: list[tuple[int, str]] = []
    thread = threading.Thread(target=lambda: slow.append(http_get(public, "/slow?ms=1000")))
    thread.start()
    time.sleep(0.3)
    assert client.route("web", public, "green", router=router)["previous_release"] == "blue"
    assert _route_info(agent, "web")["draining"] == ["blue"]
    assert http_get(public) == (200, "green")
    # Stopping the old release waits for its drain; the slow request completes on it.
    stopped = client.stop_release("web", "blue")
    assert stopped["state"] == "stopped"
    thread.join(5)
    assert slow == [(200, "blue")]
    assert _route_info(agent, "web")["draining"] == []


def test_drain_timeout_cuts_what_is_still_in_flight(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "blue")
    start_app(client, "web", "green")
    public = free_port()
    client.route("web", public, "blue")
    outcome: list[object] = []

    def slow_request() -> None:
        try:
            outcome.append(http_get(public, "/slow?ms=3000"))
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    client.route("web", public, "green", drain_timeout=0.3)  # this switch's drain budget
    thread.join(5)
    assert time.monotonic() - started < 2.0
    # Cut, and told so (a 502 naming the reason) since no byte of the answer had gone out yet.
    assert len(outcome) == 1 and isinstance(outcome[0], tuple)
    status, body = outcome[0]
    assert status == 502 and "cut: still running 0.3s after a switch" in body
    wait_for(lambda: _route_info(agent, "web")["draining"] == [])


def test_idempotent_request_retried_once_on_dead_pooled_connection(agent: AgentHarness) -> None:
    client = agent.client
    # This release closes every keep-alive connection 100 ms after answering, without notice.
    start_app(client, "web", "flaky", "--close-after-response", "100")
    public = free_port()
    client.route("web", public, "flaky")
    conn = http.client.HTTPConnection("127.0.0.1", public, timeout=5)
    for _ in range(5):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"flaky")
    stats = _route_info(agent, "web")["stats"]
    assert isinstance(stats, dict) and stats["retries"] >= 3
    # POST is not idempotent: the same failure is a 502, never a second POST.
    conn.request("POST", "/echo", body=b"once")
    response = conn.getresponse()
    assert response.status == 502
    assert b"flaky" in response.read()
    conn.close()


def test_forwarded_headers_hop_by_hop_and_502(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    conn = http.client.HTTPConnection("127.0.0.1", public, timeout=5)
    conn.request(
        "GET",
        "/headers",
        headers={"X-Forwarded-For": "10.0.0.1", "Connection": "X-Private", "X-Private": "1"},
    )
    seen = {k.lower(): v for k, v in json.loads(conn.getresponse().read()).items()}
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["host"] == f"127.0.0.1:{public}"
    assert "x-private" not in seen and "connection" not in seen
    # Bodies both ways, chunked request body included; HEAD has no body.
    conn.request("POST", "/echo", body=iter([b"hello ", b"world"]), encode_chunked=True)
    response = conn.getresponse()
    assert response.read() == b"hello world"
    conn.request("HEAD", "/")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()
    # HTTP/1.0 client: answered, then closed.
    with socket.create_connection(("127.0.0.1", public), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"r1")

    client.stop_release("web", "r1", force=True)
    status, body = http_get(public)
    assert status == 502 and "r1" in body and "did not answer" in body


@pytest.mark.parametrize("router", ROUTERS)
def test_tcp_mode_pass_through(agent: AgentHarness, router: str) -> None:
    client = agent.client
    for name in ("e1", "e2"):
        info = start_app(client, "echo", name, "--tcp-echo", wait_healthy=False)
        wait_for(lambda p=info["port"]: client.probe(kind="tcp", port=p, timeout=1)["ok"], 10)
    public = free_port()
    client.route("echo", public, "e1", mode="tcp", drain_timeout=10, router=router)

    def connect() -> tuple[socket.socket, bytes]:
        sock = socket.create_connection(("127.0.0.1", public), timeout=5)
        return sock, sock.recv(64)

    first, greeting = connect()
    assert greeting == b"e1\n"
    first.sendall(b"ping")
    assert first.recv(64) == b"ping"
    client.route("echo", public, "e2", mode="tcp", router=router)
    second, greeting = connect()
    assert greeting == b"e2\n"
    if router == "builtin":
        # The connection opened before the switch is at rest (e1 answered last): the router
        # closes it (tests/integration/test_router_tcp_drain_router.py), so e1 drains.
        first.settimeout(30)
        assert first.recv(64) == b""
    else:
        # HAProxy knows no rest in TCP mode: the connection stays on e1 until it closes.
        first.sendall(b"still there")
        assert first.recv(64) == b"still there"
        assert _route_info(agent, "echo")["draining"] == ["e1"]
    first.close()
    wait_for(lambda: _route_info(agent, "echo")["draining"] == [])
    second.close()


@pytest.mark.parametrize("router", ROUTERS)
def test_upgrade_switches_the_connection_to_a_pipe(agent: AgentHarness, router: str) -> None:
    client = agent.client
    start_app(client, "web", "r1")
    start_app(client, "web", "r2")
    public = free_port()
    client.route("web", public, "r1", router=router)
    with socket.create_connection(("127.0.0.1", public), timeout=5) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"frame-1")
        assert sock.recv(64) == b"frame-1"
        # An upgraded connection is not moved mid-stream.
        client.route("web", public, "r2", router=router)
        sock.sendall(b"frame-2")
        assert sock.recv(64) == b"frame-2"
        assert _route_info(agent, "web")["draining"] == ["r1"]
    wait_for(lambda: _route_info(agent, "web")["draining"] == [])
    assert http_get(public) == (200, "r2")


def test_http10_upstream_like_python_http_server(agent: AgentHarness, tmp_path: Path) -> None:
    # `python -m http.server` answers HTTP/1.0 and closes: still proxied, client kept alive.
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("static marketing site")
    client = agent.client
    info = client.start_release(
        "marketing",
        "m1",
        site,
        command=f"exec {sys.executable} -m http.server $PORT --bind 127.0.0.1",
    )
    wait_for(lambda: client.probe(kind="http", port=info["port"])["ok"], 10)
    public = free_port()
    client.route("marketing", public, "m1")
    conn = http.client.HTTPConnection("127.0.0.1", public, timeout=5)
    for _ in range(3):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and response.version == 11
        assert response.read() == b"static marketing site"
    conn.close()


# A release that frames its responses every way HTTP/1.1 allows (the router parses them itself).
FRAMING_APP = r"""
import os, socket, threading
BIG = bytes(range(256)) * 12288  # 3 MiB

def answer(method, path, head, body):
    if path == "/request":  # what the release received, head and body
        request = head + b"\r\n\r\n" + body
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(request) + request, False
    if path == "/lf":  # bare LF line ends and an obsolete folded header line
        return b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Folded: a\n  b\n\nok", False
    if path == "/chunked":
        body = b"6\r\nhello \r\n8;ext=1\r\nchunked \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, False
    if path == "/big-chunked":
        parts = [b"%x\r\n%s\r\n" % (65536, BIG[i:i + 65536]) for i in range(0, len(BIG), 65536)]
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        return head + b"".join(parts) + b"0\r\n\r\n", False
    if path == "/big":
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG)
        return head + (b"" if method == "HEAD" else BIG), False
    if path == "/close":
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", True
    if path == "/close10":
        return b"HTTP/1.0 200 OK\r\n\r\nhttp/1.0 body", True
    if path == "/204":
        return b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n", False
    if path == "/304":
        return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"e\"\r\n\r\n", False
    if path == "/continue":
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        return hints + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False
    if path == "/bad":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", True
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-private\r\nX-Private: 1\r\n"
    return head + b"\r\nplain", False

def serve(conn):
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            method, path = head.split(b" ")[:2]
            body = b""
            if b"transfer-encoding: chunked" in head.lower():  # enough for the tests' bodies
                while b"0\r\n\r\n" not in buf:
                    buf += conn.recv(65536)
                body, buf = buf.split(b"0\r\n\r\n", 1)
                body += b"0\r\n\r\n"
            response, close = answer(method.decode(), path.decode(), head, body)
            conn.sendall(response)
            if close:
                return

listener = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def test_response_framing_from_the_release(agent: AgentHarness, tmp_path: Path) -> None:
    client = agent.client
    info = client.start_release("framing", "f1", tmp_path, argv=[sys.executable, "-c", FRAMING_APP])
    wait_for(lambda: client.probe(kind="tcp", port=info["port"], timeout=1)["ok"], 10)
    public = free_port()
    client.route("framing", public, "f1")
    big = bytes(range(256)) * 12288

    conn = http.client.HTTPConnection("127.0.0.1", public, timeout=10)

    def get(path: str, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
        conn.request(method, path)
        response = conn.getresponse()
        return response, response.read()

    sock_before = None
    for path, status, body in [
        ("/", 200, b"plain"),
        ("/chunked", 200, b"hello chunked world"),
        ("/big", 200, big),
        ("/big-chunked", 200, big),
        ("/204", 204, b""),
        ("/304", 304, b""),
        ("/continue", 200, b"ok"),
        ("/lf", 200, b"ok"),
        ("/close", 200, b"until close"),  # re-framed as chunked: the client stays connected
        ("/close10", 200, b"http/1.0 body"),
        ("/", 200, b"plain"),
    ]:
        response, data = get(path)
        assert (response.status, data) == (status, body), path
        assert not response.will_close, path  # keep-alive with the client holds every time
        if sock_before is not None:
            assert conn.sock is sock_before, path
        sock_before = conn.sock
    response, data = get("/", "HEAD")
    assert response.status == 200 and data == b""
    response, data = get("/big", "HEAD")
    assert response.getheader("content-length") == str(len(big)) and data == b""
    response, data = get("/")
    assert response.getheader("x-private") is None and response.getheader("connection") is None
    response, data = get("/chunked")
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.getheader("x-trailer") is None and data == b"hello chunked world"
    response, data = get("/204")
    assert response.getheader("x-kind") == "none" and response.getheader("content-length") is None
    response, data = get("/lf")
    assert response.getheader("x-folded") == "a b" and data == b"ok"
    # An invalid response is a 502 that says why, and not reused.
    response, data = get("/bad")
    assert response.status == 502 and b"invalid response" in data
    conn.close()

    # An HTTP/1.0 client gets the chunked body de-chunked, then the connection closes.
    for path, body in [("/chunked", b"hello chunked world"), ("/close", b"until close")]:
        with socket.create_connection(("127.0.0.1", public), timeout=5) as raw:
            raw.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := raw.recv(65536):
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
        assert rest == body

    # Content-Length next to Transfer-Encoding: chunked wins nothing (RFC 9112 §6.3): the
    # release sees the chunked body and no Content-Length, so it cannot frame it differently.
    with socket.create_connection(("127.0.0.1", public), timeout=5) as raw:
        raw.sendall(
            b"POST /request HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    seen = data.partition(b"\r\n\r\n")[2].lower()
    assert b"transfer-encoding: chunked" in seen and b"content-length" not in seen
    assert seen.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    # Pipelined requests on one connection are answered in order.
    with socket.create_connection(("127.0.0.1", public), timeout=5) as raw:
        raw.sendall(
            b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n"
        )
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"plain")
    assert b"hello " in data and data.index(b"hello ") < data.index(b"plain")
    stats = _route_info(agent, "framing")["stats"]
    assert isinstance(stats, dict) and stats["upstream_errors"] == 1  # the /bad one


def test_requests_with_ambiguous_framing_are_refused_by_the_router(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    for request, status in [
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\nab\r\n0\r\n\r\n",  # a chunk-size line ending in a bare LF
            400,
        ),
    ]:
        with socket.create_connection(("127.0.0.1", public), timeout=5) as raw:
            raw.sendall(request)
            data = b""
            while chunk := raw.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 %d " % status), (request, data)
        assert b"bad request" in data
    # The connection after them is served as usual.
    assert http_get(public) == (200, "r1")


@pytest.mark.parametrize("router", ROUTERS)
def test_the_environment_router_reaches_the_agent(agent: AgentHarness, router: str) -> None:
    from shipyard.targets.local import LocalTarget

    start_app(agent.client, "web", "blue")
    public = free_port()
    target = LocalTarget(agent.root, router=router)  # what `router = "..."` in shipyard.toml sets
    target.route("web", public, "blue", http=True, drain_timeout=5.0)
    assert _route_info(agent, "web")["router"] == router
    assert http_get(public) == (200, "blue")
    target.unroute("web")
    assert agent.client.list_releases("web")["routes"] == []
    assert try_get(public, timeout=1.0) is None  # the public port is closed


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_a_killed_haproxy_is_started_again_with_the_routed_release(agent: AgentHarness) -> None:
    import os
    import signal

    client = agent.client
    start_app(client, "web", "blue")
    start_app(client, "web", "green")
    public = free_port()
    client.route("web", public, "blue", router="haproxy")
    client.route("web", public, "green", router="haproxy")
    pid = int(_route_info(agent, "web")["pid"])
    os.killpg(pid, signal.SIGKILL)  # master and worker
    # The agent's watch loop notices and starts it again from its config: the routed release.
    # (First the new pid: a request sent while the killed one is still exiting proves nothing.)
    wait_for(lambda: _route_info(agent, "web")["pid"] not in (pid, None), 10.0)
    wait_for(lambda: try_get(public, timeout=1.0) == (200, "green"), 10.0)
    info = _route_info(agent, "web")
    assert info["pid"] != pid and info["listening"] is True and info["release"] == "green"
    assert client.route("web", public, "blue", router="haproxy")["previous_release"] == "green"
    assert http_get(public) == (200, "blue")
