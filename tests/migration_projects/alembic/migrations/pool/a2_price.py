"""price

Revision ID: a2
Revises: a1
"""

import sqlalchemy as sa
from alembic import op

revision = "a2"
down_revision = "a1"


def upgrade():
    op.add_column("products", sa.Column("price", sa.Integer, nullable=True))


def downgrade():
    with op.batch_alter_table("products") as batch:
        batch.drop_column("price")
