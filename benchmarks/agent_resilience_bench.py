"""Host agent resilience: what a `kill -9` of the agent's worker, or of a release, costs.

    .venv/bin/python benchmarks/agent_resilience_bench.py [--kills 10] [--json]
    .venv/bin/python benchmarks/agent_resilience_bench.py --agent-src /tmp/old/src   # "before"

Everything runs on 127.0.0.1 in a temporary root under /tmp, bounded in count and time; the
agent and its releases are stopped at the end. The agent is started through its own CLI with
`--agent-src` first on PYTHONPATH (default: this checkout's src/), so an older checkout of the
agent (say `git worktree add /tmp/old <commit>`) can be measured the same way.

Measured, under a load of 4 keep-alive clients on the public port (tests/agent_fixtures/load.py:
a GET on a reused connection that the server closed before any response byte is sent once more,
as browsers and HTTP libraries do; anything else that is not a complete 2xx-4xx response fails):

  1. worker kills: `kill -9` of the process that routes (the agent's pid in `ping`), N times;
     for each, the time from the kill to the first complete response on a new connection, and
     over the whole run the refused connections, failed requests and client retries. An agent
     without a keeper is not restarted by anything: the figure is then the refusals in the
     `--down-window` seconds after the kill, after which the benchmark restarts it by hand.
  2. release kills: `kill -9` of the release's process N times, each once the release has
     been up 10 s again (so each crash is an isolated one, restarted without back-off); failed
     requests per kill, and requests that waited for the restart.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.agent_fixtures.agent_harness import APP, FIXTURES, free_port, wait_for  # noqa: E402
from tests.agent_fixtures.load import LoadLoop  # noqa: E402

from shipyard.agent import AgentClient, AgentRequestError  # noqa: E402
from shipyard.agent.procinfo import has_exited, is_same_process  # noqa: E402


class Agent:
    """An agent started from `src` through its CLI, and everything to stop it again."""

    def __init__(self, root: Path, src: Path) -> None:
        self.root = root
        self.src = src
        self.client = AgentClient(root, timeout=20.0)
        self.pids: set[int] = set()

    def cli(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(self.src))
        proc = subprocess.run(
            [sys.executable, "-m", "shipyard.agent", *args, "--root", str(self.root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"agent {args}: {proc.stderr}{proc.stdout}")

    def start(self) -> None:
        self.cli("start")
        ping = self.client.ping()
        self.pids.update(p for p in (ping["pid"], ping.get("keeper_pid")) if p)

    def stop(self) -> None:
        with contextlib.suppress(AgentRequestError):
            self.client.shutdown(stop_processes=True)
        time.sleep(0.5)
        for pid in self.pids:
            if is_same_process(pid, None):
                os.kill(pid, signal.SIGKILL)

    def route(self, component: str, port: int, release: str) -> None:
        # No crash_wait argument: an older agent refuses arguments it does not know.
        self.client.request("route", component=component, public_port=port, release=release)


def first_response_after(port: int, timeout: float = 30.0) -> float:
    """Seconds until a GET on a new connection gets a complete 200 (retrying refusals)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return time.perf_counter() - start
        except (OSError, http.client.HTTPException):
            time.sleep(0.005)
        finally:
            conn.close()
    return float("inf")


def start_release(agent: Agent, name: str) -> dict[str, Any]:
    info: dict[str, Any] = agent.client.start_release(
        "web",
        name,
        FIXTURES,
        argv=[sys.executable, str(APP)],
        env={"SHIPYARD_RELEASE": name},
        stop_timeout=5.0,
    )
    wait_for(lambda: agent.client.probe(kind="http", port=info["port"], path="/health")["ok"], 10)
    return info


def bench_worker_kills(agent: Agent, kills: int, down_window: float) -> dict[str, Any]:
    public = free_port()
    start_release(agent, "r1")
    agent.route("web", public, "r1")
    recover: list[float] = []
    keeper = agent.client.ping().get("keeper_pid")
    with LoadLoop(public, clients=4, max_seconds=600) as load:
        load.wait_for_ok(200)
        for _ in range(kills):
            pid = int(agent.client.ping()["pid"])
            os.kill(pid, signal.SIGKILL)
            killed_at = time.perf_counter()
            if keeper:
                recover.append(first_response_after(public))
            else:
                time.sleep(down_window)  # nothing restarts it: the site is down meanwhile
                wait_for(lambda p=pid: has_exited(p, None), 5.0)
                agent.start()
                recover.append(time.perf_counter() - killed_at)
            load.wait_for_ok(200)
    return {
        "keeper": bool(keeper),
        "kills": kills,
        "first_response_after_kill_s": {
            "p50": statistics.median(recover),
            "max": max(recover),
            "all": [round(r, 4) for r in recover],
        },
        "requests_ok": load.ok,
        "refused": load.refused,
        "failed": len(load.failures),
        "client_retries": load.client_retries,
        "failures_sample": load.failures[:3],
    }


def bench_release_kills(agent: Agent, kills: int) -> dict[str, Any]:
    public = free_port()
    start_release(agent, "r1")
    agent.route("web", public, "r1")
    per_kill: list[int] = []

    def release() -> dict[str, Any]:
        releases = agent.client.list_releases("web")["releases"]
        return dict(next(r for r in releases if r["release"] == "r1"))

    with LoadLoop(public, clients=4, max_seconds=900) as load:
        load.wait_for_ok(200)
        for _ in range(kills):
            # One crash at a time: the release has stayed up long enough (10 s) that the
            # supervisor restarts it without back-off, as for an isolated crash.
            info = wait_for(lambda: (r := release())["consecutive_crashes"] == 0 and r, 30)
            before = load.failed
            os.kill(int(info["pid"]), signal.SIGKILL)
            wait_for(lambda p=info["pid"]: release()["pid"] not in (None, p), 15.0, 0.01)
            load.wait_for_ok(200)
            per_kill.append(load.failed - before)
    stats = agent.client.list_releases("web")["routes"][0]["stats"]
    return {
        "kills": kills,
        "failed_per_kill": {"mean": statistics.mean(per_kill), "max": max(per_kill)},
        "failed_total": load.failed,
        "requests_ok": load.ok,
        "client_retries": load.client_retries,
        "router_retries": stats.get("retries"),
        "router_crash_waits": stats.get("crash_waits"),
        "failures_sample": load.failures[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--down-window", type=float, default=2.0)
    parser.add_argument("--agent-src", type=Path, default=ROOT / "src")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "agent_src": str(opts.agent_src),
    }
    for name, bench in (
        ("worker_kills", lambda a: bench_worker_kills(a, opts.kills, opts.down_window)),
        ("release_kills", lambda a: bench_release_kills(a, opts.kills)),
    ):
        with tempfile.TemporaryDirectory(prefix="sy-bench-", dir="/tmp") as tmp:
            agent = Agent(Path(tmp) / "root", opts.agent_src.resolve())
            agent.start()
            try:
                result[name] = bench(agent)
            finally:
                agent.stop()
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    w, r = result["worker_kills"], result["release_kills"]
    first = w["first_response_after_kill_s"]
    print(f"agent code: {opts.agent_src}  (keeper: {w['keeper']})")
    print(
        f"worker kill -9 x{w['kills']}: first response after {first['p50'] * 1000:.0f} ms"
        f" (p50), {first['max'] * 1000:.0f} ms (max); refused {w['refused']},"
        f" failed {w['failed']}, client retries {w['client_retries']}, ok {w['requests_ok']}"
    )
    print(
        f"release kill -9 x{r['kills']}: failed per kill {r['failed_per_kill']['mean']:.1f}"
        f" (max {r['failed_per_kill']['max']}), total {r['failed_total']} of"
        f" {r['requests_ok'] + r['failed_total']}; router retries {r['router_retries']},"
        f" crash waits {r['router_crash_waits']}, client retries {r['client_retries']}"
    )


if __name__ == "__main__":
    main()
