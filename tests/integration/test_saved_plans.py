"""Saved plans in the store (SQLite, and PostgreSQL when configured): what `deploy(plan_id)`
reads back is exactly what `plan` kept, and an id is never reused."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.errors import StoreError
from shipyard.store import PlanRecord, Store, new_id

if TYPE_CHECKING:
    from tests.integration.conftest_store import FakeClock

pytest_plugins = ["tests.integration.conftest_store"]

# No NUL and no lone surrogate: PostgreSQL's JSON refuses them, and a plan never holds one
# (component names are validated; a ref or an `only` name is resolved before it is saved).
text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner),
    max_leaves=12,
)


def _record(plan: dict[str, Any]) -> PlanRecord:
    return PlanRecord(
        id=new_id(),
        environment="production",
        plan_hash="0123456789abcdef",
        commit="a" * 40,
        plan=plan,
        created_by="mcp:some client (alice@host)",
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=st.dictionaries(text, json_values, max_size=5))
def test_a_saved_plan_reads_back_as_it_was_saved(
    store: Store, clock: FakeClock, plan: dict[str, Any]
) -> None:
    record = _record(plan)
    store.save_plan(record)
    assert store.get_plan(record.id) == dataclasses.replace(record, created_at=clock.now)


def test_an_unknown_plan_is_none_and_an_id_is_never_reused(store: Store) -> None:
    assert store.get_plan(new_id()) is None
    record = _record({"plan": {}})
    store.save_plan(record)
    with pytest.raises(StoreError, match="plan ids must be unique"):
        store.save_plan(dataclasses.replace(record, plan_hash="ffffffffffffffff"))
    assert store.get_plan(record.id) == dataclasses.replace(record, created_at=store.now())
