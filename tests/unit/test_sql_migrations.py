"""The `sql` migration layout without a database: discovery, URLs, destructive statements."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.effects import sql_migrations as sm
from shipyard.errors import ConfigError, DeploymentFailed


def make(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("SELECT 1;\n")
    return folder


# --- discovery -------------------------------------------------------------------------------


def test_discover_orders_by_number_and_pairs_files(tmp_path: Path) -> None:
    folder = make(
        tmp_path / "m",
        "0010_later.up.sql",
        "0002_orders.up.sql",
        "0002_orders.down.sql",
        "0001_products.up.sql",
        "0001_products.down.sql",
        "README.md",
    )
    (folder / "drafts").mkdir()
    migrations = sm.discover(folder)
    assert [m.revision for m in migrations] == ["0001", "0002", "0010"]
    assert [m.name for m in migrations] == ["products", "orders", "later"]
    assert migrations[1].up_path == folder / "0002_orders.up.sql"
    assert migrations[1].down_path == folder / "0002_orders.down.sql"
    assert migrations[1].reversible and migrations[1].label == "0002_orders"
    assert migrations[2].down_path is None and not migrations[2].reversible


def test_discover_empty_folder(tmp_path: Path) -> None:
    assert sm.discover(make(tmp_path / "m")) == []


@pytest.mark.parametrize(
    ("names", "bad", "words"),
    [
        (["create_products.up.sql"], "create_products.up.sql", "not a migration file name"),
        (["0001_products.sql"], "0001_products.sql", "not a migration file name"),
        (["0001-products.up.sql"], "0001-products.up.sql", "not a migration file name"),
        (["0001_.up.sql"], "0001_.up.sql", "not a migration file name"),
        (["0001_products.UP.sql"], "0001_products.UP.sql", "not a migration file name"),
        (
            ["0001_products.up.sql", "0001_orders.up.sql"],
            "0001_products.up.sql",
            "duplicate revision 0001: also claimed by 0001_orders.up.sql",
        ),
        (
            ["0001_products.up.sql", "1_orders.up.sql"],
            "1_orders.up.sql",
            "duplicate revision 1",
        ),
        (
            ["0002_orders.down.sql"],
            "0002_orders.down.sql",
            "down migration without an up migration",
        ),
        (
            ["0002_orders.up.sql", "0002_order.down.sql"],
            "0002_order.down.sql",
            "does not match its up migration 0002_orders.up.sql",
        ),
    ],
)
def test_discover_errors_name_the_file(
    tmp_path: Path, names: list[str], bad: str, words: str
) -> None:
    folder = make(tmp_path / "m", *names)
    with pytest.raises(ConfigError) as caught:
        sm.discover(folder)
    assert caught.value.file == str(folder / bad)
    assert words in caught.value.message
    assert caught.value.hint


def test_discover_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        sm.discover(tmp_path / "nope")


def test_migration_controlling_its_own_transaction_is_refused(tmp_path: Path) -> None:
    folder = make(tmp_path / "m")
    (folder / "0001_a.up.sql").write_text("BEGIN;\nCREATE TABLE a (x INT);\nCOMMIT;\n")
    with pytest.raises(ConfigError, match=r"line 1: migrations must not control transactions"):
        sm.upgrade(folder, f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert not (tmp_path / "db.sqlite").exists()  # refused before the database was touched


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/shop", "postgresql://app:***@db:5432/shop"),
        ("postgresql://app@db/shop", "postgresql://app@db/shop"),
        ("postgresql://db/shop?user=a&password=s3cret", "postgresql://db/shop?user=a&password=***"),
        ("sqlite:///shared/shop.db", "sqlite:///shared/shop.db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert sm.mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://root@localhost/shop", "unsupported database URL"),
        ("sqlite://", "has no file path"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///shop.db?mode=ro", "query parameters"),
        ("shop.db", "unsupported database URL"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        sm.current_revision(url, cwd=tmp_path)


def test_unsupported_url_message_masks_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        sm.current_revision("mysql://root:hunter22@localhost/shop")
    assert "hunter22" not in str(caught.value)


def test_relative_sqlite_url_resolves_against_cwd_and_is_not_created(tmp_path: Path) -> None:
    assert sm.current_revision("sqlite:///shared/shop.db", cwd=tmp_path) is None
    assert not (tmp_path / "shared").exists()


def test_upgrade_into_missing_folder_says_which(tmp_path: Path) -> None:
    folder = make(tmp_path / "m", "0001_a.up.sql")
    with pytest.raises(DeploymentFailed, match=r"folder .*shared does not exist"):
        sm.upgrade(folder, "sqlite:///shared/shop.db", cwd=tmp_path)


# --- destructive statements ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # DROP TABLE, in its spellings
        ("DROP TABLE orders;", ["DROP TABLE orders"]),
        ("drop table if exists orders", ["DROP TABLE orders"]),
        (
            'DROP TABLE public."Orders", items CASCADE;',
            ['DROP TABLE public."Orders"', "DROP TABLE items"],
        ),
        ("DROP TEMPORARY TABLE t;", ["DROP TABLE t"]),
        ("DROP SCHEMA billing CASCADE;", ["DROP SCHEMA billing"]),
        # DROP COLUMN, with or without the COLUMN keyword, among other actions
        ("ALTER TABLE products DROP COLUMN price;", ["ALTER TABLE products DROP COLUMN price"]),
        (
            "ALTER TABLE IF EXISTS ONLY products ADD COLUMN sku TEXT, DROP IF EXISTS price;",
            ["ALTER TABLE products DROP COLUMN price"],
        ),
        # RENAME of a table or a column
        ("ALTER TABLE products RENAME TO items;", ["ALTER TABLE products RENAME TO items"]),
        (
            "ALTER TABLE products RENAME COLUMN name TO title;",
            ["ALTER TABLE products RENAME COLUMN name TO title"],
        ),
        ("ALTER TABLE p RENAME name TO title;", ["ALTER TABLE p RENAME COLUMN name TO title"]),
        ("RENAME TABLE a TO b, c TO d;", ["RENAME TABLE a TO b", "RENAME TABLE c TO d"]),
        ("ALTER TABLE t CHANGE COLUMN a b INT;", ["ALTER TABLE t RENAME COLUMN a TO b"]),
        # a column's type changes (PostgreSQL spellings)
        (
            "ALTER TABLE products ALTER COLUMN price TYPE TEXT USING price::text;",
            ["ALTER TABLE products ALTER COLUMN price TYPE (type change)"],
        ),
        (
            "ALTER TABLE p ALTER price SET DATA TYPE numeric(10, 2), ADD COLUMN x INT;",
            ["ALTER TABLE p ALTER COLUMN price TYPE (type change)"],
        ),
        # TRUNCATE and DELETE without WHERE
        ("TRUNCATE orders;", ["TRUNCATE orders"]),
        ("TRUNCATE TABLE ONLY a, b RESTART IDENTITY;", ["TRUNCATE a", "TRUNCATE b"]),
        ("DELETE FROM orders;", ["DELETE FROM orders without WHERE"]),
        ("delete from orders", ["DELETE FROM orders without WHERE"]),
        (
            "WITH gone AS (DELETE FROM t RETURNING id) SELECT count(*) FROM gone;",
            ["DELETE FROM t without WHERE"],
        ),
        # several statements: every finding, in order
        (
            "CREATE TABLE x (a INT);\nDROP TABLE y;\nDELETE FROM z;",
            ["DROP TABLE y", "DELETE FROM z without WHERE"],
        ),
        # not destructive
        ("CREATE TABLE orders (id INT);", []),
        ("ALTER TABLE orders ADD COLUMN note TEXT;", []),
        ("ALTER TABLE orders DROP CONSTRAINT orders_fk;", []),
        ("ALTER TABLE orders ALTER COLUMN note DROP DEFAULT;", []),
        ("ALTER TABLE orders ALTER COLUMN note DROP NOT NULL;", []),
        ("ALTER TABLE orders RENAME CONSTRAINT a TO b;", []),
        ("ALTER TABLE t CHANGE COLUMN a a BIGINT;", []),
        ("DROP INDEX orders_product_id;", []),
        ("DROP VIEW report;", []),
        ("DELETE FROM orders WHERE created_at < '2020-01-01';", []),
        (
            "ALTER TABLE o ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES p (id) ON DELETE CASCADE;",
            [],
        ),
        ("GRANT TRUNCATE ON orders TO app;", []),
        # comments and string literals are not code
        ("-- DROP TABLE orders;\nSELECT 1;", []),
        ("/* DROP TABLE orders; */ SELECT 1;", []),
        ("/* nested /* DROP TABLE a; */ TRUNCATE b; */ SELECT 1;", []),
        ("INSERT INTO log (msg) VALUES ('DROP TABLE orders; DELETE FROM x');", []),
        ("INSERT INTO log VALUES ('it''s; DROP TABLE x');", []),
        ("INSERT INTO log VALUES (E'it\\'s; DROP TABLE x');", []),
        ('SELECT 1 AS "DROP TABLE x; TRUNCATE y";', []),
        # bodies that run later, not during the migration
        ("DO $$ BEGIN DROP TABLE orders; END $$;", []),
        ("CREATE FUNCTION f() RETURNS void AS $body$ DELETE FROM t; $body$ LANGUAGE sql;", []),
        (
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM log; END;\nDROP TABLE z;",
            ["DROP TABLE z"],
        ),
        ("", []),
        ("-- only a comment", []),
    ],
)
def test_is_destructive(sql: str, expected: list[str]) -> None:
    assert sm.is_destructive(sql) == expected


def test_destructive_changes_reads_up_files(tmp_path: Path) -> None:
    folder = make(tmp_path / "m")
    (folder / "0001_a.up.sql").write_text("CREATE TABLE a (x INT);")
    (folder / "0002_b.up.sql").write_text("ALTER TABLE a RENAME COLUMN x TO y;")
    (folder / "0002_b.down.sql").write_text("DROP TABLE a;")  # downs do not count
    changes = sm.destructive_changes(sm.discover(folder))
    assert changes == {"0002": ["ALTER TABLE a RENAME COLUMN x TO y"]}


def test_demo_migrations_are_well_formed() -> None:
    folder = Path(__file__).resolve().parents[2] / "examples" / "shop" / "backend" / "migrations"
    migrations = sm.discover(folder)
    assert [m.revision for m in migrations] == ["0001", "0002", "0003"]
    assert all(m.reversible for m in migrations)
    assert sm.destructive_changes(migrations) == {}
