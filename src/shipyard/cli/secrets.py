"""`shipyard secrets check|scan`: what is wrong with the secrets, and where they leaked.

Heavy imports (the service, the scanner) happen inside the commands: `shipyard --help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.output import command, state
from shipyard.cli.safe import styled

if TYPE_CHECKING:
    from shipyard.cli.output import CliState
    from shipyard.core.secrets import SecretsReport

secrets_app = typer.Typer(
    help="Check the secrets of each environment; scan for leaked credentials.",
    no_args_is_help=True,
)

# Exit code of a check that found an error (docs/cli.md: 3, like a refused preflight).
FOUND_ERRORS = 3


@secrets_app.command("check")
@command
def secrets_check(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option("--env", "-e", help="One environment (default: every environment)."),
    ] = None,
) -> None:
    """Presence, format, rules and environment match of the secrets; never shows a value.

    Exits 3 when a finding is an error (every finding is listed), 0 otherwise.
    """
    from shipyard.service import Shipyard

    cli = state(ctx)
    svc = Shipyard(cli.project_dir)
    cli.redact = svc.redactor_all()
    report = svc.secrets_check(env)
    _render(cli, report, f"secrets of {', '.join(report.checked)}")


@secrets_app.command("scan")
@command
def secrets_scan(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files or folders (default: the project folder, its build "
            "artifacts and shipyard's logs)."
        ),
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Also scan the lines every commit added.")
    ] = False,
) -> None:
    """Find leaked credentials: known token formats, and the values of every environment's
    secrets. Works on any folder, with or without shipyard.toml or git.

    Exits 3 when a finding is an error, 0 otherwise. Findings name rule, kind, file:line and
    a fingerprint, never the value; `shipyard:allow` on a line or a `.shipyardignore` of
    paths and fingerprints allows what is meant to be there.
    """
    from shipyard.service import Shipyard

    cli = state(ctx)
    svc = Shipyard(cli.project_dir)
    if (cli.project_dir / "shipyard.toml").exists():
        cli.redact = svc.redactor_all()
    for path in paths or []:
        if not path.exists():
            from shipyard.errors import UsageError

            raise UsageError(f"{path}: no such file or folder")
    report = svc.secrets_scan(list(paths) if paths else None, history=history)
    cli.redact.add(svc.scanned_secrets)
    _render(cli, report, f"leak scan of {len(report.checked)} place(s)")


def _render(cli: CliState, report: SecretsReport, what: str) -> None:
    if cli.json:
        cli.emit_json(report.to_dict())
    else:
        errors = len(report.errors)
        warnings = len(report.findings) - errors
        for finding in sorted(report.findings, key=lambda f: f.severity != "error"):
            mark = ("error:", "bold red") if finding.severity == "error" else ("warning:", "yellow")
            cli.out.print(
                styled(mark, " ", cli.text(_line(finding.location, finding.rule, finding.message))),
                soft_wrap=True,
            )
        counted = f"{errors} error(s)" if errors else "no error"
        counted += f", {warnings} warning(s)" if warnings else ""
        mark = ("✓", "green") if report.ok else ("✗", "bold red")
        cli.out.print(styled(mark, " ", cli.text(f"{what}: {counted}")), soft_wrap=True)
    if not report.ok:
        raise typer.Exit(FOUND_ERRORS)


def _line(location: str, rule: str, message: str) -> str:
    """`location [rule] message`, the location once (some messages start with it)."""
    if message.startswith(location) or location in message.split(": ", 2)[:2]:
        return f"[{rule}] {message}"
    return f"{location} [{rule}] {message}"
