"""Rendering for the CLI: Rich for people, JSON for scripts, one error handler for both."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shipyard.errors import ShipyardError

INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: a bug in shipyard, not in the user's input


@dataclass
class CliState:
    """Global options, shared by every command through typer's context."""

    project_dir: Path = Path(".")
    json: bool = False
    verbose: bool = False
    out: Console = field(default_factory=lambda: _console(sys.stdout, stderr=False))
    err: Console = field(default_factory=lambda: _console(sys.stderr, stderr=True))

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _console(stream: object, *, stderr: bool) -> Console:
    # Rich assumes 80 columns when output is piped; logs and CI want whole lines instead.
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(stderr=stderr, highlight=False, width=None if is_tty else 160)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState), "the root callback sets the CLI state"
    return obj


@contextmanager
def handle_errors(cli: CliState) -> Iterator[None]:
    """Turn every error into a message (or `{"error": …}`) and the exit code of cli.md."""
    try:
        yield
    except ShipyardError as exc:
        if cli.json:
            cli.emit_json({"error": exc.to_dict()})
        else:
            cli.err.print(f"[bold red]error:[/] {exc.message}", markup=True, soft_wrap=True)
            if exc.hint:
                cli.err.print(f"[yellow]hint:[/] {exc.hint}", markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        cli.err.print("interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --verbose
        message = f"internal error: {type(exc).__name__}: {exc}"
        hint = "this is a bug in shipyard; rerun with --verbose and report the traceback"
        if cli.json:
            cli.emit_json({"error": {"type": "InternalError", "message": message, "hint": hint}})
        else:
            cli.err.print(f"error: {message}\nhint: {hint}", markup=False)
        if cli.verbose:
            traceback.print_exc()
        raise typer.Exit(INTERNAL_ERROR_EXIT) from None


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a command body inside the shared error handler (first argument: typer.Context)."""
    import functools

    @functools.wraps(fn)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> None:
        with handle_errors(state(ctx)):
            fn(ctx, *args, **kwargs)

    return wrapper
