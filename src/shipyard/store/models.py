"""SQLAlchemy 2 table definitions (typed declarative). Private to the store.

The Alembic migrations in `migrations/versions/` create exactly these tables;
`tests/integration/test_store.py` checks that the two never drift apart.
No column holds a secret value: environment values are never stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

VERSION_TABLE = "shipyard_alembic_version"

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
    }


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    environment: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    commit: Mapped[str | None] = mapped_column(String(64))
    base_commit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    plan_hash: Mapped[str | None] = mapped_column(String(128))
    dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    rollback_of: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("deployments.id", ondelete="SET NULL")
    )
    created_by: Mapped[str | None] = mapped_column(String(255))
    # A promotion's source deployment (in another environment): what was tested there.
    promoted_from: Mapped[str | None] = mapped_column(String(36))
    options: Mapped[dict[str, Any]]
    # Last journal sequence number handed out; bumped atomically by append_event.
    event_seq: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_deployments_environment_created_at", "environment", "created_at"),
        Index("ix_deployments_environment_status", "environment", "status"),
    )


class DeploymentComponent(Base):
    __tablename__ = "deployment_components"

    deployment_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    component: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    release: Mapped[str | None] = mapped_column(String(200))
    previous_release: Mapped[str | None] = mapped_column(String(200))
    artifact: Mapped[str | None] = mapped_column(String(200))
    port: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    health: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    __tablename__ = "events"

    deployment_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(50))
    step: Mapped[str | None] = mapped_column(String(200))
    component: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str | None] = mapped_column(String(50))
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]


class Snapshot(Base):
    __tablename__ = "snapshots"

    deployment_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    component: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    release: Mapped[str | None] = mapped_column(String(200))
    artifact: Mapped[str | None] = mapped_column(String(200))
    migration_revision: Mapped[str | None] = mapped_column(String(200))
    commit: Mapped[str | None] = mapped_column(String(64))
    # The deployment that made `release` active (not a foreign key: it may predate this store).
    active_deployment_id: Mapped[str | None] = mapped_column(String(36))


class ReleaseSpec(Base):
    """A release's own settings (its component's section of shipyard.toml at its commit)."""

    __tablename__ = "release_specs"

    environment: Mapped[str] = mapped_column(String(200), primary_key=True)
    component: Mapped[str] = mapped_column(String(200), primary_key=True)
    release: Mapped[str] = mapped_column(String(200), primary_key=True)
    commit: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class SavedPlan(Base):
    """A plan kept for a later `deploy(plan_id)` (MCP, API): what was shown is what runs."""

    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    environment: Mapped[str] = mapped_column(String(200))
    plan_hash: Mapped[str] = mapped_column(String(128))
    commit: Mapped[str | None] = mapped_column(String(64))
    plan: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(255))


class Artifact(Base):
    __tablename__ = "artifacts"

    component: Mapped[str] = mapped_column(String(200), primary_key=True)
    digest: Mapped[str] = mapped_column(String(200), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    build_command: Mapped[str | None] = mapped_column(Text)
    commit: Mapped[str | None] = mapped_column(String(64))
    dirty: Mapped[bool] = mapped_column(Boolean, default=False)


class Lock(Base):
    __tablename__ = "locks"

    environment: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Not a foreign key: a lock may be taken before its deployment row is written.
    deployment_id: Mapped[str] = mapped_column(String(36))
    owner_user: Mapped[str] = mapped_column(String(200))
    owner_host: Mapped[str] = mapped_column(String(255))
    owner_pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class LockEvent(Base):
    """Audit trail of the locks: who took, released, took over or forced which lock."""

    __tablename__ = "lock_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    deployment_id: Mapped[str | None] = mapped_column(String(36))
    owner_user: Mapped[str | None] = mapped_column(String(200))
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    by: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)
