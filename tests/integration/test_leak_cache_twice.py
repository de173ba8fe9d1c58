"""The preflight's leak scan reads a blob once: a blob a scanner found clean is remembered
by its git id (under a key of the rules and the secret values) and not read again.

A `git` on PATH that logs the object ids `cat-file` is asked for counts what is read; the
rest checks that remembering never hides a leak: a new file, a value that became a
secret, a blob that was clean only because `.shipyardignore` allowed its path or its
finding, when it shows up elsewhere.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from shipyard.core.secrets import Fingerprinter
from shipyard.effects.leaks import Allowlist, CleanBlobs, Scanner, scan_commit_tree
from tests.conftest import commit_all, git
from tests.leak_samples import github_token

KEY = Fingerprinter(b"k" * 32)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository of 51 clean text files, scanned with a `git` that logs what cat-file reads."""
    root = tmp_path / "repo"
    for n in range(50):
        (root / "src").mkdir(parents=True, exist_ok=True)
        (root / "src" / f"m{n}.py").write_text(f"def f{n}():\n    return {n}\n")
    (root / "logo.png").write_bytes(b"\x89PNG\0" * 10)  # skipped by its name, never read
    (root / ".gitignore").write_text(".shipyard/\n")
    git(root, "init", "-q")
    commit_all(root, "v1")
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    real = shutil.which("git")
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = cat-file ]; then tee -a {tmp_path}/reads | exec {real} "$@"; fi\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    return root


def reads(repo: Path) -> int:
    log = repo.parent / "reads"
    count = len(log.read_text().splitlines()) if log.exists() else 0
    log.unlink(missing_ok=True)
    return count


def scan(repo: Path, scanner: Scanner) -> list[str]:
    cache = CleanBlobs(repo / ".shipyard" / "leak-scan", scanner.cache_key(KEY))
    head = git(repo, "rev-parse", "HEAD")
    return [leak.location for leak in scan_commit_tree(scanner, repo, head, "", cache)]


def test_an_unchanged_tree_is_not_read_again_and_a_new_leak_is_still_found(repo: Path) -> None:
    scanner = Scanner()
    assert scan(repo, scanner) == []
    assert reads(repo) == 51
    assert scan(repo, scanner) == []
    assert reads(repo) == 0  # every blob known clean: cat-file is not even started
    (repo / "src" / "m3.py").write_text(f'TOKEN = "{github_token(random.Random(3))}"\n')
    (repo / "src" / "new.py").write_text("x = 1\n")
    commit_all(repo, "a leak and a new file")
    assert scan(repo, scanner) == ["src/m3.py:1"]
    assert reads(repo) == 2  # the two new blobs
    assert scan(repo, scanner) == ["src/m3.py:1"]  # a blob with a leak is never remembered
    assert reads(repo) == 1


def test_a_value_that_becomes_a_secret_is_found_in_a_blob_known_clean(repo: Path) -> None:
    value = "Vq7-" + "pL2xR9mK4tW8"
    (repo / "src" / "settings.py").write_text(f'NAME = "{value}"\n')
    commit_all(repo, "a value nobody uses as a secret yet")
    assert scan(repo, Scanner()) == []
    with_value = Scanner(values={value: ("production", "API_KEY")})
    assert scan(repo, with_value) == ["src/settings.py:1"]
    assert reads(repo) == 52 + 52  # another key: nothing it knows
    # No value is written: the key is an HMAC under the project's key.
    (cached,) = (repo / ".shipyard" / "leak-scan").iterdir()
    assert value not in cached.name and value not in cached.read_text()


def test_a_blob_clean_only_by_the_allowlist_is_found_at_another_path(repo: Path) -> None:
    leak = f'TOKEN = "{github_token(random.Random(5))}"\n'
    (repo / "docs").mkdir()
    (repo / "docs" / "example.py").write_text(leak)
    (repo / "src" / "fixture.py").write_text(leak + "# allowed by its fingerprint\n")
    commit_all(repo, "allowed leaks")
    plain = Scanner()
    (allowed_fp,) = [x.fingerprint for x in plain.scan(leak.encode(), "src/fixture.py")]
    allowing = Scanner(allowlist=Allowlist(("docs/",), frozenset({allowed_fp})))
    assert scan(repo, allowing) == []
    shutil.copy(repo / "docs" / "example.py", repo / "src" / "copy1.py")
    shutil.copy(repo / "src" / "fixture.py", repo / "src" / "sub_copy2.py")
    commit_all(repo, "the same blobs elsewhere")
    assert sorted(scan(repo, allowing)) == ["src/copy1.py:1", "src/sub_copy2.py:1"]
