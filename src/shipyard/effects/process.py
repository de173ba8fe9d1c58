"""The one command runner: timeouts, output capture, and errors that show what happened.

Every build, test and migration command goes through `run_command`, so they all
fail the same way: a `CommandFailed` naming the command, where it ran, its exit
code (or that it timed out) and the last lines of its output, redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from shipyard.errors import CommandFailed

TAIL_LINES = 20
SHOWN_LINE = 2000  # characters of one output line kept in the tail (the log has it all)
LINE_LIMIT = 1 << 20  # bytes read before a line without a newline is cut


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
