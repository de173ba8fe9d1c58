"""What a child process gets for PATH and interpreter variables (effects.process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from shipyard.effects.process import child_environment, child_path


def executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_shipyards_venv_and_interpreter_variables_are_removed(tmp_path: Path) -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run from a venv: there is no venv of shipyard's to hide")
    own = os.path.join(sys.prefix, "bin")
    other_venv = tmp_path / "activated"
    system = tmp_path / "usr-bin"
    executable(system, "python")
    environ = {
        "PATH": os.pathsep.join([own, str(other_venv / "bin"), str(system)]),
        "VIRTUAL_ENV": str(other_venv),
        "PYTHONPATH": "/somewhere",
        "PYTHONHOME": "/elsewhere",
        "HOME": "/home/me",
    }
    env = child_environment(environ, first=["/release/.venv/bin"])
    assert env["PATH"] == os.pathsep.join(["/release/.venv/bin", str(system)])
    assert "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env and "PYTHONHOME" not in env
    assert env["HOME"] == "/home/me"  # everything else passes through


def test_a_machine_with_only_python3_gets_a_python_link_last(tmp_path: Path) -> None:
    system = tmp_path / "usr-bin"
    python3 = executable(system, "python3")
    shims = tmp_path / "shims"
    path = child_path({"PATH": str(system)}, shims=shims)
    assert path == os.pathsep.join([str(system), str(shims)])
    assert os.readlink(shims / "python") == str(python3)
    # Where `python` exists, nothing is added.
    executable(system, "python")
    assert child_path({"PATH": str(system)}, shims=tmp_path / "unused") == str(system)
    assert not (tmp_path / "unused").exists()


def test_the_agent_gives_releases_no_path_into_shipyards_venv() -> None:
    from shipyard.agent.supervisor import base_environment

    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run from a venv: there is no venv of shipyard's to hide")
    own = os.path.join(sys.prefix, "bin")
    env = base_environment({"PATH": os.pathsep.join([own, "/usr/bin"]), "VIRTUAL_ENV": sys.prefix})
    assert env == {"PATH": "/usr/bin"}
