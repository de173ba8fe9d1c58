"""The store's tables, declared with SQLAlchemy Core. Private to the store.

Core, not the declarative ORM: the store only ever runs Core statements, and importing
`sqlalchemy.orm` and building mapped classes was about a third of the store's import time,
paid by every command that writes.
The Alembic migrations in `migrations/versions/` create exactly these tables;
`tests/integration/test_store.py` checks that the two never drift apart.
No column holds a secret value: environment values are never stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime; stored as timestamptz on PostgreSQL and naive UTC on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes aware UTC datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONValue(TypeDecorator[Any]):
    """JSON, stored as JSONB on PostgreSQL; Python None is SQL NULL (not the JSON 'null').

    The PostgreSQL type is chosen when a dialect asks (not with `with_variant` at import):
    importing the PostgreSQL dialect costs every SQLite user ~50 ms of start-up.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))


JSONType = JSONValue()
metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _required(name: str, kind: Any, *args: Any, **kw: Any) -> Column[Any]:
    return Column(name, kind, *args, nullable=False, **kw)


def _optional(name: str, kind: Any, *args: Any, **kw: Any) -> Column[Any]:
    return Column(name, kind, *args, nullable=True, **kw)


def _key(name: str, kind: Any, *args: Any, **kw: Any) -> Column[Any]:
    return Column(name, kind, *args, primary_key=True, **kw)


def _deployment_key(ondelete: str = "CASCADE") -> Column[Any]:
    return _key("deployment_id", String(36), ForeignKey("deployments.id", ondelete=ondelete))


deployments = Table(
    "deployments",
    metadata,
    _key("id", String(36)),
    _required("environment", String(200)),
    _required("kind", String(20)),
    _required("status", String(20)),
    _optional("commit", String(64)),
    _optional("base_commit", String(64)),
    _required("created_at", UTCDateTime()),
    _optional("started_at", UTCDateTime()),
    _optional("finished_at", UTCDateTime()),
    _optional("error", Text),
    _optional("plan_hash", String(128)),
    _required("dirty", Boolean, default=False),
    _optional("rollback_of", String(36), ForeignKey("deployments.id", ondelete="SET NULL")),
    _optional("created_by", String(255)),
    # A promotion's source deployment (in another environment): what was tested there.
    _optional("promoted_from", String(36)),
    _required("options", JSONType),
    # Last journal sequence number handed out; bumped atomically by append_event.
    _required("event_seq", Integer, default=0),
    Index("ix_deployments_environment_created_at", "environment", "created_at"),
    Index("ix_deployments_environment_status", "environment", "status"),
)

components = Table(
    "deployment_components",
    metadata,
    _deployment_key(),
    _key("component", String(200)),
    _key("host", String(255)),
    _required("status", String(20)),
    _optional("release", String(200)),
    _optional("previous_release", String(200)),
    _optional("artifact", String(200)),
    _optional("port", Integer),
    _optional("started_at", UTCDateTime()),
    _optional("finished_at", UTCDateTime()),
    _optional("health", JSONType),
    _optional("error", Text),
)

events = Table(
    "events",
    metadata,
    _deployment_key(),
    _key("seq", Integer, autoincrement=False),
    _required("at", UTCDateTime()),
    _required("kind", String(50)),
    _optional("step", String(200)),
    _optional("component", String(200)),
    _optional("status", String(50)),
    _optional("message", Text),
    _optional("data", JSONType),
)

snapshots = Table(
    "snapshots",
    metadata,
    _deployment_key(),
    _key("component", String(200)),
    _key("host", String(255)),
    _optional("release", String(200)),
    _optional("artifact", String(200)),
    _optional("migration_revision", String(200)),
    _optional("commit", String(64)),
    # The deployment that made `release` active (not a foreign key: it may predate this store).
    _optional("active_deployment_id", String(36)),
)

# A release's own settings (its component's section of shipyard.toml at its commit).
release_specs = Table(
    "release_specs",
    metadata,
    _key("environment", String(200)),
    _key("component", String(200)),
    _key("release", String(200)),
    _optional("commit", String(64)),
    _required("spec", JSONType),
    _required("created_at", UTCDateTime()),
)

# A plan kept for a later `deploy(plan_id)` (MCP, API): what was shown is what runs.
plans = Table(
    "plans",
    metadata,
    _key("id", String(36)),
    _required("environment", String(200)),
    _required("plan_hash", String(128)),
    _optional("commit", String(64)),
    _required("plan", JSONType),
    _required("created_at", UTCDateTime()),
    _optional("created_by", String(255)),
)

artifacts = Table(
    "artifacts",
    metadata,
    _key("component", String(200)),
    _key("digest", String(200)),
    _required("path", Text),
    _required("size_bytes", BigInteger),
    _required("created_at", UTCDateTime()),
    _optional("build_command", Text),
    _optional("commit", String(64)),
    _required("dirty", Boolean, default=False),
)

locks = Table(
    "locks",
    metadata,
    _key("environment", String(200)),
    # Not a foreign key: a lock may be taken before its deployment row is written.
    _required("deployment_id", String(36)),
    _required("owner_user", String(200)),
    _required("owner_host", String(255)),
    _required("owner_pid", Integer),
    _required("acquired_at", UTCDateTime()),
    _required("heartbeat_at", UTCDateTime()),
    _required("expires_at", UTCDateTime()),
)

# Audit trail of the locks: who took, released, took over or forced which lock.
lock_events = Table(
    "lock_events",
    metadata,
    _key("id", Integer, autoincrement=True),
    _required("environment", String(200), index=True),
    _required("action", String(20)),
    _required("at", UTCDateTime()),
    _optional("deployment_id", String(36)),
    _optional("owner_user", String(200)),
    _optional("owner_host", String(255)),
    _optional("owner_pid", Integer),
    _optional("by", String(255)),
    _optional("detail", Text),
)
