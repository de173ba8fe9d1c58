"""Where the agent keeps its files under `<root>/agent/`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from typing import Iterator

from .errors import AgentRequestError

__all__ = ["AgentPaths", "check_name", "hold_pid_lock", "unix_address"]

# Component and release names become path segments (logs/<component>/<release>.log), so they are
# restricted to a safe alphabet: no separators, no leading dot, bounded length.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a safe component/release name, else raise `bad_args`."""
    if not _NAME.match(value):
        raise AgentRequestError(
            "bad_args",
            f"{kind} {value!r} is not a valid name",
            "use letters, digits, '.', '_' and '-' (at most 128 characters, no leading '.' or '-')",
        )
    return value


class AgentPaths:
    """The agent's files for one root: socket, state, its own log and the release logs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.dir = self.root / "agent"
        self.sock = self.dir / "agent.sock"
        self.state = self.dir / "state.json"
        self.log = self.dir / "agent.log"
        self.lock = self.dir / "agent.lock"
        self.logs = self.dir / "logs"

    def release_log(self, component: str, release: str) -> Path:
        """The log file a release's stdout and stderr go to."""
        return self.logs / component / f"{release}.log"

    def ensure(self) -> None:
        """Create the agent folder, private to this user (the state holds release secrets)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            self.logs.mkdir(exist_ok=True)
        except OSError as exc:
            raise AgentRequestError(
                "root_unusable",
                f"cannot create the agent folder {self.dir}: {exc.strerror or exc}",
                "pass a --root you can write to",
            ) from exc


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind()/connect() to the unix socket `path`, however deep it is.

    Socket addresses are limited to 107 bytes; for a longer path the folder is opened and the
    socket named through /proc/self/fd/<fd>/, which is short and means the same file.
    """
    text = str(path)
    if len(os.fsencode(text)) < 100:
        yield text
        return
    fd = os.open(str(path.parent), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def hold_pid_lock(path: Path, root: Path, holder: str, wait: float = 0.0) -> int:
    """Lock `path` for this process (its pid written in it) and return the descriptor to keep.

    One agent per root: when another process holds the lock (retried for `wait` seconds, for
    a predecessor still winding down), `already_running` names its pid (`holder`, e.g. "pid"
    or "keeper pid"). The lock lasts as long as the descriptor stays open.
    """
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            try:
                other = os.read(fd, 32).decode().strip() or "?"
            finally:
                os.close(fd)
            raise AgentRequestError(
                "already_running",
                f"another agent ({holder} {other}) is already running for {root}",
                f"stop it first: shipyard agent stop --root {root}",
            ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
