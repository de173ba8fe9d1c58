"""The orchestrator's lease: what the agent undoes on its own when a deployment's engine dies.

While a deployment runs, its engine renews a lease with a time to live. If no renewal arrives in
time (the engine was killed, the laptop closed), the agent routes the listed components back to
their snapshot releases and stops the new releases (the `Agent` carries that out); this module
only keeps the lease and the record of a lapse, and their state.json form.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Lapse", "Lease", "iso", "lease_info"]

Revert = Tuple[str, Optional[str]]  # (component, release or None: unroute)
Discard = Tuple[str, str]  # (component, release)


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Lease:
    """A live lease: its holder, when it expires (wall clock, so it survives a restart)."""

    def __init__(
        self,
        holder: str,
        ttl: float,
        expires_at: float,
        revert: List[Revert],
        discard: List[Discard],
    ) -> None:
        self.holder = holder
        self.ttl = ttl
        self.expires_at = expires_at
        self.revert = revert
        self.discard = discard

    def expires_in(self, now: float) -> float:
        return round(max(0.0, self.expires_at - now), 3)

    def to_state(self) -> Dict[str, Any]:
        return {
            "holder": self.holder,
            "ttl": self.ttl,
            "expires_at": self.expires_at,
            "revert": [{"component": c, "release": r} for c, r in self.revert],
            "discard": [{"component": c, "release": r} for c, r in self.discard],
        }

    @classmethod
    def from_state(cls, data: Dict[str, Any]) -> "Lease":
        return cls(
            str(data["holder"]),
            float(data["ttl"]),
            float(data["expires_at"]),
            [
                (str(e["component"]), None if e.get("release") is None else str(e["release"]))
                for e in data.get("revert", [])
            ],
            [(str(e["component"]), str(e["release"])) for e in data.get("discard", [])],
        )


class Lapse:
    """What the agent did when a lease lapsed."""

    def __init__(self, holder: str, at: float, actions: List[str]) -> None:
        self.holder = holder
        self.at = at
        self.actions = actions

    def info(self) -> Dict[str, Any]:
        return {"holder": self.holder, "at": iso(self.at), "actions": list(self.actions)}

    def to_state(self) -> Dict[str, Any]:
        return {"holder": self.holder, "at": self.at, "actions": list(self.actions)}

    @classmethod
    def from_state(cls, data: Dict[str, Any]) -> "Lapse":
        return cls(str(data["holder"]), float(data["at"]), [str(a) for a in data["actions"]])


def lease_info(
    lease: Optional[Lease], lapse: Optional[Lapse], now: float
) -> Optional[Dict[str, Any]]:
    """The `lease` field of ping and list: null when there is neither a lease nor a lapse."""
    if lease is None and lapse is None:
        return None
    return {
        "holder": lease.holder if lease else None,
        "ttl": lease.ttl if lease else None,
        "expires_in_s": lease.expires_in(now) if lease else None,
        "lapsed": lapse.info() if lapse else None,
    }
