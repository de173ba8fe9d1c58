"""Partial deploy soundness (design invariant 8): on random repositories — a random component
graph, random commits of edits, moves, deletions, config edits and merges — the affected set
equals the one a deliberately naive reference computes.

The reference shares nothing with the implementation but git's merge-base and the single-glob
matcher: it compares the two commits' whole trees blob by blob (no `git diff`), reads
shipyard.toml as raw TOML tables (no config models), tries every glob of every component on
every file, and closes over dependents until nothing changes.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.core.paths import matches_any
from shipyard.service import Shipyard
from tests.conftest import commit_all, git

NAMES = ["c0", "c1", "c2", "c3", "c4"]
FILES = ["f.txt", "g.txt", "a b.txt", 'q".txt']


def render(components: dict[str, dict[str, Any]]) -> str:
    lines = [
        "[project]",
        'name = "prop"',
        'default_environment = "local"',
        'global_inputs = ["shipyard.toml", "global.txt"]',
        "",
        "[environments.local]",
        'target = "local"',
        "",
    ]
    for name, c in components.items():
        lines += [f"[components.{name}]", f'path = "{name}"', 'start = "run"']
        deps = ", ".join(f'"{d}"' for d in sorted(c["depends_on"]))
        lines.append(f"depends_on = [{deps}]")
        inputs = ", ".join(f'"{i}"' for i in [f"{name}/**", *c["extra"]])
        lines.append(f"inputs = [{inputs}]")
        if c["build"]:
            lines.append(f'build = "{c["build"]}"')
        lines.append("")
    return "\n".join(lines)


# --- the reference ------------------------------------------------------------------------


def tree(root: Path, commit: str) -> dict[str, str]:
    out = git(root, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries = {}
    for item in out.split("\0"):
        if item:
            meta, path = item.split("\t", 1)
            entries[path] = meta.split()[2]
    return entries


def naive(root: Path, base: str, head: str) -> tuple[set[str], bool]:
    """(affected components, full deploy?) the slow, obvious way."""
    start = git(root, "merge-base", base, head)
    old_tree, new_tree = tree(root, start), tree(root, head)
    changed = {p for p in old_tree.keys() | new_tree.keys() if old_tree.get(p) != new_tree.get(p)}
    old = tomllib.loads(git(root, "show", f"{start}:shipyard.toml"))
    new = tomllib.loads(git(root, "show", f"{head}:shipyard.toml"))
    components: dict[str, Any] = new["components"]
    everything = set(components)
    old_graph = {n: set(c["depends_on"]) for n, c in old["components"].items()}
    new_graph = {n: set(c["depends_on"]) for n, c in components.items()}
    if old_graph != new_graph or old["project"] != new["project"]:
        return everything, True
    if old["environments"] != new["environments"] or "global.txt" in changed:
        return everything, True
    affected = {n for n in components if old["components"].get(n) != components[n]}
    for file in changed:
        for name, comp in components.items():
            if matches_any(file, comp["inputs"]):
                affected.add(name)
    grew = True
    while grew:
        grew = False
        for name, comp in components.items():
            if name not in affected and set(comp["depends_on"]) & affected:
                affected.add(name)
                grew = True
    return affected, False


# --- random repositories -------------------------------------------------------------------

component = st.fixed_dictionaries(
    {
        "deps": st.sets(st.sampled_from(NAMES)),
        "extra": st.lists(
            st.sampled_from(["lib/**", "lib/x/*.txt", "**/g.txt", "top.txt"]),
            max_size=2,
            unique=True,
        ),
        "build": st.sampled_from([None, "make"]),
    }
)
OPERATIONS = ["edit", "edit", "delete", "move", "config", "merge", "global"]


def make_components(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Edges only towards earlier names: always a DAG."""
    return {
        name: {
            "depends_on": {d for d in c["deps"] if d < name and d in raw},
            "extra": c["extra"],
            "build": c["build"],
        }
        for name, c in sorted(raw.items())
    }


def all_files(components: dict[str, Any]) -> list[str]:
    return [f"{n}/{f}" for n in components for f in FILES] + [
        "lib/x/f.txt",
        "lib/y/g.txt",
        "top.txt",
        "global.txt",
        "README.md",
    ]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
)
@given(
    raw=st.dictionaries(st.sampled_from(NAMES), component, min_size=2, max_size=5),
    data=st.data(),
)
def test_affected_set_equals_the_naive_reference(raw: dict[str, Any], data: st.DataObject) -> None:
    root = Path(tempfile.mkdtemp(prefix="sy-prop-"))
    try:
        components = make_components(raw)
        files = all_files(components)
        for path in files:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text("0\n")
        (root / "shipyard.toml").write_text(render(components))
        git(root, "init", "-q", "-b", "main")
        commits = [commit_all(root, "first")]
        for step in range(data.draw(st.integers(1, 6), label="commits")):
            operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
            present = sorted(
                str(p.relative_to(root))
                for p in root.rglob("*")
                if p.is_file() and ".git" not in p.parts and p.name != "shipyard.toml"
            )
            if operation == "edit":
                path = data.draw(st.sampled_from(present))
                (root / path).write_text(f"{step}\n")
            elif operation == "global":
                (root / "global.txt").write_text(f"{step}\n")
            elif operation == "delete":
                (root / data.draw(st.sampled_from(present))).unlink()
            elif operation == "move":
                path = data.draw(st.sampled_from(present))
                dest = data.draw(st.sampled_from(files))
                if dest != path:
                    (root / dest).parent.mkdir(parents=True, exist_ok=True)
                    git(root, "mv", "-f", path, dest)
            elif operation == "config":
                name = data.draw(st.sampled_from(sorted(components)))
                change = data.draw(st.sampled_from(["build", "edge", "input", "add", "remove"]))
                comp = components[name]
                leaves = [
                    n
                    for n in components
                    if all(n not in c["depends_on"] for c in components.values())
                ]
                new = [n for n in NAMES if n not in components]
                if change == "add" and new:
                    (root / new[0]).mkdir(exist_ok=True)
                    (root / new[0] / "f.txt").write_text(f"{step}\n")
                    below = sorted(n for n in components if n < new[0])[-1:]  # keeps a DAG
                    components[new[0]] = {"depends_on": set(below), "extra": [], "build": None}
                    files = all_files(components)
                elif change == "remove" and len(leaves) > 1:
                    del components[data.draw(st.sampled_from(leaves))]
                elif change == "build":
                    comp["build"] = None if comp["build"] else "make all"
                elif change == "input":
                    comp["extra"] = [] if comp["extra"] else ["top.txt"]
                else:
                    earlier = [n for n in components if n < name]
                    if earlier:
                        comp["depends_on"] ^= {data.draw(st.sampled_from(earlier))}
                (root / "shipyard.toml").write_text(render(components))
            else:  # a branch with one edit, merged back
                git(root, "checkout", "-q", "-b", f"side{step}")
                # Not README.md: main edits it meanwhile, and the merge would conflict.
                side = root / data.draw(st.sampled_from([f for f in files if f != "README.md"]))
                side.parent.mkdir(parents=True, exist_ok=True)
                side.write_text(f"side {step}\n")
                commit_all(root, "side")
                git(root, "checkout", "-q", "main")
                (root / "README.md").write_text(f"main {step}\n")
                commit_all(root, "main")
                git(root, "merge", "-q", "--no-ff", "-m", "merge", f"side{step}")
            commits.append(commit_all(root, f"step {step}") if _dirty(root) else commits[-1])
            commits[-1] = git(root, "rev-parse", "HEAD")
        base = data.draw(st.sampled_from(commits[:-1] or commits), label="base")
        report = Shipyard(root).changes(since=base)
        expected, full = naive(root, base, "HEAD")
        assert report.full_deploy_required is full, report.to_dict()
        if not full:
            assert report.names == expected, report.to_dict()
        else:
            assert report.names == set(components)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _dirty(root: Path) -> bool:
    return bool(git(root, "status", "--porcelain"))
