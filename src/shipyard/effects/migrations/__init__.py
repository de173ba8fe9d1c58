"""Schema migrations of a component, one adapter per tool behind one interface.

:func:`open_migrator` picks the adapter for a component's ``migrations`` setting; the target
calls it with the release folder and a function that runs commands there on the host, so the
migrations run where the release runs, with its env, never inside shipyard's own process
(except ``sql``, which is shipyard's own code and needs nothing from the release).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shipyard.config import Migrations
from shipyard.effects.migrations.alembic import AlembicMigrator
from shipyard.effects.migrations.base import (
    IrreversibleMigration,
    MigrationState,
    Migrator,
    PendingStep,
    RunOnHost,
    migrate_to,
)
from shipyard.effects.migrations.command import CommandMigrator
from shipyard.effects.migrations.django import DjangoMigrator
from shipyard.effects.migrations.sql import SqlMigrator
from shipyard.errors import DeploymentFailed

__all__ = [
    "IrreversibleMigration",
    "MigrationState",
    "Migrator",
    "PendingStep",
    "RunOnHost",
    "migrate_to",
    "open_migrator",
]


def open_migrator(
    component: str,
    spec: Migrations,
    *,
    release_dir: Path,
    cwd: Path,
    env: Mapping[str, str],
    run: RunOnHost,
) -> Migrator:
    """The adapter for `spec`, working on the files of the release in `release_dir`.

    `cwd` is where a relative SQLite path resolves (the release folder, or the component
    folder before its first release); `run` runs a command in the release folder on the host.
    """
    if spec.tool == "sql":
        url = env.get("DATABASE_URL")
        if not url:
            raise DeploymentFailed(
                f"{component}: sql migrations need DATABASE_URL in the component's secrets or env",
                hint=f'add "DATABASE_URL" to components.{component}.secrets',
            )
        return SqlMigrator(release_dir / (spec.dir or "migrations"), url, cwd)
    if spec.tool == "alembic":
        return AlembicMigrator(spec.config or "alembic.ini", run)
    if spec.tool == "django":
        return DjangoMigrator(spec.manage or "manage.py", run)
    return CommandMigrator(spec, run)
