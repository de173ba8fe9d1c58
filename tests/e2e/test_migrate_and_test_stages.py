"""The demo's migrate and test stages, deployed for real through the console script.

A new migration with `--tests smoke` shows both stages in the progress, the record and `logs`;
a deploy that adds a column and then fails its health check ends with the column gone and v1
serving; an irreversible migration is refused without --allow-irreversible (and a rollback over
one keeps the schema and says so); a failing smoke test rolls back before any traffic moved.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import tomllib
import urllib.request
from collections import Counter
from pathlib import Path

from tests.conftest import RunCli, commit_all

# Expand only, and said so for the backend still serving (see the demo's README).
ADD_NOTE = """\
ALTER TABLE products ADD COLUMN note TEXT;
INSERT INTO schema_compatibility (revision, compatible_with) VALUES ('0004', '0003');
"""
DROP_NOTE = """\
DELETE FROM schema_compatibility WHERE revision = '0004';
ALTER TABLE products DROP COLUMN note;
"""


def backend_port(project: Path) -> int:
    config = tomllib.loads((project / "shipyard.toml").read_text())
    return int(config["components"]["backend"]["port"])


def served_release(project: Path) -> str:
    url = f"http://127.0.0.1:{backend_port(project)}/api/version"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(json.load(answer)["release"])


def product_columns(project: Path) -> list[str]:
    conn = sqlite3.connect(project / ".shipyard" / "local" / "backend" / "shared" / "shop.db")
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(products)")]
    finally:
        conn.close()


def deploy(run_cli: RunCli, project: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = run_cli("-C", str(project), "--json", "deploy", *args, timeout=240)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def add_migration(project: Path, name: str, up: str, down: str | None) -> None:
    folder = project / "backend" / "migrations"
    (folder / f"{name}.up.sql").write_text(up)
    if down is not None:
        (folder / f"{name}.down.sql").write_text(down)


def logs(run_cli: RunCli, project: Path, deployment: str) -> str:
    result = run_cli("-C", str(project), "logs", deployment)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_new_migration_with_smoke_tests_shows_both_stages(shop: Path, run_cli: RunCli) -> None:
    code, v1 = deploy(run_cli, shop)
    assert code == 0, v1
    add_migration(shop, "0004_note", ADD_NOTE, DROP_NOTE)
    commit_all(shop, "v2: products get a note")
    shown = run_cli("-C", str(shop), "deploy", "--tests", "smoke", timeout=240)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for step in ("migrate:backend", "test:backend", "test:admin", "test:marketing"):
        assert step in shown.stdout, step  # the plan and the live progress name the steps
    assert "note" in product_columns(shop)
    record = json.loads(run_cli("-C", str(shop), "--json", "history").stdout)[0]
    assert record["status"] == "succeeded"
    journal = logs(run_cli, shop, str(record["id"]))
    assert "0004_note" in journal  # the pending migration, before it ran
    assert "schema 0003 → 0004" in journal
    for component in ("backend", "admin", "marketing"):
        assert f"{component} smoke ok" in journal
    assert "SHIPYARD_URL_BACKEND=http://127.0.0.1:" in journal


def test_failed_health_check_takes_the_new_column_away_again(shop: Path, run_cli: RunCli) -> None:
    code, v1 = deploy(run_cli, shop)
    assert code == 0, v1
    add_migration(shop, "0004_note", ADD_NOTE, DROP_NOTE)
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text()
        .replace('health = { http = "/health", interval', 'health = { http = "/nope", interval')
        .replace('deadline = "20s"', 'deadline = "2s"')
    )
    commit_all(shop, "v2: a column, and a backend that never gets healthy")
    code, failed = deploy(run_cli, shop)
    assert code == 1, failed
    assert failed["status"] == "rolled_back"
    assert "note" not in product_columns(shop)
    assert served_release(shop) == v1["id"]
    journal = logs(run_cli, shop, str(failed["id"]))
    assert "schema 0004 → 0003" in journal


def test_irreversible_migration_needs_the_flag_and_its_rollback_keeps_the_schema(
    shop: Path, run_cli: RunCli
) -> None:
    code, v1 = deploy(run_cli, shop)
    assert code == 0, v1
    add_migration(shop, "0004_note", ADD_NOTE, None)
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text()
        .replace('health = { http = "/health", interval', 'health = { http = "/nope", interval')
        .replace('deadline = "20s"', 'deadline = "2s"')
    )
    commit_all(shop, "v2: a column without a way back, and a backend that never gets healthy")
    planned = run_cli("-C", str(shop), "plan")
    assert "migrations: backend: schema 0003 → 0004: 1 pending: 0004_note [irreversible]" in (
        planned.stdout
    )
    refused = run_cli("-C", str(shop), "--json", "deploy", timeout=240)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert "0004_note" in error["message"] and "--allow-irreversible" in error["hint"]
    assert "note" not in product_columns(shop)

    code, failed = deploy(run_cli, shop, "--allow-irreversible")
    assert code == 1, failed
    assert failed["status"] == "rolled_back"
    assert served_release(shop) == v1["id"]  # the code went back ...
    assert "note" in product_columns(shop)  # ... the schema could not, and the record says so
    assert "schema left at the newer revision" in logs(run_cli, shop, str(failed["id"]))


def test_failing_smoke_test_rolls_back_before_any_traffic_moved(
    shop: Path, run_cli: RunCli
) -> None:
    code, v1 = deploy(run_cli, shop)
    assert code == 0, v1
    smoke = shop / "backend" / "smoke.py"
    smoke.write_text(smoke.read_text() + '\nsys.exit("checkout answers 500 on the new release")\n')
    commit_all(shop, "v2: a backend whose smoke test fails")

    seen: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            seen[served_release(shop)] += 1

    loop = threading.Thread(target=load, daemon=True)
    loop.start()
    try:
        code, failed = deploy(run_cli, shop, "--tests", "smoke")
    finally:
        stop.set()
        loop.join(timeout=10)
    assert code == 1, failed
    assert failed["status"] == "rolled_back"
    assert "checkout answers 500 on the new release" in str(failed["error"])
    assert set(seen) == {v1["id"]} and sum(seen.values()) > 0
    journal = logs(run_cli, shop, str(failed["id"]))
    assert re.search(r"\bstep\s+test:backend\s+backend\s+failed\b", journal)
    assert not re.search(r"\bstep\s+switch\b", journal)  # no traffic was ever moved


def test_a_migration_tool_that_prints_the_secrets_leaks_none(shop: Path, run_cli: RunCli) -> None:
    secrets = dict(
        line.split("=", 1)
        for line in (shop / ".env.local").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'migrations = { tool = "sql", dir = "migrations" }',
            'migrations = { tool = "command", current = "echo 0003", '
            'up = "echo connecting to $DATABASE_URL with $JWT_SECRET; exit 7" }',
        )
    )
    commit_all(shop, "v1: a migration command that prints its secrets and fails")
    shown = run_cli("-C", str(shop), "deploy", "--allow-irreversible", timeout=240)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "exited with code 7" in shown.stdout + shown.stderr
    record = json.loads(run_cli("-C", str(shop), "--json", "history").stdout)[0]
    journal = logs(run_cli, shop, str(record["id"]))
    assert "connecting to" in shown.stdout + shown.stderr + journal
    state = b"".join(p.read_bytes() for p in (shop / ".shipyard").glob("state.db*"))
    for name in ("DATABASE_URL", "JWT_SECRET"):
        value = secrets[name].strip()
        for text in (shown.stdout, shown.stderr, journal, json.dumps(record)):
            assert value not in text, name
        assert value.encode() not in state, name
