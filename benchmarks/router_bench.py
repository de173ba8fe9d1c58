"""Router benchmark: direct upstream vs the builtin router vs HAProxy, side by side in one run.

    .venv/bin/python benchmarks/router_bench.py [--seconds 3] [--idle 10000] [--burst 1000]
        [--routers builtin,haproxy] [--builtin-src PATH] [--json]

Everything runs on 127.0.0.1 and is bounded (about 90 s with the defaults). Needs `wrk`
(Debian package `wrk`); the haproxy column needs `haproxy` (it is left out when missing).

Upstreams:
  fast   a canned 4-byte response from a C server (HAProxy's `http-request return`), so the
         router is the slow part; when haproxy is missing, a Python asyncio server instead;
  app    a Python app doing 1 ms of CPU work per request (stdlib asyncio, one process).

The builtin router runs in its own process exactly as the agent runs it (`Router.route`);
`--builtin-src` points it at another checkout's `src/` to compare versions. HAProxy runs as
the agent runs it (`HaproxyRouter`: master-worker, runtime API). Measured per target:
  1. wrk, keep-alive, 1/8/64 connections against the fast upstream: req/s and p99;
  2. wrk, 8 connections against the 1 ms app: req/s and p99;
  3. N idle keep-alive connections opened, each after one request, held; then one more
     request on each of 100 of them: how many were still served, and the router's RSS;
  4. a burst of N new connections at once, one request each: p50/p99/max time to response.
Ratios are to the direct upstream measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from shipyard.agent.procinfo import rss_bytes  # noqa: E402

APP_1MS = r"""
import asyncio, os, time
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
class App(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            end = time.perf_counter() + 0.001  # 1 ms of work
            while time.perf_counter() < end:
                pass
            self.transport.write(RESPONSE)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(App, "127.0.0.1", int(os.environ["PORT"]), backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

PY_FAST = APP_1MS.replace("end = time.perf_counter() + 0.001", "end = 0")

FAST_HAPROXY = """
global
    maxconn {maxconn}
defaults
    mode http
    timeout client 60s
    timeout server 60s
    timeout connect 5s
frontend fast
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "fast"
"""

BUILTIN = r"""
import asyncio, resource, sys
sys.path.insert(0, sys.argv[1])
from shipyard.agent.router import Router
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def main():
    router = Router()
    await router.route("web", host="127.0.0.1", public_port=int(sys.argv[2]), mode="http",
                       drain_timeout=5.0, release="r1", upstream_port=int(sys.argv[3]))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, text=True
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def fast_upstream(tmp: Path) -> Iterator[tuple[int, str]]:
    port = free_port()
    if shutil.which("haproxy"):
        cfg = tmp / "fast.cfg"
        # Two descriptors per connection: as many as the hard open-file limit allows.
        maxconn = (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200) // 2
        cfg.write_text(FAST_HAPROXY.format(port=port, maxconn=maxconn))
        with process(["haproxy", "-f", str(cfg)]):
            wait_port(port)
            yield port, "C (haproxy http-request return)"
    else:
        with process([sys.executable, "-c", PY_FAST], {"PORT": str(port)}):
            wait_port(port)
            yield port, "Python asyncio"


@contextmanager
def app_upstream() -> Iterator[int]:
    port = free_port()
    with process([sys.executable, "-c", APP_1MS], {"PORT": str(port)}):
        wait_port(port)
        yield port


@contextmanager
def builtin_router(upstream: int, src: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    with process([sys.executable, "-c", BUILTIN, str(src), str(port), str(upstream)]) as proc:
        wait_port(port)
        yield port, proc.pid


@contextmanager
def haproxy_router(upstream: int, tmp: Path) -> Iterator[tuple[int, int]]:
    from shipyard.agent.haproxy import HaproxyRouter

    port = free_port()

    async def start() -> HaproxyRouter:
        router = HaproxyRouter(tmp / f"haproxy-{port}")
        await router.route(
            "web",
            host="127.0.0.1",
            public_port=port,
            mode="http",
            drain_timeout=5.0,
            release="r1",
            upstream_port=upstream,
        )
        return router

    loop = asyncio.new_event_loop()
    router = loop.run_until_complete(start())
    try:
        wait_port(port)
        yield port, router.worker_pid() or 0
    finally:
        loop.run_until_complete(router.close_all(0.0))
        loop.close()


_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_P99 = re.compile(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", re.M)


def wrk(port: int, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rate = _RATE.search(out)
    p99 = _P99.search(out)
    if rate is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rate.group(1)),
        "p99_ms": float(p99.group(1)) * scale,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    if length:
        await reader.readexactly(int(length.group(1)))
    return head.startswith(b"HTTP/1.1 200")


async def idle_connections(port: int, count: int, pid: int) -> dict[str, float]:
    """Open `count` keep-alive connections (one request each), hold them, use 100 again."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened = 0
    sem = asyncio.Semaphore(200)

    async def open_one() -> None:
        nonlocal opened
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 10
                )
                if await asyncio.wait_for(_exchange(reader, writer), 10):
                    opened += 1
                conns.append((reader, writer))
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                pass

    started = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(count)))
    open_s = time.monotonic() - started
    await asyncio.sleep(1.0)
    rss = (rss_bytes(pid) or 0) / 1e6 if pid else 0.0
    sample = conns[:: max(1, len(conns) // 100)][:100]
    results = await asyncio.gather(
        *(asyncio.wait_for(_exchange(r, w), 10) for r, w in sample), return_exceptions=True
    )
    for _, writer in conns:
        writer.close()
    return {
        "opened": float(opened),
        "open_seconds": open_s,
        "reused_ok": float(sum(1 for r in results if r is True)),
        "reused": float(len(sample)),
        "rss_mb": rss,
    }


async def burst(port: int, count: int) -> dict[str, float]:
    """`count` new connections at once, one request each: time to a complete response."""
    times: list[float] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            ok = await asyncio.wait_for(_exchange(reader, writer), 30)
            writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            ok = False
        if ok:
            times.append((time.perf_counter() - started) * 1000)
        else:
            failed += 1

    await asyncio.gather(*(one() for _ in range(count)))
    times.sort()

    def pct(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    return {"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0), "failed": float(failed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="each wrk run")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections held")
    parser.add_argument("--burst", type=int, default=1000, help="new connections at once")
    parser.add_argument("--routers", default="builtin,haproxy")
    parser.add_argument("--builtin-src", type=Path, default=SRC)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    routers = [r for r in opts.routers.split(",") if r]
    if "haproxy" in routers and not shutil.which("haproxy"):
        print("haproxy is not installed: its column is left out", file=sys.stderr)
        routers.remove("haproxy")
    targets = ["direct", *routers]
    results: dict[str, dict[str, Any]] = {t: {} for t in targets}

    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp_name:
        tmp = Path(tmp_name)

        @contextmanager
        def target(name: str, upstream: int) -> Iterator[tuple[int, int]]:
            if name == "direct":
                yield upstream, 0
            elif name == "builtin":
                with builtin_router(upstream, opts.builtin_src) as got:
                    yield got
            else:
                with haproxy_router(upstream, tmp) as got:
                    yield got

        with fast_upstream(tmp) as (fast, fast_kind):
            for name in targets:
                with target(name, fast) as (port, pid):
                    wrk(port, 8, 1.0)  # warm-up
                    for conns in (1, 8, 64):
                        results[name][f"fast_c{conns}"] = wrk(port, conns, opts.seconds)
                    if opts.idle:
                        results[name]["idle"] = asyncio.run(idle_connections(port, opts.idle, pid))
                    if opts.burst:
                        results[name]["burst"] = asyncio.run(burst(port, opts.burst))
        with app_upstream() as app:
            for name in targets:
                with target(name, app) as (port, _):
                    wrk(port, 8, 1.0)
                    results[name]["app_c8"] = wrk(port, 8, opts.seconds)

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg": os.getloadavg(),
            "fast_upstream": fast_kind,
        },
        "results": results,
    }
    if opts.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()}")
    print(f"fast upstream: {fast_kind}")
    header = f"{'':28}" + "".join(f"{t:>22}" for t in targets)
    print(header)
    for key, label in [
        ("fast_c1", "fast, 1 conn"),
        ("fast_c8", "fast, 8 conns"),
        ("fast_c64", "fast, 64 conns"),
        ("app_c8", "1 ms app, 8 conns"),
    ]:
        direct = results["direct"][key]["rps"]
        cells = []
        for t in targets:
            r = results[t][key]
            ratio = "" if t == "direct" else f" ({r['rps'] / direct:.2f})"
            cells.append(f"{r['rps']:>8.0f}{ratio} p99 {r['p99_ms']:.1f}")
        print(f"{label:28}" + "".join(f"{c:>22}" for c in cells))
    if opts.idle:
        print(f"{opts.idle} idle keep-alive connections: opened / reused ok of 100 / RSS MB")
        for t in targets:
            i = results[t]["idle"]
            print(
                f"  {t:10} {i['opened']:.0f} in {i['open_seconds']:.1f}s /"
                f" {i['reused_ok']:.0f} of {i['reused']:.0f} / {i['rss_mb']:.1f}"
            )
    if opts.burst:
        print(f"burst of {opts.burst} new connections: p50 / p99 / max ms, failed")
        for t in targets:
            b = results[t]["burst"]
            print(
                f"  {t:10} {b['p50_ms']:.1f} / {b['p99_ms']:.1f} / {b['max_ms']:.1f},"
                f" {b['failed']:.0f}"
            )


if __name__ == "__main__":
    main()
