"""The shipyard host agent (design §5a): supervision and zero-downtime switching on one host.

Standard library only, Python 3.9+, and nothing from shipyard
outside this package: it is copied to remote hosts as a .pyz and run with a bare `python3 -I`.

What other code uses:

    AgentClient, AgentRequestError        talk to a running agent (client.py, errors.py)
    start_background, ensure_agent,       manage the agent process (lifecycle.py)
    stop_agent, agent_status,
    run_foreground, install_agent
    build_zipapp                          the .pyz for remote hosts (zipapp.py)

The wire protocol is documented in `shipyard.agent.protocol`.
"""

from __future__ import annotations

from .client import AgentClient
from .errors import AgentRequestError
from .lifecycle import (
    agent_status,
    ensure_agent,
    install_agent,
    run_foreground,
    start_background,
    stop_agent,
)
from .zipapp import build_zipapp

__all__ = [
    "AgentClient",
    "AgentRequestError",
    "agent_status",
    "build_zipapp",
    "ensure_agent",
    "install_agent",
    "run_foreground",
    "start_background",
    "stop_agent",
]
