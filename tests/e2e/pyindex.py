"""Whether this machine can install a package: a local index in pip's settings, or PyPI."""

from __future__ import annotations

import socket
from pathlib import Path

from shipyard.effects.pyenv import pip_index_settings


def unavailable(names: list[str]) -> str | None:
    """None when every package in `names` can be installed here, else why not (a skip reason)."""
    settings = pip_index_settings()
    local = [
        Path(url.removeprefix("file://"))
        for url in (*settings.extra_index_urls, settings.index_url or "")
        if url.startswith("file://")
    ]
    missing = [name for name in names if not any((index / name).is_dir() for index in local)]
    if not missing:
        return None
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError as exc:
        return f"no package index offers {', '.join(missing)} (pypi.org: {exc})"
    return None
