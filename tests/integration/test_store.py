"""The state store against real databases: SQLite always, PostgreSQL when configured."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from shipyard.errors import LockedError, StoreError
from shipyard.store import (
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    LockOwner,
    SnapshotEntry,
    Store,
    new_id,
)
from shipyard.store.migrate import HEAD_REVISION, VERSION_TABLE, head_revision, script_head
from shipyard.store.tables import metadata
from shipyard.store.urls import normalize_url

if TYPE_CHECKING:
    from tests.integration.conftest_store import FakeClock

pytest_plugins = ["tests.integration.conftest_store"]

ALICE = LockOwner(user="alice", host="ci-1", pid=4242)
BOB = LockOwner(user="bob", host="laptop", pid=77)


def deployment(env: str = "production", **kw: object) -> DeploymentRecord:
    fields: dict[str, object] = {
        "id": new_id(),
        "environment": env,
        "kind": "full",
        "commit": "a" * 40,
        "created_by": "alice@ci-1",
    }
    fields.update(kw)
    return DeploymentRecord(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- opening and migrations


def test_first_open_migrates_and_reopen_is_idempotent(store_url: str, clock: FakeClock) -> None:
    with Store.open(store_url, clock=clock) as first:
        assert first.schema_revision() == head_revision()
        d = deployment()
        first.create_deployment(d)
    with Store.open(store_url, clock=clock) as again:
        assert again.schema_revision() == head_revision()
        assert again.get_deployment(d.id) == d.replace(created_at=clock.now)


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert script_head() == HEAD_REVISION == head_revision()


def test_schema_from_migrations_matches_the_models(store: Store, store_url: str) -> None:
    engine = create_engine(normalize_url(store_url).sqlalchemy())
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_sqlite_file_is_created_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with Store.open(f"sqlite:///{path}") as s:
        assert path.exists()
        with pytest.raises(StoreError, match="create the deployment before"):
            s.set_component(ComponentRecord(deployment_id="missing", component="backend"))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_bare_path_and_in_memory_sqlite(tmp_path: Path) -> None:
    with Store.open(str(tmp_path / "bare.db")) as s:
        assert s.dialect == "sqlite"
    assert (tmp_path / "bare.db").exists()
    with Store.open("sqlite://") as mem:
        d = deployment()
        mem.create_deployment(d)
        assert mem.get_deployment(d.id) is not None


def test_database_newer_than_code_is_refused(store_url: str) -> None:
    Store.open(store_url).close()
    engine = create_engine(normalize_url(store_url).sqlalchemy())
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff_from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError) as info:
        Store.open(store_url)
    assert "ffff_from_the_future" in info.value.message
    assert "newer shipyard" in info.value.message
    assert info.value.hint and "upgrade shipyard" in info.value.hint


# ---------------------------------------------------------------- deployments


def test_deployment_create_get_update(store: Store, clock: FakeClock) -> None:
    d = deployment(options={"tests": "smoke", "only": ["backend"]}, plan_hash="p1", dirty=True)
    store.create_deployment(d)
    got = store.get_deployment(d.id)
    assert got == d.replace(created_at=clock.now)
    assert got is not None and got.status == "pending" and got.duration_s is None

    start = clock.now
    running = store.update_deployment(d.id, status="running", started_at=start)
    assert running.status == "running" and running.started_at == start
    clock.advance(12.5)
    done = store.update_deployment(
        d.id, status="succeeded", finished_at=clock.now, base_commit="b" * 40
    )
    assert done == store.get_deployment(d.id)
    assert done.duration_s == 12.5
    shape = done.to_dict()
    for key in (
        "id",
        "environment",
        "kind",
        "status",
        "commit",
        "base_commit",
        "started_at",
        "finished_at",
        "duration_s",
        "error",
    ):
        assert key in shape
    assert shape["duration_s"] == 12.5
    assert shape["started_at"] == start.isoformat()


def test_update_deployment_rejects_bad_input(store: Store) -> None:
    d = deployment()
    store.create_deployment(d)
    with pytest.raises(TypeError, match="colour"):
        store.update_deployment(d.id, colour="blue")
    with pytest.raises(ValueError, match="status"):
        store.update_deployment(d.id, status="exploded")
    with pytest.raises(ValueError, match="kind"):
        store.create_deployment(deployment(kind="sideways"))
    with pytest.raises(ValueError, match="status"):
        store.set_component(ComponentRecord(d.id, "backend", status="bored"))
    with pytest.raises(StoreError, match="no deployment"):
        store.update_deployment(new_id(), status="running")
    with pytest.raises(StoreError, match="unique"):
        store.create_deployment(d)


def test_history_with_statuses_unknown_to_this_version_stays_readable(
    store: Store, store_url: str
) -> None:
    d = deployment()
    store.create_deployment(d)
    engine = create_engine(normalize_url(store_url).sqlalchemy())
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE deployments SET status = 'cancelled'"))
    finally:
        engine.dispose()
    got = store.get_deployment(d.id)
    assert got is not None and got.status == "cancelled"
    assert [x.id for x in store.list_deployments()] == [d.id]


def test_rollback_of_links_to_a_stored_deployment(store: Store) -> None:
    first = deployment()
    store.create_deployment(first)
    undo = deployment(kind="rollback", rollback_of=first.id)
    store.create_deployment(undo)
    got = store.get_deployment(undo.id)
    assert got is not None and got.rollback_of == first.id


def test_list_last_good_and_unfinished(store: Store, clock: FakeClock) -> None:
    made = []
    for i, status in enumerate(["succeeded", "failed", "succeeded", "rolled_back", "running"]):
        d = deployment(status=status, commit=f"{i:040d}")
        store.create_deployment(d)
        made.append(d)
        clock.advance(1)
    other = deployment(env="staging", status="succeeded")
    store.create_deployment(other)

    prod = store.list_deployments("production")
    assert [d.id for d in prod] == [d.id for d in reversed(made)]
    assert [d.id for d in store.list_deployments("production", limit=2)] == [
        made[4].id,
        made[3].id,
    ]
    assert store.list_deployments()[0].id == other.id
    assert len(store.list_deployments(limit=None)) == 6

    last_good = store.last_good_deployment("production")
    assert last_good is not None and last_good.id == made[2].id
    assert store.last_good_deployment("nowhere") is None
    assert [d.id for d in store.unfinished_deployments("production")] == [made[4].id]
    assert store.unfinished_deployments("staging") == []


def test_get_deployment_by_unique_prefix(store: Store) -> None:
    a = deployment(id="0190aaaa-bbbb-7ccc-8ddd-000000000001")
    b = deployment(id="0190aaaa-bbbb-7ccc-8ddd-000000000002")
    c = deployment(id="0190ffff-0000-7000-8000-000000000003")
    for d in (a, b, c):
        store.create_deployment(d)
    assert store.get_deployment(c.id) is not None
    found = store.get_deployment("0190f")
    assert found is not None and found.id == c.id
    found = store.get_deployment("0190FFFF0000")  # case and hyphens do not matter
    assert found is not None and found.id == c.id
    found = store.get_deployment("0190aaaa-bbbb-7ccc-8ddd-000000000002")
    assert found is not None and found.id == b.id
    with pytest.raises(StoreError, match="ambiguous") as info:
        store.get_deployment("0190aaaa")
    assert a.id in info.value.message and b.id in info.value.message
    assert store.get_deployment("019") is None  # too short to be a prefix
    assert store.get_deployment("0190b") is None
    assert store.get_deployment("%") is None
    assert store.get_deployment("not-an-id") is None


# ---------------------------------------------------------------- components


def test_components_upsert_per_component_and_host(store: Store, clock: FakeClock) -> None:
    d = deployment()
    store.create_deployment(d)
    store.set_component(ComponentRecord(d.id, "backend", host="10.0.0.5", status="building"))
    store.set_component(ComponentRecord(d.id, "backend", host="10.0.0.6", status="building"))
    store.set_component(ComponentRecord(d.id, "admin", status="pending"))
    healthy = ComponentRecord(
        d.id,
        "backend",
        host="10.0.0.5",
        status="healthy",
        release="r2",
        previous_release="r1",
        artifact="sha256:abc",
        port=4000,
        started_at=clock.now,
        finished_at=clock.advance(3),
        health={"status": "passing", "latency_ms": 4.5, "detail": "200 OK"},
    )
    store.set_component(healthy)
    got = store.components(d.id)
    assert [(c.component, c.host) for c in got] == [
        ("admin", "local"),
        ("backend", "10.0.0.5"),
        ("backend", "10.0.0.6"),
    ]
    assert got[1] == healthy
    assert got[1].to_dict()["name"] == "backend"
    assert store.components(new_id()) == []


# ---------------------------------------------------------------- journal


def test_events_have_increasing_seq_and_clock_time(store: Store, clock: FakeClock) -> None:
    d = deployment()
    store.create_deployment(d)
    first = store.append_event(d.id, "step_started", step="build", component="backend")
    clock.advance(2)
    second = store.append_event(
        d.id,
        "step_finished",
        step="build",
        component="backend",
        status="ok",
        message="built in 2s",
        data={"duration_s": 2.0, "artifact": "sha256:abc", "when": clock.now},
    )
    assert (first.seq, second.seq) == (1, 2)
    assert second.at - first.at == timedelta(seconds=2)
    stored = store.events(d.id)
    assert stored[0] == first
    # JSON data: datetimes come back as ISO text
    assert stored[1] == dataclasses.replace(
        second, data={"duration_s": 2.0, "artifact": "sha256:abc", "when": clock.now.isoformat()}
    )
    assert [e.seq for e in store.events(d.id, after_seq=1)] == [2]
    other = deployment()
    store.create_deployment(other)
    assert store.append_event(other.id, "started").seq == 1
    with pytest.raises(StoreError, match="no deployment"):
        store.append_event(new_id(), "started")


def test_concurrent_appends_from_threads_get_distinct_gapless_seqs(store: Store) -> None:
    d = deployment()
    store.create_deployment(d)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                store.append_event(d.id, "tick", message=f"{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [e.seq for e in store.events(d.id)] == list(range(1, 61))


# ---------------------------------------------------------------- snapshots and artifacts


def test_snapshot_save_replace_and_read(store: Store) -> None:
    prev = deployment(status="succeeded")
    d = deployment()
    store.create_deployment(prev)
    store.create_deployment(d)
    assert store.snapshot(d.id) == []
    entries = [
        SnapshotEntry("backend", "local", "r1", "sha256:1", "0042", "c" * 40, prev.id),
        SnapshotEntry("admin", "local", "r7", "sha256:2", None, "c" * 40, prev.id),
        SnapshotEntry("marketing"),
    ]
    store.save_snapshot(d.id, entries)
    assert store.snapshot(d.id) == sorted(entries, key=lambda e: (e.component, e.host))
    store.save_snapshot(d.id, entries[:1])
    assert store.snapshot(d.id) == entries[:1]
    with pytest.raises(ValueError, match="twice"):
        store.save_snapshot(d.id, [entries[0], entries[0]])


def test_artifacts_are_recorded_once(store: Store, clock: FakeClock) -> None:
    a = ArtifactRecord(
        component="backend",
        digest="sha256:" + "d" * 64,
        path="/var/shipyard/artifacts/backend/dd",
        size_bytes=12_345_678_901,
        build_command="python -m compileall -q .",
        commit="e" * 40,
        dirty=False,
    )
    store.record_artifact(a)
    recorded_at = clock.now
    clock.advance(60)
    store.record_artifact(ArtifactRecord("backend", a.digest, "/elsewhere", 1, dirty=True))
    got = store.get_artifact("backend", a.digest)
    assert got == dataclasses.replace(a, created_at=recorded_at)
    assert store.get_artifact("admin", a.digest) is None
    assert store.get_artifact("backend", "sha256:other") is None
    store.record_artifact(ArtifactRecord("admin", "sha256:2", "/a", 2))
    assert [x.component for x in store.list_artifacts()] == ["admin", "backend"]
    assert [x.component for x in store.list_artifacts("backend")] == ["backend"]


# ---------------------------------------------------------------- locks


def test_lock_free_then_held_names_holder_owner_and_since(store: Store, clock: FakeClock) -> None:
    d = deployment()
    assert store.acquire_lock("production", d.id, ALICE, ttl_s=30) is None
    since = clock.now
    clock.advance(90)
    store.heartbeat("production", d.id, ttl_s=30)
    clock.advance(5)
    with pytest.raises(LockedError) as info:
        store.acquire_lock("production", new_id(), BOB, ttl_s=30)
    err = info.value
    assert err.exit_code == 4
    assert d.id in err.message
    assert "alice@ci-1 pid 4242" in err.message
    assert since.isoformat() in err.message
    assert "'production'" in err.message
    assert err.hint is not None
    assert "--wait-lock" in err.hint
    assert "shipyard lock release --env production --force" in err.hint
    held = store.get_lock("production")
    assert held is not None and held.deployment_id == d.id and held.owner == ALICE
    assert held.acquired_at == since and not held.expired(clock.now)
    assert store.get_lock("staging") is None


def test_same_deployment_and_owner_may_acquire_again(store: Store, clock: FakeClock) -> None:
    d = deployment()
    assert store.acquire_lock("production", d.id, ALICE, ttl_s=30) is None
    clock.advance(10)
    assert store.acquire_lock("production", d.id, ALICE, ttl_s=30) is None
    held = store.get_lock("production")
    assert held is not None and held.expires_at == clock.now + timedelta(seconds=30)
    with pytest.raises(LockedError):  # same deployment id, another process
        store.acquire_lock("production", d.id, BOB, ttl_s=30)


def test_expired_lock_is_taken_over_and_returned(store: Store, clock: FakeClock) -> None:
    dead = deployment()
    store.acquire_lock("production", dead.id, ALICE, ttl_s=30)
    clock.advance(31)
    expired = store.get_lock("production")
    assert expired is not None and expired.expired(clock.now)
    new = deployment()
    stale = store.acquire_lock("production", new.id, BOB, ttl_s=30)
    assert stale is not None
    assert stale.deployment_id == dead.id and stale.owner == ALICE and stale.expired(clock.now)
    held = store.get_lock("production")
    assert held is not None and held.deployment_id == new.id and held.owner == BOB
    audit = store.lock_events("production")
    assert audit[0].action == "taken_over"
    assert audit[0].deployment_id == dead.id and audit[0].by == str(BOB)
    # the dead orchestrator wakes up: its lease is gone
    with pytest.raises(LockedError, match="taken over"):
        store.heartbeat("production", dead.id, ttl_s=30)


def test_heartbeat_extends_the_lease(store: Store, clock: FakeClock) -> None:
    d = deployment()
    store.acquire_lock("production", d.id, ALICE, ttl_s=10)
    for _ in range(5):
        clock.advance(8)
        store.heartbeat("production", d.id, ttl_s=10)
    held = store.get_lock("production")
    assert held is not None
    assert held.heartbeat_at == clock.now and held.expires_at == clock.now + timedelta(seconds=10)
    assert not held.expired(clock.now + timedelta(seconds=9))
    assert held.expired(clock.now + timedelta(seconds=10))
    with pytest.raises(LockedError, match="no longer holds"):
        store.heartbeat("production", new_id(), ttl_s=10)
    with pytest.raises(ValueError):
        store.heartbeat("production", d.id, ttl_s=0)


def test_release_only_releases_our_lock(store: Store) -> None:
    d = deployment()
    store.acquire_lock("production", d.id, ALICE, ttl_s=30)
    store.release_lock("production", new_id())  # not ours: nothing happens
    assert store.get_lock("production") is not None
    store.release_lock("production", d.id)
    assert store.get_lock("production") is None
    store.release_lock("production", d.id)  # twice: still fine
    assert [e.action for e in store.lock_events("production")] == ["released", "acquired"]
    assert store.acquire_lock("production", new_id(), BOB, ttl_s=30) is None


def test_force_release_is_audited(store: Store, clock: FakeClock) -> None:
    assert store.force_release_lock("production", by="carol@desk") is None
    d = deployment()
    store.acquire_lock("production", d.id, ALICE, ttl_s=300)
    clock.advance(20)
    released = store.force_release_lock("production", by="carol@desk")
    assert released is not None and released.deployment_id == d.id and released.owner == ALICE
    assert store.get_lock("production") is None
    entry = store.lock_events("production")[0]
    assert entry.action == "forced_release"
    assert entry.by == "carol@desk" and entry.at == clock.now
    assert entry.deployment_id == d.id and entry.owner == ALICE
    assert entry.to_dict()["owner"] == {"user": "alice", "host": "ci-1", "pid": 4242}
    with pytest.raises(LockedError, match="force-released by carol@desk"):
        store.heartbeat("production", d.id, ttl_s=30)
    assert store.acquire_lock("production", new_id(), BOB, ttl_s=30) is None


# ---------------------------------------------------------------- values and errors


def test_timestamps_come_back_aware_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    start = datetime(2031, 6, 1, 14, 0, 0, 123456, tzinfo=paris)
    d = deployment(started_at=start)
    store.create_deployment(d)
    got = store.get_deployment(d.id)
    assert got is not None and got.started_at == start
    assert got.started_at.tzinfo == UTC and got.started_at.hour == 12
    with pytest.raises(ValueError, match="timezone-aware"):
        deployment(started_at=datetime(2031, 6, 1))
    naive = Store.open("sqlite://", clock=lambda: datetime(2031, 1, 1))
    with naive, pytest.raises(ValueError, match="naive"):
        naive.create_deployment(deployment())


def test_unreachable_postgres_is_a_store_error_with_masked_password() -> None:
    with pytest.raises(StoreError) as info:
        Store.open("postgresql://deployer:hunter2-secret@127.0.0.1:1/state")
    err = info.value
    assert "hunter2-secret" not in str(err)
    assert "postgresql://deployer:***@127.0.0.1:1/state" in err.message
    assert "unreachable" in err.message
    assert err.hint and "reachable" in err.hint
    assert err.exit_code == 2


def test_unsupported_or_broken_urls_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not support"):
        Store.open("mysql://root:pw@db/state")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store.open(f"sqlite:///{blocker}/sub/state.db")
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"garbage\.db"):
        Store.open(f"sqlite:///{not_a_db}")


def test_closed_store_refuses_work(store_url: str) -> None:
    s = Store.open(store_url)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.list_deployments()
