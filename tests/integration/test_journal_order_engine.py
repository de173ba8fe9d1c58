"""What waits for the journal and what does not (issue 10): an effect on the host waits for the
journal entries made before it; a read (a probe, a listing) does not; a component's record
written several times while the writer is busy reaches the store once, in its newest state,
without moving the journal entries around it.

Real stores; the writer thread is held busy with an event, not with timing.
"""

from __future__ import annotations

import asyncio
import threading

from shipyard.engine import runner
from shipyard.engine.runner import JournalWriter
from shipyard.store import ComponentRecord, DeploymentRecord, Store, new_id

pytest_plugins = ["tests.integration.conftest_store"]


def new_deployment(store: Store) -> str:
    record = DeploymentRecord(
        id=new_id(), environment="local", kind="full", commit="a" * 40, created_by="t@h"
    )
    store.create_deployment(record)
    return record.id


def test_a_read_does_not_wait_for_the_journal_but_an_effect_does(store: Store) -> None:
    deployment_id = new_deployment(store)
    writer = JournalWriter(store)
    release_writer = threading.Event()
    order: list[str] = []

    async def scenario() -> None:
        token = runner._durable.set(writer.durable)
        try:
            writer.submit(release_writer.wait)  # the writer is busy
            writer.submit(store.append_event, deployment_id, "step", status="running")
            effect = asyncio.ensure_future(runner._settled(order.append, "effect"))
            await runner._look(order.append, "read")  # returns while the writer is held
            assert order == ["read"] and not effect.done()
            release_writer.set()
            await effect
        finally:
            runner._durable.reset(token)

    try:
        asyncio.run(scenario())
    finally:
        release_writer.set()
        writer.close()
    assert order == ["read", "effect"]
    assert [e.status for e in store.events(deployment_id)] == ["running"]


def test_only_the_newest_record_of_a_component_is_written_per_batch(store: Store) -> None:
    deployment_id = new_deployment(store)
    writer = JournalWriter(store)
    release_writer = threading.Event()
    written: list[str] = []

    def set_component(record: ComponentRecord) -> None:
        written.append(f"{record.component}:{record.status}")
        store.set_component(record)

    def record(component: str, status: str) -> ComponentRecord:
        return ComponentRecord(
            deployment_id=deployment_id, component=component, host="local", status=status
        )

    try:
        writer.submit(release_writer.wait)  # everything below lands in one batch
        for status in ("pending", "building", "built"):
            writer.replace(("component", "api"), set_component, record("api", status))
            writer.submit(store.append_event, deployment_id, "step", component="api", status=status)
        writer.replace(("component", "web"), set_component, record("web", "pending"))
        release_writer.set()
        writer.wait()
        # Once written, a later record of the same component is written again.
        writer.replace(("component", "api"), set_component, record("api", "healthy"))
        writer.wait()
    finally:
        release_writer.set()
        writer.close()
    assert written == ["api:built", "web:pending", "api:healthy"]
    assert {c.component: c.status for c in store.components(deployment_id)} == {
        "api": "healthy",
        "web": "pending",
    }
    events = store.events(deployment_id)
    assert [e.status for e in events] == ["pending", "building", "built"]
