"""The router under many connections at once: a full listen backlog, and the open-file limit."""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_fixtures.agent_harness import AgentHarness, agent_root, free_port, start_app

pytest_plugins = ["tests.agent_fixtures.agent_plugin"]

# More than Python's default backlog (100) and fewer than the router's (1024).
BURST = 400


def _connect_all(port: int, count: int, wait: float) -> tuple[list[socket.socket], int]:
    """Start `count` non-blocking connects; returns the sockets and how many completed."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    pending = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    connected = 0
    while pending:
        events = poller.poll(wait * 1000)
        if not events:
            break
        for fd, _ in events:
            poller.unregister(fd)
            if pending.pop(fd).getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected += 1
    return socks, connected


def _read_response(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(20)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def _request_all(socks: list[socket.socket], path: str) -> list[bytes]:
    """Send one request on every socket (all in flight at once), then read every status line."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    for sock in socks:
        sock.setblocking(True)
        sock.sendall(request)
    return [_read_response(sock).split(b"\r\n", 1)[0] for sock in socks]


def test_a_burst_of_connections_waits_in_the_backlog_while_the_agent_is_busy(
    agent: AgentHarness,
) -> None:
    """While the worker cannot accept (stopped here; busy or re-executing in real life), 400
    new connections are all taken by the kernel, not left retrying SYNs, and all served after.
    """
    client = agent.client
    start_app(client, "web", "blue")
    public = free_port()
    client.route("web", public, "blue")
    worker = agent.pid
    os.kill(worker, signal.SIGSTOP)
    try:
        socks, connected = _connect_all(public, BURST, wait=3.0)
    finally:
        os.kill(worker, signal.SIGCONT)
    try:
        assert connected == BURST, f"only {connected} of {BURST} connections were taken"
        statuses = _request_all(socks, "/")
        assert statuses == [b"HTTP/1.1 200 OK"] * BURST
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def low_fd_agent(tmp_path: Path) -> Iterator[AgentHarness]:
    """An agent started with a soft open-file limit of 256 (hard limit unchanged), like the
    1,024 many systems give a service: it must raise the soft limit itself."""

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4 * BURST:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for this test")
    launcher = [
        sys.executable,
        "-c",
        "import resource, runpy, sys;"
        "h = resource.getrlimit(resource.RLIMIT_NOFILE)[1];"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, h));"
        "sys.argv[0] = 'shipyard-agent';"
        "runpy.run_module('shipyard.agent', run_name='__main__')",
    ]
    with agent_root(tmp_path / "root", launcher=launcher) as harness:
        harness.start()
        yield harness


def test_many_concurrent_requests_are_all_served_despite_a_low_open_file_limit(
    low_fd_agent: AgentHarness,
) -> None:
    """400 requests in flight at once need 800 descriptors in the router (client + release):
    an agent keeping a soft limit of 256 would answer most with 502 "too many open files"."""
    client = low_fd_agent.client
    start_app(client, "web", "blue")
    public = free_port()
    client.route("web", public, "blue")
    socks, connected = _connect_all(public, BURST, wait=10.0)
    try:
        assert connected == BURST
        statuses = _request_all(socks, "/")
        assert statuses == [b"HTTP/1.1 200 OK"] * BURST
    finally:
        for sock in socks:
            sock.close()
