"""Each migration adapter against a real database, through the local target.

The tool runs where a release runs: in the release folder on the host, with the release's env
(its DATABASE_URL secret), as a command, never inside the test's process (except `sql`, which is
shipyard's own code). Every test runs on SQLite and, when SHIPYARD_TEST_POSTGRES_URL is set, on
PostgreSQL in a schema of its own (dropped afterwards).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.config import Migrations
from shipyard.effects.migrations import IrreversibleMigration, Migrator, migrate_to
from shipyard.effects.migrations.sql import SqlMigrator
from shipyard.errors import CommandFailed
from shipyard.targets.local import LocalTarget

PROJECTS = Path(__file__).parent.parent / "migration_projects"
PG_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL", "")
NO_PG = "SHIPYARD_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
# `python` in a release's commands is the interpreter on the release env's PATH (here: this
# venv's, which has Alembic and Django from the dev extra).
PATH = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])


@dataclass
class Db:
    kind: str
    url: str
    release: Path

    def columns(self, table: str) -> list[str]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.release / "shared" / "app.db")
            try:
                return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as pg:
            rows = pg.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        return [str(r[0]) for r in rows]


def _search_path(url: str, schema: str) -> str:
    glue = "&" if "?" in url else "?"
    return f"{url}{glue}options={quote(f'-csearch_path={schema}')}"


def sqlite_db(tmp_path: Path) -> Db:
    release = tmp_path / "root" / "api" / "releases" / "r1"
    release.mkdir(parents=True)
    (release / "shared").mkdir()
    return Db("sqlite", "sqlite:///shared/app.db", release)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        yield sqlite_db(tmp_path)
        return
    release = sqlite_db(tmp_path).release
    if not PG_URL:
        pytest.skip(NO_PG)
    psycopg = pytest.importorskip("psycopg")
    schema = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield Db("postgresql", _search_path(PG_URL, schema), release)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def migrator(db: Db, spec: Migrations) -> Migrator:
    target = LocalTarget(db.release.parent.parent.parent)
    env = {"DATABASE_URL": db.url, "PATH": PATH}
    return target.migrator("api", "r1", spec, env)


# --- alembic ---------------------------------------------------------------------------------


def alembic_release(db: Db, *revisions: str) -> Migrator:
    project = PROJECTS / "alembic"
    shutil.copy(project / "alembic.ini", db.release / "alembic.ini")
    scripts = db.release / "migrations"
    shutil.copytree(project / "migrations", scripts, dirs_exist_ok=True)
    versions = scripts / "versions"
    versions.mkdir(exist_ok=True)
    for old in versions.glob("*.py"):
        old.unlink()
    for name in revisions:
        shutil.copy(scripts / "pool" / f"{name}.py", versions / f"{name}.py")
    return migrator(db, Migrations(tool="alembic", config="alembic.ini"))


def test_alembic_upgrades_to_head_and_downgrades_to_a_revision(db: Db) -> None:
    tool = alembic_release(db, "a1_products", "a2_price")
    state = tool.state()
    assert (state.current, state.head) == (None, "a2")
    assert [s.revision for s in state.pending] == ["a1", "a2"]
    assert state.reversible and not state.destructive()
    assert migrate_to(tool, None) == (None, "a2")
    assert db.columns("products") == ["id", "name", "price"]
    assert not tool.state().pending
    assert migrate_to(tool, "a1") == ("a2", "a1")
    assert db.columns("products") == ["id", "name"]
    assert migrate_to(tool, "") == ("a1", None)
    assert db.columns("products") == []


def test_alembic_recognises_destructive_operations(db: Db) -> None:
    tool = alembic_release(db, "a1_products", "a2_price")
    migrate_to(tool, None)
    tool = alembic_release(db, "a1_products", "a2_price", "a3_drop_name")
    state = tool.state()
    assert [s.revision for s in state.pending] == ["a3"]
    assert state.destructive() == {"a3 (drop the name (destructive))": ["drop_column(name)"]}


def test_alembic_irreversible_revision_stops_a_downgrade_before_it_changes_anything(
    db: Db,
) -> None:
    tool = alembic_release(db, "a1_products", "a2_price", "a4_backfill")
    state = tool.state()
    assert state.irreversible() == ["a4 (backfill prices (no way back))"]
    migrate_to(tool, None)
    with pytest.raises(IrreversibleMigration, match="a4"):
        migrate_to(tool, "a1")
    assert tool.current() == "a4"
    assert db.columns("products") == ["id", "name", "price"]


def test_alembic_failure_shows_the_tools_output(db: Db) -> None:
    tool = alembic_release(db, "a1_products")
    (db.release / "migrations" / "versions" / "a1_products.py").write_text("revision = \n")
    with pytest.raises(CommandFailed) as info:
        tool.state()
    assert "SyntaxError" in info.value.message
    assert "alembic migrations of api" in info.value.message


# --- django ----------------------------------------------------------------------------------


def django_release(db: Db, *migrations: str) -> Migrator:
    project = PROJECTS / "django"
    shutil.copytree(project, db.release, dirs_exist_ok=True)
    folder = db.release / "shop" / "migrations"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    (folder / "__init__.py").touch()
    for name in migrations:
        shutil.copy(db.release / "shop" / "migrations_pool" / f"{name}.py", folder)
    return migrator(db, Migrations(tool="django"))


def test_django_migrates_per_app_and_back(db: Db) -> None:
    tool = django_release(db, "0001_initial", "0002_product_price")
    state = tool.state()
    assert (state.current, state.head) == (None, "shop.0002_product_price")
    assert [s.revision for s in state.pending] == ["shop.0001_initial", "shop.0002_product_price"]
    assert state.reversible and not state.destructive()
    assert migrate_to(tool, None) == (None, "shop.0002_product_price")
    assert db.columns("shop_product") == ["id", "name", "price"]
    assert migrate_to(tool, "shop.0001_initial")[1] == "shop.0001_initial"
    assert db.columns("shop_product") == ["id", "name"]
    assert migrate_to(tool, "")[1] is None
    assert db.columns("shop_product") == []


@pytest.mark.parametrize(
    ("migration", "found"),
    [
        ("0003_remove_name", "RemoveField product.name"),
        ("0003_price_text", "AlterField product.price changes its type"),
    ],
)
def test_django_recognises_destructive_operations(db: Db, migration: str, found: str) -> None:
    tool = django_release(db, "0001_initial", "0002_product_price", migration)
    # A first deploy creates the model in the same run: no data exists that could be lost
    # (Django's own contenttypes.0002 removes a field on every first deploy).
    assert "shop" not in " ".join(tool.state().destructive())
    migrate_to(tool, "shop.0002_product_price")
    (what,) = tool.state().destructive().values()
    assert what[0].startswith(found)


def test_django_run_python_without_reverse_is_irreversible(db: Db) -> None:
    tool = django_release(db, "0001_initial", "0002_product_price", "0003_backfill")
    assert tool.state().irreversible() == ["shop.0003_backfill (RunPython)"]
    migrate_to(tool, None)
    with pytest.raises(IrreversibleMigration, match="0003_backfill"):
        migrate_to(tool, "shop.0002_product_price")
    assert tool.current() == "shop.0003_backfill"


# --- command and sql ---------------------------------------------------------------------------

COMMAND_TOOL = """\
import os, sqlite3, sys
db = sqlite3.connect("shared/app.db")
db.execute("CREATE TABLE IF NOT EXISTS version (n INTEGER)")
now = (db.execute("SELECT max(n) FROM version").fetchone()[0]) or 0
if sys.argv[1] == "current":
    print(now or "")
elif sys.argv[1] == "up":
    for n in range(now + 1, 3):
        db.execute(f"CREATE TABLE t{n} (id INTEGER)")
        db.execute("INSERT INTO version VALUES (?)", (n,))
elif sys.argv[1] == "down":
    target = int(os.environ["SHIPYARD_TARGET_REVISION"] or 0)
    for n in range(now, target, -1):
        db.execute(f"DROP TABLE t{n}")
        db.execute("DELETE FROM version WHERE n = ?", (n,))
db.commit()
"""


def test_command_tool_runs_the_users_commands_in_the_release(tmp_path: Path) -> None:
    # The adapter never sees the database, only the user's commands (here on SQLite).
    db = sqlite_db(tmp_path)
    (db.release / "tool.py").write_text(COMMAND_TOOL)
    spec = Migrations(
        tool="command",
        up="python tool.py up",
        down="python tool.py down",
        current="python tool.py current",
    )
    tool = migrator(db, spec)
    assert tool.state().reversible
    assert migrate_to(tool, None) == (None, "2")
    assert db.columns("t2") == ["id"]
    assert migrate_to(tool, "1") == ("2", "1")
    assert db.columns("t2") == []
    no_down = migrator(db, Migrations(tool="command", up=spec.up, current=spec.current))
    assert no_down.state().irreversible() == ["whatever `up` applies"]
    with pytest.raises(IrreversibleMigration):
        migrate_to(no_down, "")


def test_sql_tool_behind_the_interface(db: Db) -> None:
    folder = db.release / "migrations"
    folder.mkdir()
    (folder / "0001_items.up.sql").write_text("CREATE TABLE items (id INTEGER);")
    (folder / "0001_items.down.sql").write_text("DROP TABLE items;")
    (folder / "0002_gone.up.sql").write_text("ALTER TABLE items DROP COLUMN id;")
    tool = migrator(db, Migrations(tool="sql", dir="migrations"))
    state = tool.state()
    assert state.irreversible() == ["0002_gone"]
    assert state.destructive() == {"0002_gone": ["ALTER TABLE items DROP COLUMN id"]}
    assert migrate_to(tool, "0001") == (None, "0001")
    assert db.columns("items") == ["id"]


# --- the interface's invariant ----------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(targets=st.lists(st.sampled_from([None, "", "0001", "0002", "0003"]), max_size=6))
def test_migrate_to_lands_exactly_on_the_target(tmp_path: Path, targets: list[str | None]) -> None:
    """Any sequence of moves ends each one at its target (the head for None), and the
    schema is the one that revision defines: a table per applied revision, no other."""
    release = tmp_path / str(uuid.uuid4())
    folder = release / "migrations"
    folder.mkdir(parents=True)
    for n in (1, 2, 3):
        (folder / f"000{n}_t{n}.up.sql").write_text(f"CREATE TABLE t{n} (id INTEGER);")
        (folder / f"000{n}_t{n}.down.sql").write_text(f"DROP TABLE t{n};")
    tool = SqlMigrator(folder, "sqlite:///app.db", release)
    for target in targets:
        _before, after = migrate_to(tool, target)
        expected = "0003" if target is None else (target or None)
        assert after == expected == tool.current()
        applied = int(expected or 0)
        conn = sqlite3.connect(release / "app.db")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
        assert {t for t in tables if t.startswith("t")} == {f"t{n}" for n in range(1, applied + 1)}
