"""`shipyard`: every command is a thin function over `service.Shipyard`.

Start-up rule: this module and the command modules it registers import only typer, the CLI
helpers and `shipyard.errors` at their top. The service, the store (SQLAlchemy), the engine,
the agent and Rich's tables are imported inside the command functions that use them, so
`--help` or `validate` do not pay for `deploy` (docs/architecture.md, "Start-up";
tests/e2e/test_cli_imports.py checks it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from shipyard import __version__
from shipyard.cli.output import CliState, command, state
from shipyard.cli.safe import styled
from shipyard.core.durations import parse_duration
from shipyard.errors import (
    AgentError,
    DeploymentFailed,
    RollbackFailed,
    ShipyardError,
    UsageError,
)

if TYPE_CHECKING:
    from rich.table import Table

    from shipyard.core.plan import Plan, Selection
    from shipyard.service import ComponentHealth, DeploymentView, Shipyard

app = typer.Typer(
    name="shipyard",
    help=(
        "Deploy a multi-component application as one unit: build once, migrate, start in "
        "dependency order with health checks, switch with zero downtime, or roll everything back."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help page: Typer's Rich help imports Rich's Markdown and markdown-it,
    # about 40 ms of every `--help`.
    rich_markup_mode=None,
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
    from shipyard.service import Shipyard

    return Shipyard(state(ctx).project_dir)


def _table() -> Table:
    """A borderless Rich table (Rich's table module is imported only when one is shown)."""
    from rich.table import Table

    return Table(box=None, header_style="bold")


def _notices(cli: CliState, svc: Shipyard) -> None:
    """What the service noticed on the way (a restarted agent), on stderr in every mode."""
    for notice in svc.notices:
        cli.err.print(styled(("note:", "yellow"), " ", cli.text(notice)), soft_wrap=True)


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
    cli.out.print(styled(("✓", "green"), f" {cli.text(report.file)} is valid"))
    cli.out.print(
        cli.text(
            f"  project {report.project}: {len(report.components)} components "
            f"({', '.join(report.components)}), environments: {', '.join(report.environments)}"
        )
    )
    levels = " → ".join("[" + ", ".join(level) + "]" for level in report.levels)
    cli.out.print(cli.text(f"  deploy order: {levels}"))


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
    cli.out.print(cli.text(rendered))


EnvOption = Annotated[
    str | None,
    typer.Option("--env", "-e", help="Environment (default: project.default_environment)."),
]


class TestsChoice(StrEnum):
    none = "none"
    smoke = "smoke"
    e2e = "e2e"
    full = "full"


def _selection(
    full: bool, changed: bool, only: str | None
) -> tuple[Selection | None, tuple[str, ...]]:
    chosen = [
        flag
        for flag, on in (("--full", full), ("--changed", changed), ("--only", bool(only)))
        if on
    ]
    if len(chosen) > 1:
        raise UsageError(f"choose one of {', '.join(chosen)}")
    if only:
        return "only", tuple(n.strip() for n in only.split(",") if n.strip())
    if full:
        return "full", ()
    if changed:
        return "changed", ()
    return None, ()


def _make_plan(
    svc: Shipyard,
    env: str | None,
    full: bool,
    changed: bool,
    only: str | None,
    ref: str,
    tests: TestsChoice | None,
    migrate: bool,
    allow_dirty: bool = False,
) -> Plan:
    selection, names = _selection(full, changed, only)
    return svc.plan(
        env,
        selection=selection,
        only=names,
        ref=ref,
        tests=tests.value if tests is not None else None,
        migrate=migrate,
        allow_dirty=allow_dirty,
    )


FullOpt = Annotated[bool, typer.Option("--full", help="Deploy every component.")]
ChangedOpt = Annotated[
    bool,
    typer.Option(
        "--changed", help="Deploy what changed since the last good deployment, and its dependents."
    ),
]
OnlyOpt = Annotated[
    str | None, typer.Option("--only", help="Deploy only these components (comma-separated).")
]
RefOpt = Annotated[str, typer.Option("--ref", help="The git ref to deploy.")]
TestsOpt = Annotated[
    TestsChoice | None,
    typer.Option(
        "--tests",
        help="Which tests run: none, smoke, e2e or full (default: the environment's `tests`).",
    ),
]
MigrateOpt = Annotated[
    bool, typer.Option("--migrate/--no-migrate", help="Run database migrations.")
]


@app.command()
@command
def plan(
    ctx: typer.Context,
    env: EnvOption = None,
    full: FullOpt = False,
    changed: ChangedOpt = False,
    only: OnlyOpt = None,
    ref: RefOpt = "HEAD",
    tests: TestsOpt = None,
    migrate: MigrateOpt = True,
) -> None:
    """Show what a deploy would do, without doing it.

    Without --full/--changed/--only: --changed when the environment has a last good
    deployment whose commit is reachable, --full otherwise (the plan says why).
    """
    cli = state(ctx)
    result = _make_plan(_service(ctx), env, full, changed, only, ref, tests, migrate)
    if cli.json:
        cli.emit_json(result.to_dict())
    else:
        cli.out.print(cli.text(result.to_text()))


def _confirm(cli: CliState, svc: Shipyard, env_name: str | None, yes: bool, what: str) -> None:
    env = svc.environment(env_name)
    if not env.protected or yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"environment {env.name!r} is protected: {what} needs confirmation",
            hint="pass --yes to confirm without a terminal",
        )
    if not typer.confirm(f"{env.name} is protected. {what}?", default=False, err=True):
        raise UsageError("not confirmed; nothing was changed")


@app.command()
@command
def deploy(
    ctx: typer.Context,
    env: EnvOption = None,
    full: FullOpt = False,
    changed: ChangedOpt = False,
    only: OnlyOpt = None,
    ref: RefOpt = "HEAD",
    tests: TestsOpt = None,
    migrate: MigrateOpt = True,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback", help="Leave a failed deployment as it failed.")
    ] = False,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="Build the work tree with its uncommitted changes."),
    ] = False,
    allow_destructive: Annotated[
        bool, typer.Option("--allow-destructive", help="Allow migrations that drop or rename.")
    ] = False,
    allow_irreversible: Annotated[
        bool, typer.Option("--allow-irreversible", help="Allow migrations without a down step.")
    ] = False,
    wait_lock: Annotated[
        str, typer.Option("--wait-lock", help="Wait this long for the lock (e.g. 30s, 5m).")
    ] = "0s",
) -> None:
    """Build, migrate, start in dependency order with health checks, switch; roll back on failure.

    Exit codes: 0 succeeded, 1 failed and rolled back, 2 usage/config, 3 preflight refused,
    4 locked by another deployment, 5 rollback failed.
    """
    cli = state(ctx)
    svc = _service(ctx)
    the_plan = _make_plan(svc, env, full, changed, only, ref, tests, migrate, allow_dirty)
    cli.redact = svc.redactor(the_plan.environment)
    _confirm(cli, svc, the_plan.environment, yes, f"deploy {the_plan.commit[:12]}")
    if not the_plan.components:
        if cli.json:
            cli.emit_json({**the_plan.to_dict(), "deployed": False})
        else:
            cli.out.print(cli.text(f"nothing to deploy: {the_plan.why}"))
        return
    if not cli.json:
        cli.out.print(cli.text(the_plan.to_text()))
    _run_deployment(
        cli,
        svc,
        list(the_plan.components),
        lambda: svc.deploy(
            the_plan,
            rollback=not no_rollback,
            allow_dirty=allow_dirty,
            allow_destructive=allow_destructive,
            allow_irreversible=allow_irreversible,
            wait_lock=_duration(wait_lock, "--wait-lock"),
        ),
    )


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _run_deployment(
    cli: CliState, svc: Shipyard, components: list[str], run: Callable[[], DeploymentView]
) -> None:
    from shipyard.cli.render import LiveProgress, deployment_summary

    progress = LiveProgress(cli.err if cli.json else cli.out, components, cli.shown)
    svc.sink = progress
    try:
        with progress:
            view = run()
    except (DeploymentFailed, RollbackFailed) as exc:
        if not progress.deployment:
            raise
        # The deployment record is the useful answer; under --json it carries the failure
        # too, so a script reads one document whatever happened.
        data = svc.deployment(progress.deployment).to_dict()
        if not cli.json:
            deployment_summary(cli.out, data, cli.shown)
            raise
        cli.emit_json({**data, "failure": exc.to_dict()})
        raise typer.Exit(exc.exit_code) from None
    _notices(cli, svc)
    if cli.json:
        cli.emit_json(view.to_dict())
    else:
        deployment_summary(cli.out, view.to_dict(), cli.shown)
        _print_urls(cli, svc, view)


def _print_urls(cli: CliState, svc: Shipyard, view: DeploymentView) -> None:
    env = svc.environment(view.record.environment)
    for name, comp in svc.config.components_for(env).items():
        if comp.port:
            cli.out.print(cli.text(f"  {name}: http://127.0.0.1:{comp.port}/"))


@app.command()
@command
def rollback(
    ctx: typer.Context,
    env: EnvOption = None,
    to: Annotated[str | None, typer.Option("--to", help="The deployment id to go back to.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Go back to the previous good deployment (or --to ID): a new deployment of kind rollback."""
    cli = state(ctx)
    svc = _service(ctx)
    cli.redact = svc.redactor(env)
    _confirm(cli, svc, env, yes, "roll back")
    _run_deployment(cli, svc, sorted(svc.config.components), lambda: svc.rollback(env, to=to))


@app.command()
@command
def status(
    ctx: typer.Context,
    deployment_id: Annotated[
        str | None, typer.Argument(help="A deployment id (or a unique prefix).")
    ] = None,
    env: EnvOption = None,
    disk: Annotated[
        bool,
        typer.Option("--disk", help="Measure the disk used now (default: as gc last measured)."),
    ] = False,
) -> None:
    """A deployment, or what is active now in an environment."""
    from shipyard.cli.render import deployment_summary

    cli = state(ctx)
    svc = _service(ctx)
    if deployment_id:
        view = svc.deployment(deployment_id)
        cli.redact = svc.redactor(view.record.environment)
        if cli.json:
            cli.emit_json(view.to_dict())
        else:
            deployment_summary(cli.out, view.to_dict(), cli.shown)
        return
    cli.redact = svc.redactor(env)
    report = svc.environment_status(env, measure_disk=disk)
    _notices(cli, svc)
    if cli.json:
        cli.emit_json(report)
        return
    cli.out.print(
        styled(
            "environment ",
            (cli.text(report["environment"]), "bold"),
            f", last good deployment {cli.text(report['last_good_deployment'] or '-')}",
        )
    )
    table = _table()
    for column in ("component", "release", "commit", "state", "healthy", "port", "pid"):
        table.add_column(column)
    for c in report["components"]:
        table.add_row(
            cli.text(c["name"]),
            cli.text(c["release"] or "-")[:13],
            cli.text(c["commit"] or "-")[:12],
            cli.text(c["state"]),
            "yes" if c["healthy"] else "no",
            cli.text(c["port"] or "-"),
            cli.text(c["pid"] or "-"),
        )
    cli.out.print(table)
    if disk:
        used = report["disk"]
        cli.out.print(
            f"disk: {used['total'] / 1e6:.1f} MB ("
            + ", ".join(
                f"{group} {used[group] / 1e6:.1f}"
                for group in ("environments", "artifacts", "releases", "cache")
            )
            + ")"
        )
    for failed in report.get("rollback_failed", []):
        cli.out.print(
            cli.text(
                f"deployment {failed['id']} is rollback_failed: {failed['error'] or '?'}\n"
                f"  run `shipyard recover --env {report['environment']}` to finish it"
            )
        )


@app.command()
@command
def history(
    ctx: typer.Context,
    env: EnvOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20,
) -> None:
    """Past deployments of an environment, newest first."""
    from rich.text import Text

    from shipyard.cli.render import STATUS_STYLE

    cli = state(ctx)
    svc = _service(ctx)
    cli.redact = svc.redactor(env)
    views = svc.history(env, limit)
    _notices(cli, svc)
    if cli.json:
        cli.emit_json([v.to_dict() for v in views])
        return
    table = _table()
    for column in ("id", "kind", "status", "commit", "started", "duration"):
        table.add_column(column, no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)
    for v in views:
        d = v.to_dict()
        status_text = cli.text(d["status"])
        duration = d["duration_s"]
        error = cli.text(d["error"] or "").splitlines()
        table.add_row(
            cli.text(d["id"])[:13],
            cli.text(d["kind"]),
            Text(status_text, style=STATUS_STYLE.get(status_text, "")),
            cli.text(d["commit"] or "-")[:12],
            cli.text(d["started_at"] or "-")[:19].replace("T", " "),
            f"{duration:.1f}s" if duration is not None else "-",
            error[0] if error else "",
        )
    cli.out.print(table)


@app.command()
@command
def logs(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(help="A deployment id (or a unique prefix).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until it finishes.")
    ] = False,
) -> None:
    """The deployment's event journal: every step start, finish and failure."""
    cli = state(ctx)
    svc = _service(ctx)
    cli.redact = svc.redactor(svc.deployment(deployment_id).record.environment)
    seq = 0
    while True:
        for event in svc.events(deployment_id, seq):
            seq = event.seq
            if cli.json:
                cli.emit_json_line(event.to_dict())
            else:
                where = " ".join(x for x in (event.step, event.component) if x)
                cli.out.print(
                    cli.text(
                        f"{event.at.isoformat(timespec='milliseconds')} {event.kind:<10} "
                        f"{where:<24} {event.status or '':<10} {event.message or ''}"
                    )
                )
        if not follow or svc.deployment(deployment_id).record.finished:
            return
        time.sleep(0.5)


@app.command()
@command
def health(ctx: typer.Context, env: EnvOption = None) -> None:
    """Run every component's health check now; exit 3 if one fails."""
    from shipyard.service import UnhealthyReport

    cli = state(ctx)
    svc = _service(ctx)
    cli.redact = svc.redactor(env)
    try:
        results, problem = svc.health(env), None
    except UnhealthyReport as report:
        results, problem = report.results, report
    _notices(cli, svc)
    if cli.json:
        cli.emit_json({"ok": problem is None, "components": [r.to_dict() for r in results]})
        if problem is not None:
            raise typer.Exit(problem.exit_code)
        return
    _health_table(cli, results)
    if problem is not None:
        raise problem


def _health_table(cli: CliState, results: list[ComponentHealth]) -> None:
    table = _table()
    for column in ("component", "release", "healthy", "status", "latency", "detail"):
        table.add_column(column)
    for r in results:
        d = r.to_dict()
        table.add_row(
            cli.text(d["name"]),
            cli.text(d["release"] or "-")[:13],
            "yes" if d["healthy"] else "no",
            cli.text(d.get("status") or "-"),
            f"{d['latency_ms']:.0f}ms" if "latency_ms" in d else "-",
            cli.text(d.get("detail", ""))[:60],
        )
    cli.out.print(table)


lock_app = typer.Typer(help="The per-environment deployment lock.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")


@lock_app.command("status")
@command
def lock_status(ctx: typer.Context, env: EnvOption = None) -> None:
    """Who holds the environment's lock, since when, and whether it expired."""
    cli = state(ctx)
    lock = _service(ctx).lock_status(env)
    if cli.json:
        cli.emit_json({"locked": lock is not None, "lock": lock.to_dict() if lock else None})
    elif lock is None:
        cli.out.print("not locked")
    else:
        data = lock.to_dict()
        cli.out.print(
            cli.text(
                f"locked by deployment {data['deployment_id']} ({data['owner']}) since "
                f"{data['acquired_at']}, expires {data['expires_at']}"
            )
        )


@lock_app.command("release")
@command
def lock_release(
    ctx: typer.Context,
    env: EnvOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Release a lock held by another deployment (recorded).")
    ] = False,
) -> None:
    """Release the environment's lock (needs --force; who forced it is recorded)."""
    cli = state(ctx)
    released = _service(ctx).lock_release(env, force=force)
    if cli.json:
        cli.emit_json({"released": released.to_dict() if released else None})
    else:
        cli.out.print(
            cli.text(f"released the lock of {released.deployment_id}" if released else "not locked")
        )


@app.command()
@command
def recover(ctx: typer.Context, env: EnvOption = None) -> None:
    """Finish the rollback of a deployment whose orchestrator died."""
    from shipyard.cli.render import deployment_summary

    cli = state(ctx)
    svc = _service(ctx)
    cli.redact = svc.redactor(env)
    views = svc.recover(env)
    if cli.json:
        cli.emit_json([v.to_dict() for v in views])
        return
    if not views:
        cli.out.print("nothing to recover")
    for v in views:
        deployment_summary(cli.out, v.to_dict(), cli.shown)


@app.command()
@command
def down(
    ctx: typer.Context,
    env: EnvOption = None,
    component: Annotated[
        str | None, typer.Option("--component", "-c", help="Only this component.")
    ] = None,
) -> None:
    """Stop an environment's processes and close its public ports."""
    cli = state(ctx)
    stopped = _service(ctx).down(env, component)
    if cli.json:
        cli.emit_json({"stopped": stopped})
    else:
        cli.out.print(
            cli.text("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        )


agent_app = typer.Typer(
    help="The host agent that supervises releases (normally started for you).", no_args_is_help=True
)
app.add_typer(agent_app, name="agent")
RootOpt = Annotated[Path, typer.Option("--root", help="The environment root the agent serves.")]


@agent_app.command("run")
@command
def agent_run(ctx: typer.Context, root: RootOpt) -> None:
    """Run the agent in the foreground (for systemd or debugging)."""
    from shipyard.agent.lifecycle import run_foreground

    run_foreground(root.resolve())


@agent_app.command("start")
@command
def agent_start(ctx: typer.Context, root: RootOpt) -> None:
    """Start the agent in the background; returns when it answers."""
    from shipyard.agent.lifecycle import start_background

    with _agent_boundary():
        info = start_background(root.resolve()).ping()
    _emit(
        state(ctx),
        info,
        f"agent running, pid {info.get('pid')} (keeper {info.get('keeper_pid')})",
    )


@agent_app.command("stop")
@command
def agent_stop(
    ctx: typer.Context,
    root: RootOpt,
    keep: Annotated[
        bool, typer.Option("--keep-processes", help="Leave the releases running.")
    ] = False,
) -> None:
    """Stop the agent (and, unless --keep-processes, every release it runs)."""
    from shipyard.agent.lifecycle import stop_agent

    root = root.resolve()
    with _agent_boundary():
        result = stop_agent(root, stop_processes=not keep)
    if not result["was_running"]:
        text = f"no agent was running for {root}"
    else:
        text = f"agent (pid {result['pid']}) stopped; releases stopped: " + (
            ", ".join(result["stopped"]) or "none"
        )
    _emit(
        state(ctx),
        {**result, "stopped": result["was_running"], "releases_stopped": result["stopped"]},
        text,
    )


@agent_app.command("status")
@command
def agent_status(ctx: typer.Context, root: RootOpt) -> None:
    """Whether the agent runs, and what it supervises and routes."""
    from shipyard.agent.lifecycle import agent_status as status_of

    with _agent_boundary():
        info = status_of(root.resolve())
    _emit(state(ctx), info, json.dumps(info, indent=2, default=str))
    if not info["running"]:
        raise typer.Exit(3)  # no agent answers: a monitoring script must be able to tell


@agent_app.command("install")
@command
def agent_install(
    ctx: typer.Context,
    root: RootOpt,
    user: Annotated[
        bool, typer.Option("--user", help="A user unit (~/.config/systemd/user), no root needed.")
    ] = False,
) -> None:
    """Write a systemd unit that keeps the agent running; enable it where systemd runs."""
    from shipyard.agent.cli import describe_install
    from shipyard.agent.lifecycle import install_agent

    with _agent_boundary():
        result = install_agent(root.resolve(), user=user)
    _emit(state(ctx), result, describe_install(result))


@contextmanager
def _agent_boundary() -> Iterator[None]:
    from shipyard.agent.errors import AgentRequestError

    try:
        yield
    except AgentRequestError as exc:
        raise AgentError(exc.message, code=exc.code, hint=exc.hint) from None


def _emit(cli: CliState, data: Any, text: str) -> None:
    if cli.json:
        cli.emit_json(data)
    else:
        cli.out.print(cli.text(text))


from shipyard.cli.changes import changes as _changes  # noqa: E402  (registered last)

app.command(name="changes")(_changes)
from shipyard.cli.promote import promote  # noqa: E402  (commands in modules of their own)
from shipyard.cli.secrets import secrets_app  # noqa: E402

app.command()(promote)
app.add_typer(secrets_app, name="secrets")
from shipyard.cli import mcp as _mcp  # noqa: E402 - registered last, light module

_mcp.register(app)


# Typer exports only BadParameter; its bases are click's UsageError and ClickException
# (click is vendored inside newer Typer releases, so they are reached this way).
_ClickUsageError = cast(type[Exception], typer.BadParameter.__bases__[0])
_ClickException = cast(type[Exception], _ClickUsageError.__bases__[0])


_GLOBAL_OPTIONS = ("-C", "--project", "--json", "--verbose", "-v")


from shipyard.cli.gc import gc as _gc  # noqa: E402

app.command(name="gc")(_gc)
from shipyard.cli.serve import serve  # noqa: E402 (a command module registers here)

app.command()(serve)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: every outcome, usage errors included, exits as docs/cli.md says.

    Typer's own handling of usage errors (a box on stderr) ignores --json, so the command
    runs in non-standalone mode and those errors are reported here like any other.
    """
    args = sys.argv[1:] if args is None else args
    # Parsing may fail before the root callback has seen --json, so it is looked up here.
    cli = CliState(json="--json" in (args[: args.index("--")] if "--" in args else args))
    command = typer.main.get_command(app)
    if cli.json:
        _no_help_pages(command)
    try:
        code = command.main(args, prog_name="shipyard", standalone_mode=False)
    except _ClickUsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # its message is the help page
            getattr(exc, "show", lambda: None)()
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "shipyard"
        message = getattr(exc, "format_message", exc.__str__)()
        hint = f"`{where} --help` shows the usage"
        if where != "shipyard" and any(f"option: {o}" in message for o in _GLOBAL_OPTIONS):
            hint = "global options come before the command, e.g. `shipyard --json status`"
        code = _report(cli, UsageError(message, hint=hint))
    except _ClickException as exc:
        code = _report(cli, UsageError(getattr(exc, "format_message", exc.__str__)()))
    except typer.Abort:
        code = _report(cli, UsageError("aborted; nothing was changed"))
    sys.exit(code if isinstance(code, int) else 0)


def _no_help_pages(command: Any) -> None:
    """Under --json a group called without its command is a usage error, not a help page."""
    command.no_args_is_help = False
    for sub in getattr(command, "commands", {}).values():
        _no_help_pages(sub)


def _report(cli: CliState, error: ShipyardError) -> int:
    if cli.json:
        cli.emit_json({"error": error.to_dict()})
    else:
        cli.error(error.message, error.hint)
    return error.exit_code
