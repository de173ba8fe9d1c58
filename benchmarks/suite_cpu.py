"""Wall time and total CPU of a command's whole process tree: the test suite's cost.

    flock /tmp/bench.lock python3 benchmarks/suite_cpu.py .venv/bin/pytest -q -n 4 --dist worksteal

The command runs under a child subreaper (Linux), so the host agents the tests start (which
detach from their parents) and the apps they run are reaped here, and their CPU is counted
with the rest. Wall time alone hides where a loaded machine's CPU went; this does not.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_WAIT = 30.0  # seconds to wait for detached descendants still stopping


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: suite_cpu.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed: Linux only", file=sys.stderr)
        return 2
    start = time.monotonic()
    code = subprocess.call(argv)
    wall = time.monotonic() - start
    deadline = time.monotonic() + LEFTOVER_WAIT
    while time.monotonic() < deadline:  # reap orphans reparented to us, so they are counted
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    load = os.getloadavg()
    print(
        f"suite_cpu: wall {wall:.1f} s, CPU {cpu:.1f} s (user {usage.ru_utime:.1f}, "
        f"sys {usage.ru_stime:.1f}), {cpu / wall:.2f} cores busy on average; "
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; exit {code}",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
