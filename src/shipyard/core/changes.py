"""Which components a set of changed files affects, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from shipyard.config import Config
from shipyard.core.graph import Graph
from shipyard.core.paths import matches_any


@dataclass(frozen=True)
class Affected:
    """The result of change detection: affected components with reasons."""

    reasons: dict[str, list[str]]  # component → why it is affected
    unmatched: list[str] = field(default_factory=list)  # files that affect nothing
    why_full: str | None = None  # set when a full deploy is required

    @property
    def names(self) -> set[str]:
        return set(self.reasons)


def affected_components(config: Config, changed_files: list[str]) -> Affected:
    """Directly changed components plus everything that depends on them."""
    graph = Graph({c.name: c.depends_on for c in config.components.values()})
    reasons: dict[str, list[str]] = {}
    unmatched = []
    global_hits = [f for f in changed_files if matches_any(f, config.project.global_inputs)]
    for file in changed_files:
        owners = [c.name for c in config.components.values() if matches_any(file, c.inputs)]
        for owner in owners:
            reasons.setdefault(owner, []).append(f"changed: {file}")
        if not owners and file not in global_hits:
            unmatched.append(file)
    if global_hits:
        why = f"global input changed: {', '.join(global_hits)}"
        return Affected({name: [why] for name in config.components}, unmatched, why)
    for file in changed_files:
        for comp in config.components.values():
            if comp.contract and matches_any(file, comp.contract):
                for dependent in graph.dependents(comp.name):
                    reasons.setdefault(dependent, []).append(
                        f"API contract of {comp.name} changed: {file}"
                    )
    for name in sorted(graph.descendants(list(reasons))):
        if name not in reasons:
            deps = [d for d in graph.ancestors([name]) if d in reasons]
            reasons[name] = [f"depends on {', '.join(sorted(deps))}"]
    return Affected(reasons, unmatched)
