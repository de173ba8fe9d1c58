"""`shipyard`: every command is a thin function over `service.Shipyard`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from shipyard import __version__
from shipyard.cli.output import CliState, command, state
from shipyard.service import Shipyard

app = typer.Typer(
    name="shipyard",
    help=(
        "Deploy a multi-component application as one unit: build once, migrate, start in "
        "dependency order with health checks, switch with zero downtime, or roll everything back."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shipyard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Path,
        typer.Option("-C", "--project", help="The project folder (holding shipyard.toml)."),
    ] = Path("."),
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options come before the command: `shipyard -C examples/shop --json graph`."""
    ctx.obj = CliState(project_dir=project, json=json_output, verbose=verbose)


def _service(ctx: typer.Context) -> Shipyard:
    return Shipyard(state(ctx).project_dir)


@app.command()
@command
def validate(ctx: typer.Context) -> None:
    """Check shipyard.toml: schema, dependency graph, component paths and ports.

    Exits 0 when valid, 2 with the file, line and key of the first problem otherwise.
    """
    cli = state(ctx)
    report = _service(ctx).validate()
    if cli.json:
        cli.emit_json(report.to_dict())
        return
    cli.out.print(f"[green]✓[/] {report.file} is valid", markup=True)
    cli.out.print(
        f"  project {report.project}: {len(report.components)} components "
        f"({', '.join(report.components)}), environments: {', '.join(report.environments)}"
    )
    levels = " → ".join("[" + ", ".join(level) + "]" for level in report.levels)
    cli.out.print(f"  deploy order: {levels}", markup=False)


class GraphFormat(StrEnum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


@app.command()
@command
def graph(
    ctx: typer.Context,
    fmt: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="text, mermaid, dot or json.")
    ] = GraphFormat.text,
) -> None:
    """Show the dependency graph and its levels (components in one level deploy in parallel)."""
    cli = state(ctx)
    g = _service(ctx).graph()
    if cli.json or fmt is GraphFormat.json:
        cli.emit_json(g.to_dict())
        return
    rendered = {"text": g.to_text, "mermaid": g.to_mermaid, "dot": g.to_dot}[fmt.value]()
    cli.out.print(rendered, markup=False)


def main() -> None:
    """Console-script entry point."""
    app()
