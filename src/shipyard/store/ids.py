"""Sortable unique ids: UUIDv7 (RFC 9562) as lowercase canonical strings.

Layout of the 128 bits::

    48 bits  unix time in milliseconds        (sorts ids by creation time)
     4 bits  version = 7
    12 bits  rand_a  ┐ together 74 bits: random on the first id of a millisecond,
     2 bits  variant │ then increased by a random step (1..2**32) for every further
    62 bits  rand_b  ┘ id in the same millisecond ("monotonic random", RFC 9562 §6.2)

Within one process the ids are strictly increasing, even when the wall clock
stands still or steps back (the generator then keeps the last timestamp and
counts on). Across processes the 74 random bits make a collision negligible
(two processes would have to draw the same 74-bit start in the same millisecond).
The canonical 8-4-4-4-12 hex form has a fixed width, so string order is id order.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from shipyard.errors import StoreError

__all__ = [
    "MIN_PREFIX",
    "UUIDv7Generator",
    "ambiguous_prefix",
    "canonical_prefix",
    "id_timestamp",
    "is_uuid7",
    "new_id",
]

# The shortest id prefix looked up (like git's short hashes).
MIN_PREFIX = 4
_HEX_PREFIX = re.compile(r"[0-9a-f-]+")

_RAND_BITS = 74
_RAND_MAX = (1 << _RAND_BITS) - 1
_TS_MAX = (1 << 48) - 1
_STEP_BITS = 32


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class UUIDv7Generator:
    """A thread-safe, monotonic UUIDv7 generator.

    `clock_ms` returns the current unix time in milliseconds and `randbits(k)`
    returns k random bits; both are injectable so the ordering guarantees can be
    tested with any clock behaviour.
    """

    def __init__(
        self,
        clock_ms: Callable[[], int] = _now_ms,
        randbits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self._clock_ms = clock_ms
        self._randbits = randbits
        self._lock = threading.Lock()
        self._last_ts = -1
        self._last_rand = 0

    def reset(self) -> None:
        """Forget the last id (used in a forked child, whose lock may be held)."""
        self._lock = threading.Lock()
        self._last_ts = -1
        self._last_rand = 0

    def next_int(self) -> int:
        """The next id as a 128-bit integer."""
        with self._lock:
            ts = self._clock_ms()
            if ts > self._last_ts:
                rand = self._randbits(_RAND_BITS)
            else:
                # Same millisecond, or the clock went back: count on from the last id.
                ts = self._last_ts
                rand = self._last_rand + 1 + self._randbits(_STEP_BITS)
                if rand > _RAND_MAX:
                    # 74 bits exhausted inside one millisecond: borrow the next one.
                    ts += 1
                    rand = self._randbits(_RAND_BITS)
            if ts > _TS_MAX:
                raise OverflowError("UUIDv7 timestamp beyond the year 10889")
            self._last_ts = ts
            self._last_rand = rand
        rand_a = rand >> 62
        rand_b = rand & ((1 << 62) - 1)
        return (ts << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b

    def __call__(self) -> str:
        """The next id as a canonical lowercase UUID string."""
        return str(uuid.UUID(int=self.next_int()))


_default = UUIDv7Generator()
os.register_at_fork(after_in_child=_default.reset)


def new_id() -> str:
    """A new UUIDv7 string; ids made later in this process always sort after."""
    return _default()


def is_uuid7(value: str) -> bool:
    """True when `value` is a canonical UUIDv7 string."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return parsed.version == 7 and str(parsed) == value


def id_timestamp(value: str) -> datetime:
    """The creation time (millisecond precision, UTC) embedded in a UUIDv7 string."""
    parsed = uuid.UUID(value)
    if parsed.version != 7:
        raise ValueError(f"{value!r} is not a UUIDv7")
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, tz=UTC)


def canonical_prefix(value: str) -> str | None:
    """A lowercase id prefix, hyphenated like a UUID; None when it cannot be one."""
    text = value.lower()
    if not _HEX_PREFIX.fullmatch(text):
        return None
    digits = text.replace("-", "")
    if len(digits) < MIN_PREFIX:
        return None
    if "-" in text:
        return text
    parts, start = [], 0
    for width in (8, 4, 4, 4, 12):
        chunk = digits[start : start + width]
        if not chunk:
            break
        parts.append(chunk)
        start += width
        if len(chunk) < width:
            break
    return "-".join(parts)


def ambiguous_prefix(wanted: str, matches: list[str]) -> StoreError:
    """The error for an id prefix that matched several deployments (the first 5 shown)."""
    shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
    return StoreError(
        f"deployment id prefix {wanted!r} is ambiguous: it matches {shown}",
        hint="give more characters of the id (`shipyard history` lists them)",
    )
