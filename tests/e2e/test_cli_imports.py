"""Each command imports only what it needs: what a user notices as `shipyard --help` taking
a second. Asserted on the import graph (which modules a real run loaded), not on timings:
benchmarks/cli_startup.py measures the time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Loaded by a real run of the CLI in a fresh interpreter; the module list goes to a file so
# that the command's own output is left alone.
PROBE = """
import json, sys
from shipyard.cli.app import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
with open(sys.argv[1], "w") as handle:
    json.dump(sorted(sys.modules), handle)
"""

# The store (SQLAlchemy, Alembic), the engine and the agent: what a deploy needs.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "shipyard.store.store",
    "shipyard.store.sql",
    "shipyard.store.tables",
    "shipyard.engine.runner",
    "shipyard.targets.local",
    "shipyard.agent.client",
    "asyncio",
    # Typer 0.29+ validates every option with pydantic; Typer's Rich help imports markdown-it.
    "pydantic",
    "markdown_it",
)


def loaded(tmp_path: Path, *args: str) -> set[str]:
    """The modules a run of `shipyard ARGS…` imported (it must also have worked)."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert out.exists(), done.stderr
    return set(json.loads(out.read_text()))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for h in HEAVY if m == h or m.startswith(h + "."))


@pytest.mark.parametrize("args", [("--help",), ("deploy", "--help"), ("--version",)])
def test_help_imports_neither_service_nor_store_nor_engine(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    modules = loaded(tmp_path, *args)
    assert heavy_in(modules) == []
    assert "shipyard.service" not in modules
    assert "shipyard.config" not in modules


@pytest.mark.parametrize(
    "args", [("validate",), ("--json", "validate"), ("graph",), ("graph", "--format", "mermaid")]
)
def test_validate_and_graph_read_the_config_without_store_or_engine(
    tmp_path: Path, shop: Path, args: tuple[str, ...]
) -> None:
    modules = loaded(tmp_path, "-C", str(shop), *args)
    assert "shipyard.config.loader" in modules  # it did read the config
    assert heavy_in(modules) == []
    assert not any(m == "shipyard.store" or m.startswith("shipyard.store.") for m in modules)


@pytest.mark.parametrize("command", ["status", "history"])
def test_status_and_history_on_sqlite_read_the_store_without_sqlalchemy(
    tmp_path: Path, shop: Path, command: str
) -> None:
    # The first run creates and migrates the state database (SQLAlchemy and Alembic's
    # job); the next one finds it at head and reads it through the standard library's
    # sqlite3: no SQLAlchemy (nor its ORM, nor the store's SQLAlchemy layer), no Alembic,
    # no PostgreSQL dialect, no engine.
    loaded(tmp_path, "-C", str(shop), command)
    modules = loaded(tmp_path, "-C", str(shop), command)
    assert "shipyard.store.sqlite_reads" in modules  # it did read the store
    unwanted = (
        "sqlalchemy",
        "alembic",
        "shipyard.store.sql",
        "shipyard.store.tables",
        "shipyard.engine.runner",
        "pydantic",
    )
    assert sorted(m for m in modules for u in unwanted if m == u or m.startswith(u + ".")) == []


def test_plan_imports_the_engine_only_to_describe_migrations(tmp_path: Path, shop: Path) -> None:
    # `backend` has sql migrations: the plan reads them with the engine's stages; a plan of
    # `marketing` alone has none to describe, and reads the store without SQLAlchemy.
    loaded(tmp_path, "-C", str(shop), "status")  # creates the state database
    modules = loaded(tmp_path, "-C", str(shop), "plan", "--only", "marketing")
    assert "shipyard.store.sqlite_reads" in modules
    unwanted = ("sqlalchemy", "alembic", "shipyard.engine.runner", "shipyard.engine.stages")
    assert sorted(m for m in modules for u in unwanted if m == u or m.startswith(u + ".")) == []
    with_migrations = loaded(tmp_path, "-C", str(shop), "plan", "--only", "backend")
    assert "shipyard.engine.stages" in with_migrations


def test_a_deploy_on_sqlite_writes_the_store_without_sqlalchemy(tmp_path: Path, shop: Path) -> None:
    # A SQLite store at head is written through the standard library's sqlite3 too: the
    # deploy journals, records and locks without SQLAlchemy (only migrating needs it).
    loaded(tmp_path, "-C", str(shop), "status")  # creates and migrates the state database
    modules = loaded(tmp_path, "-C", str(shop), "deploy", "--only", "marketing", "--yes")
    assert "shipyard.store.sqlite_writes" in modules  # it did write the store
    assert "shipyard.engine.runner" in modules  # and it did deploy
    unwanted = ("sqlalchemy", "alembic", "shipyard.store.sql", "shipyard.store.tables")
    assert sorted(m for m in modules for u in unwanted if m == u or m.startswith(u + ".")) == []
    history = subprocess.run(
        [sys.executable, "-m", "shipyard", "-C", str(shop), "history"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "succeeded" in history.stdout, history.stdout + history.stderr
