"""`shipyard promote --from E1 --to E2`: deploy to E2 exactly what a deployment of E1 released."""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.cli.output import command, state


@command
def promote(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", help="The environment that was tested.")],
    target: Annotated[str, typer.Option("--to", help="The environment to deploy it to.")],
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", help="Which deployment of --from (default: its last good)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Deploy to --to the artifacts (by digest) and release specs of a --from deployment.

    Nothing is rebuilt; the releases get --to's own secrets and per-environment settings
    and pass --to's preflight first. Exit codes as for deploy.
    """
    from shipyard.cli.app import _confirm, _run_deployment
    from shipyard.service import Shipyard

    cli = state(ctx)
    svc = Shipyard(cli.project_dir)
    plan = svc.plan_promote(source, target, deployment)
    cli.redact = svc.redactor(target)
    _confirm(cli, svc, target, yes, f"promote {plan.promoted_from} of {source} to {target}")
    if not cli.json:
        cli.out.print(cli.text(plan.to_text()))
    _run_deployment(
        cli,
        svc,
        list(plan.components),
        lambda: svc.promote(source, target, plan.promoted_from),
    )
