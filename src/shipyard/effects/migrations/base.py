"""The one migration interface every tool's adapter implements.

A :class:`Migrator` answers five questions about one database and one release's migration
files — the current revision, the pending steps (each one reversible or not, destructive or
not), and it moves the schema: up to the head or a revision, down to a revision. Revisions are
opaque strings the adapter understands; ``None`` means "nothing applied" (the base).

Adapters that need the release's own tooling (Alembic, Django, the user's commands) never import
it into shipyard's process: they run commands in the release folder on the host through a
:data:`RunOnHost` function the target provides, with the release's env (its secrets).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from shipyard.errors import DeploymentFailed

RunOnHost = Callable[[Sequence[str], Mapping[str, str]], str]
"""Run `argv` in the release folder on the host with the release env plus the given extra
variables; return its standard output. Raises a shipyard error (the command, its exit code and
the tail of its output) when it fails."""


class IrreversibleMigration(DeploymentFailed):
    """A downgrade would have to undo a step that has no down step; nothing was changed."""


@dataclass(frozen=True)
class PendingStep:
    """One migration not applied yet."""

    revision: str
    label: str
    reversible: bool
    """Whether a downgrade can undo it (a down file, a downgrade function, reverse code)."""
    destructive: tuple[str, ...] = ()
    """What in it destroys or renames data, one short description each."""


@dataclass(frozen=True)
class MigrationState:
    """Where a database stands relative to a release's migrations."""

    tool: str
    current: str | None
    head: str | None
    """The revision an upgrade reaches; None when the tool cannot tell (`command`)."""
    pending: tuple[PendingStep, ...] = ()
    listed: bool = True
    """False when the tool cannot list pending steps (`command`): `pending` is then a stand-in
    for "whatever `up` applies"."""

    @property
    def reversible(self) -> bool:
        """Whether every pending step can be undone by a rollback."""
        return all(step.reversible for step in self.pending)

    def irreversible(self) -> list[str]:
        """Labels of the pending steps without a down step."""
        return [step.label for step in self.pending if not step.reversible]

    def destructive(self) -> dict[str, list[str]]:
        """Label → what is destructive, for the pending steps that are."""
        return {s.label: list(s.destructive) for s in self.pending if s.destructive}

    def to_dict(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "current": self.current,
            "head": self.head,
            "listed": self.listed,
            "pending": [
                {
                    "revision": s.revision,
                    "label": s.label,
                    "reversible": s.reversible,
                    "destructive": list(s.destructive),
                }
                for s in self.pending
            ],
        }


class Migrator(Protocol):
    """One tool, one database, one release's migration files."""

    tool: str

    def current(self) -> str | None:
        """The revision the database is at (None: nothing applied)."""

    def state(self) -> MigrationState:
        """The current revision, the head and the pending steps."""

    def upgrade(self, target: str | None = None) -> MigrationState:
        """Apply pending steps up to `target` (None: the head); the state it left."""

    def downgrade(self, target: str | None) -> MigrationState:
        """Undo applied steps above `target` (None: all of them); the state it left.

        Raises :class:`IrreversibleMigration` before changing anything when a step to undo has
        no down step.
        """


def migrate_to(
    migrator: Migrator, target: str | None, known: MigrationState | None = None
) -> tuple[str | None, str | None]:
    """Move the schema to `target` and return (before, after).

    ``target=None`` upgrades to the head and then checks that the database is there with
    nothing pending; a revision among the pending steps upgrades to it; any other revision
    (or ``""`` for the base) downgrades to it. `known` is the state the caller has just read
    under the same lock (the migrate step journals and checks it first): reading it again
    would start the tool once more (a Python process for Alembic and Django) for the same
    answer. The state after an upgrade is always read again.
    """
    state = known if known is not None else migrator.state()
    before = state.current
    if target is None:
        after = migrator.upgrade(None)
        if after.listed and (after.pending or after.current != after.head):
            left = ", ".join(s.label for s in after.pending) or "none"
            raise DeploymentFailed(
                f"{migrator.tool} migrations did not reach the head {after.head or '(none)'}: "
                f"the database is at {after.current or '(none)'}, pending: {left}",
                hint="run the tool by hand in the release folder to see why; "
                "the deployment was not switched",
            )
        return before, after.current
    if target == (before or ""):
        return before, before
    if target and target in {s.revision for s in state.pending}:
        return before, migrator.upgrade(target).current
    return before, migrator.downgrade(target or None).current
