"""Router benchmark: direct upstream vs the builtin router vs HAProxy, side by side in one run.

    .venv/bin/python benchmarks/router_bench.py [--seconds 2] [--rounds 3] [--idle 10000]
        [--burst 1000] [--routers builtin,builtin-uvloop,haproxy] [--before-src OTHER/src]
        [--json]

Everything runs on 127.0.0.1 and is bounded (about 3 minutes with the defaults). Needs `wrk`
(Debian package `wrk`); the haproxy column needs `haproxy` (it is left out when missing).

Upstreams:
  fast   a canned 4-byte response from a C server (HAProxy's `http-request return`), so the
         router is the slow part; when haproxy is missing, a Python asyncio server instead;
  app    a Python app doing 1 ms of CPU work per request (stdlib asyncio, one process).

The builtin router runs in its own process exactly as the agent runs it (`Router.route`);
`builtin-uvloop` is the same on uvloop's event loop, when uvloop is installed (the agent
itself does not use it: see docs/architecture.md);
`--before-src` adds a column with another checkout's builtin router (before/after in one run).
HAProxy runs as the agent runs it (`router="haproxy"`: master-worker, runtime API).
Measured per target, the targets interleaved in rotating order over `--rounds` rounds:
  1. wrk, keep-alive, 1/8/64 connections against the fast upstream: req/s, p99, and the
     CPU time per request of the router, the upstream and wrk itself (from /proc and
     getrusage): with every CPU busy, the ratio is bounded by how that CPU time adds up;
  2. the same with 8 connections against the 1 ms app;
  3. a burst of N new connections at once, one request each: p50/p99/max time to response;
  4. N idle keep-alive connections opened, each after one request, held; then one more
     request on each of 100 of them: how many were still served, and the router's RSS.
Ratios are each round's proxied rate over the direct rate measured next to it (median).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
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
if sys.argv[4] == "uvloop":
    import uvloop
    uvloop.install()
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
        with process(["haproxy", "-f", str(cfg)]) as proc:
            wait_port(port)
            yield port, "C (haproxy http-request return)", proc.pid
    else:
        with process([sys.executable, "-c", PY_FAST], {"PORT": str(port)}) as proc:
            wait_port(port)
            yield port, "Python asyncio", proc.pid


@contextmanager
def app_upstream() -> Iterator[tuple[int, int]]:
    port = free_port()
    with process([sys.executable, "-c", APP_1MS], {"PORT": str(port)}) as proc:
        wait_port(port)
        yield port, proc.pid


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def builtin_router(upstream: int, src: Path, loop: str = "asyncio") -> Iterator[tuple[int, int]]:
    port = free_port()
    argv = [sys.executable, "-c", BUILTIN, str(src), str(port), str(upstream), loop]
    with process(argv) as proc:
        wait_port(port)
        yield port, proc.pid


def _worker_pid(master: int) -> int:
    """HAProxy's worker (the master's child), whose memory is the router's."""
    with suppress(OSError, ValueError, IndexError):
        for task in os.listdir(f"/proc/{master}/task"):
            children = Path(f"/proc/{master}/task/{task}/children").read_text().split()
            if children:
                return int(children[0])
    return master


@contextmanager
def haproxy_router(upstream: int, tmp: Path) -> Iterator[tuple[int, int]]:
    """HAProxy as the agent runs it: `Router.route(..., router="haproxy")`."""
    from shipyard.agent.haproxy import HaproxyRoute
    from shipyard.agent.router import Router

    port = free_port()
    router = Router()
    router.haproxy_dir = tmp / f"haproxy-{port}"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(
        router.route(
            "web",
            host="127.0.0.1",
            public_port=port,
            mode="http",
            drain_timeout=5.0,
            release="r1",
            upstream_port=upstream,
            router="haproxy",
        )
    )
    try:
        wait_port(port)
        route = router.routes["web"]
        assert isinstance(route, HaproxyRoute) and route.pid is not None
        yield port, _worker_pid(route.pid)
    finally:
        loop.run_until_complete(router.close_all(0.0))
        loop.close()


_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_P99 = re.compile(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", re.M)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), in seconds."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, connections: int, seconds: float) -> dict[str, float]:
    """wrk's figures, and its own CPU time per request (the load generator's share)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rate = _RATE.search(out)
    p99 = _P99.search(out)
    if rate is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rate.group(1)),
        "gen_cpu_us": gen_cpu / max(1.0, float(rate.group(1)) * seconds) * 1e6,
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
                    asyncio.open_connection("127.0.0.1", port), 3
                )
                if await asyncio.wait_for(_exchange(reader, writer), 3):
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


def burst(port: int, count: int) -> dict[str, float]:
    """`count` new connections at once, one request each: time to a complete response.

    Raw non-blocking sockets and epoll (not asyncio streams), so that the client itself adds
    as little as it can to what is measured.
    """
    poller = select.epoll()
    socks: dict[int, tuple[socket.socket, float]] = {}
    received: dict[int, bytes] = {}
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        started = time.perf_counter()
        sock.connect_ex(("127.0.0.1", port))
        socks[sock.fileno()] = (sock, started)
        received[sock.fileno()] = b""
        poller.register(sock.fileno(), select.EPOLLOUT)
    times: list[float] = []
    failed = 0
    deadline = time.monotonic() + 60
    while socks and time.monotonic() < deadline:
        for fd, event in poller.poll(1.0):
            sock, started = socks[fd]
            done = False
            try:
                if event & select.EPOLLOUT:
                    sock.send(REQUEST)
                    poller.modify(fd, select.EPOLLIN)
                    continue
                data = sock.recv(65536)
                received[fd] += data
                head, sep, body = received[fd].partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if sep and length and len(body) >= int(length.group(1)):
                    times.append((time.perf_counter() - started) * 1000)
                    done = True
                elif not data:
                    failed += 1
                    done = True
            except OSError:
                failed += 1
                done = True
            if done:
                poller.unregister(fd)
                sock.close()
                del socks[fd]
    failed += len(socks)
    for sock, _ in socks.values():
        sock.close()
    poller.close()
    times.sort()

    def pct(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    return {"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0), "failed": float(failed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per target, interleaved")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections held")
    parser.add_argument("--burst", type=int, default=1000, help="new connections at once")
    parser.add_argument(
        "--routers",
        default="builtin,builtin-uvloop,haproxy",
        help="builtin-uvloop: the builtin router on uvloop's event loop (left out without it)",
    )
    parser.add_argument("--builtin-src", type=Path, default=SRC)
    parser.add_argument(
        "--before-src",
        type=Path,
        help="another checkout's src/: its builtin router runs as one more column, 'before'",
    )
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
    if "builtin-uvloop" in routers and not has_uvloop():
        print("uvloop is not installed: the builtin-uvloop column is left out", file=sys.stderr)
        routers.remove("builtin-uvloop")
    targets = ["direct", *routers]
    if opts.before_src:
        targets.append("before")
    scenarios = [("fast", 1), ("fast", 8), ("fast", 64), ("app", 8)]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    results: dict[str, dict[str, Any]] = {t: {} for t in targets}

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="router-bench-")))
        fast, fast_kind, fast_pid = stack.enter_context(fast_upstream(tmp))
        app, app_pid = stack.enter_context(app_upstream())
        upstream_pids = {"fast": fast_pid, "app": app_pid}
        ports: dict[tuple[str, str], tuple[int, int]] = {}
        for upstream, up_port in (("fast", fast), ("app", app)):
            ports["direct", upstream] = (up_port, 0)
            if "builtin" in routers:
                ports["builtin", upstream] = stack.enter_context(
                    builtin_router(up_port, opts.builtin_src)
                )
            if "builtin-uvloop" in routers:
                ports["builtin-uvloop", upstream] = stack.enter_context(
                    builtin_router(up_port, opts.builtin_src, "uvloop")
                )
            if "haproxy" in routers:
                ports["haproxy", upstream] = stack.enter_context(haproxy_router(up_port, tmp))
            if opts.before_src:
                ports["before", upstream] = stack.enter_context(
                    builtin_router(up_port, opts.before_src)
                )
        for target in targets:
            for upstream in ("fast", "app"):
                wrk(ports[target, upstream][0], 8, 1.0)  # warm-up
        # Targets interleaved, in a rotating order, so that load from elsewhere on the
        # machine falls on all of them alike; medians of the rounds.
        for round_no in range(opts.rounds):
            order = targets[round_no % len(targets) :] + targets[: round_no % len(targets)]
            for upstream, conns in scenarios:
                for target in order:
                    port, pid = ports[target, upstream]
                    up_pid = upstream_pids[upstream]
                    before, up_before = cpu_seconds(pid), cpu_seconds(up_pid)
                    got = wrk(port, conns, opts.seconds)
                    requests = max(1.0, got["rps"] * opts.seconds)
                    got["up_cpu_us"] = (cpu_seconds(up_pid) - up_before) / requests * 1e6
                    if pid:  # the router's CPU time per request: what limits it
                        got["cpu_us"] = (cpu_seconds(pid) - before) / requests * 1e6
                    runs.setdefault((target, f"{upstream}_c{conns}"), []).append(got)
        for (target, key), got in runs.items():
            direct = runs["direct", key]
            results[target][key] = {
                "rps": statistics.median(r["rps"] for r in got),
                "p99_ms": statistics.median(r["p99_ms"] for r in got),
                "non_2xx": sum(r["non_2xx"] for r in got),
                "rounds": [r["rps"] for r in got],
                # Each round's ratio to the direct run next to it, then their median.
                "cpu_us": statistics.median(r.get("cpu_us", 0.0) for r in got),
                "gen_cpu_us": statistics.median(r["gen_cpu_us"] for r in got),
                "up_cpu_us": statistics.median(r["up_cpu_us"] for r in got),
                "ratio": statistics.median(
                    got[i]["rps"] / direct[i]["rps"] for i in range(len(got))
                ),
            }
        # The burst before the idle connections: closing 10,000 of them keeps a router busy
        # for a while after.
        for target in targets:
            if opts.burst:
                port, pid = ports[target, "fast"]
                before = cpu_seconds(pid)
                results[target]["burst"] = burst(port, opts.burst)
                results[target]["burst"]["cpu_us_per_conn"] = (
                    (cpu_seconds(pid) - before) / opts.burst * 1e6 if pid else 0.0
                )
                time.sleep(0.5)
        for target in targets:
            port, pid = ports[target, "fast"]
            if opts.idle:
                results[target]["idle"] = asyncio.run(idle_connections(port, opts.idle, pid))
                time.sleep(2.0)
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
    header = f"{'':20}" + "".join(f"{t:>30}" for t in targets)
    print(header)
    for key, label in [
        ("fast_c1", "fast, 1 conn"),
        ("fast_c8", "fast, 8 conns"),
        ("fast_c64", "fast, 64 conns"),
        ("app_c8", "1 ms app, 8 conns"),
    ]:
        cells = []
        for t in targets:
            r = results[t][key]
            ratio = "" if t == "direct" else f" ({r['ratio']:.2f})"
            cpu = f" {r['cpu_us']:.0f}us" if r.get("cpu_us") else ""
            cells.append(f"{r['rps']:>8.0f}{ratio} p99 {r['p99_ms']:.1f}{cpu}")
        print(f"{label:20}" + "".join(f"{c:>30}" for c in cells))
    # On a machine whose CPUs are all busy, the rate is the CPUs over the CPU time a request
    # costs everyone (load generator, upstream, router): that bounds the ratio.
    print("CPU us per request: load generator + upstream + router = total (ratio bound)")
    for key in ("fast_c8", "app_c8"):
        direct_total = results["direct"][key]["gen_cpu_us"] + results["direct"][key]["up_cpu_us"]
        for t in targets:
            r = results[t][key]
            total = r["gen_cpu_us"] + r["up_cpu_us"] + r["cpu_us"]
            print(
                f"  {key:8} {t:15} {r['gen_cpu_us']:5.1f} + {r['up_cpu_us']:6.1f} +"
                f" {r['cpu_us']:5.1f} = {total:6.1f} ({direct_total / total:.2f})"
            )
    if opts.idle:
        print(f"{opts.idle} idle keep-alive connections: opened / reused ok of 100 / RSS MB")
        for t in targets:
            i = results[t]["idle"]
            print(
                f"  {t:15} {i['opened']:.0f} in {i['open_seconds']:.1f}s /"
                f" {i['reused_ok']:.0f} of {i['reused']:.0f} / {i['rss_mb']:.1f}"
            )
    if opts.burst:
        print(f"burst of {opts.burst} new connections: p50 / p99 / max ms, failed, router CPU")
        for t in targets:
            b = results[t]["burst"]
            print(
                f"  {t:15} {b['p50_ms']:.1f} / {b['p99_ms']:.1f} / {b['max_ms']:.1f},"
                f" {b['failed']:.0f}, {b['cpu_us_per_conn']:.0f} us/conn"
            )


if __name__ == "__main__":
    main()
