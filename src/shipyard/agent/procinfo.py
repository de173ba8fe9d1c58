"""What Linux's /proc says about processes and sockets (read only, best effort)."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

__all__ = [
    "cmdline",
    "find_port_owner",
    "group_alive",
    "has_exited",
    "is_same_process",
    "rss_bytes",
    "start_ticks",
]


def _stat_fields(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> Optional[int]:
    """The process start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_same_process(pid: int, ticks: Optional[int]) -> bool:
    """True if `pid` is alive (not a zombie) and started at `ticks`, i.e. it was not reused."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return False
    return ticks is None or int(fields[19]) == ticks


def has_exited(pid: int, ticks: Optional[int]) -> bool:
    """True once every thread of `pid` is gone (so its files and sockets are closed).

    A killed multi-threaded process shows its main thread as a zombie while the other threads
    may still be exiting and holding the file table; is_same_process() is already False then.
    """
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return True
    if ticks is not None and int(fields[19]) != ticks:
        return True
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        if raw[raw.rfind(")") + 2 :][:1] not in ("Z", "X", "x"):
            return False
    return True


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for zombies nobody has reaped yet: look closer. The leader first
    # (a release's group is led by its main process): while it runs, that is the answer,
    # without reading every process's stat (which made N stops polling at once O(N²)).
    leader = _stat_fields(pgid)
    if leader and len(leader) > 3 and leader[2] == str(pgid) and leader[0] != "Z":
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and len(fields) > 3 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def cmdline(pid: int) -> str:
    """The command line of `pid`, space-joined, or '' if it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def rss_bytes(pid: int) -> Optional[int]:
    """Resident memory of `pid` in bytes (VmRSS)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _listening_inodes(port: int) -> List[str]:
    inodes: List[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) < 10 or cols[3] != "0A":  # 0A = LISTEN
                        continue
                    if int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.append(cols[9])
        except OSError:
            continue
    return inodes


def find_port_owner(port: int) -> Optional[Tuple[int, str]]:
    """`(pid, command line)` of a process listening on TCP `port`, if /proc lets us see it."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in targets:
                    return int(entry), cmdline(int(entry))
            except OSError:
                continue
    return None
