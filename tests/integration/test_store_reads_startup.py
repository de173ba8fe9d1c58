"""A SQLite store reads the same through sqlite3 as through SQLAlchemy.

`Store` reads a SQLite file with the standard library (`sqlite_reads`), so that `status`
and `history` start without SQLAlchemy (its writes: test_store_writes_sqlwrite.py).
Here stores are generated (hypothesis), written through `Store`, then every read is asked
of both layers on the same file: same records (to the time zone of every datetime), same
order, same errors.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.errors import ShipyardError
from shipyard.store import (
    COMPONENT_STATUSES,
    DEPLOYMENT_KINDS,
    DEPLOYMENT_STATUSES,
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    LockOwner,
    PlanRecord,
    ReleaseSpecRecord,
    SnapshotEntry,
    Store,
    new_id,
    tables,
)
from shipyard.store.sql import SqlStore
from shipyard.store.sqlite_reads import DATETIME_COLUMNS, JSON_COLUMNS, SqliteReads
from shipyard.store.urls import normalize_url

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ENVS = ("production", "staging")
NAMES = ("api", "web", "db")

texts = st.text(max_size=12)
maybe_text = st.none() | texts
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)
# Aware datetimes in several zones, a few of them equal (ties are ordered by id).
instants = st.sampled_from([T0, T0 + timedelta(seconds=1)]) | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)
).map(lambda d: d.replace(tzinfo=UTC))
moments = st.builds(
    lambda d, hours: d.astimezone(timezone(timedelta(hours=hours))),
    instants,
    st.integers(-12, 12),
)
maybe_moment = st.none() | moments


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


Write = Callable[[Store, Clock], None]


@st.composite
def store_contents(draw: st.DrawFn) -> tuple[list[Write], list[str]]:
    """Writes that fill a store (deployments with their components, journal, snapshots,
    release specs, artifacts, saved plans, lock activity), and the saved plans' ids."""
    writes: list[Write] = []
    ids: list[str] = []
    plan_ids: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        d = DeploymentRecord(
            id=new_id(),
            environment=draw(st.sampled_from(ENVS)),
            kind=draw(st.sampled_from(sorted(DEPLOYMENT_KINDS))),
            status=draw(st.sampled_from(sorted(DEPLOYMENT_STATUSES))),
            commit=draw(st.none() | st.text("0123456789abcdef", min_size=40, max_size=40)),
            base_commit=draw(maybe_text),
            started_at=draw(maybe_moment),
            finished_at=draw(maybe_moment),
            error=draw(maybe_text),
            plan_hash=draw(maybe_text),
            dirty=draw(st.booleans()),
            rollback_of=draw(st.none() | st.sampled_from(ids)) if ids else None,
            created_by=draw(maybe_text),
            options=draw(json_objects),
            created_at=draw(st.none() | moments),
            promoted_from=draw(maybe_text),
        )
        ids.append(d.id)
        writes.append(lambda s, _c, d=d: s.create_deployment(d))
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)):
            c = ComponentRecord(
                deployment_id=d.id,
                component=name,
                host=draw(st.sampled_from(["local", "h2"])),
                status=draw(st.sampled_from(sorted(COMPONENT_STATUSES))),
                release=draw(maybe_text),
                previous_release=draw(maybe_text),
                artifact=draw(maybe_text),
                port=draw(st.none() | st.integers(1, 65535)),
                started_at=draw(maybe_moment),
                finished_at=draw(maybe_moment),
                health=draw(st.none() | json_objects),
                error=draw(maybe_text),
            )
            writes.append(lambda s, _c, c=c: s.set_component(c))
        for _ in range(draw(st.integers(0, 4))):
            event: dict[str, Any] = {
                "kind": draw(texts),
                "step": draw(maybe_text),
                "component": draw(maybe_text),
                "status": draw(maybe_text),
                "message": draw(maybe_text),
                "data": draw(st.none() | json_objects),
                "at": draw(maybe_moment),
            }
            writes.append(lambda s, _c, i=d.id, e=event: _append(s, i, e))
        entries = [
            SnapshotEntry(name, "local", draw(maybe_text), draw(maybe_text), draw(maybe_text))
            for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))
        ]
        writes.append(lambda s, _c, i=d.id, e=entries: s.save_snapshot(i, e))
    for _ in range(draw(st.integers(0, 3))):
        spec = ReleaseSpecRecord(
            environment=draw(st.sampled_from(ENVS)),
            component=draw(st.sampled_from(NAMES)),
            release=draw(st.sampled_from(["r1", "r2"])),
            commit=draw(maybe_text),
            spec=draw(json_objects),
            created_at=draw(st.none() | moments),
        )
        writes.append(lambda s, _c, r=spec: s.save_release_spec(r))
    for _ in range(draw(st.integers(0, 3))):
        a = ArtifactRecord(
            component=draw(st.sampled_from(NAMES)),
            digest=draw(st.sampled_from(["sha256:1", "sha256:2"])),
            path=draw(texts),
            size_bytes=draw(st.integers(0, 2**40)),
            created_at=draw(st.none() | moments),
            build_command=draw(maybe_text),
            commit=draw(maybe_text),
            dirty=draw(st.booleans()),
        )
        writes.append(lambda s, _c, a=a: s.record_artifact(a))
    for _ in range(draw(st.integers(0, 2))):
        p = PlanRecord(
            id=new_id(),
            environment=draw(st.sampled_from(ENVS)),
            plan_hash=draw(texts),
            commit=draw(maybe_text),
            plan=draw(json_objects),
            created_at=draw(st.none() | moments),
            created_by=draw(maybe_text),
        )
        plan_ids.append(p.id)
        writes.append(lambda s, _c, p=p: s.save_plan(p))
    for _ in range(draw(st.integers(0, 4))):
        env = draw(st.sampled_from(ENVS))
        owner = LockOwner(draw(texts), draw(texts), draw(st.integers(1, 99999)))
        holder = draw(st.sampled_from(ids)) if ids else "d"
        step = draw(st.integers(0, 120))
        action = draw(st.sampled_from(["acquire", "release", "force"]))

        def lock_write(
            s: Store, clock: Clock, env: str = env, owner: LockOwner = owner,
            holder: str = holder, step: int = step, action: str = action,
        ) -> None:  # fmt: skip
            clock.now += timedelta(seconds=step)
            if action == "acquire":
                with contextlib.suppress(ShipyardError):  # held by another: nothing written
                    s.acquire_lock(env, holder, owner, ttl_s=60)
            elif action == "release":
                s.release_lock(env, holder)
            else:
                s.force_release_lock(env, by=owner.user)

        writes.append(lock_write)
    return writes, plan_ids


def _append(store: Store, deployment_id: str, event: dict[str, Any]) -> None:
    store.append_event(deployment_id, **event)


@pytest.fixture(scope="module")
def migrated_file() -> Iterator[Path]:
    """An empty store at the current schema, copied for each example (one migration)."""
    folder = Path(tempfile.mkdtemp(prefix="sy-reads-"))
    path = folder / "template.db"
    Store.open(f"sqlite:///{path}").close()
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def outcome(read: Callable[[Any], Any], layer: object) -> str:
    """What a read of `layer` gave, as text that tells time zones apart; or its error."""
    try:
        return repr(read(layer))
    except ShipyardError as exc:
        return f"error: {exc.message} / {exc.hint}"


def reads_of(ids: list[str], plan_ids: list[str]) -> list[tuple[str, Callable[[Any], Any]]]:
    """Every read method with the arguments worth asking, as (label, call on a layer)."""
    asked: list[tuple[str, Callable[[Any], Any]]] = [
        ("schema_revision", lambda r: r.schema_revision()),
        ("ping", lambda r: r.ping()),
        ("list_artifacts", lambda r: r.list_artifacts()),
        ("lock_events", lambda r: r.lock_events()),
        ("no such id", lambda r: r.get_deployment("ffffffff-0000")),
        ("not an id", lambda r: r.get_deployment("x%_/")),
        ("short prefix", lambda r: r.get_deployment(ids[0][:3] if ids else "abc")),
    ]
    for env in (None, *ENVS):
        for limit in (None, 1, 3):
            asked.append(
                (f"list {env} {limit}", lambda r, e=env, n=limit: r.list_deployments(e, n))
            )
            asked.append((f"locks {env} {limit}", lambda r, e=env, n=limit: r.lock_events(e, n)))
    for env in ENVS:
        asked.append((f"good {env}", lambda r, e=env: r.last_good_deployment(e)))
        asked.append((f"unfinished {env}", lambda r, e=env: r.unfinished_deployments(e)))
        asked.append((f"lock {env}", lambda r, e=env: r.get_lock(e)))
        for name in NAMES:
            for release in ("r1", "r2", "r3"):
                asked.append(
                    (f"spec {env} {name} {release}", lambda r, e=env, c=name, v=release:
                     r.release_spec(e, c, v))
                )  # fmt: skip
    for name in (None, *NAMES):
        asked.append((f"artifacts {name}", lambda r, c=name: r.list_artifacts(c)))
        for digest in ("sha256:1", "sha256:3"):
            asked.append(
                (f"artifact {name} {digest}", lambda r, c=name, g=digest: r.get_artifact(c, g))
            )
    for i in ids:
        for wanted in (i, i[:8], i[:8].upper(), i[:13], i.replace("-", "")[:10], f" {i} "):
            asked.append((f"get {wanted}", lambda r, w=wanted: r.get_deployment(w)))
        asked.append((f"components {i}", lambda r, i=i: r.components(i)))
        asked.append((f"snapshot {i}", lambda r, i=i: r.snapshot(i)))
        for after in (0, 1, 3):
            for limit in (None, 2):
                asked.append(
                    (f"events {i} {after} {limit}", lambda r, i=i, a=after, n=limit:
                     r.events(i, a, n))
                )  # fmt: skip
    for plan_id in [*plan_ids, new_id()]:
        asked.append((f"plan {plan_id}", lambda r, p=plan_id: r.get_plan(p)))
    return asked


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(contents=store_contents())
def test_sqlite_reads_give_what_sqlalchemy_reads_give(
    migrated_file: Path, contents: tuple[list[Write], list[str]]
) -> None:
    writes, plan_ids = contents
    folder = Path(tempfile.mkdtemp(prefix="sy-reads-"))
    try:
        path = folder / "state.db"
        shutil.copyfile(migrated_file, path)
        url = f"sqlite:///{path}"
        clock = Clock()
        with Store.open(url, clock=clock) as store:
            for write in writes:
                write(store, clock)
            ids = [d.id for d in store.list_deployments(limit=None)]
            parsed = normalize_url(url)
            lite = SqliteReads.connect(path, parsed, store.url)
            sql = SqlStore.connect(parsed, store.url, store.now)
            try:
                for label, read in reads_of(ids, plan_ids):
                    expected = outcome(read, sql)
                    assert outcome(read, lite) == expected, label
                    assert outcome(read, store) == expected, label  # as its layers do
            finally:
                lite.close()
                sql.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_decoded_columns_are_the_datetime_and_json_columns_of_the_tables() -> None:
    kinds: dict[str, set[str]] = {"datetime": set(), "json": set()}
    for table in tables.metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, tables.UTCDateTime):
                kinds["datetime"].add(column.name)
            elif isinstance(column.type, tables.JSONValue):
                kinds["json"].add(column.name)
            else:
                assert column.name not in DATETIME_COLUMNS | JSON_COLUMNS, column
    assert kinds == {"datetime": set(DATETIME_COLUMNS), "json": set(JSON_COLUMNS)}


def test_a_store_read_after_a_write_sees_it_at_once(tmp_path: Path) -> None:
    # The read layer is another connection: it must see each write as soon as it commits.
    with Store.open(f"sqlite:///{tmp_path}/state.db") as store:
        d = DeploymentRecord(id=new_id(), environment="production", kind="full")
        store.create_deployment(d)
        assert store.get_deployment(d.id) is not None
        store.update_deployment(d.id, status="running")
        store.append_event(d.id, "step", message="one")
        assert store.get_deployment(d.id).status == "running"  # type: ignore[union-attr]
        assert [e.message for e in store.events(d.id)] == ["one"]
        with store.batch("two writes"):
            store.append_event(d.id, "step", message="two")
            store.update_deployment(d.id, status="succeeded")
        assert [e.message for e in store.events(d.id)] == ["one", "two"]
        assert store.last_good_deployment("production") == store.get_deployment(d.id)
