"""shipyard.toml as it is at a commit: a deploy of commit X is planned from X's config.

The loader checks that every component's folder (and file it names, such as a
requirements file) exists under the project root; at a commit, "exists" means "is in
that commit's tree", so the folders and files of the commit are mirrored (empty) in a
scratch folder for validation, and the config then points back at the real project folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
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
        for entry in repo.tree(commit, prefix):
            relative = PurePosixPath(entry.path[strip:])
            if str(relative.parent) != ".":
                (root / relative.parent).mkdir(parents=True, exist_ok=True)
            (root / relative).touch()
        config = parse_config(text, file=shown, root=root)
    return dataclasses.replace(config, root=project_dir, file=project_dir / CONFIG_FILE)


def same_config_text(repo: Repo, commit: str, project_dir: Path, prefix: str) -> bool:
    """True when the work tree's shipyard.toml is the one committed at `commit`."""
    path = f"{prefix}/{CONFIG_FILE}" if prefix else CONFIG_FILE
    try:
        work = (project_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return repo.show(commit, path) == work
