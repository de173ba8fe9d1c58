"""What a release is and how it is probed: shared by the engine and the read-only commands.

Kept apart from `runner` so that `status` and `health` do not import the engine (its
subprocess, migration and asyncio machinery) to read a spec or build a probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shipyard.config import Component
from shipyard.core.spec import spec_from_dict
from shipyard.targets.base import ProbeSpec, Target

if TYPE_CHECKING:
    from shipyard.store import Store

OBSERVED_DETAIL_CHARS = 300


def short_redacted(redact: Callable[[str], str], text: str) -> str:
    """Secrets out first (a cut could split one and hide it from the redactor), then short."""
    safe = redact(text)
    if len(safe) > OBSERVED_DETAIL_CHARS:
        safe = safe[: OBSERVED_DETAIL_CHARS - 1] + "…"
    return safe


def probe_spec(comp: Component, port: int | None) -> ProbeSpec:
    health = comp.health
    kind = health.kind
    if kind == "http":
        return ProbeSpec(
            "http", port=port, path=health.http or "/", status=health.status, timeout=health.timeout
        )
    if kind == "command":
        return ProbeSpec("command", command=health.command, timeout=health.timeout)
    return ProbeSpec("tcp", port=port, timeout=health.timeout)


def saved_release_spec(
    store: Store, target: Target, environment: str, name: str, release: str
) -> tuple[Component, str | None] | None:
    """(spec, commit) saved for a release: in the store, else in its `release.json`."""
    record = store.release_spec(environment, name, release)
    if record is not None:
        return spec_from_dict(record.spec), record.commit
    document = target.read_release_document(name, release)
    if document is not None and isinstance(document.get("spec"), dict):
        try:
            return spec_from_dict(document["spec"]), document.get("commit")
        except (TypeError, ValueError):
            return None  # a damaged file: treated as a release without a saved spec
    return None
