"""`python -m shipyard.agent {run,start,stop,status,reexec} --root DIR` (also the zipapp's main)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import AgentRequestError
from .lifecycle import (
    agent_status,
    install_agent,
    run_foreground,
    run_reexecuted_worker,
    start_daemon,
    stop_agent,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shipyard-agent",
        description="The shipyard host agent: supervises releases and routes their public ports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--root", required=True, type=Path, help="the host root (state in ROOT/agent)"
        )
        return p

    command("run", "run the agent in the foreground (systemd, debugging)")
    start = command("start", "start the agent as a daemon unless it is already running")
    start.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (default 15)")
    stop = command("stop", "stop the agent and, unless --keep-processes, every release")
    stop.add_argument(
        "--keep-processes",
        action="store_true",
        help="leave releases running (a later agent adopts them)",
    )
    status = command("status", "show the agent, its releases and routes")
    status.add_argument("--json", action="store_true", help="print JSON")
    command("reexec", "re-execute the running agent in place, keeping its public ports bound")
    install = command(
        "install", "write a systemd unit for the agent (and enable it if systemd runs)"
    )
    install.add_argument("--user", action="store_true", help="a user unit (no root needed)")
    # Internal: what a worker re-executes into (it inherits its sockets and its keeper).
    sub.add_parser("worker").add_argument("--root", required=True, type=Path)
    return parser


def _print_status(status: Dict[str, Any]) -> None:
    if not status["running"]:
        print(f"agent: not running for {status['root']} ({status.get('error')})")
        for rel in status.get("recorded_releases", []):
            print(f"  recorded {rel['component']}/{rel['release']}: {rel['desired']}")
        return
    rss = status.get("rss_bytes")
    memory = f", {rss / 1048576:.1f} MB" if rss else ""
    print(
        f"agent: running, pid {status['pid']} (keeper {status.get('keeper_pid')}),"
        f" version {status['version']},"
        f" up {status['uptime_s']:.0f}s{memory}"
    )
    print(f"  socket {status['socket']}\n  log    {status['log']}")
    for rel in status["releases"]:
        extra = f" last exit: {rel['last_exit']}" if rel.get("last_exit") else ""
        print(
            f"  {rel['component']}/{rel['release']}: {rel['state']} pid={rel['pid']}"
            f" port={rel['port']} restarts={rel['restarts']}{extra}"
        )
    for route in status["routes"]:
        draining = f" (draining: {', '.join(route['draining'])})" if route["draining"] else ""
        print(
            f"  route {route['component']}: {route['host']}:{route['public_port']}"
            f" ({route['mode']}) -> {route['release']} :{route['upstream_port']}{draining}"
        )


def describe_install(result: Dict[str, Any]) -> str:
    """What `install` did, in words (shared with `shipyard agent install`)."""
    text = f"wrote the systemd unit {result['path']}"
    if result["enabled"]:
        return text + f"; enabled and started {result['unit']}"
    return (
        text + "; systemd does not run here, so it is not enabled."
        f" Where systemd runs, enable it with: {result['how_to_enable']}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    """Run one agent command; the exit code is 0 on success and 1 on a reported error."""
    args = _parser().parse_args(argv)
    root = Path(args.root).resolve()
    try:
        if args.command == "run":
            run_foreground(root)
        elif args.command == "worker":
            run_reexecuted_worker(root)
        elif args.command == "start":
            info = start_daemon(root, timeout=args.timeout)
            print(f"agent running for {root} (pid {info['pid']}, version {info['version']})")
        elif args.command == "stop":
            result = stop_agent(root, stop_processes=not args.keep_processes)
            if not result["was_running"]:
                print(f"no agent was running for {root}")
            else:
                stopped = ", ".join(result["stopped"]) or "none"
                print(f"agent (pid {result['pid']}) stopped; releases stopped: {stopped}")
        elif args.command == "status":
            status = agent_status(root)
            if args.json:
                print(json.dumps(status, indent=2, sort_keys=True))
            else:
                _print_status(status)
            return 0 if status["running"] else 3
        elif args.command == "install":
            print(describe_install(install_agent(root, user=args.user)))
        elif args.command == "reexec":
            from .client import AgentClient

            print(f"agent re-executing (pid {AgentClient(root).reexec()['pid']})")
    except AgentRequestError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
