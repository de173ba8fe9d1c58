"""drop the name (destructive)

Revision ID: a3
Revises: a2
"""

import sqlalchemy as sa
from alembic import op

revision = "a3"
down_revision = "a2"


def upgrade():
    with op.batch_alter_table("products") as batch:
        batch.drop_column("name")


def downgrade():
    op.add_column("products", sa.Column("name", sa.String(80), nullable=True))
