"""How deploy, finish, retirement and down grow with the number of components.

    .venv/bin/python benchmarks/engine_growth.py [--sizes 30,100,300,1000] [--json FILE]

For each size N: a generated project of 3 levels of N/3 components (the 30-component
benchmark's graph and health settings, `max_parallel = 10`), a first deploy, then a
`deploy --full` that reuses every artifact (N new releases started, switched, verified, the N
old ones handed to the agent's retire schedule with `warm_for = "1s"`), the agent's stops of
those N old releases, then `down` of the N new ones. Reported per size: wall time of the
`--full` deploy and its `finish` step (from the journal), the time from the end of the deploy
until the agent has stopped every old release (polled every 0.1 s, `warm_for` subtracted),
the wall time of `down`; CPU seconds of the engine (this process) and of the agent for the
`--full` deploy; and the growth exponent k fitted to time ≈ c·N^k over the sizes (least
squares on the logs): k = 1 is linear.

The component app is not the Python one of `engine_overhead.py`: 2,000 Python interpreters
do not fit in memory next to other work. It is a 40-line C HTTP server (200 to any request),
compiled with `cc` into the run's temporary folder. Everything started is stopped at the end
of each size; a size is refused when /proc/meminfo's MemAvailable is under 4 MiB per release
plus 2 GiB.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _project as P

from shipyard.agent.client import AgentClient
from shipyard.agent.supervisor import PortAllocator

TINY_SERVER = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    const char *port = getenv("PORT"), *release = getenv("SHIPYARD_RELEASE");
    char body[256], resp[512], buf[8192];
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    if (!port || s < 0) return 2;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) { perror("listen"); return 1; }
    int n = snprintf(body, sizeof body, "{\"ok\":true,\"release\":\"%s\"}", release ? release : "");
    int m = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\nConnection: close\r\n\r\n%s", n, body);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        size_t got = 0;
        while (got < sizeof buf - 1) {
            ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
            if (r <= 0) break;
            got += (size_t)r;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n")) { (void)!write(c, resp, (size_t)m); break; }
        }
        close(c);
    }
}
"""
WARM_FOR = 1.0


def fit_exponent(sizes: list[int], times: list[float]) -> float:
    """k of time ≈ c·N^k, least squares on (log N, log time)."""
    xs = [math.log(n) for n in sizes]
    ys = [math.log(max(t, 1e-6)) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def compile_server(folder: Path) -> Path:
    source = folder / "tiny.c"
    source.write_text(TINY_SERVER)
    binary = folder / "tiny"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def mem_available() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def low_ports(count: int, start: int = 10000) -> Iterator[int]:
    """Free ports below the agent's private range (20000-32767) and the kernel's ephemeral
    one, so that no outgoing connection on this busy machine takes one before it is routed."""
    found = 0
    for port in range(start, 20000):
        if found == count:
            return
        if PortAllocator.is_free(port):
            found += 1
            yield port
    raise RuntimeError(f"fewer than {count} free ports in {start}-19999")


def use_tiny_server(project: Path, binary: Path, count: int) -> None:
    """Every component runs the C server, is kept warm for WARM_FOR after a deploy, and has a
    public port from `low_ports`."""
    config = project / "shipyard.toml"
    text = config.read_text().replace(
        'start = "python app.py"', f'start = "exec {binary}"\nwarm_for = "{WARM_FOR:g}s"'
    )
    ports = low_ports(count)
    text = re.sub(r"(?m)^port = \d+$", lambda _: f"port = {next(ports)}", text)
    config.write_text(text)
    P.commit_all(project, "bench: the C server")


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_retired(client: AgentClient, old: set[tuple[str, str]], timeout: float) -> float:
    """Poll until every release in `old` is stopped; when that was (time.time())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = client.list_releases()["releases"]
        left = [r for r in listing if (r["component"], r["release"]) in old and r["pid"]]
        if not left:
            return time.time()
        time.sleep(0.1)
    raise RuntimeError(f"{len(left)} old releases still running after {timeout:g}s")


def one_size(n: int) -> dict[str, Any]:
    width = max(1, n // 3)
    with P.short_tmp() as folder:
        gen = P.generate_project(folder, width=width, depth=3)
        use_tiny_server(gen.path, compile_server(folder), len(gen.components))
        load = os.getloadavg()[0]
        with P.session(gen.path) as sy:
            started = time.perf_counter()
            first = sy.deploy(sy.plan(P.ENV))
            cold = time.perf_counter() - started
            assert first.record.status == "succeeded", first.record
            client = AgentClient(gen.path / ".shipyard" / P.ENV)
            old = {
                (r["component"], r["release"])
                for r in client.list_releases()["releases"]
                if r["state"] != "stopped"
            }
            agent = P.agent_pid(sy)
            assert agent is not None
            plan = sy.plan(P.ENV, selection="full")
            agent_cpu, engine_cpu = P.process_cpu(agent), cpu_self()
            started = time.perf_counter()
            view = sy.deploy(plan)
            full = time.perf_counter() - started
            agent_cpu, engine_cpu = P.process_cpu(agent) - agent_cpu, cpu_self() - engine_cpu
            assert view.record.status == "succeeded", view.record
            steps = P.step_times(sy.store.events(view.record.id))
            finish = steps["finish"].duration
            # From the end of `finish` (the stops were scheduled) to the last old release
            # stopped, less the warm time they were due to wait.
            finished = steps["finish"].end or steps["finish"].start
            retired = wait_retired(client, old, 120.0 + n) - finished - WARM_FOR
            started = time.perf_counter()
            stopped = sy.down(P.ENV)
            down = time.perf_counter() - started
        return {
            "components": len(gen.components),
            "loadavg_at_start": load,
            "cold_deploy_s": cold,
            "full_deploy_s": full,
            "full_engine_cpu_s": engine_cpu,
            "full_agent_cpu_s": agent_cpu,
            "finish_step_s": finish,
            "retire_s": max(retired, 0.0),
            "down_s": down,
            "stopped": len(stopped),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="30,100,300,1000", help="component counts (default %(default)s)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict[str, Any] = {"machine": P.machine(), "sizes": {}}
    rows = []
    for n in sizes:
        need = 2 * n * 4 * 2**20 + 2 * 2**30
        if mem_available() < need:
            print(f"N={n}: skipped, MemAvailable under {need / 2**30:.1f} GiB", flush=True)
            continue
        row = one_size(n)
        rows.append(row)
        figures["sizes"][str(row["components"])] = row
        c = row["components"]
        print(
            f"N={c:5d} (load {row['loadavg_at_start']:.1f}): deploy --full "
            f"{row['full_deploy_s']:7.2f}s ({row['full_deploy_s'] / c * 1000:4.0f} ms/component;"
            f" CPU engine {row['full_engine_cpu_s']:.2f}s, agent {row['full_agent_cpu_s']:.2f}s),"
            f" finish {row['finish_step_s']:5.2f}s, retire {row['retire_s']:5.2f}s,"
            f" down {row['down_s']:6.2f}s ({row['stopped']} stopped),"
            f" first deploy {row['cold_deploy_s']:.2f}s",
            flush=True,
        )
    if len(rows) >= 2:
        counts = [r["components"] for r in rows]
        keys = ("full_deploy_s", "full_engine_cpu_s", "full_agent_cpu_s", "finish_step_s")
        keys += ("retire_s", "down_s", "cold_deploy_s")
        figures["growth_exponent"] = {
            key: fit_exponent(counts, [r[key] for r in rows]) for key in keys
        }
        print("growth exponent k (time ≈ c·N^k):", P.rounded(figures["growth_exponent"], 2))
    figures["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    P.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
