"""The demo project (examples/shop) as real processes on free loopback ports.

Each app is started the way shipyard starts a release: from a copy of its folder (the backend's
with a `shared/` folder for the database), with `--port 0` so the kernel picks a free port that
the app reports on its first line, and with the environment shipyard would give it. The schema
is applied by shipyard's own `sql` runner. Every process is stopped by PID in teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.effects import sql_migrations as sm

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 5.0


def dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything shipyard or the demo would set, plus extra."""
    skip = {"PORT", "DATABASE_URL", "JWT_SECRET", "STRIPE_SECRET_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in skip and not k.startswith("SHIPYARD_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def get_json(url: str) -> tuple[int, object]:
    status, body = get(url)
    return status, json.loads(body)


class Apps:
    """Starts demo processes and stops every one of them, by PID, at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, script: str, cwd: Path, env: dict[str, str]) -> str:
        out, err = self.tmp_path / f"{name}.out", self.tmp_path / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, script, "--port", "0"],
                cwd=cwd,
                env=env,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if match := LISTENING.search(out.read_text()):
                return match.group(1)
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(
            f"{name} did not start (exit code {proc.poll()}):\n{err.read_text()}", pytrace=False
        )

    def run(self, script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, script, "--port", "0"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    apps = Apps(tmp_path)
    try:
        yield apps
    finally:
        apps.stop_all()


def release_copy(component: str, dest: Path) -> Path:
    """The component's folder as a release would hold it, with an empty shared/ folder."""
    folder = shutil.copytree(
        SHOP / component,
        dest / component,
        ignore=shutil.ignore_patterns("__pycache__", "shared", "site", "*.db"),
    )
    (folder / "shared").mkdir()
    return folder


SECRETS = dotenv(SHOP / ".env.local")


def backend_env(release: str = "r-backend-1") -> dict[str, str]:
    return child_env(
        DATABASE_URL=SECRETS["DATABASE_URL"],
        JWT_SECRET=SECRETS["JWT_SECRET"],
        SHIPYARD_ENV="local",
        SHIPYARD_RELEASE=release,
        SHIPYARD_COMMIT="c0ffee1",
    )


def test_local_env_file_is_harmless_and_well_formed() -> None:
    assert SECRETS["DATABASE_URL"] == "sqlite:///shared/shop.db"
    assert len(SECRETS["JWT_SECRET"]) >= 32 and "dev" in SECRETS["JWT_SECRET"]
    assert re.fullmatch(r"sk_test_[A-Za-z0-9]{24}", SECRETS["STRIPE_SECRET_KEY"])
    staging = dotenv(SHOP / ".env.staging")
    assert set(staging) == set(SECRETS)
    assert all(staging[k] != SECRETS[k] for k in SECRETS)


def test_backend_and_admin(apps: Apps, tmp_path: Path) -> None:
    backend = release_copy("backend", tmp_path)
    applied = sm.upgrade(backend / "migrations", SECRETS["DATABASE_URL"], cwd=backend)
    assert applied == ["0001", "0002", "0003"]
    assert (backend / "shared" / "shop.db").is_file()

    started = time.monotonic()
    backend_url = apps.start("backend", "app.py", backend, backend_env())
    assert time.monotonic() - started < 2.0

    assert get_json(backend_url + "/health") == (
        200,
        {
            "ok": True,
            "revision": "0003",
            "needs": "0003",
            "release": "r-backend-1",
            "commit": "c0ffee1",
        },
    )
    status, products = get_json(backend_url + "/api/products")
    assert status == 200 and isinstance(products, list)
    assert [p["name"] for p in products] == ["Canvas tote", "Enamel mug", "Deck of cards"]
    assert [p["stock"] for p in products] == [40, 12, None]  # 0003's column
    assert get_json(backend_url + "/api/version") == (
        200,
        {"component": "backend", "release": "r-backend-1", "commit": "c0ffee1", "env": "local"},
    )
    assert get(backend_url + "/nope")[0] == 404

    admin_env = child_env(
        SHIPYARD_URL_BACKEND=backend_url,
        SHIPYARD_RELEASE="r-admin-7",
        SHIPYARD_COMMIT="deadbee",
        SHIPYARD_ENV="local",
    )
    admin_url = apps.start("admin", "app.py", release_copy("admin", tmp_path), admin_env)
    status, page = get(admin_url + "/")
    assert status == 200
    assert all(name in page for name in ("Canvas tote", "Enamel mug", "Deck of cards"))
    assert "r-admin-7" in page and "deadbee" in page  # its own release and commit
    assert "r-backend-1" in page and "c0ffee1" in page  # and the backend's
    status, health = get_json(admin_url + "/health")
    assert status == 200 and isinstance(health, dict) and health["ok"] is True

    backend_proc = apps.procs[0]
    assert apps.stop(backend_proc) == 0  # clean exit on SIGTERM
    status, health = get_json(admin_url + "/health")
    assert status == 503 and isinstance(health, dict)
    assert health["ok"] is False and "unreachable" in health["reason"]
    assert backend_url in health["reason"]
    assert get(admin_url + "/")[0] == 502


def test_backend_without_schema_is_unhealthy(apps: Apps, tmp_path: Path) -> None:
    backend = release_copy("backend", tmp_path)
    url = apps.start("backend", "app.py", backend, backend_env())
    status, health = get_json(url + "/health")
    assert status == 503 and isinstance(health, dict)
    assert health["ok"] is False and "does not exist" in health["reason"]
    assert get(url + "/api/products")[0] == 503
    assert not (backend / "shared" / "shop.db").exists()  # it never creates the database

    sm.upgrade(backend / "migrations", SECRETS["DATABASE_URL"], "0001", cwd=backend)
    status, health = get_json(url + "/health")
    assert status == 503 and isinstance(health, dict)
    assert "revision 0001" in health["reason"] and "needs 0003" in health["reason"]

    sm.upgrade(backend / "migrations", SECRETS["DATABASE_URL"], cwd=backend)
    assert get(url + "/health")[0] == 200


def test_backend_keeps_serving_while_an_additive_migration_runs_and_is_undone(
    apps: Apps, tmp_path: Path
) -> None:
    """The release before 0003 (its folder has no 0003) serves on 0003, then on 0002 again."""
    old = release_copy("backend", tmp_path)
    for file in old.glob("migrations/0003_*"):
        file.unlink()
    url_db = SECRETS["DATABASE_URL"]
    assert sm.upgrade(old / "migrations", url_db, cwd=old) == ["0001", "0002"]
    url = apps.start("backend", "app.py", old, backend_env())
    assert get_json(url + "/health")[1] == {
        "ok": True,
        "revision": "0002",
        "needs": "0002",
        "release": "r-backend-1",
        "commit": "c0ffee1",
    }

    # The next release's migrations run while this one serves: 0003 says code for 0002 works.
    assert sm.upgrade(SHOP / "backend" / "migrations", url_db, cwd=old) == ["0003"]
    status, health = get_json(url + "/health")
    assert status == 200 and isinstance(health, dict)
    assert (health["revision"], health["needs"]) == ("0003", "0002")
    status, products = get_json(url + "/api/products")
    assert status == 200 and isinstance(products, list) and products[0]["stock"] == 40

    # A rollback undoes it, the old release still serving.
    assert sm.downgrade(SHOP / "backend" / "migrations", url_db, "0002", cwd=old) == ["0003"]
    status, products = get_json(url + "/api/products")
    assert status == 200 and isinstance(products, list) and "stock" not in products[0]
    assert get_json(url + "/health")[1] == {
        "ok": True,
        "revision": "0002",
        "needs": "0002",
        "release": "r-backend-1",
        "commit": "c0ffee1",
    }


def test_apps_refuse_to_start_without_their_settings(apps: Apps, tmp_path: Path) -> None:
    backend = release_copy("backend", tmp_path)
    env = backend_env()
    del env["JWT_SECRET"]
    result = apps.run("app.py", backend, env)
    assert result.returncode == 1
    assert "JWT_SECRET not set" in result.stderr

    result = apps.run("app.py", release_copy("admin", tmp_path), child_env())
    assert result.returncode == 1
    assert "SHIPYARD_URL_BACKEND not set" in result.stderr


def test_marketing_build_then_serve(apps: Apps, tmp_path: Path) -> None:
    marketing = release_copy("marketing", tmp_path)
    build = subprocess.run(
        [sys.executable, "build.py"],
        cwd=marketing,
        env=child_env(SHIPYARD_COMMIT="abc1234"),  # the commit the artifact was built for
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    site = marketing / "site"
    assert (site / "index.html").is_file() and (site / "serve.py").is_file()
    assert "abc1234" not in (site / "index.html").read_text()  # nothing baked in

    # The artifact reused for a later commit: the page names the commit it runs from.
    env = child_env(
        SHIPYARD_RELEASE="r-marketing-3", SHIPYARD_COMMIT="fedcba9", SHIPYARD_ENV="local"
    )
    url = apps.start("marketing", "serve.py", site, env)
    status, page = get(url + "/")
    assert status == 200
    assert re.search(r'<code id="commit">fedcba9</code>', page), page
    assert "r-marketing-3" in page and "abc1234" not in page and "{{" not in page
    assert get_json(url + "/version") == (
        200,
        {"component": "marketing", "release": "r-marketing-3", "commit": "fedcba9", "env": "local"},
    )
    assert get(url + "/style.css")[0] == 200
    assert get(url + "/serve.py")[0] == 404
    assert apps.stop(apps.procs[-1]) == 0

    # Without shipyard's environment it says so instead of naming a commit.
    url = apps.start("marketing2", "serve.py", site, child_env())
    status, page = get(url + "/")
    assert status == 200 and '<code id="commit">unknown</code>' in page and "unreleased" in page
