"""Bounded disk: remove the artifacts and Python environments nothing can need any more.

An artifact is needed while a release made from it may run again: a release kept on disk
in any environment, a release any environment's `rollback` can reach (its kept good
deployments and the one a plain rollback goes back to, see `reachable_releases`), and
everything an unfinished or failed deployment touched. A Python environment is needed
while a needed artifact was built with it. Everything else under `.shipyard/artifacts`
and `.shipyard/pyenvs` goes.

Releases hold hard links to their artifact's files, so removing an unneeded artifact
never breaks a release on disk; it only frees what no release shares.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.effects.artifacts import ArtifactStore
from shipyard.store import Store

_OPEN = ("pending", "running", "rolling_back", "failed", "rollback_failed")
_RUNNING = ("pending", "running", "rolling_back")


@dataclass
class GcReport:
    """What `gc` removed (or, with `dry_run`, would remove) and the bytes that freed."""

    dry_run: bool
    artifacts: list[str] = field(default_factory=list)  # component/digest
    pyenvs: list[str] = field(default_factory=list)  # digest
    freed_bytes: int = 0
    skipped: str | None = None  # why nothing was removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "artifacts": self.artifacts,
            "pyenvs": self.pyenvs,
            "freed_bytes": self.freed_bytes,
            "skipped": self.skipped,
        }


def needed_artifacts(
    store: Store,
    environments: Iterable[str],
    keep: int,
    on_disk: Iterable[tuple[str, str]] = (),
) -> set[tuple[str, str]]:
    """(component, digest) of every artifact a release may still need (see the module)."""
    # Here, not at the top: `status` measures disk through this module without the engine.
    from shipyard.engine.runner import reachable_releases

    made: dict[tuple[str, str], str] = {}  # (component, release) → the artifact it unpacked
    needed: set[tuple[str, str]] = set()
    releases: set[tuple[str, str]] = set(on_disk)
    for env in environments:
        for record in store.list_deployments(env, limit=500):
            components = store.components(record.id)
            for c in components:
                if c.release and c.artifact:
                    made.setdefault((c.component, c.release), c.artifact)
            if record.status in _OPEN:
                needed |= {(c.component, c.artifact) for c in components if c.artifact}
                needed |= {
                    (e.component, e.artifact) for e in store.snapshot(record.id) if e.artifact
                }
        releases |= reachable_releases(store, env, keep)
    needed |= {(comp, made[(comp, rel)]) for comp, rel in releases if (comp, rel) in made}
    return needed


def releases_on_disk(roots: Iterable[Path]) -> set[tuple[str, str]]:
    """(component, release) of every release folder under the environments' roots."""
    found = set()
    for root in roots:
        for releases in root.glob("*/releases"):
            for folder in releases.iterdir():
                if not folder.name.startswith("."):
                    found.add((releases.parent.name, folder.name))
    return found


def collect_garbage(
    store: Store,
    artifacts: ArtifactStore,
    pyenv_root: Path,
    environments: Mapping[str, Path],
    keep: int,
    *,
    dry_run: bool = False,
) -> GcReport:
    """Remove what no release needs; `environments` maps every environment to its root."""
    report = GcReport(dry_run=dry_run)
    for env in environments:
        running = [d for d in store.list_deployments(env, limit=50) if d.status in _RUNNING]
        if running:
            # Its artifacts and environment may be half-recorded yet: never race a build.
            report.skipped = f"deployment {running[0].id} of {env} is {running[0].status}"
            return report
    needed = needed_artifacts(store, environments, keep, releases_on_disk(environments.values()))
    needed_envs = {artifacts.metadata(comp, digest).get("pyenv") for comp, digest in needed}
    doomed: list[Path] = []
    for folder in _entries(artifacts.root, depth=2):
        component, digest = folder.parent.name, folder.name
        if (component, digest) not in needed:
            report.artifacts.append(f"{component}/{digest}")
            doomed.append(folder)
    for folder in _entries(pyenv_root, depth=1):
        if folder.name not in needed_envs:
            report.pyenvs.append(folder.name)
            doomed.append(folder)
    report.freed_bytes = _unshared_bytes(doomed)
    if not dry_run:
        for folder in doomed:
            shutil.rmtree(folder, ignore_errors=True)
            meta = folder.parent / f"{folder.name}.json"
            meta.unlink(missing_ok=True)
    return report


def _entries(root: Path, depth: int) -> list[Path]:
    """Folders `depth` levels below `root`, without staging folders (a leading dot)."""
    level = [root] if root.is_dir() else []
    for _ in range(depth):
        level = [
            p for parent in level for p in sorted(parent.iterdir())
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        ]  # fmt: skip
    return level


def _unshared_bytes(folders: Iterable[Path]) -> int:
    """Bytes freed by deleting `folders`: files with no hard link left elsewhere."""
    seen: dict[tuple[int, int], list[int]] = {}  # inode → [links inside, links total, size]
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                entry = seen.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_size])
                entry[0] += 1
    return sum(size for inside, total, size in seen.values() if inside >= total)


def disk_usage(groups: Mapping[str, Iterable[Path]]) -> dict[str, int]:
    """Bytes per group of folders, each file counted once, in the first group holding it
    (hard links make a release cost only what it does not share with its artifact)."""
    seen: set[tuple[int, int]] = set()
    usage: dict[str, int] = {}
    for group, folders in groups.items():
        total = 0
        for folder in folders:
            for dirpath, _dirs, files in os.walk(folder):
                for name in files:
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_blocks * 512
        usage[group] = total
    usage["total"] = sum(usage.values())
    return usage
