"""The engine's journal writer: writes leave the event loop, but keep their order and their
durability guarantee (nothing reaches the host before the journal entries made before it).

Real stores (SQLite, and PostgreSQL when SHIPYARD_TEST_POSTGRES_URL is set); the interleaving
of the writer thread and the loop is forced with events, not left to timing.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.engine import runner
from shipyard.engine.runner import JournalWriter
from shipyard.errors import StoreError
from shipyard.store import DeploymentRecord, Store, new_id

pytest_plugins = ["tests.integration.conftest_store"]

T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def new_deployment(store: Store) -> str:
    record = DeploymentRecord(
        id=new_id(), environment="local", kind="full", commit="a" * 40, created_by="t@h"
    )
    store.create_deployment(record)
    return record.id


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=st.lists(st.sampled_from(["step", "health", "routed", "build"]), max_size=40))
def test_events_are_stored_in_the_order_made_with_the_time_they_happened(
    store: Store, kinds: list[str]
) -> None:
    deployment_id = new_deployment(store)
    writer = JournalWriter(store)
    try:
        for i, kind in enumerate(kinds):
            writer.submit(
                store.append_event, deployment_id, kind, message=f"m{i}", at=T0 + timedelta(i)
            )
        writer.wait()
    finally:
        writer.close()
    events = store.events(deployment_id)
    assert [(e.seq, e.kind, e.message) for e in events] == [
        (i + 1, kind, f"m{i}") for i, kind in enumerate(kinds)
    ]
    assert [e.at for e in events] == [T0 + timedelta(i) for i in range(len(kinds))]


def test_a_failed_write_is_raised_once_and_the_others_are_kept(store: Store) -> None:
    deployment_id = new_deployment(store)
    writer = JournalWriter(store)
    try:
        writer.submit(store.append_event, deployment_id, "first")
        writer.submit(store.append_event, "no-such-deployment", "lost")
        writer.submit(store.append_event, deployment_id, "second")
        with pytest.raises(StoreError, match="no-such-deployment"):
            writer.wait()
        writer.wait()  # reported once: the deployment goes on (or rolls back) from there
    finally:
        writer.close()
    assert [e.kind for e in store.events(deployment_id)] == ["first", "second"]


def test_a_host_operation_waits_for_the_journal_entries_made_before_it(store: Store) -> None:
    """The crash-safety rule: the journal is written before what it announces is done."""
    deployment_id = new_deployment(store)
    writer = JournalWriter(store)
    release_writer = threading.Event()
    seen: list[list[str]] = []

    def effect() -> None:  # what the host does: it must find the step already journaled
        seen.append([e.kind for e in store.events(deployment_id)])

    async def scenario() -> None:
        token = runner._durable.set(writer.durable)
        try:
            writer.submit(release_writer.wait)  # the writer is busy: the entry below waits
            writer.submit(store.append_event, deployment_id, "step", status="running")
            effect_task = asyncio.ensure_future(runner._settled(effect))
            for _ in range(20):  # the loop keeps running; the effect does not start
                await asyncio.sleep(0.01)
            assert not effect_task.done() and seen == []
            release_writer.set()
            await effect_task
        finally:
            runner._durable.reset(token)

    try:
        asyncio.run(scenario())
    finally:
        release_writer.set()
        writer.close()
    assert seen == [["step"]]


def test_a_cancelled_step_does_not_stop_the_writes_it_waited_for(store: Store) -> None:
    """A step cancelled while waiting (another step failed) leaves the journal whole, and the
    rollback's own waits still return."""
    deployment_id = new_deployment(store)
    writer = JournalWriter(store)
    release_writer = threading.Event()

    async def scenario() -> None:
        writer.submit(release_writer.wait)
        writer.submit(store.append_event, deployment_id, "step", status="running")
        waiting = asyncio.ensure_future(writer.durable())
        await asyncio.sleep(0.05)
        waiting.cancel()  # the step is cancelled while its entry is queued
        with pytest.raises(asyncio.CancelledError):
            await waiting
        writer.submit(store.append_event, deployment_id, "step", status="cancelled")
        release_writer.set()
        await asyncio.wait_for(writer.durable(), 60)  # the rollback's wait returns

    try:
        asyncio.run(scenario())
    finally:
        release_writer.set()
        writer.close()
    assert [e.status for e in store.events(deployment_id)] == ["running", "cancelled"]
