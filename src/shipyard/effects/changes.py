"""Change detection's I/O: the git questions (`merge-base`, one `diff --raw -z`, a few blobs)
and the config at both commits, handed to the pure analysis in core/changes.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shipyard.config import Config
from shipyard.core.changes import ChangeReport, FileChange, analyse, full_report
from shipyard.effects.git import Repo
from shipyard.errors import ConfigError


def destructive_sql(sql: str) -> list[str]:
    """What a migration script destroys (drops, renames, type changes), as the migration
    tooling classifies it; empty when nothing. The one place change detection asks it."""
    from shipyard.effects import sql_migrations

    return sql_migrations.is_destructive(sql)


@dataclass(frozen=True)
class GitSources:
    """File contents at both commits, read from git (paths are project-relative)."""

    repo: Repo
    old: str
    new: str
    prefix: str

    def _path(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def old_text(self, path: str) -> str | None:
        return self.repo.blob_text(self.old, self._path(path))

    def new_text(self, path: str) -> str | None:
        return self.repo.blob_text(self.new, self._path(path))

    def destructive(self, sql: str) -> list[str]:
        return destructive_sql(sql)


@dataclass(frozen=True)
class Base:
    """Where the comparison starts: a commit (or None and why there is none), and whether
    it is what runs (the last good deployment) or a ref the user named."""

    commit: str | None
    deployed: bool
    missing: str | None = None  # why there is no usable base


def detect_changes(
    repo: Repo,
    prefix: str,
    *,
    head: str,
    base: Base,
    config_at: Callable[[str], Config],
    env_name: str | None,
) -> ChangeReport:
    """The change report from `base` to `head` (full deploy, with the reason, when the base
    is missing or shares no history with head here).

    A user's base (`--since`) is compared from its merge-base with head, as Nx and Turborepo
    do; a deployed base that is not an ancestor of head (a force-pushed branch) is compared
    with head directly, since what runs now must be replaced wherever it differs.
    """
    new = config_at(head)
    name = new.environment(env_name).name
    if base.commit is None:
        return full_report(new, head=head, base=None, why=base.missing or "no base commit")
    merge_base = repo.merge_base(base.commit, head)
    if merge_base is None:
        why = f"{base.commit[:12]} and {head[:12]} share no history in this repository" + (
            " (a shallow clone: `git fetch --unshallow` fetches the rest)"
            if repo.is_shallow()
            else " (unrelated histories)"
        )
        return full_report(new, head=head, base=base.commit, why=why)
    notes = []
    old_commit = merge_base
    if merge_base != base.commit:
        if base.deployed:
            old_commit = base.commit
            notes.append(
                f"the deployed commit {base.commit[:12]} is not an ancestor of {head[:12]} "
                f"(force-pushed or rewritten history; merge-base {merge_base[:12]}): "
                "compared with the deployed commit directly, so whatever differs from what "
                "runs is deployed"
            )
        else:
            notes.append(
                f"{base.commit[:12]} is not an ancestor of {head[:12]}: compared from their "
                f"merge-base {merge_base[:12]}"
            )
    try:
        old: Config | None = config_at(old_commit)
        old_error = None
    except ConfigError as exc:
        old, old_error = None, f"the config at {old_commit[:12]} cannot be read ({exc.message})"
    changes = [
        FileChange(path, entry.status, entry.submodule)
        for entry in repo.diff(old_commit, head, prefix)  # a monorepo: only the project's
        if (path := _project_path(entry.path, prefix)) is not None
    ]
    return analyse(
        old,
        new,
        changes,
        GitSources(repo, old_commit, head, prefix),
        head=head,
        base=base.commit,
        merge_base=merge_base,
        env_name=name,
        notes=notes,
        old_config_error=old_error,
    )


def _project_path(path: str, prefix: str) -> str | None:
    """A repository path relative to the project folder; None when it is outside."""
    if not prefix:
        return path
    return path[len(prefix) + 1 :] if path.startswith(prefix + "/") else None
