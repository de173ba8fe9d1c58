"""Pytest fixtures for the agent tests.

Test modules load them with `pytest_plugins = ["tests.agent_fixtures.agent_plugin"]`.

Set SHIPYARD_AGENT_TEST_PYTHON=/path/to/python3.9 to run every agent of these tests from a
freshly built zipapp under that interpreter (with -I), as on a remote host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.agent import build_zipapp
from tests.agent_fixtures.agent_harness import AgentHarness, agent_root


@pytest.fixture(scope="session")
def agent_launcher(tmp_path_factory: pytest.TempPathFactory) -> list[str] | None:
    python = os.environ.get("SHIPYARD_AGENT_TEST_PYTHON")
    if not python:
        return None
    pyz = build_zipapp(tmp_path_factory.mktemp("pyz") / "shipyard-agent.pyz")
    return [python, "-I", str(pyz)]


@pytest.fixture
def agent(tmp_path: Path, agent_launcher: list[str] | None) -> Iterator[AgentHarness]:
    """A running agent (started as a daemon through the CLI) on a fresh root."""
    with agent_root(tmp_path / "root", launcher=agent_launcher) as harness:
        harness.start()
        yield harness
