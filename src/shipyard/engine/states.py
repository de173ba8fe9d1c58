"""Deployment and step states, and the only transitions allowed between them.

    pending → running → succeeded
                      ↘ failed → rolling_back → rolled_back | rollback_failed
    pending → failed                (refused before anything changed)

Only the engine calls `check_transition`; the store saves whatever it is given.
"""

from __future__ import annotations

from typing import Literal

DeploymentStatus = Literal[
    "pending", "running", "succeeded", "failed", "rolling_back", "rolled_back", "rollback_failed"
]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]

DEPLOYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "failed"}),
    "running": frozenset({"succeeded", "failed"}),
    "failed": frozenset({"rolling_back"}),
    "rolling_back": frozenset({"rolled_back", "rollback_failed"}),
    "succeeded": frozenset(),
    "rolled_back": frozenset(),
    # `shipyard recover` tries again, or, when a newer good deployment replaced everything it
    # left, marks it superseded (a rollback then would undo that newer deployment).
    "rollback_failed": frozenset({"rolling_back", "superseded"}),
    "superseded": frozenset(),
}

STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "skipped", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "skipped": frozenset(),
    "cancelled": frozenset(),
}

UNFINISHED = frozenset({"pending", "running", "rolling_back"})  # a crash left these
FINAL = frozenset({"succeeded", "rolled_back", "rollback_failed", "superseded"})


class IllegalTransition(RuntimeError):
    """A bug: the engine tried a transition the table does not allow."""


def check_transition(table: dict[str, frozenset[str]], current: str, new: str) -> None:
    """Raise IllegalTransition unless `current → new` is in `table`."""
    if new not in table.get(current, frozenset()):
        raise IllegalTransition(f"illegal transition {current} → {new}")
