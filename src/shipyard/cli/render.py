"""Rendering deployments for people: live progress, summary tables, history.

Every string from a deployment (messages, names, ids) goes through `Shown.clean` (redacted,
control characters made visible) and is printed as plain text, never as markup.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from shipyard.cli.output import Shown
from shipyard.cli.safe import styled

if TYPE_CHECKING:
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
    """A progress sink: a live table on a terminal, one line per step change otherwise.

    A failure's reason (often with a log tail) is printed once, on the failed step's line;
    the deployment's status lines, the summary and the final `error:` line refer to it
    instead of repeating it (`Shown.elide`).
    """

    def __init__(self, console: Console, components: list[str], shown: Shown) -> None:
        self.console = console
        self.shown = shown
        self.rows: dict[str, dict[str, Any]] = {
            name: {"step": "waiting", "status": "", "since": time.monotonic()}
            for name in components
        }
        self.deployment = ""
        self._last_reason = ""
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
        if event.starts_deployment and not self.deployment:
            self.deployment = event.deployment_id
        message = self.shown.clean(event.message) if event.message else ""
        if event.kind == "deployment":
            reason = self.shown.elide(message) if event.status != "pending" else ""
            if reason == self._last_reason:  # failed, rolling_back, rolled_back: one reason
                reason = ""
            else:
                self._last_reason = reason
            self._line(f"deployment {event.status}" + (f": {reason}" if reason else ""))
            if reason and reason == message:  # printed whole: later lines point at it
                self.shown.add(message)
        elif event.kind == "step":
            if event.component in self.rows:
                self.rows[event.component].update(
                    step=event.step, status=event.status, since=time.monotonic()
                )
            if event.status in ("succeeded", "failed"):
                mark = "✓" if event.status == "succeeded" else "✗"
                failed = event.status == "failed" and bool(message)
                step = self.shown.clean(event.step)
                self._line(f"  {mark} {step}" + (f": {message}" if failed else ""))
                if failed:
                    self.shown.add(message)
        elif event.kind in ("build", "migrations", "migrated", "tests", "routed") and message:
            self._line(f"    {self.shown.clean(event.component)}: {message}")
        if self.live:
            self.live.update(self._table())

    def _line(self, text: str) -> None:
        console = self.live.console if self.live else self.console
        console.print(text, markup=False, highlight=False, emoji=False)

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("component")
        table.add_column("step")
        table.add_column("status")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        clean = self.shown.clean
        for name, row in self.rows.items():
            table.add_row(
                clean(name),
                clean(row["step"]),
                clean(row["status"]),
                f"{now - row['since']:.1f}s",
            )
        return table


def deployment_summary(console: Console, data: dict[str, Any], shown: Shown) -> None:
    """The table printed at the end of a deploy, rollback or `status ID`."""
    clean = shown.clean
    status = clean(data["status"])
    duration = data.get("duration_s")
    console.print(
        styled(
            (clean(data["kind"]), "bold"),
            " deployment ",
            (clean(data["id"]), "bold"),
            f" of {clean(data['environment'])}: ",
            (status, STATUS_STYLE.get(status, "")),
            f" in {duration:.1f}s" if duration is not None else "",
        ),
        highlight=False,
    )
    if data.get("commit"):
        console.print(f"  commit {clean(data['commit'])[:12]}", markup=False, highlight=False)
    if data.get("error"):
        reason = shown.elide(clean(data["error"]))
        console.print(f"  reason: {reason}", markup=False, highlight=False)
        shown.add(reason)
    table = Table(box=None, header_style="bold")
    for column in ("component", "status", "release", "previous", "health", "duration"):
        table.add_column(column)
    for c in data.get("components", []):
        health = c.get("health") or {}
        latency = f"{health['latency_ms']:.0f}ms" if "latency_ms" in health else "-"
        table.add_row(
            clean(c["name"]),
            clean(c["status"]),
            _short(clean(c["release"]) if c.get("release") else None),
            _short(clean(c["previous_release"]) if c.get("previous_release") else None),
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
