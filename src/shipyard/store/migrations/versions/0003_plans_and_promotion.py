"""Saved plans (deploy exactly what was shown) and a promotion's source deployment.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("plan_hash", sa.String(128), nullable=False),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("plan", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
    )
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("promoted_from", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("promoted_from")
    op.drop_table("plans")
