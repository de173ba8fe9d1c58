"""The `sql` tool behind the migration interface: shipyard's own folder of up/down SQL files.

The work is done by :mod:`shipyard.effects.sql_migrations` (it needs only shipyard itself and
the database driver); this adapter maps it onto :class:`~.base.Migrator`.
"""

from __future__ import annotations

from pathlib import Path

from shipyard.effects import sql_migrations
from shipyard.effects.migrations.base import IrreversibleMigration, MigrationState, PendingStep


class SqlMigrator:
    """Migrations in `folder`, applied to the database at `url` (relative to `cwd`)."""

    tool = "sql"

    def __init__(self, folder: Path, url: str, cwd: Path) -> None:
        self.folder = folder
        self.url = url
        self.cwd = cwd

    def current(self) -> str | None:
        return sql_migrations.current_revision(self.url, cwd=self.cwd)

    def state(self) -> MigrationState:
        status = sql_migrations.status(self.folder, self.url, cwd=self.cwd)
        return self._state(status.current, status.pending)

    def state_from(self, current: str | None) -> MigrationState:
        """The state of a database at revision `current`, from the files alone."""
        pending = [
            m
            for m in sql_migrations.discover(self.folder)
            if current is None or m.number > int(current)
        ]
        return self._state(current, pending)

    def _state(
        self, current: str | None, pending: list[sql_migrations.Migration]
    ) -> MigrationState:
        destructive = sql_migrations.destructive_changes(pending)
        migrations = sql_migrations.discover(self.folder)
        return MigrationState(
            tool=self.tool,
            current=current,
            head=migrations[-1].revision if migrations else None,
            pending=tuple(
                PendingStep(
                    revision=m.revision,
                    label=m.label,
                    reversible=m.reversible,
                    destructive=tuple(destructive.get(m.revision, ())),
                )
                for m in pending
            ),
        )

    def upgrade(self, target: str | None = None) -> MigrationState:
        sql_migrations.upgrade(self.folder, self.url, target, cwd=self.cwd)
        return self.state()

    def downgrade(self, target: str | None) -> MigrationState:
        current = self.current()
        if target is not None and current is not None and int(current) < int(target):
            return self.state()  # already below: nothing to undo
        by_number = {m.number: m for m in sql_migrations.discover(self.folder)}
        applied = sql_migrations.status(self.folder, self.url, cwd=self.cwd).applied
        limit = int(target) if target is not None and target.isdigit() else -1
        for revision in applied:
            migration = by_number.get(int(revision))
            if int(revision) > limit and migration is not None and not migration.reversible:
                raise IrreversibleMigration(
                    f"cannot downgrade to {target or '(none)'}: migration "
                    f"{migration.up_path.name} has no {migration.label}.down.sql; "
                    "nothing was changed",
                    hint="write the .down.sql file, or keep the database at this revision and "
                    "roll forward with a new migration",
                )
        sql_migrations.downgrade(self.folder, self.url, target, cwd=self.cwd)
        return self.state()
