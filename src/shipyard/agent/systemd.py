"""`agent install`: a systemd unit that keeps the agent's keeper running (and restarts it).

The unit runs `... agent run --root ROOT` (the keeper, which forks the worker). KillMode=process:
`systemctl stop` signals the keeper only; it stops the worker, and the releases keep running
(the next agent adopts them), exactly like `shipyard agent stop --keep-processes`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import AgentRequestError

__all__ = ["install_unit", "systemctl_command", "unit_name", "unit_text"]


def unit_name(root: Path) -> str:
    """`shipyard-agent-<folder>-<hash of the path>.service`: one unit per root, readable."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "root"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return f"shipyard-agent-{slug[:40]}-{digest}.service"


def _quote(arg: str) -> str:
    # systemd's ExecStart splits on whitespace and understands C-style double quotes.
    if arg and not re.search(r'[\s"\\$%;]', arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{escaped}"'


def unit_text(root: Path, command: List[str], user: bool, env: Dict[str, str]) -> str:
    """The unit file for the agent of `root`, started with `command` (+ `run --root ROOT`)."""
    exec_start = " ".join(_quote(a) for a in [*command, "run", "--root", str(root)])
    lines = [
        "[Unit]",
        f"Description=shipyard host agent for {root}",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        *(f"Environment={_quote(f'{k}={v}')}" for k, v in sorted(env.items())),
        "# Stop signals the keeper only: it stops its worker, and releases keep running.",
        "KillMode=process",
        "Restart=always",
        "RestartSec=1",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def _unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def systemctl_command(user: bool) -> Optional[List[str]]:
    """The systemctl command line, if systemd runs here (for this user, with --user)."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    base = [exe, "--user"] if user else [exe]
    try:
        probe = subprocess.run(
            [*base, "show-environment"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return base if probe.returncode == 0 else None


def install_unit(
    root: Path,
    command: List[str],
    *,
    user: bool,
    env: Optional[Dict[str, str]] = None,
    unit_dir: Optional[Path] = None,
    systemctl: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Write the unit; with `systemctl` (see `systemctl_command`), enable and start it.

    Returns `{unit, path, enabled: bool, systemd: bool, how_to_enable: str}`. An agent started
    outside systemd must be stopped first (`agent stop --keep-processes`): the caller does that.
    """
    name = unit_name(root)
    folder = unit_dir or _unit_dir(user)
    path = folder / name
    flag = " --user" if user else ""
    how = f"systemctl{flag} daemon-reload && systemctl{flag} enable --now {name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(unit_text(root, command, user, env or {}))
    except OSError as exc:
        raise AgentRequestError(
            "install_failed",
            f"cannot write the systemd unit {path}: {exc.strerror or exc}",
            "run as root for a system unit, or pass --user",
        ) from None
    enabled = False
    if systemctl is not None:
        for args in (["daemon-reload"], ["enable", "--now", name]):
            proc = subprocess.run(
                [*systemctl, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
            )
            if proc.returncode != 0:
                output = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
                raise AgentRequestError(
                    "install_failed",
                    f"systemctl{flag} {' '.join(args)} failed: {output[-500:]}",
                    f"the unit is written at {path}; enable it by hand: {how}",
                )
        enabled = True
    return {
        "unit": name,
        "path": str(path),
        "systemd": systemctl is not None,
        "enabled": enabled,
        "how_to_enable": how,
    }
