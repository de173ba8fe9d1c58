"""A migration tool shipyard cannot run is refused by `validate` (exit 2), never at deploy time."""

from __future__ import annotations

import json
import subprocess
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
    (tmp_path / "api").mkdir(parents=True)
    (tmp_path / "api" / "smoke.py").write_text("print('ok')\n")
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


def test_every_tool_validate_accepts_has_its_keys(run_cli: RunCli, tmp_path: Path) -> None:
    for index, migrations in enumerate(
        [
            '{ tool = "sql", dir = "migrations" }',
            '{ tool = "alembic", config = "alembic.ini" }',
            '{ tool = "django" }',
            '{ tool = "django", manage = "src/manage.py" }',
            '{ tool = "command", up = "./migrate up", down = "./migrate down", '
            'current = "./migrate current" }',
        ]
    ):
        project = _project(tmp_path / str(index), migrations)
        result = run_cli("-C", str(project), "validate")
        assert result.returncode == 0, (migrations, result.stderr)


def test_the_environment_chooses_the_default_test_stage(run_cli: RunCli, tmp_path: Path) -> None:
    project = _project(tmp_path, '{ tool = "sql", dir = "migrations" }')
    config = project / "shipyard.toml"
    text = config.read_text().replace(
        'root = ".shipyard/local"', 'root = ".shipyard/local"\ntests = "smoke"'
    )
    config.write_text(text + 'tests = { smoke = "python smoke.py" }\n')
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "v1"],
    ):
        subprocess.run(["git", *args], cwd=project, check=True)
    planned = json.loads(run_cli("-C", str(project), "--json", "plan").stdout)
    assert planned["tests"] == "smoke"
    assert "test:api" in [step["id"] for step in planned["steps"]]
    asked = json.loads(run_cli("-C", str(project), "--json", "plan", "--tests", "none").stdout)
    assert asked["tests"] == "none"
    config.write_text(text.replace('tests = "smoke"', 'tests = "some"'))
    refused = run_cli("-C", str(project), "validate")
    assert refused.returncode == 2
    assert "environments.local.tests" in refused.stderr
