"""HTTP API, server-sent events and the dashboard: `shipyard serve`."""

from shipyard.api.app import create_app

__all__ = ["create_app"]
