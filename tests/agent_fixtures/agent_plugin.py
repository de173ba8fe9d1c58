"""Pytest fixtures for the agent tests.

Test modules load them with `pytest_plugins = ["tests.agent_fixtures.agent_plugin"]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_fixtures.agent_harness import AgentHarness, agent_root


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentHarness]:
    """A running agent (started as a daemon through the CLI) on a fresh root."""
    with agent_root(tmp_path / "root") as harness:
        harness.start()
        yield harness
