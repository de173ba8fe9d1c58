"""The one command runner: timeouts, output capture, and errors that show what happened.

Every build, test and migration command goes through `run_command`, so they all
fail the same way: a `CommandFailed` naming the command, where it ran, its exit
code (or that it timed out) and the last lines of its output, redacted.

Every child process (build, test, migration, release) gets its environment from
`child_environment`: shipyard's own interpreter, venv, PYTHONPATH and VIRTUAL_ENV never
reach an application, so `python` there is the system's (or the component's own
environment's), and a missing requirement is not hidden by one of shipyard's packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from shipyard.errors import CommandFailed

TAIL_LINES = 20
SHOWN_LINE = 2000  # characters of one output line kept in the tail (the log has it all)
LINE_LIMIT = 1 << 20  # bytes read before a line without a newline is cut


# Variables through which an interpreter or a venv imposes itself on the processes it starts.
INTERPRETER_VARIABLES = frozenset(
    {
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONEXECUTABLE",
        "__PYVENV_LAUNCHER__",
    }
)


def own_interpreter_folders(environ: Mapping[str, str]) -> set[str]:
    """The bin/ folders of shipyard's own venv (and of an activated one): never on a child's
    PATH. A system interpreter running shipyard without a venv is the system's: its folder
    (/usr/bin) stays where the user put it."""
    folders = set()
    if sys.prefix != sys.base_prefix:  # shipyard runs from a venv
        folders.add(os.path.join(sys.prefix, "bin"))
        folders.add(os.path.dirname(sys.executable))
    if environ.get("VIRTUAL_ENV"):
        folders.add(os.path.join(environ["VIRTUAL_ENV"], "bin"))
    return {os.path.realpath(f) for f in folders}


def child_path(
    environ: Mapping[str, str] | None = None,
    *,
    first: Iterable[str] = (),
    shims: Path | None = None,
) -> str:
    """PATH for a child process: `first` (a component environment's bin/), then the user's
    PATH without shipyard's venv. When that PATH has a `python3` but no `python` (a fresh
    Debian), `shims` gets a `python` link to it and goes last, so `python app.py` runs the
    system's interpreter there too."""
    environ = os.environ if environ is None else environ
    excluded = own_interpreter_folders(environ)
    rest = [
        p
        for p in environ.get("PATH", os.defpath).split(os.pathsep)
        if p and os.path.realpath(p) not in excluded
    ]
    parts = [*first, *rest]
    path = os.pathsep.join(dict.fromkeys(parts))
    if shims is not None and shutil.which("python", path=path) is None:
        python3 = shutil.which("python3", path=path)
        if python3 is not None:
            _link_python(shims, python3)
            path = os.pathsep.join([path, str(shims)])
    return path


def _link_python(shims: Path, python3: str) -> None:
    link = shims / "python"
    with contextlib.suppress(OSError):
        if os.readlink(link) == python3:
            return
    shims.mkdir(parents=True, exist_ok=True)
    tmp = shims / f".python.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(python3)
    os.replace(tmp, link)


def child_environment(
    environ: Mapping[str, str] | None = None,
    *,
    first: Iterable[str] = (),
    shims: Path | None = None,
) -> dict[str, str]:
    """`environ` (default: this process's) as a child process gets it: without the
    interpreter variables and shipyard's venv on PATH (see `child_path`)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k not in INTERPRETER_VARIABLES}
    env["PATH"] = child_path(environ, first=first, shims=shims)
    return env


@dataclass(frozen=True)
class CommandResult:
    """A finished command: exit code, duration and the tail of its combined output."""

    command: str
    returncode: int
    duration_s: float
    tail: list[str]


async def run_command(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    where: str = "",
    redact: Callable[[str], str] = lambda line: line,
    on_line: Callable[[str], None] | None = None,
    log_path: Path | None = None,
) -> CommandResult:
    """Run `command` with /bin/sh in `cwd`; raise CommandFailed unless it exits 0 in time.

    Output is read line by line, passed through `redact` before it is kept, logged
    or shown, so a command that echoes a secret never leaks it.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # so a timeout can kill the whole process group
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    log = _open_log(log_path) if log_path else None

    def emit(raw: bytes) -> None:
        # Redacted whole, before it is shortened: a cut could leave half a secret behind.
        line = redact(raw.decode("utf-8", "replace").rstrip("\r"))
        if log:
            log.write(line + "\n")
        if len(line) > SHOWN_LINE:
            line = line[:SHOWN_LINE] + f"… ({len(line) - SHOWN_LINE} more characters)"
        tail.append(line)
        if on_line:
            on_line(line)

    async def pump() -> None:
        # Lines are split here rather than with readline(), which fails on lines over 64 KiB.
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                emit(raw)
            if len(pending) > LINE_LIMIT:  # no newline in sight: show it as it is so far
                emit(pending)
                pending = b""
        if pending:
            emit(pending)

    gathered = asyncio.gather(pump(), process.wait())
    # Ctrl-C makes asyncio.run cancel every task, the reader's too: the gather then holds a
    # CancelledError nobody awaits, which asyncio would print as a traceback at exit.
    gathered.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        await asyncio.wait_for(gathered, timeout)
    except TimeoutError:
        raise CommandFailed(
            command,
            exit_code=None,
            output_tail=list(tail),
            where=where,
            hint=f"it ran longer than {timeout:g}s; raise the step's deadline or speed it up",
        ) from None
    finally:
        if process.returncode is None:  # timed out or cancelled: take the whole group down
            _kill_group(process.pid)
            await asyncio.shield(process.wait())
        if log:
            log.close()
    duration = loop.time() - started
    if process.returncode != 0:
        raise CommandFailed(
            command,
            exit_code=process.returncode,
            output_tail=list(tail),
            where=where,
            hint="fix the command or its inputs; the lines above are the end of its output",
        )
    return CommandResult(command, 0, duration, list(tail))


def _open_log(path: Path) -> TextIO:
    # A log holds what a command printed: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
