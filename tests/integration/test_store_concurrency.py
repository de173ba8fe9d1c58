"""Several real processes racing on one store: migrations, the lock, the journal, ids.

Each worker is a forked process with its own Store (its own connections); a barrier
makes them hit the database at the same moment.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from shipyard.errors import LockedError
from shipyard.store import DeploymentRecord, LockOwner, Store, new_id
from shipyard.store.ids import is_uuid7
from shipyard.store.migrate import head_revision

if TYPE_CHECKING:
    from tests.integration.conftest_store import RacingWorkers

pytest_plugins = ["tests.integration.conftest_store"]

WORKERS = 4


def _open_fresh(barrier: Any, url: str) -> str | None:
    barrier.wait(timeout=30)
    with Store.open(url) as s:
        return s.schema_revision()


def test_concurrent_first_open_migrates_once(store_url: str, racing_workers: RacingWorkers) -> None:
    revisions = racing_workers(_open_fresh, [[store_url]] * WORKERS)
    assert revisions == [head_revision()] * WORKERS


def _grab_locks(barrier: Any, url: str, environments: list[str]) -> tuple[int, dict[str, str]]:
    owner = LockOwner(user="racer", host="box", pid=os.getpid())
    results = {}
    with Store.open(url) as s:
        barrier.wait(timeout=30)
        for env in environments:
            try:
                stale = s.acquire_lock(env, new_id(), owner, ttl_s=60)
                results[env] = "won" if stale is None else "took over"
            except LockedError as exc:
                results[env] = "locked: " + exc.message
    return os.getpid(), results


def test_processes_racing_for_one_lock_exactly_one_wins(
    store_url: str, racing_workers: RacingWorkers
) -> None:
    environments = [f"env{i}" for i in range(20)]
    Store.open(store_url).close()  # migrated first: the race is about the lock only
    reports = racing_workers(_grab_locks, [[store_url, environments]] * WORKERS)
    with Store.open(store_url) as s:
        for env in environments:
            outcomes = [results[env] for _, results in reports]
            winners = [pid for pid, results in reports if results[env] == "won"]
            assert len(winners) == 1, f"{env}: {outcomes}"
            losers = [o for o in outcomes if o != "won"]
            assert len(losers) == WORKERS - 1
            assert all(o.startswith("locked: ") and "racer@box pid" in o for o in losers)
            held = s.get_lock(env)
            assert held is not None and held.owner.pid == winners[0]
            assert [e.action for e in s.lock_events(env)] == ["acquired"]


def _append(barrier: Any, url: str, deployment_id: str, count: int) -> list[int]:
    with Store.open(url) as s:
        barrier.wait(timeout=30)
        return [s.append_event(deployment_id, "tick").seq for _ in range(count)]


def test_processes_appending_events_get_gapless_unique_seqs(
    store_url: str, racing_workers: RacingWorkers
) -> None:
    count = 25
    with Store.open(store_url) as s:
        d = DeploymentRecord(id=new_id(), environment="local", kind="full", commit="c" * 40)
        s.create_deployment(d)
    per_process = racing_workers(_append, [[store_url, d.id, count]] * WORKERS)
    for seqs in per_process:
        assert seqs == sorted(seqs)
    expected = list(range(1, count * WORKERS + 1))
    assert sorted(x for seqs in per_process for x in seqs) == expected
    with Store.open(store_url) as s:
        assert [e.seq for e in s.events(d.id)] == expected


def _make_ids(barrier: Any, count: int) -> list[str]:
    barrier.wait(timeout=30)
    return [new_id() for _ in range(count)]


def test_ids_are_unique_across_processes_and_sorted_within_each(
    racing_workers: RacingWorkers,
) -> None:
    count = 20_000
    new_id()  # the parent's generator has state: forked children must not reuse it
    lists = racing_workers(_make_ids, [[count]] * WORKERS)
    for ids in lists:
        assert len(ids) == count
        assert ids == sorted(ids) and len(set(ids)) == count
        assert all(is_uuid7(i) for i in ids[:100])
    assert len({i for ids in lists for i in ids}) == count * WORKERS


def test_lock_owner_current_describes_this_process() -> None:
    owner = LockOwner.current()
    assert owner.pid == os.getpid() and owner.user and owner.host
    assert str(owner) == f"{owner.user}@{owner.host} pid {owner.pid}"
