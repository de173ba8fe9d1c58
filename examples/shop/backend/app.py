"""shop backend: a small JSON API over an SQLite database (standard library only).

The schema comes only from the files in ``migrations/``, applied by shipyard's ``sql``
migration runner before a release starts; this process never creates or changes tables. It
serves (and reports healthy) when the database is at the newest revision of its own
``migrations/`` folder, so a release whose migrations did not run never receives traffic, or at
a newer revision that declares itself compatible with this code: a row
``(revision, compatible_with)`` in the ``schema_compatibility`` table, written by the migration
itself, saying that code written for ``compatible_with`` or any later revision works on the
schema at ``revision``. That is what lets a deploy run an additive ("expand") migration while
the previous release still serves (see ../README.md).

Environment:
    DATABASE_URL      sqlite:///relative/or/absolute/path.db (relative to the working folder)
    JWT_SECRET        required; the process refuses to start without it
    PORT              port to listen on (``--port`` wins); 4000 when neither is given
    SHIPYARD_RELEASE, SHIPYARD_COMMIT, SHIPYARD_ENV
                      which release this is, shown by /, /health and /api/version

Endpoints:
    GET /              what this is, and which release and commit are live
    GET /health        200 {"ok": true, "revision": "0003", "needs": "0003", ...}
                       (revision: the database's; needs: this code's) or 503 {"ok": false, ...}
    GET /api/products  the product list, every column of the products table
    GET /api/version   {"component": "backend", "release", "commit", "env"}

Run by hand (after applying the migrations to shared/shop.db, see ../README.md):
    DATABASE_URL=sqlite:///shared/shop.db JWT_SECRET=... python app.py --port 4000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import quote, unquote, urlsplit

HERE = Path(__file__).resolve().parent
MIGRATIONS = HERE / "migrations"
VERSION_TABLE = "shipyard_schema_migrations"
COMPAT_TABLE = "schema_compatibility"
REQUIRED = ("DATABASE_URL", "JWT_SECRET")
_UP_FILE = re.compile(r"^([0-9]+)_.+\.up\.sql$")


@dataclass(frozen=True)
class Config:
    db_path: Path
    jwt_secret: str
    expected_revision: str | None
    release: str
    commit: str
    env: str

    def identity(self) -> dict[str, str]:
        return {"release": self.release, "commit": self.commit, "env": self.env}


def expected_revision(folder: Path = MIGRATIONS) -> str | None:
    """The highest revision in the migrations folder: the one this code needs."""
    revisions = [m.group(1) for p in folder.glob("*.up.sql") if (m := _UP_FILE.match(p.name))]
    return max(revisions, key=int) if revisions else None


def sqlite_path(url: str, cwd: Path | None = None) -> Path:
    """The file of a ``sqlite:///path`` URL; a relative path resolves against `cwd`."""
    if not url.startswith("sqlite:///"):
        raise ValueError(
            "DATABASE_URL must be sqlite:///relative/path.db or sqlite:////absolute/path.db "
            "(this demo backend speaks SQLite only)"
        )
    raw = unquote(url[len("sqlite:///") :].split("?", 1)[0])
    if not raw or raw == ":memory:":
        raise ValueError("DATABASE_URL must name a database file, not an in-memory database")
    path = Path(raw)
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


def config_from_env(environ: Mapping[str, str]) -> Config:
    """Read the configuration; raises ValueError naming what is missing or malformed."""
    missing = [name for name in REQUIRED if not environ.get(name)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} not set")
    return Config(
        db_path=sqlite_path(environ["DATABASE_URL"]),
        jwt_secret=environ["JWT_SECRET"],
        expected_revision=expected_revision(),
        release=environ.get("SHIPYARD_RELEASE", "unreleased"),
        commit=environ.get("SHIPYARD_COMMIT", "unknown"),
        env=environ.get("SHIPYARD_ENV", "none"),
    )


class SchemaNotReady(Exception):
    """The database cannot serve this code: missing, unmigrated or at another revision."""


def connect(config: Config) -> tuple[sqlite3.Connection, str]:
    """Open the existing database read-write (never create it) and check its revision.

    Returns the connection and the database's revision; raises SchemaNotReady when this code
    cannot serve that schema.
    """
    if not config.db_path.is_file():
        raise SchemaNotReady(
            f"database file {config.db_path} does not exist; apply the migrations first"
        )
    uri = f"file:{quote(str(config.db_path))}?mode=rw"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=2, check_same_thread=False, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise SchemaNotReady(f"cannot open database {config.db_path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        # One read transaction: a migration (or its undo) that commits between reading the
        # revision and reading its compatibility row must not be seen half.
        conn.execute("BEGIN")
        try:
            current = check_revision(conn, config.expected_revision, config.db_path)
        finally:
            conn.rollback()
    except (sqlite3.Error, SchemaNotReady) as exc:
        conn.close()
        if isinstance(exc, SchemaNotReady):
            raise
        raise SchemaNotReady(f"cannot read database {config.db_path}: {exc}") from exc
    return conn, current


def check_revision(conn: sqlite3.Connection, expected: str | None, db_path: Path) -> str:
    """The database's revision, if code that needs `expected` can serve it; else SchemaNotReady.

    It can when the revisions are equal, or when the database is newer and its revision's row
    in ``schema_compatibility`` says code written for `expected` (or older) still works on it.
    """
    current = current_revision(conn)
    if current is None:
        raise SchemaNotReady(
            f"database {db_path} has no applied migrations ({VERSION_TABLE} is "
            "missing or empty); apply the migrations first"
        )
    if expected is None or current == expected:
        return current
    if revision_number(current) < revision_number(expected):
        raise SchemaNotReady(f"database is at revision {current}, this code needs {expected}")
    floor = compatible_with(conn, current)
    if floor is None:
        raise SchemaNotReady(
            f"database is at revision {current}, newer than the {expected} this code needs, "
            f"and {COMPAT_TABLE} does not declare {current} compatible with older code"
        )
    if revision_number(floor) > revision_number(expected):
        raise SchemaNotReady(
            f"database is at revision {current}, which works only with code written for "
            f"{floor} or later; this code needs {expected}"
        )
    return current


def revision_number(revision: str) -> int:
    return int(revision) if str(revision).isdigit() else -1


def table_exists(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def current_revision(conn: sqlite3.Connection) -> str | None:
    if not table_exists(conn, VERSION_TABLE):
        return None
    revisions = [row[0] for row in conn.execute(f"SELECT revision FROM {VERSION_TABLE}")]
    return max(revisions, key=revision_number, default=None)


def compatible_with(conn: sqlite3.Connection, revision: str) -> str | None:
    """The oldest revision whose code works on the schema at `revision`, as its migration said."""
    if not table_exists(conn, COMPAT_TABLE):
        return None
    row = conn.execute(
        f"SELECT compatible_with FROM {COMPAT_TABLE} WHERE revision = ?", (revision,)
    ).fetchone()
    return None if row is None else str(row[0])


def make_handler(config: Config) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "shop-backend"
        timeout = 5  # an idle client connection does not hold up a shutdown for long

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/health":
                self.health()
            elif path == "/api/products":
                self.products()
            elif path == "/api/version":
                self.send_json(HTTPStatus.OK, {"component": "backend", **config.identity()})
            elif path == "/":
                self.send_json(
                    HTTPStatus.OK,
                    {
                        "service": "shop backend",
                        **config.identity(),
                        "endpoints": ["/health", "/api/products", "/api/version"],
                    },
                )
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})

        def health(self) -> None:
            try:
                conn, revision = connect(config)
            except SchemaNotReady as exc:
                self.send_json(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    {"ok": False, "reason": str(exc), "release": config.release},
                )
                return
            conn.close()
            self.send_json(
                HTTPStatus.OK,
                {
                    "ok": True,
                    "revision": revision,
                    "needs": config.expected_revision,
                    "release": config.release,
                    "commit": config.commit,
                },
            )

        def products(self) -> None:
            try:
                conn, _ = connect(config)
            except SchemaNotReady as exc:
                self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
                return
            try:
                # Every column, so one added by a later migration (0003's stock) is served
                # without a code change, and this code works before and after it.
                rows = conn.execute("SELECT * FROM products ORDER BY id").fetchall()
            finally:
                conn.close()
            self.send_json(HTTPStatus.OK, [dict(row) for row in rows])

        def send_json(self, status: HTTPStatus, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if urlsplit(self.path).path != "/health":  # probes run every 100 ms
                super().log_request(code, size)

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True


def make_server(config: Config, port: int, host: str = "127.0.0.1") -> Server:
    return Server((host, port), make_handler(config))


def serve_until_signalled(server: Server, name: str) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return."""

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{name} listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print(f"{name} stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="shop backend (JSON API over SQLite)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: $PORT or 4000)")
    args = parser.parse_args(argv)
    try:
        config = config_from_env(os.environ)
        port = args.port if args.port is not None else int(os.environ.get("PORT") or 4000)
    except ValueError as exc:
        print(f"backend: refusing to start: {exc}", file=sys.stderr)
        return 1
    try:
        server = make_server(config, port)
    except OSError as exc:
        print(f"backend: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"backend release {config.release} (commit {config.commit}, env {config.env}), "
        f"database {config.db_path}, needs schema revision {config.expected_revision}",
        file=sys.stderr,
        flush=True,
    )
    serve_until_signalled(server, "backend")
    return 0


if __name__ == "__main__":
    sys.exit(main())
