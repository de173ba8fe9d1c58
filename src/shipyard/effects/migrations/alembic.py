"""The `alembic` tool: Alembic's own command API and ScriptDirectory, in the release's Python.

``migrations = { tool = "alembic", config = "alembic.ini" }``. shipyard never imports the
release's Alembic or its env.py: it runs :mod:`.alembic_helper` with ``python`` from the release
env's PATH, in the release folder on the host, with the release's env (so env.py reads its
database URL from the secrets). The helper walks the revision graph (heads, branch points),
reads each pending revision's operations for destructive ones (``drop_table``, ``drop_column``,
``alter_column(type_=…)``, renames, ``nullable=False`` without a default; SQL run with
``op.execute`` is judged like a ``sql`` migration) and calls a downgrade with an empty body
irreversible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipyard.effects.migrations.base import (
    IrreversibleMigration,
    MigrationState,
    PendingStep,
    RunOnHost,
)
from shipyard.effects.sql_migrations import is_destructive
from shipyard.errors import DeploymentFailed

HELPER = Path(__file__).with_name("alembic_helper.py")
MARK = "SHIPYARD-JSON: "


def read_result(output: str, what: str) -> dict[str, Any]:
    """The helper's JSON line in `output` (the last one that carries the mark)."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            value = json.loads(line[len(MARK) :])
            if isinstance(value, dict):
                return value
    raise DeploymentFailed(
        f"{what}: the migration helper printed no result",
        hint="run the tool by hand in the release folder to see why",
    )


class AlembicMigrator:
    """An Alembic project configured by `config` (relative to the release folder)."""

    tool = "alembic"

    def __init__(self, config: str, run: RunOnHost) -> None:
        self.config = config
        self.run = run
        self.source = HELPER.read_text(encoding="utf-8")

    def _helper(self, *args: str) -> dict[str, Any]:
        output = self.run(["python", "-c", self.source, *args], {})
        return read_result(output, f"alembic {args[0]}")

    def current(self) -> str | None:
        return self.state().current

    def state(self) -> MigrationState:
        return self._state(self._helper("state", self.config))

    def _state(self, found: dict[str, Any]) -> MigrationState:
        steps = []
        for item in found["pending"]:
            destructive = list(item["destructive"])
            for sql in item.get("sql", []):
                destructive += is_destructive(sql)
            steps.append(
                PendingStep(
                    revision=item["revision"],
                    label=item["label"],
                    reversible=bool(item["reversible"]),
                    destructive=tuple(destructive),
                )
            )
        return MigrationState(
            tool=self.tool, current=found["current"], head=found["head"], pending=tuple(steps)
        )

    def upgrade(self, target: str | None = None) -> MigrationState:
        return self._state(self._helper("upgrade", self.config, target or "heads"))

    def downgrade(self, target: str | None) -> MigrationState:
        found = self._helper("downgrade", self.config, target or "base")
        if "irreversible" in found:
            raise IrreversibleMigration(
                f"cannot downgrade to {target or 'base'}: revision {found['irreversible']} has "
                "no downgrade; nothing was changed",
                hint="write its downgrade(), or keep the database at this revision and roll "
                "forward with a new revision",
            )
        return self._state(found)
