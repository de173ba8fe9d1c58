"""TCP-mode drains end when their connections come to rest, not at drain_timeout.

The builtin router runs in this process on real loopback sockets; each release is a small
asyncio TCP server of the test's, so the test decides when a release answers (and so forces
the interleaving: an exchange is still under way when the switch or the `down` happens).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shipyard.agent import router as router_module
from shipyard.agent.router import Router
from tests.conftest import free_ports

# A drain_timeout no test waits for: a drain that ends, ends because its connections did.
NEVER = 3600.0
# Bounds a hang only (a failing test would otherwise wait NEVER).
GUARD = 60.0
# Long enough that the router has looked at a connection at rest several times.
SEVERAL_CHECKS = router_module.TCP_REST_S * 3


class Release:
    """A TCP release: greets with its name, answers each line once `answer` is set."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.answer = asyncio.Event()
        self.answer.set()
        self.got_line = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.name + b"\n")
        try:
            while line := await reader.readline():
                self.got_line.set()
                await self.answer.wait()
                writer.write(self.name + b": " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def _with_route(body: Callable[[Router, int, Release, Release], Awaitable[None]]) -> None:
    blue, green = Release("blue"), Release("green")
    await blue.start()
    await green.start()
    (public,) = free_ports(1)
    router = Router(logging.getLogger("test.router"))
    await router.route(
        "db",
        host="127.0.0.1",
        public_port=public,
        mode="tcp",
        drain_timeout=NEVER,
        release="blue",
        upstream_port=blue.port,
    )
    try:
        await body(router, public, blue, green)
    finally:
        await router.close_all(0.0)
        blue.close()
        green.close()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, await reader.readline()


async def _drained(router: Router) -> None:
    await asyncio.wait_for(router.wait_drained("db", "blue"), GUARD)


def test_switch_closes_an_idle_tcp_connection_instead_of_waiting_the_drain_timeout() -> None:
    async def body(router: Router, public: int, blue: Release, green: Release) -> None:
        reader, writer, greeting = await _connect(public)
        assert greeting == b"blue\n"
        writer.write(b"select 1\n")
        assert await reader.readline() == b"blue: select 1\n"
        # The client has its answer and keeps the connection open, idle (a pooled client).
        await router.route(
            "db",
            host="127.0.0.1",
            public_port=public,
            mode="tcp",
            drain_timeout=NEVER,
            release="green",
            upstream_port=green.port,
        )
        await _drained(router)  # long before NEVER: the idle connection was closed
        assert await asyncio.wait_for(reader.read(), GUARD) == b""  # a clean close (EOF)
        writer.close()
        _, again, greeting = await _connect(public)  # a pool reconnects: to the new release
        assert greeting == b"green\n"
        again.close()

    asyncio.run(_with_route(body))


def test_switch_waits_for_an_exchange_under_way_then_closes_the_connection() -> None:
    async def body(router: Router, public: int, blue: Release, green: Release) -> None:
        reader, writer, _ = await _connect(public)
        blue.answer.clear()  # blue answers only when the test says so
        writer.write(b"long query\n")
        await asyncio.wait_for(blue.got_line.wait(), GUARD)
        await router.route(
            "db",
            host="127.0.0.1",
            public_port=public,
            mode="tcp",
            drain_timeout=NEVER,
            release="green",
            upstream_port=green.port,
        )
        await asyncio.sleep(SEVERAL_CHECKS)  # the drain looks at the connection meanwhile
        assert router.is_draining("db", "blue")
        blue.answer.set()
        assert await asyncio.wait_for(reader.readline(), GUARD) == b"blue: long query\n"
        await _drained(router)
        assert await asyncio.wait_for(reader.read(), GUARD) == b""
        writer.close()

    asyncio.run(_with_route(body))


def test_down_closes_idle_tcp_connections_and_lets_an_exchange_finish() -> None:
    async def body(router: Router, public: int, blue: Release, green: Release) -> None:
        idle_reader, idle_writer, _ = await _connect(public)
        busy_reader, busy_writer, _ = await _connect(public)
        blue.answer.clear()
        busy_writer.write(b"last write\n")
        await asyncio.wait_for(blue.got_line.wait(), GUARD)
        unroute = asyncio.ensure_future(router.unroute("db", None))  # drain_timeout: NEVER
        # The idle connection is closed while the busy one still waits for its answer.
        assert await asyncio.wait_for(idle_reader.read(), GUARD) == b""
        await asyncio.sleep(SEVERAL_CHECKS)
        assert not unroute.done()
        blue.answer.set()
        assert await asyncio.wait_for(busy_reader.readline(), GUARD) == b"blue: last write\n"
        await asyncio.wait_for(unroute, GUARD)
        assert await asyncio.wait_for(busy_reader.read(), GUARD) == b""
        idle_writer.close()
        busy_writer.close()

    asyncio.run(_with_route(body))
