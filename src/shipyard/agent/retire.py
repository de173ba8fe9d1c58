"""The warm-stop schedule: old releases stopped later, in order, unless they are wanted again.

After a switch the old release stays running for `warm_for`, so undoing the switch is a pure
route change. The engine hands the agent the stops to do (`retire`); the agent does them on its
own, even if the engine is gone by then. An item is dropped when its release is routed,
activated or started again. Times are wall-clock so the schedule survives an agent restart.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = ["RetireItem", "RetireSchedule"]


class RetireItem:
    def __init__(self, component: str, release: str, stop_at: float) -> None:
        self.component = component
        self.release = release
        self.stop_at = stop_at

    def to_state(self) -> Dict[str, Any]:
        return {"component": self.component, "release": self.release, "stop_at": self.stop_at}


class RetireSchedule:
    """Items in the order they are to be stopped."""

    def __init__(self) -> None:
        self.items: List[RetireItem] = []

    def add(self, item: RetireItem) -> None:
        """Schedule `item` (replacing an earlier schedule for the same release) at the end."""
        self.cancel(item.component, item.release)
        self.items.append(item)

    def cancel(self, component: str, release: str) -> bool:
        """Drop the release from the schedule; True if it was on it."""
        before = len(self.items)
        self.items = [i for i in self.items if (i.component, i.release) != (component, release)]
        return len(self.items) != before

    def due(self, now: float) -> Optional[RetireItem]:
        """The first item, if its time has come (later items wait for it)."""
        if self.items and self.items[0].stop_at <= now:
            return self.items[0]
        return None

    def stop_at(self, component: str, release: str) -> Optional[float]:
        for item in self.items:
            if (item.component, item.release) == (component, release):
                return item.stop_at
        return None

    def to_state(self) -> List[Dict[str, Any]]:
        return [i.to_state() for i in self.items]

    def restore(self, records: List[Dict[str, Any]]) -> None:
        for data in records:
            self.items.append(
                RetireItem(str(data["component"]), str(data["release"]), float(data["stop_at"]))
            )
