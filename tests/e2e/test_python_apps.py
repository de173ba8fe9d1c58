"""Python applications: clean child environments and relocatable artifacts, through the CLI.

Each test deploys a tiny project in its own git repository with the real console script and
host agent; what a child process saw is written by the process itself into its folder.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunCli, commit_all, free_ports, git
from tests.e2e.pyindex import unavailable

# Prints what decides which Python a command gets: one `key=value` line each.
REPORT = (
    "python -c 'import os, sys; "
    'print("prefix=" + sys.prefix); '
    'print("PYTHONPATH=" + os.environ.get("PYTHONPATH", "")); '
    'print("VIRTUAL_ENV=" + os.environ.get("VIRTUAL_ENV", ""))'
    '\'; echo "python=$(command -v python)"; '
    "python -c 'import shipyard' 2>/dev/null && echo imports_shipyard=yes "
    "|| echo imports_shipyard=no"
)


def write_project(folder: Path, components: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shipyard.toml").write_text(
        '[project]\nname = "py"\ndefault_environment = "local"\n\n'
        '[environments.local]\ntarget = "local"\nroot = ".shipyard/local"\n\n' + components
    )
    (folder / ".gitignore").write_text(".shipyard/\n")
    git(folder, "init", "-q")
    return folder


@pytest.fixture
def six() -> None:
    """Tests that install `six` (and `idna`) skip, saying why, where no index offers them."""
    why = unavailable(["six", "idna"])
    if why:
        pytest.skip(why)


@pytest.fixture
def project(short_tmp: Path, run_cli: RunCli) -> Iterator[Path]:
    folder = short_tmp / "py"
    yield folder
    if (folder / ".shipyard" / "local" / "agent").exists():
        run_cli("-C", str(folder), "down", timeout=60)


def seen(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def leaky_environment(tmp: Path) -> dict[str, str]:
    """What a user who activated shipyard's venv and set PYTHONPATH runs shipyard with."""
    extra = tmp / "pythonpath"
    extra.mkdir(exist_ok=True)
    return {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
        "VIRTUAL_ENV": sys.prefix,
        "PYTHONPATH": str(extra),
    }


def test_no_child_process_sees_shipyards_interpreter(
    project: Path, short_tmp: Path, run_cli: RunCli
) -> None:
    (port,) = free_ports(1)
    app = project / "app"
    app.mkdir(parents=True)
    (app / "report.sh").write_text(REPORT + "\n")
    write_project(
        project,
        f"""[components.app]
path = "app"
build = "sh report.sh > built.txt"
start = "sh report.sh > started.txt; exec python -m http.server $PORT"
port = {port}
tests = {{ full = "sh report.sh > tested.txt" }}
""",
    )
    commit_all(project, "v1")
    result = run_cli(
        "-C", str(project), "deploy", "--tests", "full",
        env=leaky_environment(short_tmp), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    release = next((project / ".shipyard/local/app/releases").iterdir())
    own_bin = os.path.dirname(sys.executable)
    for what in ("built.txt", "tested.txt", "started.txt"):
        values = seen(release / what)
        assert values["PYTHONPATH"] == "", what
        assert values["VIRTUAL_ENV"] == "", what
        assert values["prefix"] != sys.prefix, what
        assert values["python"] and not values["python"].startswith(own_bin), what
        assert values["imports_shipyard"] == "no", what


def test_a_venv_made_by_the_build_is_refused_naming_its_file(
    project: Path, run_cli: RunCli
) -> None:
    (port,) = free_ports(1)
    (project / "app").mkdir(parents=True)
    (project / "app" / "app.py").write_text("print('hello')\n")
    write_project(
        project,
        f"""[components.app]
path = "app"
build = "python3 -m venv --without-pip .venv"
start = ".venv/bin/python -m http.server $PORT"
port = {port}
""",
    )
    commit_all(project, "v1")
    result = run_cli("-C", str(project), "deploy", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "app would break once its build folder is deleted" in said
    assert ".venv/pyvenv.cfg: pyvenv.cfg names the build folder" in said
    assert "python = { requirements" in said
    assert not (project / ".shipyard" / "artifacts" / "app").exists() or not any(
        p for p in (project / ".shipyard" / "artifacts" / "app").iterdir() if p.is_dir()
    )


SERVE = """\
import http.server, os, sys
import six

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{six.__file__}\\n{sys.prefix}\\n".encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def deploy(run_cli: RunCli, project: Path, *args: str) -> tuple[str, str]:
    """Deploy; return (deployment id, its journal as text)."""
    result = run_cli("-C", str(project), "--json", "deploy", *args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    deployment_id = json.loads(result.stdout)["id"]
    logs = run_cli("-C", str(project), "logs", deployment_id, timeout=60)
    return deployment_id, logs.stdout


def python_project(project: Path, ports: list[int]) -> None:
    for name in ("api", "worker"):
        folder = project / name
        folder.mkdir(parents=True)
        (folder / "app.py").write_text(SERVE)
        (folder / "requirements.txt").write_text("six==1.17.0\n")
    write_project(
        project,
        "".join(
            f"""[components.{name}]
path = "{name}"
python = {{ requirements = "requirements.txt" }}
build = "python -c 'import six' && echo built > built.txt"
start = "python app.py"
port = {port}

"""
            for name, port in zip(("api", "worker"), ports, strict=True)
        ),
    )
    commit_all(project, "v1")


def test_a_python_table_builds_one_shared_relocatable_environment(
    six: None, project: Path, run_cli: RunCli
) -> None:
    ports = free_ports(2)
    python_project(project, ports)
    first, journal = deploy(run_cli, project)
    # Two components with the same lock: one environment installed, the other reuses it.
    assert journal.count("installed with uv") == 1, journal
    assert journal.count("reused (nothing installed)") == 1, journal
    envs = [p for p in (project / ".shipyard" / "pyenvs").iterdir() if not p.name.startswith(".")]
    assert len(envs) == 1
    for name, port in zip(("api", "worker"), ports, strict=True):
        release = project / ".shipyard" / "local" / name / "releases" / first
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            six_file, prefix = response.read().decode().splitlines()
        assert six_file.startswith(str(release / ".venv")), six_file  # its own env, first
        assert prefix == str(release / ".venv")
        # The environment's files are the store's, hard-linked: no copy per release.
        linked = release / ".venv" / Path(six_file).relative_to(release / ".venv")
        stored = envs[0] / Path(six_file).relative_to(release / ".venv")
        assert linked.stat().st_ino == stored.stat().st_ino
        assert (release / "app.py").stat().st_nlink >= 2  # the artifact's file, linked

    # Code changed, requirements not: nothing is installed again.
    (project / "api" / "app.py").write_text(SERVE + "# v2\n")
    commit_all(project, "v2")
    _, journal = deploy(run_cli, project)
    assert "installed with" not in journal
    assert "python environment" in journal and "reused" in journal

    # (A no-change `deploy --full` and a changed lock: tests/e2e/test_pystack.py.)


def test_an_artifact_digest_is_the_same_whatever_the_selection(
    project: Path, run_cli: RunCli
) -> None:
    (port,) = free_ports(1)
    for name in ("lib", "web"):
        (project / name).mkdir(parents=True)
        (project / name / "VERSION").write_text("1\n")
    write_project(
        project,
        f"""[components.lib]
path = "lib"
build = "echo built"
start = "sleep 600"
health = {{ command = "true" }}

[components.web]
path = "web"
depends_on = ["lib"]
build = "echo built"
start = "python -m http.server $PORT"
port = {port}
""",
    )
    commit_all(project, "v1")
    _, journal = deploy(run_cli, project, "--only", "web")
    assert "artifact" in journal and "already built" not in journal
    _, journal = deploy(run_cli, project, "--full")
    web = [line for line in journal.splitlines() if "build:web" in line and "artifact" in line]
    assert web and all("already built" in line for line in web), journal


def test_gc_frees_what_no_rollback_needs_and_keeps_the_rest(project: Path, run_cli: RunCli) -> None:
    (port,) = free_ports(1)
    app = project / "app"
    app.mkdir(parents=True)
    (app / "app.py").write_text(SERVE)
    (app / "requirements.txt").write_text("six==1.17.0\n")
    write_project(
        project,
        f"""[components.app]
path = "app"
python = {{ requirements = "requirements.txt" }}
start = "python app.py"
port = {port}
warm_for = "0s"
""",
    )
    config = project / "shipyard.toml"
    config.write_text(config.read_text().replace("[project]\n", "[project]\nkeep_releases = 1\n"))
    commit_all(project, "v1")
    deploy(run_cli, project)
    pyenvs = project / ".shipyard" / "pyenvs"
    first_env = {p.name for p in pyenvs.iterdir() if not p.name.startswith(".")}
    (app / "requirements.txt").write_text("six==1.17.0\nidna\n")
    commit_all(project, "v2: a new requirement")
    v2, _ = deploy(run_cli, project)
    assert first_env < {p.name for p in pyenvs.iterdir()}  # v1's is what rollback needs
    (app / "app.py").write_text(SERVE + "# v3\n")
    commit_all(project, "v3: code only")
    v3 = run_cli("-C", str(project), "deploy", timeout=300)
    assert v3.returncode == 0, v3.stdout + v3.stderr
    # v1 is neither kept (keep_releases = 1) nor where a rollback goes (v2): its artifact
    # and environment are gone, and the deploy says so.
    assert "gc: removed 1 artifacts and 1 python environments" in v3.stderr, v3.stderr
    envs = {p.name for p in pyenvs.iterdir() if not p.name.startswith(".")}
    assert len(envs) == 1 and not envs & first_env
    artifacts = project / ".shipyard" / "artifacts" / "app"
    assert len([p for p in artifacts.iterdir() if p.is_dir()]) == 2
    dry = run_cli("-C", str(project), "--json", "gc", "--dry-run")
    assert json.loads(dry.stdout)["artifacts"] == [], dry.stdout + dry.stderr
    status = run_cli("-C", str(project), "--json", "status")
    disk = json.loads(status.stdout)["disk"]
    assert set(disk) == {"environments", "artifacts", "releases", "cache", "total", "measured_at"}
    assert 0 < disk["releases"] < disk["artifacts"] < disk["environments"]  # hard links
    rollback = run_cli("-C", str(project), "--json", "rollback", timeout=300)
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert f"/releases/{v2}/.venv/" in response.read().decode()
