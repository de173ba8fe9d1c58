"""Alembic environment for the shipyard state store.

Only used programmatically (see `shipyard.store.migrate`): the caller passes an
open connection in `config.attributes["connection"]`, already inside the
transaction (and lock) it wants the migration to run in.
"""

from alembic import context

from shipyard.store.migrate import VERSION_TABLE
from shipyard.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the shipyard migrations run programmatically: use shipyard.store.migrate "
        "(`python -m shipyard.store.migrate --help`), not the alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite needs batch mode for ALTER TABLE
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
