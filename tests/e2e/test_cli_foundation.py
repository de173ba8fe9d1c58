"""`shipyard validate` and `shipyard graph` through the installed console script."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SHOP, RunCli

CONFIG = """\
[project]
name = "demo"

[environments.local]
target = "local"

[components.api]
path = "api"
start = "python app.py"
port = 4100

[components.web]
path = "web"
depends_on = ["api"]
start = "python app.py"
port = {web_port}
"""


def make_project(tmp_path: Path, web_port: str = "4101") -> Path:
    (tmp_path / "api").mkdir()
    (tmp_path / "web").mkdir()
    (tmp_path / "shipyard.toml").write_text(CONFIG.replace("{web_port}", web_port))
    return tmp_path


def test_version(run_cli: RunCli) -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("shipyard ")


def test_validate_ok(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("-C", str(make_project(tmp_path)), "validate")
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    assert "[api] → [web]" in result.stdout


def test_validate_error_exit_2_with_location_and_no_traceback(
    run_cli: RunCli, tmp_path: Path
) -> None:
    project = make_project(tmp_path, web_port='"41o1"')
    result = run_cli("-C", str(project), "validate")
    assert result.returncode == 2
    assert (
        'shipyard.toml:16: components.web.port: expected an integer from 1 to 65535, got "41o1"'
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_json_error_shape(run_cli: RunCli, tmp_path: Path) -> None:
    project = make_project(tmp_path, web_port="4100")
    result = run_cli("-C", str(project), "--json", "validate")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError"
    assert "both use port 4100" in error["message"]
    assert error["hint"]


def test_graph_formats(run_cli: RunCli, tmp_path: Path) -> None:
    project = str(make_project(tmp_path))
    as_json = json.loads(run_cli("-C", project, "graph", "--format", "json").stdout)
    assert as_json == {
        "components": {"api": {"depends_on": []}, "web": {"depends_on": ["api"]}},
        "levels": [["api"], ["web"]],
    }
    assert "api --> web" in run_cli("-C", project, "graph", "--format", "mermaid").stdout
    assert '"api" -> "web";' in run_cli("-C", project, "graph", "--format", "dot").stdout


def test_missing_project_is_exit_2(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("-C", str(tmp_path / "nowhere"), "validate")
    assert result.returncode == 2
    assert "no shipyard.toml" in result.stderr


def test_demo_project_validates_with_the_documented_levels(run_cli: RunCli) -> None:
    assert run_cli("-C", str(SHOP), "validate").returncode == 0
    result = run_cli("-C", str(SHOP), "--json", "graph")
    assert json.loads(result.stdout)["levels"] == [["backend"], ["admin", "marketing"]]
