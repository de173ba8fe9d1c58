"""Host agent benchmark: switches under load, switch latency, proxy overhead, agent memory.

    .venv/bin/python benchmarks/agent_bench.py [--switches 1000] [--seconds 5] [--json]

Everything runs on 127.0.0.1 in a temporary root and is bounded in count and time; the agent
and its releases are stopped at the end. Releases are the test fixture app (a stdlib
ThreadingHTTPServer, like a small real Python service) and, for a proxy-bound comparison, a
canned-response asyncio server ("fast upstream") started by this script.

Measured:
  1. failed requests while the route switches N times between two releases under load
     (4 keep-alive + 4 new-connection clients), and the requests per release;
  2. the route op's round trip (switch latency) over those N switches, p50/p99;
  3. throughput and latency through the router vs straight to the release, keep-alive, with
     the same load generator (C connections for T seconds each), as ratios;
  4. the agent's resident memory before and after the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from shipyard.agent import AgentClient, start_background, stop_agent  # noqa: E402
from shipyard.agent.procinfo import rss_bytes  # noqa: E402

APP = ROOT / "tests" / "agent_fixtures" / "app.py"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"

FAST_UPSTREAM = r"""
import asyncio, os
BODY = b"fast"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\n" + BODY)
async def handle(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(os.environ["PORT"]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _client(
    port: int,
    until: Callable[[], bool],
    keep_alive: bool,
    latencies: list[float],
    bodies: Counter[str],
    failures: list[str],
) -> None:
    reader = writer = None
    while not until():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(REQUEST if keep_alive else REQUEST_CLOSE)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            bodies[body.decode()] += 1
            if status != 200:
                failures.append(f"status {status}: {body[:80]!r}")
            if not keep_alive:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            failures.append(repr(exc))
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def run_load(
    port: int,
    seconds: float,
    keep_alive: int,
    fresh: int,
    stop: threading.Event | None = None,
) -> tuple[list[float], Counter[str], list[str]]:
    """Hammer 127.0.0.1:port with raw HTTP/1.1 clients for `seconds` (or until `stop`)."""
    latencies: list[float] = []
    bodies: Counter[str] = Counter()
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    def until() -> bool:
        return time.perf_counter() >= deadline or (stop is not None and stop.is_set())

    async def main() -> None:
        clients = [
            _client(port, until, True, latencies, bodies, failures) for _ in range(keep_alive)
        ]
        clients += [_client(port, until, False, latencies, bodies, failures) for _ in range(fresh)]
        await asyncio.gather(*clients)

    asyncio.run(main())
    return latencies, bodies, failures


def bench_switches(client: AgentClient, public: int, switches: int) -> dict[str, Any]:
    """Switch blue <-> green `switches` times while 4 keep-alive + 4 new-connection clients run."""
    result: dict[str, Any] = {}
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: result.update(load=run_load(public, 120.0, 4, 4, stop=stop))
    )
    thread.start()
    time.sleep(0.3)
    route_rtt: list[float] = []
    started = time.perf_counter()
    for i in range(switches):
        if time.perf_counter() - started > 100.0:  # bounded even on a very slow machine
            break
        target = "green" if i % 2 == 0 else "blue"
        t0 = time.perf_counter()
        client.route("web", public, target, drain_timeout=30.0)
        route_rtt.append(time.perf_counter() - t0)
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    time.sleep(0.2)
    stop.set()
    thread.join()
    latencies, bodies, failures = result["load"]
    done = len(route_rtt)
    return {
        "switches": done,
        "seconds": round(elapsed, 1),
        "requests": len(latencies) + len([f for f in failures if not f.startswith("status")]),
        "failed_requests": len(failures),
        "failed_per_1000_switches": round(len(failures) * 1000.0 / max(done, 1), 3),
        "responses_by_release": dict(bodies),
        "failure_samples": failures[:5],
        "switch_rtt_ms_p50": round(percentile(route_rtt, 0.5) * 1000, 3),
        "switch_rtt_ms_p99": round(percentile(route_rtt, 0.99) * 1000, 3),
    }


def bench_idle_switch(client: AgentClient, public: int, switches: int = 200) -> dict[str, Any]:
    """The route op's round trip with no traffic: the cost of a switch itself."""
    rtt: list[float] = []
    for i in range(switches):
        t0 = time.perf_counter()
        client.route("web", public, "green" if i % 2 == 0 else "blue")
        rtt.append(time.perf_counter() - t0)
    return {
        "switches": switches,
        "p50_ms": round(percentile(rtt, 0.5) * 1000, 3),
        "p99_ms": round(percentile(rtt, 0.99) * 1000, 3),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_throughput(
    direct: int, proxied: int, seconds: float, conns: int, agent_pid: int, rounds: int = 3
) -> dict[str, Any]:
    """Same load generator straight to the release, then through the router.

    Direct and proxied runs alternate (`rounds` times, seconds/rounds each) and medians are
    reported, so a change in the machine's background load hits both sides alike.
    """
    slice_s = seconds / rounds
    rates: dict[str, list[float]] = {"direct": [], "proxied": []}
    failures = {"direct": 0, "proxied": 0}
    cpu_us: list[float] = []
    for _ in range(rounds):
        for label, port in (("direct", direct), ("proxied", proxied)):
            cpu_before = cpu_seconds(agent_pid)
            lat, _, failed = run_load(port, slice_s, keep_alive=conns, fresh=0)
            cpu_used = cpu_seconds(agent_pid) - cpu_before
            rates[label].append(len(lat) / slice_s)
            failures[label] += len(failed)
            if label == "proxied":
                cpu_us.append(cpu_used / max(len(lat), 1) * 1e6)
    out: dict[str, Any] = {}
    for label, port in (("direct", direct), ("proxied", proxied)):
        # Latency without queueing: one connection, sequential requests.
        single, _, _ = run_load(port, min(seconds, 2.0), keep_alive=1, fresh=0)
        out[label] = {
            "requests_per_s": round(statistics.median(rates[label]), 1),
            "failures": failures[label],
            "p50_ms": round(percentile(single, 0.5) * 1000, 3),
            "p99_ms": round(percentile(single, 0.99) * 1000, 3),
        }
    out["agent_cpu_us_per_request"] = round(statistics.median(cpu_us), 1)
    ratios = [p / max(d, 1e-9) for d, p in zip(rates["direct"], rates["proxied"], strict=True)]
    out["throughput_ratio"] = round(statistics.median(ratios), 3)
    out["added_p50_ms"] = round(out["proxied"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["added_p99_ms"] = round(out["proxied"]["p99_ms"] - out["direct"]["p99_ms"], 3)
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "cpu": cpu,
        "loadavg_at_start": os.getloadavg()[0],
    }


def wait_healthy(client: AgentClient, port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if client.probe(kind="tcp", port=port, timeout=1.0)["ok"]:
            return
        time.sleep(0.05)
    raise SystemExit(f"release on port {port} did not come up")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=1000)
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="load time per side of each throughput test"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()

    report: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        root = Path(tmp)
        client = start_background(root)
        agent_pid = int(client.ping()["pid"])
        try:
            report["agent_rss_mb_idle"] = round((rss_bytes(agent_pid) or 0) / 1048576, 1)
            ports = {}
            for name in ("blue", "green"):
                info = client.start_release(
                    "web", name, APP.parent, argv=[sys.executable, str(APP), "--name", name]
                )
                ports[name] = info["port"]
                wait_healthy(client, info["port"])
            fast = client.start_release(
                "fast", "f1", root, argv=[sys.executable, "-c", FAST_UPSTREAM]
            )
            wait_healthy(client, fast["port"])
            public, fast_public, tcp_public = free_port(), free_port(), free_port()
            client.route("web", public, "blue")
            client.route("fast", fast_public, "f1")
            client.start_release("fasttcp", "t1", root, argv=[sys.executable, "-c", FAST_UPSTREAM])
            tcp_port = client.list_releases("fasttcp")["releases"][0]["port"]
            wait_healthy(client, tcp_port)
            client.route("fasttcp", tcp_public, "t1", mode="tcp")

            report["switch_idle"] = bench_idle_switch(client, public)
            report["switching"] = bench_switches(client, public, opts.switches)
            report["agent_rss_mb_after_switching"] = round((rss_bytes(agent_pid) or 0) / 1048576, 1)
            routed = client.list_releases("web")["routes"][0]["release"]
            report["throughput_app"] = bench_throughput(
                ports[routed], public, opts.seconds, opts.connections, agent_pid
            )
            report["throughput_fast_upstream"] = bench_throughput(
                fast["port"], fast_public, opts.seconds, opts.connections, agent_pid
            )
            report["throughput_fast_upstream_tcp_mode"] = bench_throughput(
                tcp_port, tcp_public, opts.seconds, opts.connections, agent_pid
            )
            report["agent_rss_mb_after"] = round((rss_bytes(agent_pid) or 0) / 1048576, 1)
        finally:
            stop_agent(root, stop_processes=True)

    if opts.json:
        print(json.dumps(report, indent=2))
        return
    m, s, idle = report["machine"], report["switching"], report["switch_idle"]
    print(f"machine: {m['nproc']} cpus, {m['cpu']}, python {m['python']}")
    print(
        f"switching: {s['switches']} switches in {s['seconds']}s under load, {s['requests']}"
        f" requests, {s['failed_requests']} failed ({s['failed_per_1000_switches']} per 1000"
        f" switches); responses by release {s['responses_by_release']}"
    )
    print(
        f"switch latency (route op round trip): idle p50 {idle['p50_ms']} ms, p99"
        f" {idle['p99_ms']} ms; under load p50 {s['switch_rtt_ms_p50']} ms,"
        f" p99 {s['switch_rtt_ms_p99']} ms"
    )
    for key in ("throughput_app", "throughput_fast_upstream", "throughput_fast_upstream_tcp_mode"):
        t = report[key]
        print(
            f"{key}: direct {t['direct']['requests_per_s']} req/s, proxied"
            f" {t['proxied']['requests_per_s']} req/s (ratio {t['throughput_ratio']}), agent CPU"
            f" {t['agent_cpu_us_per_request']} us/request; 1-connection latency p50"
            f" {t['direct']['p50_ms']} -> {t['proxied']['p50_ms']} ms (+{t['added_p50_ms']}),"
            f" p99 {t['direct']['p99_ms']} -> {t['proxied']['p99_ms']} ms (+{t['added_p99_ms']})"
        )
    print(
        f"agent RSS: {report['agent_rss_mb_idle']} MB idle,"
        f" {report['agent_rss_mb_after_switching']} MB after switching,"
        f" {report['agent_rss_mb_after']} MB at the end"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
