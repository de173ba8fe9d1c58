"""The `command` tool: the user's own `up`, `down` and `current` commands.

``migrations = { tool = "command", up = "...", down = "...", current = "..." }``: `current`
prints the revision (its last non-empty output line; nothing printed means nothing applied),
`up` applies everything pending, `down` goes down to ``$SHIPYARD_TARGET_REVISION`` (empty for
the base). Each runs with ``/bin/sh -c`` in the release folder on the host, with the release's
env. shipyard cannot see which steps `up` will apply, so it cannot tell whether they destroy
data; without a `down` command nothing can be undone, so every deploy of the component needs
``--allow-irreversible``.
"""

from __future__ import annotations

from shipyard.config import Migrations
from shipyard.effects.migrations.base import (
    IrreversibleMigration,
    MigrationState,
    PendingStep,
    RunOnHost,
)


class CommandMigrator:
    """Migrations driven by the component's own commands."""

    tool = "command"

    def __init__(self, spec: Migrations, run: RunOnHost) -> None:
        assert spec.up is not None and spec.current is not None  # the loader requires them
        self.spec = spec
        self.run = run

    def current(self) -> str | None:
        assert self.spec.current is not None
        output = self.run(["/bin/sh", "-c", self.spec.current], {})
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        return lines[-1] if lines else None

    def state(self) -> MigrationState:
        step = PendingStep(
            revision="",
            label="whatever `up` applies",
            reversible=self.spec.down is not None,
        )
        return MigrationState(
            tool=self.tool, current=self.current(), head=None, pending=(step,), listed=False
        )

    def upgrade(self, target: str | None = None) -> MigrationState:
        assert self.spec.up is not None
        extra = {"SHIPYARD_TARGET_REVISION": target} if target else {}
        self.run(["/bin/sh", "-c", self.spec.up], extra)
        return self.state()

    def downgrade(self, target: str | None) -> MigrationState:
        if self.spec.down is None:
            raise IrreversibleMigration(
                f"cannot downgrade to {target or '(none)'}: the component has no `down` "
                "migration command; nothing was changed",
                hint="add `down` to the component's migrations (it goes down to "
                "$SHIPYARD_TARGET_REVISION), or roll forward with a new migration",
            )
        self.run(["/bin/sh", "-c", self.spec.down], {"SHIPYARD_TARGET_REVISION": target or ""})
        return self.state()
