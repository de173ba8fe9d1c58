"""`status` reports the disk as gc last measured it; `status --disk` measures it now.

Measuring walks every file under `.shipyard/` (a few Python environments are tens of
thousands), so gc (which runs after every deploy) measures and records it, and `status`
only reads the record.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunCli, commit_all, git

CONFIG = """
[project]
name = "disk"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"

[components.web]
path = "web"
start = "python3 -m http.server $PORT --bind 127.0.0.1"
"""


def disk(run_cli: RunCli, project: Path, *flags: str) -> dict[str, object]:
    done = run_cli("-C", str(project), "--json", "status", *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)["disk"]
    assert isinstance(found, dict)
    return found


def test_status_reads_what_gc_measured_and_measures_on_request(
    tmp_path: Path, run_cli: RunCli
) -> None:
    project = tmp_path / "disk"
    (project / "web").mkdir(parents=True)
    (project / "web" / "index.html").write_text("v1\n")
    (project / "shipyard.toml").write_text(CONFIG)
    (project / ".gitignore").write_text(".shipyard/\n")
    git(project, "init", "-q")
    commit_all(project, "v1")
    env = project / ".shipyard" / "cache" / "wheels"  # gc leaves the wheel cache alone
    env.mkdir(parents=True)
    (env / "a.whl").write_bytes(b"x" * 1_000_000)

    gc = run_cli("-C", str(project), "--json", "gc")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    measured = disk(run_cli, project)
    assert 1_000_000 <= measured["cache"] == measured["total"]  # type: ignore[operator]
    assert str(measured["measured_at"]).endswith("+00:00")

    (env / "b.whl").write_bytes(b"x" * 2_000_000)
    assert disk(run_cli, project) == measured  # as gc left it: nothing walked
    now = disk(run_cli, project, "--disk")
    assert now["cache"] >= 3_000_000  # type: ignore[operator]
    assert disk(run_cli, project)["cache"] == now["cache"]  # recorded

    text = run_cli("-C", str(project), "status", "--disk")
    assert "disk: 3.0 MB (environments 0.0, artifacts 0.0, releases 0.0, cache 3.0)" in text.stdout
