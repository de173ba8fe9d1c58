"""The `python = {…}` table of a component: valid forms become a PythonEnv, bad ones say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import PythonEnv, parse_config
from shipyard.core.spec import spec_from_dict, spec_to_dict
from shipyard.errors import ConfigError

BASE = """\
[project]
name = "py"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"

[components.web]
path = "web"
start = "python app.py"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    web = tmp_path / "web"
    web.mkdir()
    (web / "requirements.txt").write_text("fastapi==0.142.2\n")
    (web / "pyproject.toml").write_text("[project]\nname = 'web'\nversion = '1'\n")
    (web / "uv.lock").write_text("version = 1\n")
    return tmp_path


def parse(project: Path, line: str):  # type: ignore[no-untyped-def]
    return parse_config(BASE + line + "\n", file=project / "shipyard.toml", root=project)


def error_for(project: Path, line: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(project, line)
    return info.value


def test_requirements_and_project_forms_are_read(project: Path) -> None:
    web = parse(project, 'python = { requirements = "requirements.txt", version = "3.11" }')
    assert web.components["web"].python == PythonEnv(
        requirements="requirements.txt", version="3.11"
    )
    assert web.components["web"].python.lock_file == "requirements.txt"
    project_form = parse(project, 'python = { project = "." }').components["web"].python
    assert project_form == PythonEnv(project=".")
    assert project_form.lock_file == "./uv.lock"
    assert parse(project, "").components["web"].python is None


def test_the_python_table_survives_a_release_spec(project: Path) -> None:
    web = parse(project, 'python = { requirements = "requirements.txt" }').components["web"]
    assert spec_from_dict(spec_to_dict(web)) == web


@pytest.mark.parametrize(
    ("line", "key", "said"),
    [
        ('python = { requirement = "requirements.txt" }', "components.web.python.requirement",
         "unknown key `requirement`"),
        ('python = { requirements = "r.txt", project = "." }', "components.web.python",
         "choose one of `requirements` and `project`"),
        ('python = { version = "3.12" }', "components.web.python",
         "needs `requirements` or `project`"),
        ('python = { requirements = "missing.txt" }', "components.web.python.requirements",
         "file 'missing.txt' does not exist"),
        ('python = { requirements = "requirements.txt", version = "twelve" }',
         "components.web.python.version", 'expected a Python version such as "3.12"'),
        ('python = { requirements = 3 }', "components.web.python.requirements",
         "expected a non-empty string"),
        ('python = { requirements = "../requirements.txt" }',
         "components.web.python.requirements", "outside the component's folder"),
        ('python = { project = "app" }', "components.web.python.project",
         "pyproject.toml is missing"),
        ('python = "requirements.txt"', "components.web.python", "expected a table"),
    ],
)  # fmt: skip
def test_a_bad_python_table_names_its_key_and_line(
    project: Path, line: str, key: str, said: str
) -> None:
    error = error_for(project, line)
    assert error.key == key
    assert said in error.message
    assert error.line == len(BASE.splitlines()) + 1
    assert error.file is not None and error.file.endswith("shipyard.toml")
