"""The migrate and test stages of a deployment: what they check, run and journal.

Kept out of the runner so the runner stays the state machine: it calls these with what they
need (a journal, the release's env, the options) and handles a failure like any step's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shipyard.config import Component
from shipyard.effects.git import Repo
from shipyard.effects.migrations import MigrationState
from shipyard.effects.migrations.sql import SqlMigrator
from shipyard.effects.process import run_command
from shipyard.errors import PreflightError
from shipyard.targets.base import Target

Journal = Callable[..., None]


def describe_pending(state: MigrationState) -> str:
    """One line for the journal: where the schema is, where it goes, and each pending step."""
    if not state.listed:
        down = "" if state.reversible else " (no `down` command: cannot be undone)"
        return f"schema at {state.current or '(none)'}; `up` applies what is pending{down}"
    if not state.pending:
        return f"schema at {state.current or '(none)'}: nothing pending"
    steps = []
    for step in state.pending:
        notes = ([] if step.reversible else ["irreversible"]) + list(step.destructive)
        steps.append(step.label + (f" [{'; '.join(notes)}]" if notes else ""))
    return (
        f"schema {state.current or '(none)'} → {state.head or '(none)'}: "
        f"{len(steps)} pending: {', '.join(steps)}"
    )


def sql_state_at(
    *,
    repo: Repo,
    project_prefix: str,
    comp: Component,
    commit: str,
    work_tree: bool,
    target: Target,
    env: Mapping[str, str],
) -> MigrationState:
    """The pending `sql` migrations of `comp` at `commit`, against its database now.

    Read before anything is built: the files come from git (the work tree's with
    `work_tree`), the revision from the database the current release uses. Only `sql` can be
    read this early; the other tools need the new release's code and Python, so their steps
    are read (and checked) by the migrate step.
    """
    assert comp.migrations is not None and comp.migrations.tool == "sql"
    relative = "/".join(p for p in (project_prefix, comp.path, comp.migrations.dir) if p)
    current = target.current(comp.name) or ""
    revision = target.migration_revision(comp.name, current, comp.migrations, env)
    with tempfile.TemporaryDirectory(prefix="shipyard-migrations-") as tmp:
        if work_tree:
            folder = repo.toplevel() / relative
        else:
            repo.export(commit, Path(tmp), prefix=relative)
            folder = Path(tmp) / relative
        # The database is not opened again: the revision above is the current release's view.
        state = SqlMigrator(folder, "", Path(tmp)).state_from(revision)
    return state


def check_migrations(
    component: str, state: MigrationState, *, allow_destructive: bool, allow_irreversible: bool
) -> None:
    """Refuse destructive or irreversible pending steps unless the deploy allows them."""
    destructive = [s for s in state.pending if s.destructive]
    if destructive and not allow_destructive:
        found = "; ".join(f"{s.revision}: {', '.join(s.destructive)}" for s in destructive)
        raise PreflightError(
            f"{component}: pending migrations destroy data ({found})",
            hint="migrations run while the current release still serves: split it, expand now "
            "(add the new column or table, keep the old one) and contract (drop or rename) in a "
            "later deploy, once no running release uses it; or, if losing that data is "
            "intended, deploy with --allow-destructive",
        )
    irreversible = state.irreversible()
    if irreversible and not allow_irreversible:
        raise PreflightError(
            f"{component}: pending {state.tool} migrations cannot be undone on rollback: "
            f"{', '.join(irreversible)}",
            hint="give them a down step, or deploy with --allow-irreversible (a rollback then "
            "restores the code and leaves the schema where it is)",
        )


async def run_tests(
    *,
    component: str,
    stage: str,
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    redact: Callable[[str], str],
    journal: Journal,
    step: str,
) -> None:
    """Run one component's test stage; journal its outcome with the tail of its output.

    A failure raises CommandFailed (the tail is in its message, so the failed step's record
    shows it); a success is journaled as a `tests` event with the last lines it printed.
    """
    urls = {k: v for k, v in env.items() if k.startswith("SHIPYARD_URL_")}
    journal(
        "tests",
        step=step,
        component=component,
        status="running",
        message=f"{stage}: `{command}`"
        + (f" against {', '.join(f'{k}={v}' for k, v in sorted(urls.items()))}" if urls else ""),
    )
    result = await run_command(
        command,
        cwd=cwd,
        env=env,
        timeout=timeout,
        where=f"{stage} tests of {component}",
        redact=redact,
    )
    data: dict[str, Any] = {"stage": stage, "duration_s": round(result.duration_s, 3)}
    journal(
        "tests",
        step=step,
        component=component,
        status="passed",
        message=f"{stage} passed" + (f": {result.tail[-1]}" if result.tail else ""),
        data={**data, "tail": result.tail[-5:]},
    )
