"""Release log files: append-only, rotated by size with copy + truncate.

The release process writes straight into the file (its stdout/stderr are an O_APPEND file
descriptor, not a pipe to the agent), so it keeps logging, and never gets SIGPIPE, while the agent
is down or being restarted. Rotation therefore copies the file aside and truncates it in place;
thanks to O_APPEND the process's next write lands at the new end. Lines written between the copy
and the truncate can be lost; that is the usual price of copytruncate.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import List

__all__ = ["LogPolicy", "append_marker", "open_for_process", "rotate_if_needed", "tail"]


class LogPolicy:
    """How big a release log may grow and how many rotated copies to keep."""

    def __init__(self, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        self.max_bytes = max_bytes
        self.backups = backups


def open_for_process(path: Path) -> int:
    """An O_APPEND descriptor for a child's stdout and stderr (the caller closes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def append_marker(path: Path, text: str) -> None:
    """Add one agent line (start, exit, restart) so the log tells the release's story."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    fd = open_for_process(path)
    try:
        os.write(fd, f"--- shipyard-agent {stamp}: {text}\n".encode())
    finally:
        os.close(fd)


def rotate_if_needed(path: Path, policy: LogPolicy) -> bool:
    """Rotate `path` to `path.1` … `path.N` when it is larger than the policy allows."""
    try:
        if os.stat(path).st_size <= policy.max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(policy.backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    if policy.backups > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def _tail_one(path: Path, lines: int) -> List[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            block = 8192
            data = b""
            # Read backwards until there are enough newlines (or the file is exhausted).
            while end > 0 and data.count(b"\n") <= lines:
                start = max(0, end - block)
                f.seek(start)
                data = f.read(end - start) + data
                end = start
                block *= 2
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:] if lines > 0 else []


def tail(path: Path, lines: int) -> List[str]:
    """The last `lines` lines of a release log, reaching into `path.1` if the file is short."""
    result = _tail_one(path, lines)
    if len(result) < lines:
        older = _tail_one(path.with_name(f"{path.name}.1"), lines - len(result))
        result = older + result
    return result
