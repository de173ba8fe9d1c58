"""UUIDv7 ids: format, and strictly increasing within a process whatever the clock does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from shipyard.store.ids import UUIDv7Generator, id_timestamp, is_uuid7, new_id

MAX_TS = (1 << 48) - 1


def test_new_id_is_a_canonical_uuid7_with_the_current_time() -> None:
    before = datetime.now(UTC)
    value = new_id()
    after = datetime.now(UTC)
    parsed = uuid.UUID(value)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert str(parsed) == value and len(value) == 36
    assert is_uuid7(value)
    stamp = id_timestamp(value)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after


def test_is_uuid7_rejects_other_strings() -> None:
    assert not is_uuid7(str(uuid.uuid4()))
    assert not is_uuid7(new_id().upper())
    assert not is_uuid7("not-a-uuid")


def test_ids_in_a_tight_loop_are_strictly_increasing() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@given(
    # (the bound leaves room for up to 60 borrowed milliseconds before the year 10889)
    clock=st.lists(st.integers(min_value=0, max_value=MAX_TS - 100), min_size=1, max_size=60),
    data=st.data(),
)
def test_ids_sort_in_creation_order_whatever_the_clock_and_randomness(
    clock: list[int], data: st.DataObject
) -> None:
    """Clock standing still, jumping back, random draws at their extremes: still sorted."""
    ticks = iter(clock)

    def randbits(k: int) -> int:
        return data.draw(
            st.one_of(st.just(0), st.just((1 << k) - 1), st.integers(0, (1 << k) - 1)),
            label=f"randbits({k})",
        )

    gen = UUIDv7Generator(clock_ms=lambda: next(ticks), randbits=randbits)
    ids = [gen() for _ in clock]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(is_uuid7(i) for i in ids)
    # the timestamp never runs behind the clock (it may run ahead by borrowed milliseconds)
    seen = -1
    for tick, value in zip(clock, ids, strict=True):
        seen = max(seen, tick)
        assert uuid.UUID(value).int >> 80 >= seen


@given(st.integers(min_value=0, max_value=MAX_TS - 2))
def test_exhausting_a_millisecond_borrows_the_next(ts: int) -> None:
    gen = UUIDv7Generator(clock_ms=lambda: ts, randbits=lambda k: (1 << k) - 1 if k == 74 else 0)
    first, second = gen(), gen()
    assert first < second
    assert uuid.UUID(first).int >> 80 == ts and uuid.UUID(second).int >> 80 == ts + 1
