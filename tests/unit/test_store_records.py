"""Store records and URLs: pure behaviour, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shipyard.errors import StoreError
from shipyard.store import (
    ComponentRecord,
    DeploymentRecord,
    EventRecord,
    LockOwner,
    LockRecord,
    SnapshotEntry,
)
from shipyard.store.urls import mask_url, normalize_url, scrub, sqlite_path

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_deployment_to_dict_has_the_cli_shape() -> None:
    d = DeploymentRecord(
        id="0190aaaa-bbbb-7ccc-8ddd-000000000001",
        environment="staging",
        kind="partial",
        commit="c" * 40,
        status="succeeded",
        base_commit="b" * 40,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=42.1234),
        created_by="alice@ci",
        options={"tests": "smoke"},
    )
    shape = d.to_dict()
    assert {
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
    } <= set(shape)
    assert shape["duration_s"] == 42.123
    assert shape["started_at"] == "2030-05-01T12:00:00+00:00"
    assert shape["error"] is None and d.finished
    assert DeploymentRecord(id="x", environment="e", kind="full").to_dict()["duration_s"] is None


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"kind": "sideways"}, "kind"), ({"status": "done"}, "status")],
)
def test_deployment_record_validates_enumerations(changes: dict[str, object], match: str) -> None:
    record = DeploymentRecord(id="x", environment="e", kind="full").replace(**changes)
    with pytest.raises(ValueError, match=match):
        record.validate()


def test_records_refuse_naive_datetimes_when_built() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DeploymentRecord(id="x", environment="e", kind="full", started_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        EventRecord("d1", 1, datetime(2030, 1, 1), "step_started")


def test_component_event_snapshot_records() -> None:
    c = ComponentRecord("d1", "backend", status="healthy", release="r1", artifact="sha256:1")
    assert c.host == "local"
    assert {"name", "status", "release", "previous_release", "artifact"} <= set(c.to_dict())
    with pytest.raises(ValueError, match="status"):
        ComponentRecord("d1", "backend", status="bored").validate()
    e = EventRecord("d1", 1, T0.astimezone(timezone(timedelta(hours=-5))), "step_started")
    assert e.to_dict()["at"] == "2030-05-01T12:00:00+00:00"
    assert SnapshotEntry("backend").to_dict()["release"] is None


def test_lock_record_expiry_and_owner_text() -> None:
    owner = LockOwner("alice", "ci-1", 42)
    assert str(owner) == "alice@ci-1 pid 42"
    lock = LockRecord("production", "d1", owner, T0, T0, T0 + timedelta(seconds=30))
    assert not lock.expired(T0 + timedelta(seconds=29.999))
    assert lock.expired(T0 + timedelta(seconds=30))
    assert lock.to_dict(T0)["expired"] is False
    assert lock.to_dict()["owner"] == {"user": "alice", "host": "ci-1", "pid": 42}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://deploy:s3cr%40t@db:5432/state", "postgresql://deploy:***@db:5432/state"),
        ("postgresql://deploy@db/state", "postgresql://deploy@db/state"),
        (
            "postgresql://u@db/s?password=hunter2&sslmode=require",
            "postgresql://u@db/s?password=***&sslmode=require",
        ),
        ("sqlite:///.shipyard/state.db", "sqlite:///.shipyard/state.db"),
        ("weird://user:pw@[not parseable", "weird://user:***@[not parseable"),
    ],
)
def test_mask_url_hides_passwords(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_printed_url_never_shows_its_password() -> None:
    url = normalize_url("postgresql://ann:hunter2@db/x?sslpassword=s3cr3t")
    for shown in (repr(url), str(url), f"{url}", repr({"url": url})):
        assert "hunter2" not in shown and "s3cr3t" not in shown, shown
        assert "ann:***@db" in shown
    assert "hunter2" in url.render()  # what the driver is given keeps it


def test_normalize_url_picks_drivers() -> None:
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/d").drivername == "postgresql+psycopg2"
    assert normalize_url("sqlite:///x.db").database == "x.db"
    assert normalize_url(".shipyard/state.db").database == ".shipyard/state.db"
    assert str(sqlite_path(normalize_url("sqlite:////abs/state.db"))) == "/abs/state.db"
    assert sqlite_path(normalize_url("sqlite://")) is None
    for bad in ("", "mysql://h/d", "postgresql://u@h:notaport/d"):
        with pytest.raises(StoreError):
            normalize_url(bad)


def test_scrub_removes_the_password_from_driver_messages() -> None:
    url = normalize_url("postgresql://u:topsecret@h/d")
    assert scrub('auth failed for "u" using topsecret', url) == 'auth failed for "u" using ***'
