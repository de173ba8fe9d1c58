"""The backend's own tests: run from backend/ with `python -m unittest discover -s tests -q`.

Standard library only. The schema is applied here the way shipyard's `sql` runner records it (one
row per revision in shipyard_schema_migrations), so these tests need nothing but Python.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app


def migrate(db: Path, upto: str | None = None) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE shipyard_schema_migrations (revision TEXT PRIMARY KEY, name TEXT, "
        "applied_at TEXT)"
    )
    for up in sorted(app.MIGRATIONS.glob("*.up.sql")):
        revision, name = up.name.removesuffix(".up.sql").split("_", 1)
        if upto is not None and int(revision) > int(upto):
            break
        conn.executescript(up.read_text())
        conn.execute(
            "INSERT INTO shipyard_schema_migrations VALUES (?, ?, datetime('now'))",
            (revision, name),
        )
    conn.commit()
    conn.close()


class BackendTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.db = Path(tmp.name) / "shop.db"

    def start(self, needs: str | None = None) -> str:
        """Serve this code; `needs` pretends it is an older release that needs that revision."""
        config = app.config_from_env(
            {
                "DATABASE_URL": f"sqlite:///{self.db}",
                "JWT_SECRET": "unit-test-secret-unit-test-secret",
                "SHIPYARD_RELEASE": "r-test",
                "SHIPYARD_COMMIT": "abc1234",
            }
        )
        if needs is not None:
            config = dataclasses.replace(config, expected_revision=needs)
        server = app.make_server(config, 0)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        self.addCleanup(stop)
        return f"http://127.0.0.1:{server.server_port}"

    def get(self, url: str) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    def test_expected_revision_is_the_newest_migration(self) -> None:
        newest = max(p.name.split("_", 1)[0] for p in app.MIGRATIONS.glob("*.up.sql"))
        self.assertEqual(app.expected_revision(), newest)

    def test_healthy_and_lists_products_when_migrated(self) -> None:
        migrate(self.db)
        base = self.start()
        status, health = self.get(base + "/health")
        self.assertEqual(status, 200)
        self.assertEqual(
            health,
            {"ok": True, "revision": app.expected_revision(), "needs": app.expected_revision(),
             "release": "r-test", "commit": "abc1234"},
        )  # fmt: skip
        status, products = self.get(base + "/api/products")
        self.assertEqual(status, 200)
        assert isinstance(products, list)
        self.assertIn("Enamel mug", [p["name"] for p in products])

    def test_unhealthy_without_database_or_at_an_old_revision(self) -> None:
        base = self.start()
        status, health = self.get(base + "/health")
        self.assertEqual(status, 503)
        assert isinstance(health, dict)
        self.assertIn("does not exist", health["reason"])
        migrate(self.db, upto="0001")
        status, health = self.get(base + "/health")
        self.assertEqual(status, 503)
        assert isinstance(health, dict)
        self.assertIn("revision 0001", health["reason"])

    def test_serves_a_newer_schema_that_declares_itself_compatible(self) -> None:
        migrate(self.db)  # 0003 adds products.stock and says code for 0002 works on it
        base = self.start(needs="0002")
        status, health = self.get(base + "/health")
        self.assertEqual(status, 200, health)
        assert isinstance(health, dict)
        self.assertEqual((health["revision"], health["needs"]), ("0003", "0002"))
        status, products = self.get(base + "/api/products")
        self.assertEqual(status, 200)
        assert isinstance(products, list)
        self.assertEqual(products[0]["stock"], 40)  # the new column, served as is

    def test_refuses_a_newer_schema_that_does_not_declare_it(self) -> None:
        migrate(self.db)
        conn = sqlite3.connect(self.db)
        with conn:  # a contract step: 0004 works only with code written for 0003 or later
            conn.execute("INSERT INTO shipyard_schema_migrations VALUES ('0004', 'x', '')")
            conn.execute("INSERT INTO schema_compatibility VALUES ('0004', '0003')")
        conn.close()
        base = self.start(needs="0002")
        status, health = self.get(base + "/health")
        self.assertEqual(status, 503)
        assert isinstance(health, dict)
        self.assertIn("code written for 0003 or later; this code needs 0002", health["reason"])
        self.assertEqual(self.get(base + "/api/products")[0], 503)
        conn = sqlite3.connect(self.db)
        with conn:  # no row at all: not declared compatible
            conn.execute("DELETE FROM schema_compatibility WHERE revision = '0004'")
        conn.close()
        status, health = self.get(base + "/health")
        self.assertEqual(status, 503)
        assert isinstance(health, dict)
        self.assertIn("does not declare 0004 compatible", health["reason"])

    def test_refuses_config_without_jwt_secret(self) -> None:
        with self.assertRaisesRegex(ValueError, "JWT_SECRET"):
            app.config_from_env({"DATABASE_URL": "sqlite:///x.db"})


if __name__ == "__main__":
    unittest.main()
