"""Initial schema: deployments, components, events, snapshots, artifacts, locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Migrations are frozen history: they spell out plain SQLAlchemy types instead of
importing the models, so later model changes never rewrite them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(
        name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("base_commit", sa.String(64), nullable=True),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("plan_hash", sa.String(128), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("rollback_of", sa.String(36), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        _json("options", nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollback_of"],
            ["deployments.id"],
            name="fk_deployments_rollback_of_deployments",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index(
        "ix_deployments_environment_created_at", "deployments", ["environment", "created_at"]
    )
    op.create_index("ix_deployments_environment_status", "deployments", ["environment", "status"])

    op.create_table(
        "deployment_components",
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("component", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("release", sa.String(200), nullable=True),
        sa.Column("previous_release", sa.String(200), nullable=True),
        sa.Column("artifact", sa.String(200), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        _ts("started_at"),
        _ts("finished_at"),
        _json("health"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_components_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "deployment_id", "component", "host", name="pk_deployment_components"
        ),
    )

    op.create_table(
        "events",
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        _ts("at", nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("component", sa.String(200), nullable=True),
        sa.Column("status", sa.String(50), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        _json("data"),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_events_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", "seq", name="pk_events"),
    )

    op.create_table(
        "snapshots",
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("component", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("release", sa.String(200), nullable=True),
        sa.Column("artifact", sa.String(200), nullable=True),
        sa.Column("migration_revision", sa.String(200), nullable=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("active_deployment_id", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_snapshots_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", "component", "host", name="pk_snapshots"),
    )

    op.create_table(
        "artifacts",
        sa.Column("component", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("build_command", sa.Text(), nullable=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("component", "digest", name="pk_artifacts"),
    )

    op.create_table(
        "locks",
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("owner_user", sa.String(200), nullable=False),
        sa.Column("owner_host", sa.String(255), nullable=False),
        sa.Column("owner_pid", sa.Integer(), nullable=False),
        _ts("acquired_at", nullable=False),
        _ts("heartbeat_at", nullable=False),
        _ts("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("environment", name="pk_locks"),
    )

    op.create_table(
        "lock_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        _ts("at", nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=True),
        sa.Column("owner_user", sa.String(200), nullable=True),
        sa.Column("owner_host", sa.String(255), nullable=True),
        sa.Column("owner_pid", sa.Integer(), nullable=True),
        sa.Column("by", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_lock_events"),
    )
    op.create_index("ix_lock_events_environment", "lock_events", ["environment"])


def downgrade() -> None:
    op.drop_index("ix_lock_events_environment", table_name="lock_events")
    op.drop_table("lock_events")
    op.drop_table("locks")
    op.drop_table("artifacts")
    op.drop_table("snapshots")
    op.drop_table("events")
    op.drop_table("deployment_components")
    op.drop_index("ix_deployments_environment_status", table_name="deployments")
    op.drop_index("ix_deployments_environment_created_at", table_name="deployments")
    op.drop_table("deployments")
