"""A migration tool shipyard cannot run is refused by `validate` (exit 2), never at deploy time."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunCli

CONFIG = """\
[project]
name = "app"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"

[components.api]
path = "api"
start = "python -m http.server $PORT"
port = 4100
secrets = ["DATABASE_URL"]
migrations = {migrations}
"""


def _project(tmp_path: Path, migrations: str) -> Path:
    (tmp_path / "api").mkdir()
    (tmp_path / "shipyard.toml").write_text(CONFIG.replace("{migrations}", migrations))
    return tmp_path


def test_validate_refuses_a_tool_it_cannot_run(run_cli: RunCli, tmp_path: Path) -> None:
    project = _project(tmp_path, '{ tool = "flyway", dir = "sql" }')
    result = run_cli("-C", str(project), "--json", "validate")
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert "components.api.migrations.tool" in error["message"]
    assert "flyway" in error["message"]


def test_validate_names_the_key_a_tool_needs(run_cli: RunCli, tmp_path: Path) -> None:
    project = _project(tmp_path, '{ tool = "sql" }')
    result = run_cli("-C", str(project), "validate")
    assert result.returncode == 2
    assert "components.api.migrations.dir" in result.stderr
    assert "shipyard.toml" in result.stderr
