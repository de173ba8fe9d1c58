"""The leak scanner: credentials in files, in a commit's tree and in every commit's added lines.

One RE2 set of every rule's keywords is matched over each file in one linear pass; only the
rules whose keywords occur run their own pattern, so a clean file costs one pass. The values
of the project's secrets (if given) are one more RE2 alternation. Binary files, images,
archives and source maps are skipped; tokens inside longer base64 runs never match (see
`core.leak_rules`). A finding names rule, kind, file:line and a fingerprint; the credential
itself is kept only in memory (`Leak.secret`, never printed) so the redactor can learn it.

Allowlisting: a line holding `shipyard:allow` is never reported, and `.shipyardignore` at the
scan root lists paths (globs: `tests/fixtures/**`, `*.pem`, `docs/`) or fingerprints.

A commit's tree is scanned on every deploy; `CleanBlobs` remembers which git blobs a scanner
found nothing in, so an unchanged file is not read again (see `scan_commit_tree`).
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import re2

from shipyard.core import leak_rules
from shipyard.core.leak_rules import AWS_DOCUMENTED, RULES, Rule
from shipyard.core.paths import matches
from shipyard.errors import GitError

IGNORE_FILE = ".shipyardignore"
ALLOW_MARK = b"shipyard:allow"
MAX_FILE_BYTES = 64 * 1024 * 1024
# Folders that are never the project's own text: version control, caches, environments.
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".shipyard", "node_modules", "__pycache__", ".venv", "venv",
     ".tox", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".cache"}
)  # fmt: skip
SKIP_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".avif",
     ".heic", ".psd", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar",
     ".jar", ".war", ".whl", ".egg", ".class", ".so", ".dylib", ".dll", ".exe", ".o", ".a",
     ".pyc", ".pyo", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".mov",
     ".avi", ".wav", ".flac", ".ogg", ".webm", ".sqlite", ".db", ".map", ".wasm", ".pack",
     ".idx", ".parquet", ".npy", ".pt", ".onnx"}
)  # fmt: skip


@dataclass(frozen=True)
class Leak:
    """One credential found: where and what kind, never printable as its value."""

    rule: str
    kind: str
    description: str
    path: str
    line: int
    fingerprint: str
    severity: str = "error"
    commit: str | None = None
    name: str | None = None  # a variable's or a secret's name, when known
    environment: str | None = None  # a secret value of this environment
    secret: str = field(default="", repr=False, compare=False)  # memory only: for redaction

    @property
    def location(self) -> str:
        where = f"{self.path}:{self.line}"
        return f"{where}@{self.commit[:12]}" if self.commit else where


@dataclass(frozen=True)
class Allowlist:
    """What `.shipyardignore` allows: path globs and finding fingerprints."""

    paths: tuple[str, ...] = ()
    fingerprints: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        paths, prints = [], set()
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("fp:"):
                prints.add(line.split()[0])
            else:
                paths.append(line)
        return cls(tuple(paths), frozenset(prints))

    @classmethod
    def load(cls, root: Path) -> Allowlist:
        try:
            return cls.parse((root / IGNORE_FILE).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return cls()

    def path_allowed(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        for pattern in self.paths:
            if pattern.endswith("/"):
                folder = pattern.strip("/")
                if path.startswith(folder + "/") or f"/{folder}/" in f"/{path}":
                    return True
            elif "/" in pattern.strip("/"):
                if matches(path, pattern):
                    return True
            elif fnmatch.fnmatchcase(name, pattern) or matches(path, f"**/{pattern}/**"):
                return True
        return False


class Scanner:
    """Compiled rules (and secret values) ready to scan bytes."""

    def __init__(
        self,
        rules: Iterable[Rule] = RULES,
        values: Mapping[str, tuple[str, str]] | None = None,
        allowlist: Allowlist | None = None,
    ) -> None:
        """`values` maps a secret value to (environment, name): found wherever it appears."""
        self.rules = tuple(rules)
        self.allowlist = allowlist or Allowlist()
        options = re2.Options()
        options.case_sensitive = False
        self._keywords = re2.Set.SearchSet(options)
        self._by_keyword: list[list[int]] = []
        index: dict[str, int] = {}
        for number, rule in enumerate(self.rules):
            for keyword in rule.keywords:
                if keyword not in index:
                    index[keyword] = self._keywords.Add(re2.escape(keyword.encode()))
                    self._by_keyword.append([])
                self._by_keyword[index[keyword]].append(number)
        self._keywords.Compile()
        big = re2.Options()
        big.max_mem = 256 << 20  # the generic rule's DFA outgrows RE2's 8 MB on long lines
        self._patterns = [re2.compile(rule.regex.encode(), big) for rule in self.rules]
        self._test_mode = [re2.compile(r.test_mode) if r.test_mode else None for r in self.rules]
        self.values = {v: who for v, who in (values or {}).items() if len(v) >= 8}
        self._values = (
            re2.compile(
                b"|".join(re2.escape(v.encode()) for v in sorted(self.values, key=len)[::-1])
            )
            if self.values
            else None
        )

    def scan(
        self,
        data: bytes,
        path: str,
        *,
        commit: str | None = None,
        lines: list[int] | None = None,
    ) -> list[Leak]:
        """Every credential in `data` (the text of `path`; `lines` maps its line numbers)."""
        if self.allowlist.path_allowed(path):
            return []
        allowed = self.allowlist.fingerprints
        found = self.find(data, path, commit=commit, lines=lines)
        return [leak for leak in found if leak.fingerprint not in allowed]

    def find(
        self,
        data: bytes,
        path: str,
        *,
        commit: str | None = None,
        lines: list[int] | None = None,
    ) -> list[Leak]:
        """What `scan` finds before `.shipyardignore` allows any of it: what `data` holds,
        whatever its path (the path only names and fingerprints a finding)."""
        found: list[Leak] = []
        # The stubs say bool; RE2::Set answers the indexes of the keywords that occur.
        hit = cast("list[int] | None", self._keywords.Match(data)) or []
        chosen = sorted({n for k in hit for n in self._by_keyword[k]})
        for number in chosen:
            rule = self.rules[number]
            for match in self._patterns[number].finditer(data):
                group = next((g for g in rule.secret_groups if match.group(g) is not None), None)
                if group is None:
                    continue
                secret = match.group(group).decode("utf-8", "replace")
                if secret in AWS_DOCUMENTED or not all(check(secret) for check in rule.checks):
                    continue
                name = None
                if rule.name_group is not None and match.group(rule.name_group) is not None:
                    name = match.group(rule.name_group).decode("utf-8", "replace")
                test = self._test_mode[number]
                severity = "warning" if test is not None and test.search(secret) else "error"
                leak = self._leak(data, path, match.start(group), secret, rule.id, rule.kind,
                                  rule.description, severity, commit, lines, name)  # fmt: skip
                if leak is not None:
                    found.append(leak)
        found = _without_generic_repeats(found)
        if self._values is not None:
            for match in self._values.finditer(data):
                secret = match.group().decode("utf-8", "replace")
                environment, name = self.values[secret]
                leak = self._leak(
                    data, path, match.start(), secret, "secret-value", "environment-secret",
                    f"the value of {name} ({environment})", "error", commit, lines, name,
                    environment,
                )  # fmt: skip
                if leak is not None:
                    found.append(leak)
        return found

    def cache_key(self, fingerprint: Callable[[str], str]) -> str:
        """What decides whether a blob is clean: the rules and the code that runs them, and
        the secret values, under the project's keyed `fingerprint` (no value can be tested
        against the key by anyone without the project's key file)."""
        code = hashlib.sha256()
        for module in (Path(__file__), Path(leak_rules.__file__)):
            code.update(module.read_bytes())
        for rule in self.rules:
            checks = [getattr(c, "__qualname__", type(c).__name__) for c in rule.checks]
            shape = (rule.id, rule.regex, rule.keywords, rule.test_mode, rule.secret_groups,
                     rule.name_group, rule.severity, checks)  # fmt: skip
            code.update(repr(shape).encode())
        values = fingerprint("\0".join(sorted(self.values))) if self.values else "none"
        return f"{code.hexdigest()[:16]}-{values.removeprefix('hmac:')}"

    def _leak(
        self,
        data: bytes,
        path: str,
        start: int,
        secret: str,
        rule: str,
        kind: str,
        description: str,
        severity: str,
        commit: str | None,
        lines: list[int] | None,
        name: str | None,
        environment: str | None = None,
    ) -> Leak | None:
        begin = data.rfind(b"\n", 0, start) + 1
        end = data.find(b"\n", start)
        text = data[begin : end if end >= 0 else len(data)]
        if ALLOW_MARK in text:
            return None
        index = data.count(b"\n", 0, start)
        line = lines[index] if lines is not None and index < len(lines) else index + 1
        # Stable across edits elsewhere in the file, and free of the value: the rule, the
        # path and the line's other text.
        rest = text.replace(secret.encode("utf-8", "replace"), b"").strip()
        digest = hashlib.sha256(b"\0".join((rule.encode(), path.encode(), rest))).hexdigest()
        fingerprint = "fp:" + digest[:16]
        return Leak(rule, kind, description, path, line, fingerprint, severity, commit, name,
                    environment, secret)  # fmt: skip


def _without_generic_repeats(leaks: list[Leak]) -> list[Leak]:
    """A credential a format rule named is not reported again by the generic rule."""
    named = [leak for leak in leaks if leak.rule != "generic-secret"]
    return named + [
        leak
        for leak in leaks
        if leak.rule == "generic-secret"
        and not any(
            other.line == leak.line and (other.secret in leak.secret or leak.secret in other.secret)
            for other in named
        )
    ]


def readable(path: str, data: bytes) -> bool:
    """Text worth scanning: not an image, archive, binary or source map."""
    suffix = os.path.splitext(path)[1].lower()
    return suffix not in SKIP_SUFFIXES and b"\0" not in data[:8192]


def tree_files(root: Path, *, use_git: bool = True) -> Iterator[tuple[str, Path]]:
    """(relative path, file) of every file under `root` worth reading.

    In a git work tree: tracked files and untracked ones that are not ignored (an ignored
    `.env.production` is not a leak); elsewhere (or without `use_git`) every file, but for
    version control, caches and environments.
    """
    listed = _git_files(root) if use_git else None
    if listed is not None:
        for relative in listed:
            file = root / relative
            skipped = any(part in SKIP_DIRS for part in Path(relative).parts)
            if not skipped and file.is_file() and not file.is_symlink():
                yield relative, file
        return
    skip = SKIP_DIRS if use_git else SKIP_DIRS - {".shipyard"}
    top = str(root)
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        here = os.path.relpath(folder, top)
        for name in sorted(files):
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                relative = name if here == "." else f"{here}/{name}".replace(os.sep, "/")
                yield relative, Path(path)


def _git_files(root: Path) -> list[str] | None:
    try:
        done = subprocess.run(
            ["git", "-c", "core.quotePath=false", "ls-files", "-z", "-co", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [p for p in done.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def scan_paths(
    scanner: Scanner, root: Path, paths: Iterable[Path], *, use_git: bool = True
) -> tuple[list[Leak], int]:
    """Scan files and folders (relative names from `root`); return leaks and bytes read."""
    leaks: list[Leak] = []
    total = 0
    for target in paths:
        base = _relative(root, target)
        if target.is_dir():
            above = "" if base in (".", "") else base + "/"
            entries: Iterable[tuple[str, Path]] = (
                (above + rel, file) for rel, file in tree_files(target, use_git=use_git)
            )
        else:
            entries = [(base, target)]
        for relative, file in entries:
            data = _read(file)
            if data is None or not readable(relative, data):
                continue
            total += len(data)
            leaks += scanner.scan(data, relative)
    return leaks, total


def _relative(root: Path, file: Path) -> str:
    try:
        return file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return file.as_posix()


def _read(file: Path) -> bytes | None:
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            return None
        return file.read_bytes()
    except OSError:
        return None


class CleanBlobs:
    """The git blobs a scanner with one `cache_key` found nothing in: `<folder>/<key>`, the
    blob ids of one tree, one a line, rewritten after each scan (only that tree's, so it never
    grows beyond one tree; another key's file is removed then)."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.file = folder / key

    def load(self) -> set[str]:
        try:
            return set(self.file.read_text(encoding="ascii").split())
        except (OSError, UnicodeDecodeError):
            return set()

    def save(self, clean: set[str]) -> None:
        """Atomically (a concurrent scan reads the old set or the new one); best effort: a
        cache that cannot be written costs the next scan its time, nothing else."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            staging = self.folder / f".{self.file.name}.{os.getpid()}"
            staging.write_text("".join(f"{blob}\n" for blob in sorted(clean)), "ascii")
            os.replace(staging, self.file)
            for other in self.folder.iterdir():
                if other.name != self.file.name and not other.name.startswith("."):
                    other.unlink(missing_ok=True)
        except OSError:
            return


def scan_commit_tree(
    scanner: Scanner,
    repo_root: Path,
    commit: str,
    prefix: str = "",
    cache: CleanBlobs | None = None,
) -> list[Leak]:
    """Every file of `commit` (under `prefix`), read from git's objects: what is deployed.

    With `cache`, a blob found clean before by a scanner with the same key is not read
    again. Only a blob whose whole text was scanned and held nothing is clean: a blob whose
    path `.shipyardignore` allows, or whose findings it allows by fingerprint, is not (the
    same blob may sit at another path too). Binary blobs (by content) are clean; files
    skipped by their name are not even read.
    """
    listing = _git(
        repo_root, "ls-tree", "-r", "-z", "--full-tree", commit, *([prefix] if prefix else [])
    )
    blobs: list[tuple[str, str]] = []
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _tab, name = entry.partition(b"\t")
        mode, kind, oid = meta.split()
        if kind == b"blob" and mode != b"120000":  # not a symlink
            path = name.decode("utf-8", "surrogateescape")
            strip = len(prefix) + 1 if prefix else 0
            if os.path.splitext(path)[1].lower() not in SKIP_SUFFIXES:
                blobs.append((path[strip:], oid.decode()))
    known = cache.load() if cache is not None else set()
    clean = {blob for _path, blob in blobs} & known
    leaks: list[Leak] = []
    todo = [(path, blob) for path, blob in blobs if blob not in clean]
    for path, blob, data in _cat_blobs(repo_root, todo):
        if not readable(path, data):
            clean.add(blob)  # binary by content, wherever it sits
        elif scanner.allowlist.path_allowed(path):
            continue
        else:
            found = scanner.find(data, path)
            if found:
                allowed = scanner.allowlist.fingerprints
                leaks += [leak for leak in found if leak.fingerprint not in allowed]
            else:
                clean.add(blob)
    if cache is not None and clean != known:
        cache.save(clean)
    return leaks


def _cat_blobs(repo_root: Path, blobs: list[tuple[str, str]]) -> Iterator[tuple[str, str, bytes]]:
    """Blob contents through one `git cat-file --batch` process."""
    if not blobs:
        return
    process = subprocess.Popen(
        ["git", "cat-file", "--batch"],
        cwd=repo_root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        for path, blob in blobs:
            process.stdin.write(blob.encode() + b"\n")
            process.stdin.flush()
            header = process.stdout.readline().split()
            if len(header) < 3:
                continue
            size = int(header[2])
            data = _read_exact(process.stdout, size)
            process.stdout.read(1)  # the newline after each object
            if size <= MAX_FILE_BYTES:
                yield path, blob, data
    finally:
        process.stdin.close()
        process.stdout.close()
        process.wait(timeout=30)


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def scan_history(scanner: Scanner, repo_root: Path, prefix: str = "") -> list[Leak]:
    """The lines every commit added (on every branch), each with its commit."""
    args = ["git", "-c", "core.quotePath=false", "log", "--all", "-p", "-U0", "--no-color",
            "--no-ext-diff", "--no-renames", "--format=%x01%H"]  # fmt: skip
    if prefix:
        args += ["--", prefix]
    process = subprocess.Popen(
        args, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    leaks: list[Leak] = []
    commit = ""
    path: str | None = None
    added: list[bytes] = []
    numbers: list[int] = []
    line = 0
    header = False  # between `diff --git` and the first hunk: `+++ ` names the file there

    def flush() -> None:
        if path is not None and added and readable(path, b""):
            leaks.extend(scanner.scan(b"\n".join(added), path, commit=commit, lines=numbers))
        added.clear()
        numbers.clear()

    strip = len(prefix) + 1 if prefix else 0
    try:
        for raw in process.stdout:
            text = raw.rstrip(b"\n")
            if text.startswith(b"\x01"):
                flush()
                commit, path, header = text[1:].decode(), None, False
            elif text.startswith(b"diff --git "):
                flush()
                path, header = None, True
            elif header and text.startswith(b"+++ "):
                path = _diff_path(text[4:], strip)
            elif text.startswith(b"@@ "):
                header = False
                plus = text.split(b" ")[2]  # +start[,count]
                line = int(plus[1:].split(b",")[0])
            elif not header and text.startswith(b"+") and path is not None:
                added.append(text[1:])
                numbers.append(line)
                line += 1
        flush()
    finally:
        process.stdout.close()
        process.wait(timeout=30)
    return leaks


def _diff_path(name: bytes, strip: int) -> str | None:
    """The path of a diff's `+++ b/…` line (None for /dev/null), git's C-style quoting of
    unusual names undone byte for byte (its octal escapes are UTF-8 bytes, not characters)."""
    if name.startswith(b'"') and name.endswith(b'"'):
        name = codecs.escape_decode(name[1:-1])[0]
    text = name.decode("utf-8", "surrogateescape")
    return text[2:][strip:] if text.startswith("b/") else None


def _git(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise GitError(f"git {' '.join(args[:2])} failed: {' '.join(tail)}")
    return done.stdout
