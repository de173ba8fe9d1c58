"""The `django` tool: ``manage.py migrate`` and ``showmigrations --plan``, per app.

``migrations = { tool = "django", manage = "manage.py" }`` (the path of manage.py in the
release). Every command runs as ``python manage.py …`` with ``python`` from the release env's
PATH, in the release folder on the host, with the release's env, so the release's settings (and
``DJANGO_SETTINGS_MODULE`` if the env sets it) pick the database.

A revision is the applied leaf of every app, ``"app.0002_name,other.0001_initial"`` (apps in
name order). Pending migrations are read from Django's own migration graph
(:mod:`.django_helper`): ``RunPython`` without ``reverse_code`` and ``RunSQL`` without
``reverse_sql`` are irreversible; ``RemoveField``, ``DeleteModel``, ``RenameField``,
``RenameModel`` and an ``AlterField`` that changes the column's type are destructive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipyard.effects.migrations.alembic import read_result
from shipyard.effects.migrations.base import (
    IrreversibleMigration,
    MigrationState,
    PendingStep,
    RunOnHost,
)

HELPER = Path(__file__).with_name("django_helper.py")


def parse_revision(revision: str | None) -> dict[str, str]:
    """``"a.0002_x,b.0001_y"`` → ``{"a": "0002_x", "b": "0001_y"}``."""
    pairs = (part.split(".", 1) for part in (revision or "").split(",") if "." in part)
    return {app: name for app, name in pairs}


class DjangoMigrator:
    """A Django project whose manage.py is at `manage` in the release folder."""

    tool = "django"

    def __init__(self, manage: str, run: RunOnHost) -> None:
        self.manage = manage
        self.run = run

    def _manage(self, *args: str, extra: dict[str, str] | None = None) -> str:
        return self.run(["python", self.manage, *args], extra or {})

    def _helper(self, *args: str) -> dict[str, Any]:
        source = HELPER.read_text(encoding="utf-8")
        output = self._manage(
            "shell", "-c", source, extra={"SHIPYARD_MIGRATION_ARGS": json.dumps(args)}
        )
        return read_result(output, f"django {args[0]}")

    def current(self) -> str | None:
        """The last applied migration of each app, from ``showmigrations --plan``."""
        applied: dict[str, str] = {}
        for line in self._manage("showmigrations", "--plan").splitlines():
            mark, _, node = line.strip().partition(" ")
            if mark == "[X]" and "." in node.strip():
                app, name = node.strip().split(".", 1)
                applied[app] = name
        return ",".join(f"{app}.{applied[app]}" for app in sorted(applied)) or None

    def state(self) -> MigrationState:
        found = self._helper("state")
        return MigrationState(
            tool=self.tool,
            current=found["current"],
            head=found["head"],
            pending=tuple(
                PendingStep(
                    revision=item["revision"],
                    label=item["label"]
                    + (f" ({', '.join(item['irreversible'])})" if item["irreversible"] else ""),
                    reversible=bool(item["reversible"]),
                    destructive=tuple(item["destructive"]),
                )
                for item in found["pending"]
            ),
        )

    def upgrade(self, target: str | None = None) -> MigrationState:
        if target is None:
            self._manage("migrate", "--noinput")
        else:
            app, _, name = target.partition(".")
            self._manage("migrate", "--noinput", app, name)
        return self.state()

    def downgrade(self, target: str | None) -> MigrationState:
        blocked = self._helper("down", target or "")["irreversible"]
        if blocked:
            raise IrreversibleMigration(
                f"cannot downgrade to {target or 'zero'}: {', '.join(blocked)} cannot be "
                "reversed (RunPython without reverse_code or RunSQL without reverse_sql); "
                "nothing was changed",
                hint="give the operation its reverse, or keep the database at this revision "
                "and roll forward with a new migration",
            )
        wanted = parse_revision(target)
        current = parse_revision(self.current())
        # Newest first: unapplying an app's migration also unapplies what depends on it.
        for app in reversed(list(current)):
            if wanted.get(app) != current[app]:
                self._manage("migrate", "--noinput", app, wanted.get(app, "zero"))
        return self.state()
