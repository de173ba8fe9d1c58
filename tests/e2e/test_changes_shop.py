"""Partial deploys of the demo through the console script: what `changes` says is what deploys.

A marketing-only commit deploys only marketing; a backend commit deploys all three (admin
and marketing depend on it); a shallow clone that lacks the deployed commit plans a full
deploy and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import RunCli, commit_all, git


def run_json(run_cli: RunCli, project: Path, *args: str, **env: str) -> tuple[int, Any]:
    done = run_cli("-C", str(project), "--json", *args, env=env, timeout=180)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else done.stderr


def test_changes_drive_partial_deploys_of_the_demo(
    shop: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    code, first = run_json(run_cli, shop, "deploy")
    assert code == 0 and first["kind"] == "full", first

    (shop / "marketing" / "build.py").write_text(
        (shop / "marketing" / "build.py").read_text() + "\n# new tagline\n"
    )
    commit_all(shop, "marketing only")
    code, report = run_json(run_cli, shop, "changes")
    assert code == 0, report
    assert report["base"] == first["commit"]
    assert report["changed_files"] == ["marketing/build.py"]
    assert [a["name"] for a in report["affected"]] == ["marketing"]
    assert report["full_deploy_required"] is False and report["breaking"] == []
    code, partial = run_json(run_cli, shop, "deploy")
    assert code == 0, partial
    assert partial["kind"] == "partial"
    assert [c["name"] for c in partial["components"]] == ["marketing"]

    (shop / "backend" / "app.py").write_text(
        (shop / "backend" / "app.py").read_text() + "\n# a backend change\n"
    )
    commit_all(shop, "backend")
    code, plan = run_json(run_cli, shop, "plan")
    assert code == 0, plan
    assert set(plan["components"]) == {"backend", "admin", "marketing"}
    assert plan["reasons"]["admin"] == ["depends on backend"]
    code, everything = run_json(run_cli, shop, "deploy")
    assert code == 0, everything
    assert {c["name"] for c in everything["components"]} == {"backend", "admin", "marketing"}

    # A CI job's shallow clone, one commit deep, with the same state store: the deployed
    # commit is not there, so nothing can be compared; the plan is full and says why.
    (shop / "admin" / "NOTES.md").write_text("later\n")
    commit_all(shop, "after the deploy")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{shop}", str(clone))
    state = {"SHIPYARD_STATE_URL": f"sqlite:///{shop}/.shipyard/state.db"}
    code, plan = run_json(run_cli, clone, "plan", **state)
    assert code == 0, plan
    assert plan["kind"] == "full" and "shallow clone" in plan["why"], plan["why"]
    code, report = run_json(run_cli, clone, "changes", **state)
    assert code == 0 and report["full_deploy_required"] is True
    assert "git fetch --unshallow" in report["why_full"]
