"""Shared fixtures: running the real `shipyard` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHOP = REPO / "examples" / "shop"


def shipyard_executable() -> str:
    """The console script installed next to the interpreter running the tests."""
    candidate = Path(sys.executable).with_name("shipyard")
    found = str(candidate) if candidate.exists() else shutil.which("shipyard")
    if not found:
        pytest.fail("the shipyard console script is not installed: run `make test`")
    return found


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli() -> RunCli:
    """Run `shipyard ARGS…` as a real subprocess and return its result."""

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shipyard_executable(), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
