"""Git, through the `git` command: resolve refs, check the work tree, export a commit."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from shipyard.errors import GitError, UsageError


@dataclass(frozen=True)
class TreeEntry:
    """One file of a commit: its path and blob id."""

    path: str
    blob: str


class Repo:
    """A git work tree (the project folder or one of its parents)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _run(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
        """`git ARGS` in the work tree; GitError (with the cause said plainly) unless its
        exit code is in `ok`."""
        try:
            done = subprocess.run(
                ["git", *args], cwd=self.path, capture_output=True, check=False, timeout=120
            )
        except FileNotFoundError:
            raise GitError("git is not installed", hint="install git and retry") from None
        if done.returncode not in ok:
            if args[:2] != ("rev-parse", "--git-dir"):
                self._require_repository()  # the usual cause, said plainly
            stderr = done.stderr.decode("utf-8", "replace").strip()
            raise GitError(
                f"`git {' '.join(args)}` failed in {self.path}: {stderr}",
                hint="check that the folder is a git repository and the ref exists",
            )
        return done

    def _git(self, *args: str) -> str:
        return self._run(*args).stdout.decode("utf-8", "replace")

    def toplevel(self) -> Path:
        """The root of the work tree."""
        return Path(self._git("rev-parse", "--show-toplevel").strip())

    def resolve(self, ref: str) -> str:
        """The full commit id of `ref`; GitError naming the ref if it does not resolve."""
        check_ref(ref)
        try:
            return self._git(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
            ).strip()
        except GitError:
            self._require_commits()  # a clearer error when the cause is the repository
            raise GitError(
                f"git ref {ref!r} does not resolve to a commit in {self.path}",
                hint="check the name with `git log --oneline`; fetch it if it is remote",
            ) from None

    def _require_repository(self) -> None:
        """Raise GitError if the folder is in no git repository."""
        try:
            self._git("rev-parse", "--git-dir")
        except GitError:
            raise GitError(
                f"{self.path} is not in a git repository: shipyard deploys commits",
                hint="create one and commit the project: "
                "`git init && git add -A && git commit -m 'first commit'`",
            ) from None

    def _require_commits(self) -> None:
        """Raise GitError if there is no repository, or it has no commit yet."""
        self._require_repository()
        try:
            self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        except GitError:
            raise GitError(
                f"the git repository of {self.path} has no commit yet: shipyard deploys commits",
                hint="commit the project first: `git add -A && git commit -m 'first commit'`",
            ) from None

    def has_commit(self, commit: str) -> bool:
        try:
            self.resolve(commit)
        except GitError:
            return False
        return True

    def dirty_files(self, prefix: str = "") -> list[str]:
        """Uncommitted or untracked (not ignored) files, relative to the work-tree root."""
        out = self._git("status", "--porcelain", "--untracked-files=all", "--", prefix or ".")
        return [line[3:] for line in out.splitlines() if line.strip()]

    def tree(self, commit: str, prefix: str = "") -> list[TreeEntry]:
        """Every file of `commit` below `prefix` (relative to the work-tree root)."""
        args = ["ls-tree", "-r", "--full-tree", commit]
        if prefix:
            args += ["--", prefix]
        entries = []
        for line in self._git(*args).splitlines():
            meta, path = line.split("\t", 1)
            entries.append(TreeEntry(path=path, blob=meta.split()[2]))
        return entries

    def work_tree_digest(self, paths: list[str]) -> dict[str, str]:
        """Content hashes of work-tree files (for --allow-dirty builds)."""
        root = self.toplevel()
        result = {}
        for rel in paths:
            file = root / rel
            if file.is_file():
                result[rel] = hashlib.sha256(file.read_bytes()).hexdigest()
        return result

    def export(self, commit: str, dest: Path, prefix: str = "") -> None:
        """Write the files of `commit` (below `prefix`) into `dest`: a clean build tree."""
        try:
            args = ["git", "archive", "--format=tar", commit]
            if prefix:
                args += ["--", prefix]
            # From the top: run in a subfolder, git archive would only export that subfolder.
            done = subprocess.run(args, cwd=self.toplevel(), capture_output=True, timeout=300)
        except FileNotFoundError:
            raise GitError("git is not installed", hint="install git and retry") from None
        if done.returncode != 0:
            raise GitError(
                f"cannot export commit {commit[:12]}: {done.stderr.decode(errors='replace')}"
            )
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
            archive.extractall(dest, filter="data")

    def tracked_and_untracked(self) -> list[str]:
        """Files a dirty build sees: tracked plus untracked-but-not-ignored."""
        out = self._git("ls-files", "--cached", "--others", "--exclude-standard", "-z")
        return [p for p in out.split("\0") if p]

    def merge_base(self, base: str, head: str) -> str | None:
        """The best common ancestor of two commits; None when they have none here (unrelated
        histories, or a shallow clone that cut it off)."""
        done = self._run("merge-base", "--end-of-options", base, head, ok=(0, 1))
        return done.stdout.decode().strip() or None

    def is_shallow(self) -> bool:
        return self._git("rev-parse", "--is-shallow-repository").strip() == "true"

    def diff(self, old: str, new: str, under: str = "") -> list[DiffEntry]:
        """Every path that differs between two commits (below the folder `under`, relative
        to the root, if given), in one `git diff --raw -z`.

        Renames off, so a move counts on both sides; paths are bytes-exact (spaces, quotes,
        newlines and non-UTF-8 bytes survive, kept as surrogates) and relative to the root.
        """
        # From the top whatever the working folder; literal: `*` or `[` in a name is itself.
        paths = ["--", f":(top,literal){under}"] if under else []
        out = self._run(
            "diff",
            "--raw",
            "-z",
            "--no-renames",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--ignore-submodules=none",
            "--end-of-options",
            old,
            new,
            *paths,
        ).stdout
        fields = out.split(b"\0")
        entries = []
        for meta, raw_path in zip(fields[0::2], fields[1::2], strict=False):
            # ":100644 100644 <old sha> <new sha> M"
            old_mode, new_mode, _old, _new, status = meta.decode().lstrip(":").split()
            entries.append(
                DiffEntry(
                    path=raw_path.decode("utf-8", "surrogateescape"),
                    status=status[:1],
                    submodule=GITLINK in (old_mode, new_mode),
                )
            )
        return entries

    def blob_text(self, commit: str, path: str) -> str | None:
        """The text of a file (relative to the root) at `commit`; None if it is not there."""
        done = self._run("cat-file", "blob", f"{commit}:{path}", ok=(0, 128))
        if done.returncode != 0:
            return None
        return done.stdout.decode("utf-8", "replace")

    def folders(self, commit: str, paths: list[str]) -> set[str]:
        """Which of `paths` (relative to the root) are folders in `commit`: one `git ls-tree`."""
        clean = [p for p in paths if p and not p.startswith("-")]
        if not clean:
            return set()
        out = self._run("ls-tree", "-d", "-z", "--name-only", "--full-tree", commit, "--", *clean)
        return {p.decode("utf-8", "surrogateescape") for p in out.stdout.split(b"\0") if p}

    def files(self, commit: str, paths: list[str]) -> set[str]:
        """Which of `paths` (relative to the root) are files in `commit`: one `git ls-tree`."""
        clean = [p for p in paths if p and not p.startswith("-")]
        if not clean:
            return set()
        out = self._run("ls-tree", "-z", "--full-tree", commit, "--", *clean)
        listed = set()
        for line in out.stdout.split(b"\0"):
            head, _, name = line.partition(b"\t")
            if head.split(b" ")[1:2] == [b"blob"]:
                listed.add(name.decode("utf-8", "surrogateescape"))
        return listed & set(clean)


GITLINK = "160000"  # the mode of a submodule pointer


@dataclass(frozen=True)
class DiffEntry:
    """One changed path: status A added, D deleted, M modified, T type changed."""

    path: str
    status: str
    submodule: bool = False


def check_ref(ref: str) -> None:
    """Refuse a ref no git name can be: one git would read as an option, or an empty one."""
    if not ref or ref.startswith("-") or any(c in ref for c in "\0\n\r"):
        raise UsageError(
            f"invalid git ref {ref!r}: a ref names a commit, branch or tag and cannot start "
            "with '-' or be empty",
            hint="for example --since main, --since HEAD~3 or --since v1.2",
        )
