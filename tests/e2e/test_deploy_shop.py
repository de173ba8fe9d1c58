"""The demo, deployed for real through the console script: v1, a failed v2, v2, rollback.

Every assertion reads what is actually served on the public ports.
"""

from __future__ import annotations

import json
import re
import tomllib
import urllib.request
from pathlib import Path

from tests.conftest import RunCli, commit_all


def ports(project: Path) -> dict[str, int]:
    config = tomllib.loads((project / "shipyard.toml").read_text())
    return {name: c["port"] for name, c in config["components"].items()}


def get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def served(project: Path) -> dict[str, str]:
    """The release id each public port serves right now."""
    p = ports(project)
    result = {"backend": json.loads(get(p["backend"], "/api/version")[1])["release"]}
    for name in ("admin", "marketing"):
        status, body = get(p[name], "/version")
        assert status == 200, (name, body)
        result[name] = json.loads(body)["release"]
    return result


def deploy(run_cli: RunCli, project: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = run_cli("-C", str(project), "--json", "deploy", *args, timeout=180)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def test_deploy_fail_rollback_cycle(shop: Path, run_cli: RunCli) -> None:
    code, v1 = deploy(run_cli, shop)
    assert code == 0, v1
    assert v1["status"] == "succeeded" and v1["kind"] == "full"
    v1_release = str(v1["id"])
    assert served(shop) == {"backend": v1_release, "admin": v1_release, "marketing": v1_release}
    status, products = get(ports(shop)["backend"], "/api/products")
    assert status == 200 and json.loads(products)
    admin_page = get(ports(shop)["admin"])[1]
    assert v1_release in admin_page
    assert get(ports(shop)["marketing"], "/.env")[0] == 404  # the release's env file stays private

    # A v2 whose admin never becomes healthy: everything stays on v1.
    app = shop / "admin" / "app.py"
    good_admin = app.read_text()
    broken = re.sub(
        r"(def health\(config: Config\)[^\n]*\n)",
        r'\1    return HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "reason": "broken"}\n',
        good_admin,
        count=1,
    )
    assert broken != good_admin
    app.write_text(broken)
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'health = { http = "/health" }', 'health = { http = "/health", deadline = "2s" }'
        )
    )
    (shop / "backend" / "NOTES.md").write_text("v2\n")
    commit_all(shop, "v2, broken admin")
    code, failed = deploy(run_cli, shop)
    assert code == 1, failed
    assert failed["status"] == "rolled_back"
    assert "admin" in str(failed["error"]) and "healthy" in str(failed["error"])
    assert served(shop) == {"backend": v1_release, "admin": v1_release, "marketing": v1_release}
    assert get(ports(shop)["backend"], "/health")[0] == 200  # schema back where v1 wants it

    # The fixed v2 deploys.
    app.write_text(good_admin)
    commit_all(shop, "v2, fixed")
    code, v2 = deploy(run_cli, shop)
    assert code == 0, v2
    v2_release = str(v2["id"])
    assert served(shop) == {"backend": v2_release, "admin": v2_release, "marketing": v2_release}

    # Rollback: everything serves v1 again.
    result = run_cli("-C", str(shop), "--json", "rollback", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    back = json.loads(result.stdout)
    assert back["kind"] == "rollback" and back["status"] == "succeeded"
    assert served(shop) == {"backend": v1_release, "admin": v1_release, "marketing": v1_release}

    history = json.loads(run_cli("-C", str(shop), "--json", "history").stdout)
    assert [d["status"] for d in history] == ["succeeded", "succeeded", "rolled_back", "succeeded"]
    status_now = json.loads(run_cli("-C", str(shop), "--json", "status").stdout)
    assert {c["name"]: c["release"] for c in status_now["components"]} == {
        "backend": v1_release,
        "admin": v1_release,
        "marketing": v1_release,
    }
    assert all(c["healthy"] for c in status_now["components"])


def test_unchanged_redeploy_deploys_nothing_and_reuses_artifacts(
    shop: Path, run_cli: RunCli
) -> None:
    assert deploy(run_cli, shop)[0] == 0
    code, again = deploy(run_cli, shop)
    assert code == 0 and again["deployed"] is False and again["components"] == []
    code, full = deploy(run_cli, shop, "--full")
    assert code == 0, full
    events = run_cli("-C", str(shop), "--json", "logs", str(full["id"])).stdout.splitlines()
    reused = [json.loads(e) for e in events if '"reused"' in e]
    assert {e["component"] for e in reused} == {"backend", "admin", "marketing"}


def test_first_deployment_that_fails_leaves_nothing_running(shop: Path, run_cli: RunCli) -> None:
    app = shop / "marketing" / "serve.py"
    app.write_text("import sys\nsys.exit('marketing refuses to start')\n")
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'health = { http = "/" }', 'health = { http = "/", deadline = "2s" }'
        )
    )
    commit_all(shop, "broken marketing")
    code, result = deploy(run_cli, shop)
    assert code == 1
    assert result["status"] == "rolled_back"
    p = ports(shop)
    for name in ("backend", "admin", "marketing"):
        try:
            status, _ = get(p[name], "/")
        except OSError:
            continue  # connection refused: nothing listens, as it should be
        raise AssertionError(f"{name} still answers on :{p[name]} ({status})")
    status_now = json.loads(run_cli("-C", str(shop), "--json", "status").stdout)
    assert all(c["release"] is None for c in status_now["components"])


def test_dirty_tree_is_refused_without_allow_dirty(shop: Path, run_cli: RunCli) -> None:
    (shop / "backend" / "scratch.txt").write_text("uncommitted")
    result = run_cli("-C", str(shop), "deploy")
    assert result.returncode == 3
    assert "uncommitted changes" in result.stderr and "--allow-dirty" in result.stderr


def test_destructive_and_irreversible_migrations_need_a_flag(shop: Path, run_cli: RunCli) -> None:
    assert deploy(run_cli, shop)[0] == 0
    migrations = shop / "backend" / "migrations"
    (migrations / "0004_drop_orders.up.sql").write_text("DROP TABLE orders;\n")
    commit_all(shop, "drop orders, without a down step")
    result = run_cli("-C", str(shop), "deploy")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "0004: DROP TABLE orders" in result.stderr and "--allow-destructive" in result.stderr
    result = run_cli("-C", str(shop), "deploy", "--allow-destructive")
    assert result.returncode == 3
    assert "0004_drop_orders" in result.stderr and "--allow-irreversible" in result.stderr
    (migrations / "0004_drop_orders.down.sql").write_text(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY);\n"
    )
    commit_all(shop, "with a down step")
    result = run_cli("-C", str(shop), "deploy", "--allow-destructive")
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_lock_and_down(shop: Path, run_cli: RunCli) -> None:
    result = run_cli("-C", str(shop), "--json", "health")
    assert result.returncode == 3  # nothing deployed yet: every component is unhealthy
    assert json.loads(result.stdout)["ok"] is False
    assert deploy(run_cli, shop)[0] == 0
    result = run_cli("-C", str(shop), "--json", "health")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["components"] if c["healthy"]} == {
        "backend",
        "admin",
        "marketing",
    }
    lock = json.loads(run_cli("-C", str(shop), "--json", "lock", "status").stdout)
    assert lock == {"locked": False, "lock": None}
    unlocked = run_cli("-C", str(shop), "lock", "release")  # no lock: nothing to release
    assert unlocked.returncode == 0 and "not locked" in unlocked.stdout
    down = run_cli("-C", str(shop), "--json", "down")
    assert down.returncode == 0
    assert len(json.loads(down.stdout)["stopped"]) == 3
    for port in ports(shop).values():
        try:
            get(port)
        except OSError:
            continue
        raise AssertionError(f"port {port} still answers after down")
