"""Build the agent as one .pyz that runs with a bare `python3 -I` (3.9+) on any host."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

__all__ = ["build_zipapp"]

_MAIN = b"""# shipyard host agent (zipapp)
import sys

from shipyard.agent.cli import main

sys.exit(main())
"""
# A fixed timestamp makes the archive a function of its sources only, so a host can tell by
# its hash whether the copy it has is current.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _package_files(package_dir: Path, arc_prefix: str) -> Iterator[Tuple[Path, str]]:
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".py", ".typed")):
                path = Path(dirpath) / name
                rel = path.relative_to(package_dir).as_posix()
                yield path, f"{arc_prefix}/{rel}"


def build_zipapp(dest: Path) -> Path:
    """Write the agent zipapp to `dest` (a file path; a folder gets `shipyard-agent.pyz`).

    It holds `shipyard/__init__.py` (the version only) and `shipyard/agent/**` (standard
    library only); its `__main__` is the agent CLI. Returns the path written.
    """
    import shipyard

    dest = Path(dest)
    if dest.is_dir():
        dest = dest / "shipyard-agent.pyz"
    shipyard_init = Path(shipyard.__file__ or "")
    agent_dir = Path(__file__).resolve().parent
    entries = [(shipyard_init, "shipyard/__init__.py")]
    entries += list(_package_files(agent_dir, "shipyard/agent"))

    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as raw:
        raw.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            main_info = zipfile.ZipInfo("__main__.py", date_time=_EPOCH)
            main_info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(main_info, _MAIN)
            for path, arcname in entries:
                info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
    os.chmod(tmp, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(tmp, dest)
    return dest
