"""The warm-stop schedule: old releases stopped later, dependents first, unless wanted again.

After a switch the old release stays running for `warm_for`, so undoing the switch is a pure
route change. The engine hands the agent the stops to do (`retire`), dependents before their
dependencies; the agent does them on its own, even if the engine is gone by then. An item is
dropped when its release is routed, activated or started again. Times are wall-clock so the
schedule survives an agent restart.

Due items are stopped together, except that an item waits while an earlier item that uses
it (a consumer release with a link to its component) is still to be stopped: a request still
in flight on an old dependent must not reach an already stopped dependency.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

__all__ = ["RetireItem", "RetireSchedule"]

Key = Tuple[str, str]


class RetireItem:
    def __init__(self, component: str, release: str, stop_at: float, seq: int = 0) -> None:
        self.component = component
        self.release = release
        self.stop_at = stop_at
        self.seq = seq  # position in the schedule (saved: the order survives a restart)

    @property
    def key(self) -> Key:
        return (self.component, self.release)

    def to_state(self) -> Dict[str, Any]:
        return {
            "component": self.component,
            "release": self.release,
            "stop_at": self.stop_at,
            "seq": self.seq,
        }


class RetireSchedule:
    """Items in the order they are to be stopped, by release."""

    def __init__(self, on_change: Callable[[Key], None] = lambda key: None) -> None:
        self.items: Dict[Key, RetireItem] = {}  # insertion order is the schedule's order
        self.on_change = on_change  # told about every item added or dropped (to save it)
        self._seq = itertools.count(1)
        # No item is due before this: the watch loop's check costs nothing until then.
        self._next_due = math.inf

    def add(self, item: RetireItem) -> None:
        """Schedule `item` (replacing an earlier schedule for the same release) at the end."""
        self.items.pop(item.key, None)
        item.seq = next(self._seq)
        self.items[item.key] = item
        self._next_due = min(self._next_due, item.stop_at)
        self.on_change(item.key)

    def cancel(self, component: str, release: str) -> bool:
        """Drop the release from the schedule; True if it was on it."""
        if self.items.pop((component, release), None) is None:
            return False
        self._next_due = 0.0  # what waited for this item may go now
        self.on_change((component, release))
        return True

    def due(
        self, now: float, consumers: Callable[[str], Iterable[str]], busy: Set[Key]
    ) -> List[RetireItem]:
        """Items whose time has come and which no earlier item still uses.

        `consumers(component)` names the consumer releases ("component/release") linked to
        `component`; `busy` are items being stopped already (not returned again).
        """
        if now < self._next_due:
            return []
        ready: List[RetireItem] = []
        # Items being stopped left the schedule (a stop cancels its item) but still come first.
        earlier: Set[str] = {f"{component}/{release}" for component, release in busy}
        later = math.inf
        for item in self.items.values():
            if item.stop_at > now:
                later = min(later, item.stop_at)
            elif any(c in earlier for c in consumers(item.component)):
                later = 0.0  # due, but waits for an earlier stop: look again next time
            elif item.key not in busy:
                ready.append(item)
            earlier.add(f"{item.component}/{item.release}")
        self._next_due = later
        return ready

    def stop_at(self, component: str, release: str) -> Optional[float]:
        item = self.items.get((component, release))
        return None if item is None else item.stop_at

    def to_state(self) -> List[Dict[str, Any]]:
        return [i.to_state() for i in self.items.values()]

    def restore(self, records: List[Dict[str, Any]]) -> None:
        last = 0
        for data in sorted(records, key=lambda d: int(d.get("seq", 0))):
            item = RetireItem(
                str(data["component"]),
                str(data["release"]),
                float(data["stop_at"]),
                int(data.get("seq", 0)),
            )
            last = max(last, item.seq)
            self.items[item.key] = item
            self._next_due = min(self._next_due, item.stop_at)
        self._seq = itertools.count(last + 1)
