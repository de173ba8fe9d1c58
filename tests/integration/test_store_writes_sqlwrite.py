"""A SQLite store written through sqlite3 is the store SQLAlchemy would have written.

`Store` writes a SQLite file with the standard library (`sqlite_writes`), so that a deploy
never imports SQLAlchemy; PostgreSQL and migrations keep `sql.SqlStore`. Here generated
sequences of writes (hypothesis: the reads test's store contents, plus updates, heartbeats,
prunes, batches and writes that fail) are applied to the same file once through each layer:
every write must give the same result or error, the files must hold the same rows byte for
byte (so stores written before read the same), and every read of either read layer must
agree on both files.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.errors import ShipyardError
from shipyard.store import (
    DEPLOYMENT_STATUSES,
    DeploymentRecord,
    LockOwner,
    Store,
    tables,
)
from shipyard.store.sql import SqlStore
from shipyard.store.sqlite_reads import SqliteReads
from shipyard.store.urls import normalize_url
from tests.integration.test_store_reads_startup import (
    ENVS,
    Clock,
    Write,
    maybe_moment,
    maybe_text,
    outcome,
    reads_of,
    store_contents,
)

OWNER = LockOwner("ann", "box", 42)


@st.composite
def more_writes(draw: st.DrawFn, ids: list[str]) -> list[Write]:
    """Writes the reads test does not make: updates, heartbeats, prunes, batches, failures."""
    known = [*ids, "0000dead-0000-0000-0000-000000000000"]
    writes: list[Write] = []
    for _ in range(draw(st.integers(0, 6))):
        target = draw(st.sampled_from(known))
        choice = draw(st.sampled_from(["update", "event", "heartbeat", "prune", "dup", "batch"]))
        if choice == "update":
            fields = {
                "status": draw(st.sampled_from(sorted(DEPLOYMENT_STATUSES))),
                "finished_at": draw(maybe_moment),
                "error": draw(maybe_text),
                "dirty": draw(st.booleans()),
                "options": {"k": draw(maybe_text)},
            }
            picked = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
            chosen = {k: fields[k] for k in picked}
            writes.append(lambda s, _c, t=target, f=chosen: s.update_deployment(t, **f))
        elif choice == "event":
            writes.append(lambda s, _c, t=target: s.append_event(t, "step", message="m"))
        elif choice == "heartbeat":
            env = draw(st.sampled_from(ENVS))
            writes.append(lambda s, _c, e=env, t=target: s.heartbeat(e, t, 30))
        elif choice == "prune":
            age, keep = draw(st.integers(0, 100)), draw(st.integers(0, 2))
            writes.append(lambda s, _c, a=age, k=keep: s.prune_plans(timedelta(days=a), k))
        elif choice == "dup":
            d = DeploymentRecord(id=target, environment="production", kind="full")
            writes.append(lambda s, _c, d=d: s.create_deployment(d))
        else:
            fail = draw(st.booleans())

            def batched(s: Store, _c: Clock, t: str = target, fail: bool = fail) -> None:
                with s.batch("write a batch"):
                    s.append_event(t, "batched")
                    s.update_deployment(t, status="running")
                    if fail:  # all or nothing
                        s.append_event("0000dead-0000-0000-0000-000000000000", "lost")

            writes.append(batched)
        if draw(st.booleans()):
            env = draw(st.sampled_from(ENVS))
            writes.append(lambda s, _c, e=env, t=target: s.acquire_lock(e, t, OWNER, 45))
    return writes


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sy-writes-"))
    path = folder / "template.db"
    Store.open(f"sqlite:///{path}").close()
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def through_sqlalchemy(url: str, *, clock: Clock) -> Store:
    """A Store whose every operation goes through SqlStore (as before sqlite_writes)."""
    parsed = normalize_url(url)
    store = Store(parsed, url, clock)
    store._sql_store = SqlStore.connect(parsed, store.url, store.now)
    return store


def apply(store: Store, clock: Clock, writes: list[Write]) -> list[str]:
    results = []
    for write in writes:
        try:
            results.append(repr(write(store, clock)))
        except ShipyardError as exc:
            results.append(f"error: {exc.message} / {exc.hint}")
    return results


def raw_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored value as SQLite holds it (text, integer, NULL), table by table."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            name: db.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3").fetchall()
            for name in tables.metadata.tables
        }


def every_read(path: Path, url: str, ids: list[str], plan_ids: list[str]) -> list[str]:
    parsed = normalize_url(url)
    lite = SqliteReads.connect(path, parsed, url)
    sql = SqlStore.connect(parsed, url, lambda: datetime.now(UTC))
    try:
        found = {}
        for label, read in reads_of(ids, plan_ids):
            found[label] = outcome(read, sql)
            assert outcome(read, lite) == found[label], label
        return list(found.values())  # (one label names a fresh unknown plan id)
    finally:
        lite.close()
        sql.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_sqlite3_writes_store_what_sqlalchemy_writes_store(
    template: Path, data: st.DataObject
) -> None:
    writes, plan_ids = data.draw(store_contents())
    folder = Path(tempfile.mkdtemp(prefix="sy-writes-"))
    try:
        path = folder / "state.db"
        url = f"sqlite:///{path}"
        outcomes = []
        extra: list[Write] | None = None
        for open_store in (Store.open, through_sqlalchemy):
            shutil.copyfile(template, path)
            for side in ("-wal", "-shm"):
                path.with_name(path.name + side).unlink(missing_ok=True)
            clock = Clock()
            with open_store(url, clock=clock) as store:
                results = apply(store, clock, writes)
                ids = [d.id for d in store.list_deployments(limit=None)]
                if extra is None:  # drawn once, after the ids exist: the same for both
                    extra = data.draw(more_writes(ids))
                results += apply(store, clock, extra)
                if open_store is Store.open:
                    assert store._sql_store is None  # no SQLAlchemy layer was needed
            outcomes.append((results, raw_rows(path), every_read(path, url, ids, plan_ids)))
        assert outcomes[0] == outcomes[1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
