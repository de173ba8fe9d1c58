"""Rendering deployments for people: live progress, summary tables, history."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from shipyard.engine.runner import ProgressEvent

STATUS_STYLE = {
    "succeeded": "green",
    "rolled_back": "yellow",
    "failed": "red",
    "rollback_failed": "bold red",
    "running": "cyan",
    "rolling_back": "yellow",
    "pending": "dim",
}


class LiveProgress:
    """A progress sink: a live table on a terminal, one line per step change otherwise."""

    def __init__(self, console: Console, components: list[str]) -> None:
        self.console = console
        self.rows: dict[str, dict[str, Any]] = {
            name: {"step": "waiting", "status": "", "since": time.monotonic()}
            for name in components
        }
        self.deployment = ""
        self.live: Live | None = None
        if console.is_terminal:
            self.live = Live(self._table(), console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveProgress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def __call__(self, event: ProgressEvent) -> None:
        self.deployment = event.deployment_id
        if event.kind == "deployment":
            self._line(
                f"deployment {event.status}"
                + (f": {event.message}" if event.message and event.status != "pending" else "")
            )
        elif event.kind == "step":
            if event.component in self.rows:
                self.rows[event.component].update(
                    step=event.step, status=event.status, since=time.monotonic()
                )
            if event.status in ("succeeded", "failed"):
                mark = "✓" if event.status == "succeeded" else "✗"
                self._line(
                    f"  {mark} {event.step}"
                    + (f": {event.message}" if event.message and event.status == "failed" else "")
                )
        elif event.kind in ("build", "migrated", "routed") and event.message:
            self._line(f"    {event.component}: {event.message}")
        if self.live:
            self.live.update(self._table())

    def _line(self, text: str) -> None:
        if self.live:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("component")
        table.add_column("step")
        table.add_column("status")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for name, row in self.rows.items():
            table.add_row(name, str(row["step"]), str(row["status"]), f"{now - row['since']:.1f}s")
        return table


def deployment_summary(console: Console, data: dict[str, Any]) -> None:
    """The table printed at the end of a deploy, rollback or `status ID`."""
    status = data["status"]
    style = STATUS_STYLE.get(status, "")
    duration = data.get("duration_s")
    console.print(
        f"[bold]{data['kind']}[/] deployment [bold]{data['id']}[/] of {data['environment']}: "
        f"[{style}]{status}[/]" + (f" in {duration:.1f}s" if duration is not None else ""),
        markup=True,
        highlight=False,
    )
    if data.get("commit"):
        console.print(f"  commit {data['commit'][:12]}", highlight=False)
    if data.get("error"):
        console.print(f"  reason: {data['error']}", markup=False, highlight=False)
    table = Table(box=None, header_style="bold")
    for column in ("component", "status", "release", "previous", "health", "duration"):
        table.add_column(column)
    for c in data.get("components", []):
        health = c.get("health") or {}
        latency = f"{health['latency_ms']:.0f}ms" if "latency_ms" in health else "-"
        table.add_row(
            c["name"],
            c["status"],
            _short(c.get("release")),
            _short(c.get("previous_release")),
            latency,
            _duration(c.get("started_at"), c.get("finished_at")),
        )
    console.print(table)


def _short(release: str | None) -> str:
    return release[:13] if release else "-"


def _duration(start: str | None, finish: str | None) -> str:
    if not start or not finish:
        return "-"
    from datetime import datetime

    seconds = (datetime.fromisoformat(finish) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.1f}s"
