"""`python -m shipyard.agent`: the agent's command line."""

from __future__ import annotations

import sys

from shipyard.agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
