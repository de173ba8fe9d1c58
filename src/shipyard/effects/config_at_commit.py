"""shipyard.toml as it is at a commit: a deploy of commit X is planned from X's config.

The loader checks that every component's folder exists under the project root; at a
commit, "exists" means "is in that commit's tree", so the component folders that are in
the commit (one `git ls-tree` for all of them, not the whole tree: a monorepo has 100,000
files) are mirrored (empty) in a scratch folder for validation, and the config then points
back at the real project folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
import tomllib
from pathlib import Path, PurePosixPath

from shipyard.config import CONFIG_FILE, Config, parse_config
from shipyard.effects.git import Repo
from shipyard.errors import ConfigError


def load_config_at(repo: Repo, commit: str, project_dir: Path, prefix: str) -> Config:
    """The validated config of `commit` (ConfigError naming the commit when it is bad)."""
    path = f"{prefix}/{CONFIG_FILE}" if prefix else CONFIG_FILE
    text = repo.show(commit, path)
    if text is None:
        raise ConfigError(
            f"commit {commit[:12]} has no {path}",
            file=path,
            hint="deploy a commit that has it, or pass --allow-dirty to use the work tree's",
        )
    shown = Path(f"{CONFIG_FILE}@{commit[:12]}")
    with tempfile.TemporaryDirectory(prefix="shipyard-config-") as scratch:
        root = Path(scratch)
        strip = len(prefix) + 1 if prefix else 0
        for folder in repo.folders(
            commit, [prefix + "/" + p if prefix else p for p in _paths(text)]
        ):
            (root / folder[strip:]).mkdir(parents=True, exist_ok=True)
        config = parse_config(text, file=shown, root=root)
    return dataclasses.replace(config, root=project_dir, file=project_dir / CONFIG_FILE)


def _paths(text: str) -> list[str]:
    """The component folders a config names (only those are looked up in the commit's tree;
    a config that does not parse yields none, and parse_config reports why)."""
    try:
        components = tomllib.loads(text).get("components")
    except tomllib.TOMLDecodeError:
        return []
    if not isinstance(components, dict):
        return []
    found = []
    for table in components.values():
        path = table.get("path") if isinstance(table, dict) else None
        folder = str(PurePosixPath(path.strip("/"))) if isinstance(path, str) else "."
        if folder != "." and not folder.startswith("-"):
            found.append(folder)
    return found


def same_config_text(repo: Repo, commit: str, project_dir: Path, prefix: str) -> bool:
    """True when the work tree's shipyard.toml is the one committed at `commit`."""
    path = f"{prefix}/{CONFIG_FILE}" if prefix else CONFIG_FILE
    try:
        work = (project_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return repo.show(commit, path) == work
