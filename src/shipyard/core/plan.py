"""The plan: what a deployment will do, computed from config and state without any I/O.

A plan is printable (text and JSON) and hashable: `plan_hash` is stable for the
same inputs, so a reviewed plan can be deployed exactly (`deploy(plan_id)`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from shipyard.config import Config
from shipyard.config.models import TestStage as TestStage  # re-exported: adapters import it here
from shipyard.core.changes import Breaking, ChangeReport
from shipyard.core.graph import Graph
from shipyard.errors import UsageError

Selection = Literal["full", "changed", "only"]
DeploymentKind = Literal["full", "partial", "promote", "rollback", "reconcile"]
StepKind = Literal[
    "preflight",
    "snapshot",
    "build",
    "test",
    "migrate",
    "release",
    "activate",
    "switch",
    "verify",
    "finish",
]


@dataclass(frozen=True)
class Step:
    """One unit of work; it may start once every step in `after` succeeded."""

    id: str
    kind: StepKind
    component: str | None = None
    after: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "component": self.component,
            "after": list(self.after),
        }


@dataclass(frozen=True)
class Plan:
    """A deployment, decided but not started."""

    environment: str
    kind: DeploymentKind
    commit: str
    base_commit: str | None
    components: tuple[str, ...]  # in deploy order
    levels: tuple[tuple[str, ...], ...]
    steps: tuple[Step, ...]
    why: str
    reasons: dict[str, list[str]] = field(default_factory=dict)
    tests: TestStage = "none"
    migrate: bool = True
    releases: dict[str, str] = field(default_factory=dict)  # rollback: component → release
    rollback_to: str | None = None
    # Where the config came from: "commit" (shipyard.toml at `commit`) or "work tree"
    # (--allow-dirty); `config_note` says how it differs from the work tree's, if it does.
    config_from: str = "commit"
    config_note: str | None = None
    drift: dict[str, str] = field(default_factory=dict)  # component → what differs from desired
    # What change detection found that a partial deploy must respect (docs/cli.md `changes`).
    breaking: tuple[Breaking, ...] = ()
    notes: tuple[str, ...] = ()
    # promote: component → artifact digest to release (built for the source deployment)
    artifacts: dict[str, str] = field(default_factory=dict)
    promoted_from: str | None = None
    # component → its pending migrations as read when planning (not hashed: the database moves)
    migrations: dict[str, str] = field(default_factory=dict)

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def to_dict(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "kind": self.kind,
            "commit": self.commit,
            "base_commit": self.base_commit,
            "why": self.why,
            "components": list(self.components),
            "reasons": self.reasons,
            "levels": [list(level) for level in self.levels],
            "steps": [s.to_dict() for s in self.steps],
            "tests": self.tests,
            "migrate": self.migrate,
            "releases": self.releases,
            "rollback_to": self.rollback_to,
            "config_from": self.config_from,
            "config_note": self.config_note,
            "drift": self.drift,
            "breaking": [b.to_dict() for b in self.breaking],
            "notes": list(self.notes),
            "artifacts": self.artifacts,
            "promoted_from": self.promoted_from,
            "migrations": self.migrations,
            "plan_hash": self.plan_hash,
        }

    @property
    def plan_hash(self) -> str:
        body = self.to_dict_without_hash()
        encoded = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def to_dict_without_hash(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "kind": self.kind,
            "commit": self.commit,
            "components": list(self.components),
            "steps": [s.to_dict() for s in self.steps],
            "tests": self.tests,
            "migrate": self.migrate,
            "releases": self.releases,
            # Only a promotion has these: the hash of every other plan stays as it was.
            **({"artifacts": self.artifacts} if self.artifacts else {}),
            **({"promoted_from": self.promoted_from} if self.promoted_from else {}),
        }

    def to_text(self) -> str:
        lines = [
            f"plan {self.plan_hash}: {self.kind} deploy of {self.environment} "
            f"at {self.commit[:12]}",
            f"  why: {self.why}",
        ]
        if self.config_note:
            lines.append(f"  config: {self.config_note}")
        for name, what in self.drift.items():
            lines.append(f"  drift: {name}: {what}")
        lines += [f"  note: {note}" for note in self.notes]
        for b in self.breaking:
            lines.append(
                f"  breaking ({b.kind}{', ' + b.component if b.component else ''}): {b.detail}"
            )
        for index, level in enumerate(self.levels, start=1):
            lines.append(f"  level {index}: {', '.join(level)}")
        for name, why in self.reasons.items():
            lines.append(f"    {name}: {'; '.join(why)}")
        for name, pending in self.migrations.items():
            lines.append(f"  migrations: {name}: {pending}")
        lines.append("  steps:")
        for s in self.steps:
            after = f"  ← {', '.join(s.after)}" if s.after else ""
            lines.append(f"    {s.id}{after}")
        return "\n".join(lines)


def plan_deploy(
    config: Config,
    environment: str,
    *,
    commit: str,
    base_commit: str | None,
    changes: ChangeReport | None,
    selection: Selection | None,
    only: tuple[str, ...] = (),
    tests: TestStage = "none",
    migrate: bool = True,
    base_note: str | None = None,
) -> Plan:
    """Choose the components (full, changed, or only some) and lay out their steps.

    `selection=None` means: changed when there is a base commit, full otherwise.
    `changes` is None when the base is unknown or unreachable (`base_note` says why).
    """
    graph = Graph({c.name: c.depends_on for c in config.components.values()})
    reasons: dict[str, list[str]] = {}
    breaking: tuple[Breaking, ...] = ()
    notes: tuple[str, ...] = ()
    if selection == "only":
        unknown = [name for name in only if name not in config.components]
        if unknown:
            raise UsageError(
                f"unknown component(s) in --only: {', '.join(unknown)}",
                hint=f"components: {', '.join(sorted(config.components))}",
            )
        chosen = set(only)
        why = f"only {', '.join(sorted(chosen))} (as asked)"
        reasons = {name: ["selected with --only"] for name in chosen}
    elif selection == "full" or (selection is None and changes is None):
        chosen = set(config.components)
        if selection == "full":
            why = "full deploy (as asked)"
        else:
            why = f"full deploy: {base_note or 'no previous good deployment'}"
    else:
        if changes is None:
            raise UsageError(
                f"--changed needs a base commit: {base_note or 'no previous good deployment'}",
                hint="deploy with --full first; `shipyard changes --since REF` shows what "
                "changed since a ref",
            )
        reasons = changes.affected
        chosen = changes.names & set(config.components)
        breaking, notes = tuple(changes.breaking), tuple(changes.notes)
        if not migrate:
            notes += tuple(
                f"--no-migrate: {b.component}'s new migration will not run ({b.detail})"
                for b in breaking
                if b.kind == "migration"
            )
        if changes.why_full:
            why = f"full deploy: {changes.why_full}"
        else:
            why = (
                f"changed since {base_commit[:12] if base_commit else '?'}: "
                f"{len(changes.changed_files)} file(s) affect {len(chosen)} component(s)"
            )
    if chosen == set(config.components):
        kind: DeploymentKind = "full"
    else:
        kind = "partial"
    sub = graph.subgraph(chosen)
    levels = tuple(tuple(level) for level in sub.levels())
    order = tuple(name for level in levels for name in level)
    steps = _deploy_steps(config, graph, order, tests=tests, migrate=migrate)
    return Plan(
        environment=environment,
        kind=kind,
        commit=commit,
        base_commit=base_commit,
        components=order,
        levels=levels,
        steps=steps,
        why=why,
        reasons={n: reasons.get(n, []) for n in order if reasons.get(n)},
        tests=tests,
        migrate=migrate,
        breaking=breaking,
        notes=notes,
    )


def _deploy_steps(
    config: Config,
    graph: Graph,
    order: tuple[str, ...],
    *,
    tests: TestStage,
    migrate: bool,
    build: bool = True,
) -> tuple[Step, ...]:
    chosen = set(order)
    steps = [Step("preflight", "preflight"), Step("snapshot", "snapshot", after=("preflight",))]
    activations = []
    for name in order:
        comp = config.components[name]
        deps = [d for d in graph.dependencies(name) if d in chosen]
        if build:
            steps.append(
                Step(f"build:{name}", "build", name, ("snapshot", *(f"build:{d}" for d in deps)))
            )
        steps.append(
            Step(f"release:{name}", "release", name, (f"build:{name}" if build else "snapshot",))
        )
        before_start = [f"release:{name}", *(f"activate:{d}" for d in deps)]
        if tests == "full" and "full" in comp.tests:
            # Full tests run on the unpacked release, before it migrates or starts.
            steps.append(Step(f"test:{name}", "test", name, (f"release:{name}",)))
            before_start[0] = f"test:{name}"
        if migrate and comp.migrations is not None:
            steps.append(Step(f"migrate:{name}", "migrate", name, tuple(before_start)))
            before_start = [f"migrate:{name}"]
        steps.append(Step(f"activate:{name}", "activate", name, tuple(before_start)))
        activations.append(f"activate:{name}")
    before_switch = tuple(activations)
    if tests in ("smoke", "e2e"):
        with_tests = [n for n in order if tests in config.components[n].tests]
        for name in with_tests:
            steps.append(Step(f"test:{name}", "test", name, before_switch))
        before_switch = tuple(f"test:{n}" for n in with_tests) or before_switch
    steps.append(Step("switch", "switch", after=before_switch))
    steps.append(Step("verify", "verify", after=("switch",)))
    steps.append(Step("finish", "finish", after=("verify",)))
    return tuple(steps)


def plan_rollback(
    config: Config,
    environment: str,
    *,
    commit: str,
    releases: dict[str, str],
    rollback_to: str,
    current_commit: str | None,
) -> Plan:
    """Re-activate the releases of an earlier deployment (already on disk: no build)."""
    graph = Graph({c.name: c.depends_on for c in config.components.values()})
    sub = graph.subgraph(releases)
    levels = tuple(tuple(level) for level in sub.levels())
    order = tuple(name for level in levels for name in level)
    steps = [Step("preflight", "preflight"), Step("snapshot", "snapshot", after=("preflight",))]
    for name in order:
        deps = [d for d in graph.dependencies(name) if d in releases]
        before = ("snapshot", *(f"activate:{d}" for d in deps))
        if config.components[name].migrations is not None:
            steps.append(Step(f"migrate:{name}", "migrate", name, before))
            before = (f"migrate:{name}",)
        steps.append(Step(f"activate:{name}", "activate", name, before))
    steps.append(Step("switch", "switch", after=tuple(f"activate:{n}" for n in order)))
    steps.append(Step("verify", "verify", after=("switch",)))
    steps.append(Step("finish", "finish", after=("verify",)))
    return Plan(
        environment=environment,
        kind="rollback",
        commit=commit,
        base_commit=current_commit,
        components=order,
        levels=levels,
        steps=tuple(steps),
        why=f"roll back to deployment {rollback_to}",
        releases=dict(sorted(releases.items())),
        rollback_to=rollback_to,
    )


def plan_promote(
    config: Config,
    environment: str,
    *,
    commit: str,
    artifacts: dict[str, str],
    promoted_from: str,
    source_environment: str,
    current_commit: str | None,
    migrate: bool = True,
) -> Plan:
    """Release the artifacts another environment's deployment built, as they are: no build.

    `config` holds the specs the releases run with (the source's, with this environment's
    overrides); everything else is a deploy: migrate, activate in order, switch, verify.
    """
    graph = Graph({c.name: c.depends_on for c in config.components.values()})
    unknown = sorted(set(artifacts) - set(config.components))
    if unknown:
        raise UsageError(f"cannot promote unknown component(s): {', '.join(unknown)}")
    sub = graph.subgraph(artifacts)
    levels = tuple(tuple(level) for level in sub.levels())
    order = tuple(name for level in levels for name in level)
    steps = _deploy_steps(config, graph, order, tests="none", migrate=migrate, build=False)
    return Plan(
        environment=environment,
        kind="promote",
        commit=commit,
        base_commit=current_commit,
        components=order,
        levels=levels,
        steps=steps,
        why=f"promote deployment {promoted_from} of {source_environment} "
        f"({len(order)} component(s), artifacts as built there: no build)",
        reasons={n: [f"artifact {artifacts[n][:12]} from {source_environment}"] for n in order},
        migrate=migrate,
        artifacts=dict(sorted(artifacts.items())),
        promoted_from=promoted_from,
    )
