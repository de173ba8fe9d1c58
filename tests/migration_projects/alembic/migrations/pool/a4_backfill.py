"""backfill prices (no way back)

Revision ID: a4
Revises: a2
"""

from alembic import op

revision = "a4"
down_revision = "a2"


def upgrade():
    op.execute("UPDATE products SET price = 0 WHERE price IS NULL")


def downgrade():
    pass
