"""A one-component project for feeding hostile text through shipyard's output paths.

The component's build prints whatever the test asks for; the release serves `/health`
with a body made of the text the test asks for followed by its secret environment
variables, with the status the test asks for (an app echoing its env in an error page).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import RunCli, commit_all, free_ports, git, shipyard_executable

SERVER = """\
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SPEC = json.load(open("health.json"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = SPEC["body"].encode("utf-8", "surrogateescape") + (
            " db=%s jwt=%s" % (os.environ.get("DATABASE_URL"), os.environ.get("JWT_SECRET"))
        ).encode()
        self.send_response(SPEC["status"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(SPEC["start_output"], flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

CONFIG = """\
[project]
name = "hostile"
state = "sqlite:///.shipyard/state.db"

[environments.local]
target = "local"
root = ".shipyard/local"
secrets = {{ dotenv = ".env" }}

[components.app]
path = "app"
build = "python build.py"
start = "python server.py $PORT"
port = {port}
secrets = ["DATABASE_URL", "JWT_SECRET"]
health = {{ http = "/health", interval = "100ms", timeout = "1s", deadline = "{deadline}" }}
"""

BUILD = """\
import sys
data = open("build_output.bin", "rb").read()
sys.stdout.buffer.write(data)
sys.stdout.flush()
sys.exit(int(open("build_exit").read()))
"""


class HostileProject:
    """The project folder and how to change what its build and release say."""

    def __init__(self, root: Path, secrets: dict[str, str]) -> None:
        self.root = root
        self.secrets = secrets
        self.port = free_ports(1)[0]
        self.generation = 0

    def write(
        self,
        *,
        build_output: bytes = b"built\n",
        build_exit: int = 0,
        health_body: str = "ok",
        health_status: int = 200,
        start_output: str = "started",
        deadline: str = "3s",
    ) -> None:
        app = self.root / "app"
        app.mkdir(parents=True, exist_ok=True)
        (app / "server.py").write_text(SERVER)
        (app / "build.py").write_text(BUILD)
        (app / "build_output.bin").write_bytes(build_output)
        (app / "build_exit").write_text(str(build_exit))
        self.generation += 1  # so every write is a new commit, even one repeating the last
        (app / "generation").write_text(str(self.generation))
        spec = {"body": health_body, "status": health_status, "start_output": start_output}
        (app / "health.json").write_text(json.dumps(spec))
        (self.root / "shipyard.toml").write_text(CONFIG.format(port=self.port, deadline=deadline))
        env = "".join(f"{k}='{v}'\n" for k, v in self.secrets.items())
        (self.root / ".env").write_text(env)
        (self.root / ".gitignore").write_text(".shipyard/\n")
        # The build prints one committed file and the app serves another; both hold the
        # secrets on purpose (to test redaction): allowed, or the preflight's leak scan would
        # refuse the deploy.
        (self.root / ".shipyardignore").write_text("app/build_output.bin\napp/health.json\n")
        if not (self.root / ".git").exists():
            git(self.root, "init", "-q")
        commit_all(self.root, "change")

    def stored_bytes(self) -> bytes:
        """Everything shipyard wrote under .shipyard: the database, journals, logs, state."""
        out = b""
        for f in sorted((self.root / ".shipyard").rglob("*")):
            if f.is_file() and not f.is_symlink() and "/releases/" not in f.as_posix():
                out += f.read_bytes()
        return out


def new_project(secrets: dict[str, str]) -> HostileProject:
    """A fresh project under /tmp/sy-* (agent sockets need short paths)."""
    return HostileProject(Path(tempfile.mkdtemp(prefix="sy-", dir="/tmp")) / "p", secrets)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`shipyard ARGS…` as a real subprocess (for fixtures wider than one test)."""
    return subprocess.run(
        [shipyard_executable(), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def remove_project(project: HostileProject, run_cli: RunCli = cli) -> None:
    if (project.root / ".shipyard" / "local" / "agent").exists():
        run_cli("-C", str(project.root), "down")
    shutil.rmtree(project.root.parent, ignore_errors=True)
