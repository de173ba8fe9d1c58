"""Artifacts: the built output of one component at one input digest, built once.

The digest covers what can change the output: the component's input files (by
git blob id, or content hash for a dirty build), the global inputs, the build
command, the artifact folder and the digests of its dependencies. Artifacts are
folders under `<project>/.shipyard/artifacts/<component>/<digest>/`, written to a
temporary folder and renamed into place so a half-built artifact never exists.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from shipyard.config import Component
from shipyard.core.paths import matches_any

DIGEST_FORMAT = 2  # 2: dependencies count whatever the selection; the Python environment
METADATA = ".json"  # <component>/<digest>.json beside an artifact: what it was made from


def input_digest(
    component: Component,
    files: Mapping[str, str],
    global_inputs: Iterable[str],
    dependency_digests: Mapping[str, str],
    pyenv: str | None = None,
) -> str:
    """sha256 over the inputs of a build; `files` maps project-relative paths to blob ids,
    `pyenv` is the digest of the component's Python environment (None without one)."""
    patterns = tuple(component.inputs) + tuple(global_inputs)
    chosen = sorted((p, blob) for p, blob in files.items() if matches_any(p, patterns))
    payload = {
        "format": DIGEST_FORMAT,
        "files": chosen,
        "build": component.build,
        "artifact": component.artifact,
        "path": component.path,
        "deps": sorted(dependency_digests.items()),
        "pyenv": pyenv,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


SCAN_LIMIT = 1 << 16  # bytes of a pyvenv.cfg or .pth file read: they are a few lines


def build_path_references(folder: Path, build_root: Path) -> list[str]:
    """Files in `folder` that name `build_root` by its absolute path, where that breaks a
    release once the build folder is gone: shebang lines of executables, `pyvenv.cfg`,
    `.pth` files and symbolic links. Each item is "relative/path: what holds the path"."""
    needles = {str(build_root).encode(), os.path.realpath(build_root).encode()}
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(f"{dirpath}/{d}")]:
            full = os.path.join(dirpath, name)
            relative = os.path.relpath(full, folder)
            if os.path.islink(full):
                if any(os.readlink(full).encode().startswith(n) for n in needles):
                    found.append(f"{relative}: a symbolic link into the build folder")
                continue
            what = _reference_in(full, name, needles)
            if what:
                found.append(f"{relative}: {what}")
    return found


def _reference_in(path: str, name: str, needles: set[bytes]) -> str | None:
    try:
        if name == "pyvenv.cfg" or name.endswith(".pth"):
            with open(path, "rb") as handle:
                text = handle.read(SCAN_LIMIT)
            return f"{name} names the build folder" if any(n in text for n in needles) else None
        if not os.stat(path).st_mode & 0o111:
            return None
        with open(path, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return None
    if first.startswith(b"#!") and any(n in first for n in needles):
        return "its #! line runs an interpreter inside the build folder"
    return None


class ArtifactStore:
    """Built artifacts on this machine, one folder per component and digest."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, component: str, digest: str) -> Path:
        return self.root / component / digest

    def has(self, component: str, digest: str) -> bool:
        return self.path(component, digest).is_dir()

    def metadata(self, component: str, digest: str) -> dict[str, str]:
        """What the artifact was made from (`pyenv`: its environment's digest), or {}."""
        try:
            data = json.loads((self.root / component / f"{digest}{METADATA}").read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def put(
        self,
        component: str,
        digest: str,
        source: Path,
        *,
        links: Mapping[str, Path] = {},
        metadata: Mapping[str, str] = {},
    ) -> tuple[Path, int]:
        """Link `source` in as the artifact (hard links: no copy), with each folder of `links`
        linked in under its name (a Python environment as `.venv`); return its path and size
        in bytes."""
        final = self.path(component, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=final.parent))
        try:
            link_tree(source, staging)
            for name, folder in links.items():
                link_tree(folder, staging / name)
            if metadata:
                meta = final.parent / f"{digest}{METADATA}"
                meta.write_text(json.dumps(dict(metadata), sort_keys=True) + "\n")
            try:
                os.rename(staging, final)
            except OSError:  # another deployment stored the same digest first: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final, tree_size(final)


def tree_size(folder: Path) -> int:
    """Bytes of the regular files under `folder` (a hard-linked file counts in each tree)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                stat = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += stat.st_size
    return total


def link_tree(source: Path, dest: Path) -> None:
    """`dest` as a tree of new folders holding hard links to the files of `source` (symbolic
    links copied as links): no file data is written. Where the file system refuses a link
    (another device), that file is copied."""
    shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        shutil.copy2(source, dest, follow_symlinks=False)
