"""The `sql` migration runner against real databases.

Every test runs on SQLite (a file in tmp_path) and, when SHIPYARD_TEST_POSTGRES_URL is set, on
PostgreSQL in a schema of its own (``options=-csearch_path=...``), dropped afterwards.

(The file is not called test_sql_migrations.py because tests/unit has one of that name and the
test folders are not packages.)
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from shipyard.effects import sql_migrations as sm
from shipyard.errors import ConfigError, DeploymentFailed

PG_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL", "")
NO_PG = "SHIPYARD_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"


@dataclass
class Db:
    kind: str
    url: str
    cwd: Path

    def query(self, sql: str) -> list[tuple[object, ...]]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.cwd / "app.db")
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as pg:
            return pg.execute(sql.encode()).fetchall()

    def has_table(self, name: str) -> bool:
        if self.kind == "sqlite":
            sql = f"SELECT count(*) FROM sqlite_master WHERE type='table' AND name='{name}'"
        else:
            sql = f"SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '{name}'"  # noqa: E501
        return self.query(sql)[0][0] == 1


def with_search_path(url: str, schema: str) -> str:
    glue = "&" if "?" in url else "?"
    return f"{url}{glue}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        # relative URL, resolved against cwd: the way a release uses it
        yield Db("sqlite", "sqlite:///app.db", tmp_path)
        return
    if not PG_URL:
        pytest.skip(NO_PG)
    psycopg = pytest.importorskip("psycopg")
    schema = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield Db("postgresql", with_search_path(PG_URL, schema), tmp_path)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(sql)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    write(
        folder,
        "0001_products.up.sql",
        "-- products, with data\n"
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
        "INSERT INTO products (id, name) VALUES (1, 'mug'), (2, 'tote; with a semicolon');\n",
    )
    write(folder, "0001_products.down.sql", "DROP TABLE products;\n")
    write(
        folder,
        "0002_orders.up.sql",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, product_id INTEGER REFERENCES products (id));"
        "\nCREATE INDEX orders_product ON orders (product_id);\n",
    )
    write(folder, "0002_orders.down.sql", "DROP INDEX orders_product;\nDROP TABLE orders;\n")
    return folder


def test_upgrade_applies_in_order_and_is_idempotent(db: Db, folder: Path) -> None:
    assert sm.current_revision(db.url, cwd=db.cwd) is None
    assert [m.revision for m in sm.pending(folder, db.url, cwd=db.cwd)] == ["0001", "0002"]

    assert sm.upgrade(folder, db.url, cwd=db.cwd) == ["0001", "0002"]
    assert sm.current_revision(db.url, cwd=db.cwd) == "0002"
    assert db.has_table("orders")
    assert db.query("SELECT name FROM products ORDER BY id") == [
        ("mug",),
        ("tote; with a semicolon",),
    ]
    rows = db.query(f"SELECT revision, name, applied_at FROM {sm.VERSION_TABLE} ORDER BY revision")
    assert [r[:2] for r in rows] == [("0001", "products"), ("0002", "orders")]
    assert all(isinstance(r[2], str) and r[2].startswith("20") for r in rows)

    assert sm.upgrade(folder, db.url, cwd=db.cwd) == []
    assert sm.pending(folder, db.url, cwd=db.cwd) == []
    assert sm.status(folder, db.url, cwd=db.cwd) == sm.MigrationStatus(
        current="0002", applied=["0001", "0002"], pending=[], unknown=[]
    )


def test_upgrade_to_a_target_then_the_rest(db: Db, folder: Path) -> None:
    assert sm.upgrade(folder, db.url, "0001", cwd=db.cwd) == ["0001"]
    assert sm.current_revision(db.url, cwd=db.cwd) == "0001"
    assert not db.has_table("orders")
    assert sm.upgrade(folder, db.url, cwd=db.cwd) == ["0002"]
    with pytest.raises(DeploymentFailed, match="no such revision"):
        sm.upgrade(folder, db.url, "0009", cwd=db.cwd)


def test_downgrade_to_a_target_and_to_nothing(db: Db, folder: Path) -> None:
    sm.upgrade(folder, db.url, cwd=db.cwd)
    assert sm.downgrade(folder, db.url, "0001", cwd=db.cwd) == ["0002"]
    assert sm.current_revision(db.url, cwd=db.cwd) == "0001"
    assert not db.has_table("orders")
    assert db.query("SELECT count(*) FROM products") == [(2,)]  # data below the target stays
    assert sm.downgrade(folder, db.url, "0001", cwd=db.cwd) == []

    sm.upgrade(folder, db.url, cwd=db.cwd)
    assert sm.downgrade(folder, db.url, None, cwd=db.cwd) == ["0002", "0001"]
    assert sm.current_revision(db.url, cwd=db.cwd) is None
    assert not db.has_table("products")
    assert sm.upgrade(folder, db.url, cwd=db.cwd) == ["0001", "0002"]  # and back up again


def test_broken_migration_leaves_previous_revision_and_data(db: Db, folder: Path) -> None:
    sm.upgrade(folder, db.url, cwd=db.cwd)
    db_before = db.query("SELECT id, name FROM products ORDER BY id")
    write(
        folder,
        "0003_broken.up.sql",
        "CREATE TABLE reviews (id INTEGER PRIMARY KEY);\n"
        "UPDATE products SET name = 'changed';\n"
        "INSERT INTO no_such_table VALUES (1);\n",
    )
    write(folder, "0004_later.up.sql", "CREATE TABLE later (id INTEGER);\n")

    with pytest.raises(DeploymentFailed) as caught:
        sm.upgrade(folder, db.url, cwd=db.cwd)
    message = str(caught.value)
    assert "0003_broken.up.sql" in message
    assert "no_such_table" in message  # the database's own words
    assert caught.value.hint and "revision before" in caught.value.hint
    if db.kind == "sqlite":
        assert "line 3" in message

    assert sm.current_revision(db.url, cwd=db.cwd) == "0002"
    assert not db.has_table("reviews")  # DDL before the failure was rolled back too
    assert not db.has_table("later")  # nothing after the failure ran
    assert db.query("SELECT id, name FROM products ORDER BY id") == db_before
    assert [m.revision for m in sm.pending(folder, db.url, cwd=db.cwd)] == ["0003", "0004"]

    write(folder, "0003_broken.up.sql", "CREATE TABLE reviews (id INTEGER PRIMARY KEY);\n")
    assert sm.upgrade(folder, db.url, cwd=db.cwd) == ["0003", "0004"]


def test_broken_down_migration_leaves_revision(db: Db, folder: Path) -> None:
    sm.upgrade(folder, db.url, cwd=db.cwd)
    write(folder, "0002_orders.down.sql", "DROP TABLE orders;\nDROP TABLE no_such_table;\n")
    with pytest.raises(DeploymentFailed, match=r"reverting .*0002_orders\.down\.sql"):
        sm.downgrade(folder, db.url, None, cwd=db.cwd)
    assert sm.current_revision(db.url, cwd=db.cwd) == "0002"
    assert db.has_table("orders")
    assert db.has_table("products")


def test_irreversible_revision_stops_downgrade_before_anything(db: Db, folder: Path) -> None:
    write(folder, "0003_backfill.up.sql", "UPDATE products SET name = upper(name);\n")
    sm.upgrade(folder, db.url, cwd=db.cwd)
    assert not sm.discover(folder)[2].reversible
    with pytest.raises(DeploymentFailed, match="irreversible; nothing was changed"):
        sm.downgrade(folder, db.url, "0001", cwd=db.cwd)
    assert sm.current_revision(db.url, cwd=db.cwd) == "0003"
    assert db.has_table("orders")


def test_database_ahead_of_the_folder(db: Db, folder: Path, tmp_path: Path) -> None:
    sm.upgrade(folder, db.url, cwd=db.cwd)
    older = tmp_path / "older"
    write(older, "0001_products.up.sql", (folder / "0001_products.up.sql").read_text())
    write(older, "0001_products.down.sql", "DROP TABLE products;\n")
    state = sm.status(older, db.url, cwd=db.cwd)
    assert (state.current, state.pending, state.unknown) == ("0002", [], ["0002"])
    assert sm.upgrade(older, db.url, cwd=db.cwd) == []
    with pytest.raises(DeploymentFailed, match="revision 0002 is applied but"):
        sm.downgrade(older, db.url, None, cwd=db.cwd)
    assert sm.current_revision(db.url, cwd=db.cwd) == "0002"


def test_concurrent_upgrades_apply_each_migration_once(db: Db, folder: Path) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(sm.upgrade(folder, db.url, cwd=db.cwd))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(r for result in results for r in result) == ["0001", "0002"]
    assert db.query(f"SELECT count(*) FROM {sm.VERSION_TABLE}") == [(2,)]


def test_sqlite_statements_with_semicolons_inside(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(
        folder,
        "0001_log.up.sql",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT);\n"
        "CREATE TABLE log (msg TEXT); /* a comment; with a semicolon */\n"
        "CREATE TRIGGER items_log AFTER INSERT ON items BEGIN\n"
        "  INSERT INTO log VALUES ('inserted; ' || new.note);\n"
        "END;\n"
        "INSERT INTO items (note) VALUES ('it''s -- not a comment');\n"
        "-- trailing comment without a statement",
    )
    url = f"sqlite:///{tmp_path / 'abs.db'}"  # an absolute path: sqlite:////tmp/...
    assert url.startswith("sqlite:////")
    assert sm.upgrade(folder, url) == ["0001"]
    conn = sqlite3.connect(tmp_path / "abs.db")
    assert conn.execute("SELECT msg FROM log").fetchall() == [("inserted; it's -- not a comment",)]
    conn.close()


@pytest.mark.postgres
def test_postgres_dollar_quoting_and_masked_password(tmp_path: Path) -> None:
    if not PG_URL:
        pytest.skip(NO_PG)
    psycopg = pytest.importorskip("psycopg")
    schema = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        # trust authentication ignores the password, so it is only there to be masked
        with_password = PG_URL.replace("://postgres@", "://postgres:hunter2hunter2@", 1)
        url = with_search_path(with_password, schema)
        folder = tmp_path / "m"
        write(
            folder,
            "0001_fn.up.sql",
            "CREATE TABLE t (x INT);\n"
            "CREATE FUNCTION bump() RETURNS trigger AS $$ BEGIN NEW.x := NEW.x + 1; "
            "RETURN NEW; END; $$ LANGUAGE plpgsql;\n"
            "DO $body$ BEGIN INSERT INTO t VALUES (41); END $body$;\n",
        )
        write(folder, "0002_bad.up.sql", "SELECT 1/0;\n")
        with pytest.raises(DeploymentFailed) as caught:
            sm.upgrade(folder, url)
        assert "0002_bad.up.sql" in str(caught.value)
        assert "division by zero" in str(caught.value)
        assert "hunter2hunter2" not in str(caught.value)
        assert sm.current_revision(url) == "0001"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(41,)]

        missing_db = with_password.rsplit("/", 1)[0] + "/shipyard_no_such_database"
        with pytest.raises(DeploymentFailed) as caught:
            sm.current_revision(missing_db)
        assert "connecting to the database" in str(caught.value)
        assert "hunter2hunter2" not in str(caught.value)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def test_bad_folder_is_a_config_error(db: Db, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "0001_products.up.sql", "SELECT 1;")
    write(folder, "products.sql", "SELECT 1;")
    with pytest.raises(ConfigError, match=r"products\.sql"):
        sm.upgrade(folder, db.url, cwd=db.cwd)
