"""Which components a git change affects, why, and when a partial deploy is unsafe (pure).

The inputs are the project's config at both ends of the change (the graph is read at both
commits, so a removed component or dependency edge is seen) and the changed files; what
needs a file's content (an OpenAPI contract, a new SQL migration) is read through a
`Sources` object the caller injects, so this module does no I/O itself.

Matching is built for large diffs: every component's globs are compiled once into an index
keyed by their literal folder prefix (`backend/**` is a plain prefix hit, `libs/*/api.yaml`
one regex tried only on files under `libs/`), so a file costs one dictionary probe per
folder level instead of one regex per glob of every component.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from shipyard.config import CONFIG_FILE, Component, Config, Environment
from shipyard.core.graph import Graph
from shipyard.core.openapi import ContractDiff, diff_contract
from shipyard.core.paths import compile_glob

BreakingKind = Literal[
    "graph", "config", "migration", "destructive_migration", "contract", "secret"
]

# A new SQL migration's up file: the naming rule of effects/sql_migrations.py.
_SQL_UP = re.compile(r"(?P<label>[0-9]+_[A-Za-z0-9][A-Za-z0-9_.-]*?)\.up\.sql\Z")
SHOWN_FILES = 3  # reasons name this many files, then say how many more


@dataclass(frozen=True)
class FileChange:
    """One path of `git diff --raw`: project-relative, with its status letter."""

    path: str
    status: str = "M"  # A added, D deleted, M modified, T type changed
    submodule: bool = False  # a gitlink: the path is a folder of another repository


@dataclass(frozen=True)
class Breaking:
    """A change that makes a partial deploy unsafe or needs a flag, and what it needs."""

    kind: BreakingKind
    component: str | None
    detail: str

    def to_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "component": self.component, "detail": self.detail}


class Sources(Protocol):
    """File contents at both ends of the change (None when absent), for the few files whose
    content matters, and the SQL classification of effects/sql_migrations."""

    def old_text(self, path: str) -> str | None: ...

    def new_text(self, path: str) -> str | None: ...

    def destructive(self, sql: str) -> list[str]: ...


@dataclass(frozen=True)
class ChangeReport:
    """Changed files → affected components with reasons, breaking changes, full or not."""

    base: str | None
    head: str
    merge_base: str | None
    changed_files: list[str]
    unmatched: list[str]
    affected: dict[str, list[str]]  # in deploy order; every component when full
    breaking: list[Breaking] = field(default_factory=list)
    why_full: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. the base is not an ancestor

    @property
    def full_deploy_required(self) -> bool:
        return self.why_full is not None

    @property
    def names(self) -> set[str]:
        return set(self.affected)

    def to_dict(self) -> dict[str, object]:
        return {
            "base": self.base,
            "head": self.head,
            "merge_base": self.merge_base,
            "changed_files": [printable_path(p) for p in self.changed_files],
            "unmatched": [printable_path(p) for p in self.unmatched],
            "affected": [{"name": n, "reasons": r} for n, r in self.affected.items()],
            "breaking": [b.to_dict() for b in self.breaking],
            "full_deploy_required": self.full_deploy_required,
            "why_full": self.why_full,
            "notes": self.notes,
        }


def printable_path(path: str) -> str:
    """A path as text: bytes that are not UTF-8 (kept as surrogates) shown as `\\xNN`."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown_path(path: str) -> str:
    """A path for a sentence or a table: also newlines and other control characters escaped,
    so a file name cannot fake a line of output."""
    text = printable_path(path)
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# --- matching --------------------------------------------------------------------------


_WILD = re.compile(r"[*?]")


@dataclass
class _Bucket:
    """The globs of one literal folder prefix: whole-subtree owners and regex checks."""

    everything: set[str] = field(default_factory=set)  # `prefix/**`: every file below
    checks: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)


class InputIndex:
    """Components' globs compiled once, looked up by folder prefix (see the module doc)."""

    def __init__(self, patterns: Mapping[str, Iterable[str]]) -> None:
        self._exact: dict[str, set[str]] = {}
        self._buckets: dict[str, _Bucket] = {}
        for name, globs in patterns.items():
            for raw in globs:
                self._add(name, raw.strip("/"))

    def _add(self, name: str, pattern: str) -> None:
        wild = _WILD.search(pattern)
        if wild is None:
            self._exact.setdefault(pattern, set()).add(name)
            return
        literal = pattern[: wild.start()]
        prefix = literal[: literal.rfind("/") + 1]  # "" or a folder ending in "/"
        bucket = self._buckets.setdefault(prefix, _Bucket())
        if pattern[len(prefix) :] == "**" and prefix:
            bucket.everything.add(name)
        else:
            bucket.checks.append((name, compile_glob(pattern)))

    def owners(self, path: str) -> set[str]:
        """Every name whose globs match `path` (exactly what `paths.matches_any` says)."""
        found = set(self._exact.get(path, ()))
        end = -1
        while True:
            bucket = self._buckets.get(path[: end + 1])
            if bucket is not None:
                found |= bucket.everything
                found.update(n for n, rx in bucket.checks if n not in found and rx.match(path))
            end = path.find("/", end + 1)
            if end < 0:
                return found

    def folder_owners(self, folder: str) -> set[str]:
        """Names whose globs may match a file below `folder` (a submodule: its files are not
        in this repository's diff, only the pointer is). Errs on the side of a match."""
        found = self.owners(folder)
        below = folder + "/"
        for key, names in self._exact.items():
            if key.startswith(below):
                found |= names
        for prefix, bucket in self._buckets.items():
            if prefix.startswith(below) or below.startswith(prefix):
                found |= bucket.everything | {n for n, _rx in bucket.checks}
        return found


# --- the analysis --------------------------------------------------------------------------


def full_report(
    config: Config, *, head: str, base: str | None, why: str, notes: Sequence[str] = ()
) -> ChangeReport:
    """Everything deploys, for a reason that leaves nothing to compare (no base)."""
    graph = _graph(config)
    return ChangeReport(
        base=base,
        head=head,
        merge_base=None,
        changed_files=[],
        unmatched=[],
        affected={name: [f"full deploy: {why}"] for name in graph.order()},
        why_full=why,
        notes=list(notes),
    )


def analyse(
    old: Config | None,
    new: Config,
    changes: Sequence[FileChange],
    sources: Sources,
    *,
    head: str,
    base: str | None,
    merge_base: str | None,
    env_name: str | None = None,
    notes: Sequence[str] = (),
    old_config_error: str | None = None,
) -> ChangeReport:
    """The change report of `changes` (merge-base → head) for the environment `env_name`.

    `old` is the config at the merge-base (None when it had none or it did not load:
    `old_config_error` says why, and the deploy is full).
    """
    env = new.environment(env_name)
    graph = _graph(new)
    direct: dict[str, list[str]] = {}  # component → reasons of its own
    files: dict[str, list[str]] = {}  # component → its changed files
    breaking: list[Breaking] = []
    why_full: list[str] = []

    def add(name: str, reason: str) -> None:
        reasons = direct.setdefault(name, [])
        if reason not in reasons:
            reasons.append(reason)

    # shipyard.toml: compared as configs, never as text (a comment changes nothing).
    if old is None:
        why = old_config_error or f"there was no {CONFIG_FILE} at the base"
        why_full.append(why)
    else:
        _config_changes(old, new, env, add, breaking, why_full)

    paths = [c.path for c in changes]
    components = new.components_for(env)
    index = InputIndex({n: c.inputs for n, c in components.items()})
    global_index = InputIndex({"*": _global_inputs(old, new)})
    unmatched: list[str] = []
    global_hits: list[str] = []
    for change in changes:
        path = change.path
        if path == CONFIG_FILE:
            continue
        lookup = index.folder_owners if change.submodule else index.owners
        owners = lookup(path)
        for owner in owners:
            files.setdefault(owner, []).append(path)
        if (global_index.folder_owners if change.submodule else global_index.owners)(path):
            global_hits.append(path)
        elif not owners:
            unmatched.append(path)
    if global_hits:
        why_full.append(f"global input changed: {_some(global_hits)}")
    submodules = {c.path for c in changes if c.submodule}
    for name, changed in files.items():
        pointers = [p for p in changed if p in submodules]
        if pointers:
            add(name, f"submodule pointer changed: {_some(pointers)}")
        if len(pointers) < len(changed):
            add(name, f"changed: {_some([p for p in changed if p not in submodules])}")

    forced = _contracts(components, graph, changes, sources, add, breaking)
    _migrations(components, changes, sources, breaking)

    affected = _propagate(graph, direct, forced)
    why_text = "; ".join(why_full) if why_full else None
    if why_text is not None:
        for name in graph.order():
            affected.setdefault(name, [])
            affected[name].append(f"full deploy: {why_text}")
        affected = {n: affected[n] for n in graph.order()}
    return ChangeReport(
        base=base,
        head=head,
        merge_base=merge_base,
        changed_files=paths,
        unmatched=unmatched,
        affected=affected,
        breaking=breaking,
        why_full=why_text,
        notes=list(notes),
    )


def _graph(config: Config) -> Graph:
    return Graph({c.name: c.depends_on for c in config.components.values()})


def _global_inputs(old: Config | None, new: Config) -> list[str]:
    """Both ends' global inputs, except shipyard.toml, which is compared as a config."""
    found = set(new.project.global_inputs) | set(old.project.global_inputs if old else ())
    return sorted(g for g in found if g.strip("/") != CONFIG_FILE)


def _some(paths: Sequence[str]) -> str:
    shown = ", ".join(shown_path(p) for p in paths[:SHOWN_FILES])
    more = len(paths) - SHOWN_FILES
    return shown + (f" and {more} more" if more > 0 else "")


def _propagate(
    graph: Graph, direct: Mapping[str, list[str]], forced: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """Directly affected components plus every transitive dependent, in deploy order; a
    dependent's reason names the affected components it depends on directly."""
    affected: dict[str, list[str]] = {}
    for name in graph.order():
        reasons = list(direct.get(name, ())) + list(forced.get(name, ()))
        deps = [d for d in graph.dependencies(name) if d in affected]
        if deps:
            reasons.append(f"depends on {', '.join(deps)}")
        if reasons:
            affected[name] = reasons
    return affected


# --- shipyard.toml at both commits ---------------------------------------------------------


def _fields(before: object, after: object) -> list[str]:
    """The names of the dataclass fields that differ between two instances."""
    return [
        f.name
        for f in dataclasses.fields(before)  # type: ignore[arg-type]
        if getattr(before, f.name) != getattr(after, f.name)
    ]


def _config_changes(
    old: Config,
    new: Config,
    env: Environment,
    add: _Add,
    breaking: list[Breaking],
    why_full: list[str],
) -> None:
    """What shipyard.toml's change means: a graph change or a project/environment setting
    means a full deploy; a component's own section (or its override in this environment, or
    a rule of one of its secrets) affects that component."""
    removed = sorted(set(old.components) - set(new.components))
    added = sorted(set(new.components) - set(old.components))
    edges = []
    for name in sorted(set(old.components) & set(new.components)):
        before, after = set(old.components[name].depends_on), set(new.components[name].depends_on)
        edges += [f"{name} no longer depends on {d}" for d in sorted(before - after)]
        edges += [f"{name} now depends on {d}" for d in sorted(after - before)]
    graph = (
        [f"component {n} removed" for n in removed]
        + [f"component {n} added" for n in added]
        + edges
    )
    if graph:
        detail = "; ".join(graph)
        breaking.append(Breaking("graph", None, f"{CONFIG_FILE} changes the graph: {detail}"))
        why_full.append(f"the dependency graph changed ({detail})")
    project = _fields(old.project, new.project)
    if project:
        why_full.append(f"[project] settings changed in {CONFIG_FILE}: {', '.join(project)}")
        breaking.append(Breaking("config", None, f"[project] changed: {', '.join(project)}"))
    old_env = old.environments.get(env.name)
    if old_env is None:
        why_full.append(f"environment {env.name} is new in {CONFIG_FILE}")
    else:
        settings = [f for f in _fields(old_env, env) if f != "overrides"]
        if settings:
            why_full.append(
                f"[environments.{env.name}] changed in {CONFIG_FILE}: {', '.join(settings)}"
            )
            breaking.append(
                Breaking(
                    "config", None, f"[environments.{env.name}] changed: {', '.join(settings)}"
                )
            )
    old_components = old.components_for(old_env) if old_env else old.components
    new_components = new.components_for(env)
    for name, comp in new_components.items():
        was = old_components.get(name)
        if was is None:
            add(name, f"new component in {CONFIG_FILE}")
            _new_secrets(name, (), comp, env, breaking)
            continue
        changed = [f for f in _fields(was, comp) if f != "name"]
        if changed:
            add(name, f"its settings changed in {CONFIG_FILE}: {', '.join(changed)}")
        _new_secrets(name, was.secrets, comp, env, breaking)
        rules = [s for s in comp.secrets if old.secret_rules.get(s) != new.secret_rules.get(s)]
        if rules:
            add(name, f"secret rules changed in {CONFIG_FILE}: {', '.join(rules)}")


class _Add(Protocol):
    def __call__(self, name: str, reason: str) -> None: ...


def _new_secrets(
    name: str, before: Iterable[str], comp: Component, env: Environment, out: list[Breaking]
) -> None:
    new = [s for s in comp.secrets if s not in set(before)]
    if new:
        out.append(
            Breaking(
                "secret",
                name,
                f"now requires secret(s) {', '.join(new)}: preflight checks that "
                f"{env.name} provides them",
            )
        )


# --- contracts and migrations ------------------------------------------------------------


def _contracts(
    components: Mapping[str, Component],
    graph: Graph,
    changes: Sequence[FileChange],
    sources: Sources,
    add: _Add,
    breaking: list[Breaking],
) -> dict[str, list[str]]:
    """Changed contract files: dependents must deploy too (component → forced reasons),
    except for a purely additive OpenAPI change with `contract_mode = "semantic"`."""
    owned = {n: c.contract for n, c in components.items() if c.contract}
    if not owned:
        return {}
    index = InputIndex(owned)
    forced: dict[str, list[str]] = {}
    for change in changes:
        owners = sorted(index.owners(change.path))
        if not owners:
            continue
        # Once per file, whoever owns it: each side is a `git cat-file` and a parse.
        diff = diff_contract(sources.old_text(change.path), sources.new_text(change.path))
        for name in owners:
            semantic = components[name].contract_mode == "semantic"
            shown = shown_path(change.path)
            if semantic and diff.additive_only:
                add(name, f"contract {shown} changed, additively: {diff.summary()}")
                continue
            breaking.append(Breaking("contract", name, f"{shown}: {_contract_detail(diff)}"))
            for dependent in graph.dependents(name):
                forced.setdefault(dependent, []).append(f"API contract of {name} changed: {shown}")
    return forced


def _contract_detail(diff: ContractDiff) -> str:
    return diff.summary() if diff.openapi else "changed (not an OpenAPI document: not compared)"


def _migrations(
    components: Mapping[str, Component],
    changes: Sequence[FileChange],
    sources: Sources,
    breaking: list[Breaking],
) -> None:
    """New SQL migrations: a migrate step, and --allow-destructive for a destructive one."""
    folders = {
        f"{c.path.strip('/')}/{c.migrations.dir.strip('/')}/": name
        for name, c in components.items()
        if c.migrations is not None and c.migrations.tool == "sql" and c.migrations.dir
    }
    if not folders:
        return
    for change in changes:
        if change.status != "A":
            continue
        folder, _, file = change.path.rpartition("/")
        name = folders.get(folder + "/")
        match = _SQL_UP.match(file)
        if name is None or match is None:
            continue
        label = match["label"]
        breaking.append(Breaking("migration", name, f"new migration {label}: migrate step"))
        found = sources.destructive(sources.new_text(change.path) or "")
        if found:
            breaking.append(
                Breaking(
                    "destructive_migration",
                    name,
                    f"{label} destroys data ({', '.join(found)}): deploying it needs "
                    "--allow-destructive; or split it (expand now, contract later)",
                )
            )
