"""An Alembic project deployed through the whole pipeline (console script, agent, releases).

The release's `python` runs Alembic in the release folder with the release's secrets
(DATABASE_URL from the environment's dotenv); a failed health check takes the schema back to
the snapshot revision with the code; an irreversible pending revision is refused (exit 3) with
nothing migrated.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from tests.conftest import RunCli, commit_all, free_ports, git

PROJECT = Path(__file__).parent.parent / "migration_projects" / "alembic"
CONFIG = """\
[project]
name = "alembic-app"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"
secrets = {{ dotenv = ".env.local" }}

[components.api]
path = "api"
start = "python -m http.server $PORT"
port = {port}
secrets = ["DATABASE_URL"]
health = {{ http = "{health}", interval = "100ms", deadline = "3s", stable_for = "200ms" }}
migrations = {{ tool = "alembic", config = "alembic.ini" }}
"""


def write_release(project: Path, port: int, health: str, *revisions: str) -> None:
    api = project / "api"
    versions = api / "migrations" / "versions"
    if versions.exists():
        shutil.rmtree(versions)
    versions.mkdir(parents=True)
    for name in revisions:
        shutil.copy(PROJECT / "migrations" / "pool" / f"{name}.py", versions / f"{name}.py")
    (project / "shipyard.toml").write_text(CONFIG.format(port=port, health=health))


def columns(project: Path) -> list[str]:
    conn = sqlite3.connect(project / ".shipyard" / "local" / "api" / "shared" / "app.db")
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(products)")]
    finally:
        conn.close()


def test_alembic_deploy_rolls_back_with_the_code_and_refuses_irreversible(
    short_tmp: Path, run_cli: RunCli
) -> None:
    project = short_tmp / "app"
    api = project / "api"
    api.mkdir(parents=True)
    shutil.copy(PROJECT / "alembic.ini", api / "alembic.ini")
    (api / "migrations").mkdir()
    shutil.copy(PROJECT / "migrations" / "env.py", api / "migrations" / "env.py")
    (project / ".env.local").write_text("DATABASE_URL=sqlite:///shared/app.db\n")
    (project / ".gitignore").write_text(".shipyard/\n")
    (port,) = free_ports(1)
    write_release(project, port, "/", "a1_products")
    git(project, "init", "-q")
    commit_all(project, "v1")
    try:
        v1 = run_cli("-C", str(project), "--json", "deploy", timeout=180)
        assert v1.returncode == 0, v1.stdout + v1.stderr
        assert columns(project) == ["id", "name"]

        write_release(project, port, "/missing", "a1_products", "a2_price")
        commit_all(project, "v2: a price column, and a health check that never passes")
        v2 = run_cli("-C", str(project), "--json", "deploy", timeout=180)
        assert v2.returncode == 1, v2.stdout + v2.stderr
        record = json.loads(v2.stdout)
        assert record["status"] == "rolled_back"
        assert columns(project) == ["id", "name"]  # a2 undone by Alembic after the code went back
        journal = run_cli("-C", str(project), "logs", record["id"]).stdout
        assert "schema a1 → a2" in journal and "schema a2 → a1" in journal

        write_release(project, port, "/", "a1_products", "a2_price", "a4_backfill")
        commit_all(project, "v3: a backfill without a downgrade")
        v3 = run_cli("-C", str(project), "--json", "deploy", timeout=180)
        assert v3.returncode == 3, v3.stdout + v3.stderr
        error = json.loads(v3.stdout)["error"]
        assert "a4 (backfill prices (no way back))" in error["message"]
        assert "--allow-irreversible" in error["hint"]
        assert columns(project) == ["id", "name"]  # refused before anything ran
    finally:
        run_cli("-C", str(project), "down")
