"""`shipyard gc`: remove artifacts and Python environments no release can need any more."""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.cli.output import command, state


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


@command
def gc(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option(
            "--env", "-e", help="Also prune this environment's old release folders first."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
) -> None:
    """Remove artifacts and Python environments that no kept release, rollback target or
    other environment's active release needs (also run after each successful deploy)."""
    from shipyard.service import Shipyard  # heavy: imported when the command runs

    cli = state(ctx)
    svc = Shipyard(cli.project_dir)
    report = svc.gc(env, dry_run=dry_run)
    if cli.json:
        cli.emit_json(report.to_dict())
        return
    if report.skipped:
        cli.out.print(cli.text(f"nothing removed: {report.skipped}; run gc again after it"))
        return
    verb = "would remove" if dry_run else "removed"
    for item in report.artifacts:
        cli.out.print(cli.text(f"{verb} artifact {item}"))
    for item in report.pyenvs:
        cli.out.print(cli.text(f"{verb} python environment {item}"))
    cli.out.print(
        cli.text(
            f"{verb} {len(report.artifacts)} artifacts and {len(report.pyenvs)} python "
            f"environments: {_size(report.freed_bytes)} freed"
        )
    )
