"""shipyard.toml as it is at a commit: a deploy of commit X is planned from X's config.

The loader checks that every component's folder exists; at a commit, "exists" means "is
in that commit's tree": one `git ls-tree -d` for the folders the config names (never the
whole tree: a monorepo has 100,000 files) answers it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path, PurePosixPath

from shipyard.config import CONFIG_FILE, Config, parse_config
from shipyard.effects.git import Repo
from shipyard.errors import ConfigError


def load_config_at(repo: Repo, commit: str, project_dir: Path, prefix: str) -> Config:
    """The validated config of `commit` (ConfigError naming the commit when it is bad)."""
    path = f"{prefix}/{CONFIG_FILE}" if prefix else CONFIG_FILE
    text = repo.blob_text(commit, path)
    if text is None:
        raise ConfigError(
            f"commit {commit[:12]} has no {path}",
            file=path,
            hint="deploy a commit that has it, or pass --allow-dirty to use the work tree's",
        )
    shown = Path(f"{CONFIG_FILE}@{commit[:12]}")
    strip = len(prefix) + 1 if prefix else 0
    named = [prefix + "/" + p if prefix else p for p in filter(None, map(_folder, _paths(text)))]
    present = {folder[strip:] for folder in repo.folders(commit, named)} | {""}
    config = parse_config(
        text, file=shown, root=project_dir, folder_exists=lambda f: _folder(f) in present
    )
    return dataclasses.replace(config, file=project_dir / CONFIG_FILE)


def _folder(path: str) -> str:
    """A component path as git names it: no leading or trailing slash, "" for the root."""
    folder = str(PurePosixPath(path.strip("/")))
    return "" if folder == "." or folder.startswith("-") else folder


def _paths(text: str) -> list[str]:
    """The component paths a config names (only those are looked up in the commit's tree;
    a config that does not parse yields none, and parse_config reports why)."""
    try:
        components = tomllib.loads(text).get("components")
    except tomllib.TOMLDecodeError:
        return []
    if not isinstance(components, dict):
        return []
    paths = [t.get("path") for t in components.values() if isinstance(t, dict)]
    return [p for p in paths if isinstance(p, str)]


def same_config_text(repo: Repo, commit: str, project_dir: Path, prefix: str) -> bool:
    """True when the work tree's shipyard.toml is the one committed at `commit`."""
    path = f"{prefix}/{CONFIG_FILE}" if prefix else CONFIG_FILE
    try:
        work = (project_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return repo.blob_text(commit, path) == work
