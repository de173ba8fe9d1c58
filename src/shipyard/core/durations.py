"""Durations as people write them: `200ms`, `2s`, `1.5s`, `5m`, `1h`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")


def parse_duration(text: str) -> float:
    """Return seconds for a duration string; raise ValueError with what is accepted."""
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"expected a duration such as 200ms, 2s or 5m, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest readable form: 0.2 → `200ms`, 30 → `30s`, 300 → `5m`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
