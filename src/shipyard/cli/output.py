"""Rendering for the CLI: Rich for people, JSON for scripts, one error handler for both."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from shipyard.cli.safe import styled, visible
from shipyard.errors import ShipyardError

if TYPE_CHECKING:
    from rich.console import Console

    from shipyard.core.secrets import Redactor

INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: a bug in shipyard, not in the user's input


class CliState:
    """Global options, shared by every command through typer's context.

    The consoles are made on first use (`out`, `err`): `--help` and `--json` never import
    Rich's console. `redact` holds every known secret value of the environment at hand, set
    by a command as soon as it knows the environment: whatever reaches stdout or stderr
    passes it. It is made on first use too: until a command sets or reads it, no secret is
    known and text passes as it is (without importing the redactor's module).
    """

    def __init__(
        self,
        project_dir: Path = Path("."),
        json: bool = False,
        verbose: bool = False,
        *,
        out: Console | None = None,
        err: Console | None = None,
        redact: Redactor | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.json = json
        self.verbose = verbose
        self._redact = redact
        self._out = out
        self._err = err
        self.shown = Shown(self.text)

    @property
    def redact(self) -> Redactor:
        if self._redact is None:
            from shipyard.core.secrets import Redactor

            self._redact = Redactor()
        return self._redact

    @redact.setter
    def redact(self, redactor: Redactor) -> None:
        self._redact = redactor

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = make_console(stderr=False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = make_console(stderr=True)
        return self._err

    def text(self, value: object) -> str:
        """Untrusted text, ready for a console: redacted, control characters made visible."""
        text = str(value)
        return visible(self._redact(text) if self._redact is not None else text)

    def emit_json(self, data: Any) -> None:
        """One JSON document on stdout, every string in it redacted."""
        sys.stdout.write(json.dumps(self._redacted(data), indent=2) + "\n")

    def emit_json_line(self, data: Any) -> None:
        """One compact JSON document on a line of its own (a stream of events)."""
        sys.stdout.write(json.dumps(self._redacted(data)) + "\n")
        sys.stdout.flush()

    def _redacted(self, data: Any) -> Any:
        # Through JSON once first, so every value is a plain str/number/list/dict.
        plain = json.loads(json.dumps(data, default=str))
        return self._redact.data(plain) if self._redact is not None else plain

    def error(self, message: str, hint: str | None) -> None:
        """The `error:` (and `hint:`) lines on stderr; the text is never read as markup."""
        text = self.text(message)
        if self.shown.elide(text) != text:
            # Its reason was printed above with its details (a log tail): stderr still says
            # what failed and why, in the message's first line, and points at the rest.
            first, _, rest = text.partition("\n")
            text = first + (" (details above)" if rest else "")
        self.err.print(styled(("error:", "bold red"), " ", text), soft_wrap=True)
        if hint:
            self.err.print(styled(("hint:", "yellow"), " ", self.text(hint)), soft_wrap=True)


class Shown:
    """What a command has already printed, so a long reason is not printed again."""

    SEE_ABOVE = "(see above)"
    SHORTEST = 20  # a shorter reason is repeated rather than pointed at

    def __init__(self, clean: Callable[[object], str]) -> None:
        self.clean = clean
        self._texts: list[str] = []

    def add(self, text: str) -> None:
        if len(text) >= self.SHORTEST and text not in self._texts:
            self._texts.append(text)
            self._texts.sort(key=len, reverse=True)

    def elide(self, text: str) -> str:
        """`text` with every already printed reason in it replaced by a pointer to it.

        When all of it was printed already, its first line is kept (it still has to say
        something) and the pointer is to the rest.
        """
        elided = text
        for shown in self._texts:
            if shown in elided:
                elided = elided.replace(f": {shown}", f" {self.SEE_ABOVE}")
                elided = elided.replace(shown, self.SEE_ABOVE)
        if elided.strip() == self.SEE_ABOVE:
            first, _, rest = text.partition("\n")
            return first + (" (details above)" if rest else "")
        return elided


def make_console(*, stderr: bool, file: IO[str] | None = None) -> Console:
    """A console for stdout or stderr (or `file`) that prints text exactly as given."""
    from rich.console import Console

    stream = file or (sys.stderr if stderr else sys.stdout)
    # Rich assumes 80 columns when output is piped; logs and CI want whole lines instead.
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    # No markup, no emoji codes, no highlighting: a plain string is printed as it is, so
    # text from outside (`[/data/in]`, `:warning:`) can never be read as formatting.
    return Console(
        file=file,
        stderr=stderr,
        markup=False,
        emoji=False,
        highlight=False,
        width=None if is_tty else 160,
    )


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState), "the root callback sets the CLI state"
    return obj


@contextmanager
def handle_errors(cli: CliState) -> Iterator[None]:
    """Turn every error into a message (or `{"error": …}`) and the exit code of docs/cli.md."""
    try:
        yield
    except ShipyardError as exc:
        if cli.json:
            cli.emit_json({"error": exc.to_dict()})
        else:
            cli.error(exc.message, exc.hint)
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
            cli.error(message, hint)
        if cli.verbose:
            cli.err.print(cli.text(traceback.format_exc()), soft_wrap=True)
        raise typer.Exit(INTERNAL_ERROR_EXIT) from None


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a command body inside the shared error handler (first argument: typer.Context)."""
    import functools

    @functools.wraps(fn)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> None:
        with handle_errors(state(ctx)):
            fn(ctx, *args, **kwargs)

    return wrapper
