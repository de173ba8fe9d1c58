"""The agent as a zipapp under a bare `python3 -I`: what gets copied to remote hosts."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from shipyard.agent import build_zipapp, start_background, stop_agent
from tests.agent_fixtures.agent_harness import agent_root, free_port, http_get, start_app


def _oldest_python() -> str:
    """Python 3.9 when this machine has one (the oldest the agent supports), else ours."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates += ["/usr/bin/python3.9", "/usr/local/bin/python3.9"]
    for exe in candidates:
        if os.access(exe, os.X_OK):
            return exe
    return sys.executable


def test_build_is_self_contained_and_reproducible(tmp_path: Path) -> None:
    first = build_zipapp(tmp_path / "a.pyz")
    second = build_zipapp(tmp_path / "b.pyz")
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert "__main__.py" in names and "shipyard/__init__.py" in names
    assert "shipyard/agent/router.py" in names
    # The agent and nothing else: no other shipyard module, no third-party package.
    assert not [
        n
        for n in names
        if n != "__main__.py" and not n.startswith(("shipyard/agent/", "shipyard/__init__.py"))
    ]
    assert not [n for n in names if "__pycache__" in n]


def test_zipapp_smoke_under_bare_python(tmp_path: Path) -> None:
    python = _oldest_python()
    pyz = build_zipapp(tmp_path / "shipyard-agent.pyz")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    help_text = subprocess.run(
        [python, "-I", str(pyz), "--help"], capture_output=True, text=True, cwd=elsewhere
    )
    assert help_text.returncode == 0 and "run" in help_text.stdout

    with agent_root(tmp_path / "root", launcher=[python, "-I", str(pyz)], cwd=elsewhere) as agent:
        client = agent.start()
        ping = client.ping()
        # The code that runs is the archive's, not the dev tree's.
        assert ping["code"].startswith(str(pyz))
        assert ping["python"].split(".")[:2] == [str(v) for v in _version(python)]
        start_app(client, "web", "r1", python=python)
        public = free_port()
        client.route("web", public, "r1")
        assert http_get(public) == (200, "r1")
        assert client.stop_release("web", "r1", force=True)["state"] == "stopped"
        status = agent.cli("status", "--json")
        assert status.returncode == 0 and '"running": true' in status.stdout
        stop = agent.cli("stop")
        assert stop.returncode == 0 and "stopped" in stop.stdout


def test_start_background_with_another_interpreter_uses_the_zipapp(tmp_path: Path) -> None:
    python = _oldest_python()
    with agent_root(tmp_path / "root") as agent:
        client = start_background(agent.root, python=python)
        ping = client.ping()
        agent.agent_pids.append((ping["pid"], None))
        assert start_background(agent.root).ping()["pid"] == ping["pid"]  # already running
        if python != sys.executable:
            assert ping["code"].startswith(str(agent.root / "agent" / "shipyard-agent.pyz"))
        assert stop_agent(agent.root)["was_running"]


def _version(python: str) -> tuple[int, int]:
    out = subprocess.run(
        [python, "-I", "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])
