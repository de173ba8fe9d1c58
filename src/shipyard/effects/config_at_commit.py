"""shipyard.toml as it is at a commit: a deploy of commit X is planned from X's config.

The loader checks that every component's folder (and file it names, such as a
requirements file) exists; at a commit, "exists" means "is in that commit's tree": one
`git ls-tree -d` for the folders the config names (never the whole tree: a monorepo has
100,000 files) answers it, and one `git ls-tree` per named file.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

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
    folders = _Folders(repo, commit, prefix, _PATH.findall(text))
    shown = Path(f"{CONFIG_FILE}@{commit[:12]}")
    cached = _parsed.get((text, project_dir))
    if cached is not None and all(folders.known_as(f) == found for f, found in cached[1].items()):
        config = cached[0]
    else:
        asked: dict[str, bool] = {}

        def exists(path: str) -> bool:
            asked[path] = folders.exists(path)
            return asked[path]

        def is_file(path: str) -> bool:
            asked["file:" + path] = folders.is_file(path)
            return asked["file:" + path]

        config = parse_config(
            text, file=shown, root=project_dir, folder_exists=exists, file_exists=is_file
        )
        _parsed[(text, project_dir)] = (config, asked)
        while len(_parsed) > 8:
            del _parsed[next(iter(_parsed))]
    return dataclasses.replace(config, file=project_dir / CONFIG_FILE)


# `path = "…"` lines: the component folders to look up in one `git ls-tree` before parsing
# (a path written another way is looked up on its own when the loader asks).
_PATH = re.compile(r"""^\s*path\s*=\s*["']([^"'\\]*)["']""", re.MULTILINE)
# Configs already validated, by text, with the folder answers they depended on: the base and
# head of a change usually share their shipyard.toml, and 1,000 components take a while.
_parsed: dict[tuple[str, Path], tuple[Config, dict[str, bool]]] = {}


class _Folders:
    """Which folders exist in a commit, asked of git in as few calls as possible."""

    def __init__(self, repo: Repo, commit: str, prefix: str, likely: list[str]) -> None:
        self.repo, self.commit, self.prefix = repo, commit, prefix
        self.known: dict[str, bool] = {"": True}
        self._ask([_folder(p) for p in likely])

    def _ask(self, folders: list[str]) -> None:
        wanted = [f for f in folders if f not in self.known]
        if not wanted:
            return
        full = [f"{self.prefix}/{f}" if self.prefix else f for f in wanted]
        found = self.repo.folders(self.commit, full)
        for folder, path in zip(wanted, full, strict=True):
            self.known[folder] = path in found

    def exists(self, path: str) -> bool:
        folder = _folder(path)
        self._ask([folder])
        return self.known[folder]

    def is_file(self, path: str) -> bool:
        name = _folder(path)
        full = f"{self.prefix}/{name}" if self.prefix else name
        return bool(name) and full in self.repo.files(self.commit, [full])

    def known_as(self, key: str) -> bool:
        """The answer for a key of a cached parse: a folder, or "file:" and a file."""
        if key.startswith("file:"):
            return self.is_file(key[len("file:") :])
        return self.exists(key)


def _folder(path: str) -> str:
    """A component path as git names folders: no leading or trailing slash, "" for the root."""
    return "/".join(part for part in path.split("/") if part not in ("", "."))


def same_config_text(repo: Repo, commit: str, project_dir: Path, prefix: str) -> bool:
    """True when the work tree's shipyard.toml is the one committed at `commit`."""
    path = f"{prefix}/{CONFIG_FILE}" if prefix else CONFIG_FILE
    try:
        work = (project_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return repo.blob_text(commit, path) == work
