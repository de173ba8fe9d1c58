"""`shipyard changes`: changed files → affected components, with reasons, and breaking changes.

Kept light at import time: the service (and with it the store) is imported when the command
runs, and the store is opened only when the base comes from the last good deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.output import CliState, command, state
from shipyard.cli.safe import styled

if TYPE_CHECKING:
    from shipyard.core.changes import ChangeReport


@command
def changes(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option("--env", "-e", help="Environment (default: project.default_environment)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Compare from this ref (default: the last good deployment's commit)."
        ),
    ] = None,
    ref: Annotated[str, typer.Option("--ref", help="The git ref to compare to.")] = "HEAD",
) -> None:
    """Which components a git change affects, why, and whether a partial deploy is safe.

    Lists changed files, affected components with their reasons (dependents included),
    breaking changes (new or destructive migrations, API contract changes, newly required
    secrets, graph changes) and files that belong to no component. Exits 2 for a bad ref.
    """
    from shipyard.service import Shipyard

    cli = state(ctx)
    report = Shipyard(cli.project_dir).changes(since=since, ref=ref, env_name=env)
    if cli.json:
        cli.emit_json(report.to_dict())
    else:
        render(cli, report)


def render(cli: CliState, report: ChangeReport) -> None:
    """The report as people read it: a header, a table of components, then the rest."""
    from rich.table import Table
    from rich.text import Text

    from shipyard.core.changes import shown_path

    out = cli.out
    since = report.base[:12] if report.base else "nothing (no base)"
    out.print(
        cli.text(
            f"changes from {since} to {report.head[:12]}: {len(report.changed_files)} file(s), "
            f"{len(report.affected)} component(s) affected"
        )
    )
    for note in report.notes:
        out.print(styled(("note:", "yellow"), " ", cli.text(note)), soft_wrap=True)
    if report.why_full:
        out.print(styled(("full deploy:", "bold yellow"), " ", cli.text(report.why_full)))
    if report.affected:
        table = Table(box=None, header_style="bold")
        table.add_column("component", no_wrap=True)
        table.add_column("why")
        for name, reasons in report.affected.items():
            table.add_row(Text(cli.text(name)), Text(cli.text("\n".join(reasons))))
        out.print(table)
    for b in report.breaking:
        where = f" {b.component}" if b.component else ""
        out.print(
            styled(
                ("breaking", "bold red"),
                f" ({cli.text(b.kind)}{cli.text(where)}): {cli.text(b.detail)}",
            ),
            soft_wrap=True,
        )
    if report.unmatched:
        shown = [shown_path(p) for p in report.unmatched]
        out.print(
            cli.text(f"{len(shown)} changed file(s) belong to no component: ")
            + cli.text(", ".join(shown[:10]) + (" …" if len(shown) > 10 else ""))
        )
