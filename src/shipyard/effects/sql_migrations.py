"""The `sql` migration layout: a folder of plain SQL files applied in order.

A component that says ``migrations = { tool = "sql", dir = "migrations" }`` keeps its schema
changes as pairs of files::

    migrations/0001_products.up.sql
    migrations/0001_products.down.sql
    migrations/0002_orders.up.sql
    migrations/0002_orders.down.sql      (optional: without it 0002 cannot be undone)

The digits are the *revision* (compared as numbers, kept as written); the rest of the name is
free text. Applied revisions are recorded in the database itself, in the table
``shipyard_schema_migrations(revision TEXT PRIMARY KEY, name TEXT, applied_at TEXT)``, one row per
applied revision; the *current* revision is the highest one recorded there.

Each migration runs in its own transaction together with the update of that table, so a failing
migration leaves the database exactly at the revision before it (SQLite and PostgreSQL both have
transactional DDL). Migration files must therefore not contain ``BEGIN``/``COMMIT`` themselves.
Concurrent runners are serialised (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory
lock on PostgreSQL) and each re-checks inside its transaction whether the revision is still
pending, so running the same upgrade twice at once applies every migration once.

Database URLs:

- ``sqlite:///relative/path.db``: relative to the ``cwd`` argument (default: the process cwd);
- ``sqlite:////absolute/path.db``;
- ``postgresql://user:password@host:5432/db`` (also ``postgres://`` and ``postgresql+psycopg://``),
  which needs psycopg 3 (``pip install 'shipyard[postgres]'``); it is imported only when used.

Every failure is a shipyard error: a malformed folder is a :class:`ConfigError` naming the file;
a failing migration or an unreachable database is a :class:`DeploymentFailed` naming the
migration file and the database's message, with any password in the URL masked.

:func:`is_destructive` finds the statements the planner refuses without ``--allow-destructive``.
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from shipyard.errors import ConfigError, DeploymentFailed

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

__all__ = [
    "VERSION_TABLE",
    "Migration",
    "MigrationStatus",
    "current_revision",
    "destructive_changes",
    "discover",
    "downgrade",
    "is_destructive",
    "mask_url",
    "pending",
    "status",
    "upgrade",
]

VERSION_TABLE = "shipyard_schema_migrations"

_FILE_RE = re.compile(
    r"^(?P<revision>[0-9]+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)\.(?P<dir>up|down)\.sql$"
)
_CREATE_VERSION_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
    "(revision TEXT PRIMARY KEY, name TEXT, applied_at TEXT)"
)
# A fixed key for PostgreSQL's advisory lock, shared by every shipyard migration runner.
_PG_LOCK_KEY = zlib.crc32(VERSION_TABLE.encode())
_SQLITE_BUSY_TIMEOUT_S = 30.0
_PG_CONNECT_TIMEOUT_S = 10


# ---------------------------------------------------------------------------------------------
# Discovery


@dataclass(frozen=True)
class Migration:
    """One revision of the folder: its up file and, when it can be undone, its down file."""

    revision: str
    """The digits of the file name as written, e.g. ``"0002"``."""
    name: str
    """The rest of the file name, e.g. ``"orders"``."""
    up_path: Path
    down_path: Path | None

    @property
    def number(self) -> int:
        """The revision as a number; migrations are ordered by it."""
        return int(self.revision)

    @property
    def reversible(self) -> bool:
        """Whether a ``.down.sql`` exists, so a downgrade can undo this revision."""
        return self.down_path is not None

    @property
    def label(self) -> str:
        """``"0002_orders"``: how messages name the migration."""
        return f"{self.revision}_{self.name}"


@dataclass(frozen=True)
class MigrationStatus:
    """Where a database stands relative to a migrations folder."""

    current: str | None
    """The highest applied revision, or None when nothing was applied."""
    applied: list[str]
    """Every applied revision, in order."""
    pending: list[Migration]
    """Migrations of the folder not applied yet, in the order they would be applied."""
    unknown: list[str] = field(default_factory=list)
    """Applied revisions the folder has no file for (the database is ahead of this code)."""


def discover(folder: Path) -> list[Migration]:
    """Read the migrations of `folder`, ordered by revision.

    Files that do not end in ``.sql`` and sub-folders are ignored. Raises :class:`ConfigError`
    naming the file for: a ``.sql`` file whose name is not ``NNNN_name.up.sql`` or
    ``NNNN_name.down.sql``, two files claiming one revision, a down file without its up file, or
    a folder that does not exist.
    """
    if not folder.is_dir():
        raise ConfigError(
            "migrations folder does not exist",
            file=str(folder),
            hint="create it, or fix `migrations.dir` of the component in shipyard.toml",
        )
    ups: dict[int, tuple[str, str, Path]] = {}
    downs: dict[int, tuple[str, str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or not path.name.lower().endswith(".sql"):
            continue
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ConfigError(
                "not a migration file name",
                file=str(path),
                hint="name migrations NNNN_name.up.sql and NNNN_name.down.sql, for example "
                "0003_add_email.up.sql (letters, digits, `_`, `-` and `.` in the name)",
            )
        revision, name = match["revision"], match["name"]
        table = ups if match["dir"] == "up" else downs
        number = int(revision)
        if number in table:
            other = table[number][2]
            raise ConfigError(
                f"duplicate revision {revision}: also claimed by {other.name}",
                file=str(path),
                hint="give each migration its own revision number; renumber the newer one",
            )
        table[number] = (revision, name, path)
    migrations: list[Migration] = []
    for number, (revision, name, down) in sorted(downs.items()):
        up = ups.get(number)
        if up is None:
            raise ConfigError(
                f"down migration without an up migration (expected {revision}_{name}.up.sql)",
                file=str(down),
                hint="add the .up.sql file or delete the stray .down.sql",
            )
        if (up[0], up[1]) != (revision, name):
            raise ConfigError(
                f"down migration does not match its up migration {up[2].name}",
                file=str(down),
                hint=f"rename it to {up[0]}_{up[1]}.down.sql",
            )
    for number, (revision, name, up_path) in sorted(ups.items()):
        down_entry = downs.get(number)
        migrations.append(Migration(revision, name, up_path, down_entry[2] if down_entry else None))
    return migrations


# ---------------------------------------------------------------------------------------------
# Public operations


def current_revision(url: str, *, cwd: Path | None = None) -> str | None:
    """The highest revision applied to the database at `url`, or None.

    None also when the database (an SQLite file) or the version table does not exist yet; this
    never creates either.
    """
    return _current(_applied(url, cwd))


def status(folder: Path, url: str, *, cwd: Path | None = None) -> MigrationStatus:
    """Compare the database at `url` with the migrations of `folder`."""
    migrations = discover(folder)
    applied = _applied(url, cwd)
    known = {m.number for m in migrations}
    applied_numbers = {_number(r) for r in applied}
    return MigrationStatus(
        current=_current(applied),
        applied=applied,
        pending=[m for m in migrations if m.number not in applied_numbers],
        unknown=[r for r in applied if _number(r) not in known],
    )


def pending(folder: Path, url: str, *, cwd: Path | None = None) -> list[Migration]:
    """The migrations of `folder` not yet applied to `url`, in the order they would run."""
    return status(folder, url, cwd=cwd).pending


def upgrade(
    folder: Path, url: str, target: str | None = None, *, cwd: Path | None = None
) -> list[str]:
    """Apply the pending migrations of `folder` up to `target` (None: all), in order.

    Each migration runs in one transaction with its row in the version table. Returns the
    revisions this call applied (empty when there was nothing to do; a `target` below the current
    revision is not a downgrade, it applies nothing). On a failure, the
    migrations before the failing one stay applied and the failing one leaves no trace; a
    :class:`DeploymentFailed` names its file and the database's message.
    """
    migrations = discover(folder)
    limit = _target_number(target, migrations, [], "upgrade")
    backend = _open(url, cwd, create=True)
    with closing(backend):
        applied = {_number(r) for r in backend.applied()}
        todo = [
            m
            for m in migrations
            if m.number not in applied and (limit is None or m.number <= limit)
        ]
        scripts = [(m, _read_script(m.up_path)) for m in todo]
        done: list[str] = []
        for migration, script in scripts:
            if backend.apply(migration, migration.up_path, script, up=True):
                done.append(migration.revision)
        return done


def downgrade(folder: Path, url: str, target: str | None, *, cwd: Path | None = None) -> list[str]:
    """Undo applied revisions above `target` (None: every one), newest first.

    Every revision to undo must have a ``.down.sql`` in `folder`; this is checked before anything
    runs, so an irreversible migration stops the downgrade with nothing changed. Returns the
    revisions this call undid, in the order it undid them.
    """
    migrations = discover(folder)
    by_number = {m.number: m for m in migrations}
    backend = _open(url, cwd, create=False)
    with closing(backend):
        applied = backend.applied()
        limit = _target_number(target, migrations, applied, "downgrade")
        undo = sorted(
            (r for r in applied if limit is None or _number(r) > limit), key=_number, reverse=True
        )
        plan: list[tuple[Migration, Path, str]] = []
        for revision in undo:
            migration = by_number.get(_number(revision))
            if migration is None:
                raise DeploymentFailed(
                    f"cannot downgrade {mask_url(url)}: revision {revision} is applied but "
                    f"{folder} has no migration for it",
                    hint="downgrade with the migrations folder of the release that applied it "
                    "(a newer release), or restore the database from a backup",
                )
            if migration.down_path is None:
                raise DeploymentFailed(
                    f"cannot downgrade {mask_url(url)}: migration {migration.up_path.name} has no "
                    f"{migration.label}.down.sql, so revision {revision} is irreversible; "
                    "nothing was changed",
                    hint="write the .down.sql file, or keep the database at this revision and "
                    "roll forward with a new migration",
                )
            plan.append((migration, migration.down_path, _read_script(migration.down_path)))
        done: list[str] = []
        for migration, path, script in plan:
            if backend.apply(migration, path, script, up=False):
                done.append(migration.revision)
        return done


def destructive_changes(migrations: Sequence[Migration]) -> dict[str, list[str]]:
    """For each migration whose up file is destructive, what :func:`is_destructive` found.

    Keys are revisions; migrations with nothing destructive are left out.
    """
    found: dict[str, list[str]] = {}
    for migration in migrations:
        hits = is_destructive(_read_script(migration.up_path))
        if hits:
            found[migration.revision] = hits
    return found


def mask_url(url: str) -> str:
    """`url` with its password (in the authority or a ``password=`` parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
            )
        if (netloc, query) == (parts.netloc, parts.query):
            return url  # nothing to hide; urlunsplit would also drop sqlite's empty authority
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable database URL>"


# ---------------------------------------------------------------------------------------------
# Helpers shared by both databases


def _number(revision: str) -> int:
    return int(revision) if revision.isdigit() else -1


def _current(applied: Sequence[str]) -> str | None:
    return max(applied, key=_number) if applied else None


def _target_number(
    target: str | None, migrations: Sequence[Migration], applied: Sequence[str], action: str
) -> int | None:
    if target is None:
        return None
    known = {m.number for m in migrations} | {_number(r) for r in applied}
    if not target.isdigit() or int(target) not in known:
        names = ", ".join(m.revision for m in migrations) or "none"
        raise DeploymentFailed(
            f"cannot {action} to revision {target!r}: no such revision",
            hint=f"known revisions: {names}"
            + (
                "; downgrade with target None to undo every revision"
                if action == "downgrade"
                else ""
            ),
        )
    return int(target)


def _read_script(path: Path) -> str:
    try:
        script = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read migration: {exc}", file=str(path), hint="it must be a UTF-8 text file"
        ) from exc
    for statement in _split_statements(script):
        words = [t.text.upper() for t in statement.tokens[:2] if t.kind == "word"]
        first = words[0] if words else ""
        second = words[1] if len(words) > 1 else ""
        if (
            first in {"BEGIN", "COMMIT", "END", "ABORT"}
            or (first == "ROLLBACK" and second != "TO")
            or (first == "START" and second == "TRANSACTION")
        ):
            raise ConfigError(
                f"line {statement.line}: migrations must not control transactions ({first})",
                file=str(path),
                hint="remove BEGIN/COMMIT: shipyard runs each migration file in one transaction",
            )
    return script


def _db_error(
    action: str, where: str | None, url: str, exc: BaseException, secret: str | None
) -> DeploymentFailed:
    """Translate a database exception; `where` names the migration file (None: no migration)."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    detail = detail.replace(url, mask_url(url))
    if secret and len(secret) >= 3:
        detail = detail.replace(secret, "***")
    place = f" {where}" if where else ""
    return DeploymentFailed(
        f"{action}{place} on {mask_url(url)} failed: {type(exc).__name__}: {detail}",
        hint="the migration was rolled back, so the database is still at the revision before "
        "it; fix the SQL (or the data it trips over) and deploy again"
        if where
        else "check that the database is running and that DATABASE_URL points at it",
    )


class _Backend(Protocol):
    def applied(self) -> list[str]: ...

    def apply(self, migration: Migration, path: Path, script: str, *, up: bool) -> bool: ...

    def close(self) -> None: ...


def _applied(url: str, cwd: Path | None) -> list[str]:
    backend = _open(url, cwd, create=False)
    with closing(backend):
        return backend.applied()


def _open(url: str, cwd: Path | None, *, create: bool) -> _Backend:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return _SQLite(url, _sqlite_path(url, cwd), create=create)
    if base in {"postgresql", "postgres"}:
        return _Postgres(url)
    raise ConfigError(
        f"unsupported database URL {mask_url(url)!r} for the sql migration layout",
        hint="use sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host/db",
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# SQLite


def _sqlite_path(url: str, cwd: Path | None) -> Path:
    _, _, rest = url.partition(":")
    if not rest.startswith("///"):
        raise ConfigError(
            f"SQLite URL {url!r} has no file path",
            hint="use sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )
    raw = rest[3:]
    if "?" in raw or "#" in raw:
        raise ConfigError(
            f"SQLite URL {url!r} has query parameters, which the sql migration layout does not "
            "support",
            hint="remove everything from `?` on",
        )
    raw = unquote(raw)
    if raw in {"", ":memory:"}:
        raise ConfigError(
            f"SQLite URL {url!r} names an in-memory database, which cannot be migrated",
            hint="point DATABASE_URL at a file, e.g. sqlite:///shared/app.db",
        )
    path = Path(raw)
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


class _SQLite:
    """One connection in autocommit mode; each migration is an explicit `BEGIN IMMEDIATE`."""

    def __init__(self, url: str, path: Path, *, create: bool) -> None:
        self.url = url
        self.path = path
        self.conn: sqlite3.Connection | None = None
        if path.exists():
            self.conn = self._connect()
        elif create and not path.parent.is_dir():
            raise DeploymentFailed(
                f"cannot create SQLite database {path}: folder {path.parent} does not exist",
                hint="create the folder (for a release, the component's shared/ folder), or "
                "fix the relative path in DATABASE_URL (it resolves against the release)",
            )
        # else: nothing applied yet; the file is created by the first apply(), not before

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=_SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise _db_error("opening the database", None, self.url, exc, None) from exc

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def applied(self) -> list[str]:
        if self.conn is None:
            return []
        try:
            exists = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
            ).fetchone()
            if exists is None:
                return []
            rows = self.conn.execute(f"SELECT revision FROM {VERSION_TABLE}").fetchall()
        except sqlite3.Error as exc:
            raise _db_error("reading the schema revision", None, self.url, exc, None) from exc
        return sorted((str(r[0]) for r in rows), key=_number)

    def apply(self, migration: Migration, path: Path, script: str, *, up: bool) -> bool:
        if self.conn is None:
            self.conn = self._connect()
        conn = self.conn
        statement: _SqliteChunk | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_CREATE_VERSION_TABLE)
            row = conn.execute(
                f"SELECT 1 FROM {VERSION_TABLE} WHERE revision = ?", (migration.revision,)
            ).fetchone()
            if (row is not None) == up:  # someone else applied (or undid) it meanwhile
                conn.execute("ROLLBACK")
                return False
            for statement in _sqlite_chunks(script):
                conn.execute(statement.sql)
            statement = None
            if up:
                conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (revision, name, applied_at) VALUES (?, ?, ?)",
                    (migration.revision, migration.name, _now()),
                )
            else:
                conn.execute(
                    f"DELETE FROM {VERSION_TABLE} WHERE revision = ?", (migration.revision,)
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            where = str(path)
            if statement is not None:
                snippet = " ".join(_LEADING_COMMENTS.sub("", statement.sql).split())
                snippet = snippet if len(snippet) <= 80 else snippet[:77] + "..."
                where += f" (statement at line {statement.line}: {snippet})"
            raise _db_error("applying" if up else "reverting", where, self.url, exc, None) from exc
        return True


_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)


@dataclass(frozen=True)
class _SqliteChunk:
    sql: str
    line: int


def _sqlite_chunks(script: str) -> Iterator[_SqliteChunk]:
    """Split `script` into single statements the way SQLite's own parser would.

    ``sqlite3.complete_statement`` knows about string literals, comments and trigger bodies, so a
    `;` inside any of them does not end a statement.
    """
    buffer = ""
    line = 1
    parts = script.split(";")
    for index, part in enumerate(parts):
        buffer += part if index == len(parts) - 1 else part + ";"
        if index < len(parts) - 1 and not sqlite3.complete_statement(buffer):
            continue
        first = next(_tokens(buffer), None)
        if first is not None:  # skip chunks of only comments and blanks
            yield _SqliteChunk(buffer, line + first.line - 1)
        line += buffer.count("\n")
        buffer = ""


def _has_code(sql: str) -> bool:
    return any(True for _ in _tokens(sql))


# ---------------------------------------------------------------------------------------------
# PostgreSQL


class _Postgres:
    """psycopg 3 in autocommit mode; each migration is one `conn.transaction()` block."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.secret = urlsplit(url).password
        try:
            import psycopg
        except ImportError as exc:
            raise DeploymentFailed(
                "PostgreSQL migrations need psycopg 3, which is not installed",
                hint="pip install 'shipyard[postgres]'",
            ) from exc
        self.errors: type[Exception] = psycopg.Error
        conninfo = re.sub(r"^postgres(?:ql)?\+[a-z0-9_]+://", "postgresql://", url, flags=re.I)
        try:
            self.conn: psycopg.Connection[TupleRow] = psycopg.connect(
                conninfo, autocommit=True, connect_timeout=_PG_CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise _db_error("connecting to the database", None, url, exc, self.secret) from exc

    def close(self) -> None:
        self.conn.close()

    def applied(self) -> list[str]:
        try:
            row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,))
            exists = row.fetchone()
            if not exists or not exists[0]:
                return []
            rows = self.conn.execute(f"SELECT revision FROM {VERSION_TABLE}").fetchall()
        except self.errors as exc:
            raise _db_error(
                "reading the schema revision", None, self.url, exc, self.secret
            ) from exc
        return sorted((str(r[0]) for r in rows), key=_number)

    def apply(self, migration: Migration, path: Path, script: str, *, up: bool) -> bool:
        conn = self.conn
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
                conn.execute(_CREATE_VERSION_TABLE)
                row = conn.execute(
                    f"SELECT 1 FROM {VERSION_TABLE} WHERE revision = %s", (migration.revision,)
                ).fetchone()
                if (row is not None) == up:  # someone else applied (or undid) it meanwhile
                    return False
                if _has_code(script):
                    # No parameters: psycopg sends the file as one simple query, so it may hold
                    # several statements; all of them run inside this transaction.
                    conn.execute(script.encode("utf-8"))
                if up:
                    conn.execute(
                        f"INSERT INTO {VERSION_TABLE} (revision, name, applied_at) "
                        "VALUES (%s, %s, %s)",
                        (migration.revision, migration.name, _now()),
                    )
                else:
                    conn.execute(
                        f"DELETE FROM {VERSION_TABLE} WHERE revision = %s", (migration.revision,)
                    )
        except self.errors as exc:
            raise _db_error(
                "applying" if up else "reverting", str(path), self.url, exc, self.secret
            ) from exc
        return True


# ---------------------------------------------------------------------------------------------
# Destructive statements


@dataclass(frozen=True)
class _Token:
    kind: Literal["word", "ident", "string", "op"]
    text: str
    line: int


@dataclass
class _Statement:
    tokens: list[_Token]
    line: int


_WORD_RE = re.compile(r"[A-Za-z0-9_$]+")
_DOLLAR_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _tokens(sql: str) -> Iterator[_Token]:
    """Tokens of `sql` without comments; string literals become one opaque `string` token.

    Understands ``--`` and (nested) ``/* */`` comments, ``'...'`` strings with ``''``, ``E'...'``
    strings with backslash escapes, PostgreSQL dollar quoting (``$$...$$``, ``$tag$...$tag$``),
    and ``"..."`` / backtick quoted identifiers. Unterminated constructs run to the end.
    """
    i, n, line = 0, len(sql), 1
    while i < n:
        c = sql[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            line += sql.count("\n", i, j)
            i = j
        elif c == "'":
            j = _end_of_quoted(sql, i, "'", backslash=False)
            yield _Token("string", "''", line)
            line += sql.count("\n", i, j)
            i = j
        elif c in {'"', "`"}:
            j = _end_of_quoted(sql, i, c, backslash=False)
            yield _Token("ident", sql[i:j], line)
            line += sql.count("\n", i, j)
            i = j
        elif c == "$" and (dollar := _DOLLAR_RE.match(sql, i)):
            tag = dollar.group(0)
            end = sql.find(tag, dollar.end())
            j = n if end < 0 else end + len(tag)
            yield _Token("string", "''", line)
            line += sql.count("\n", i, j)
            i = j
        elif word := _WORD_RE.match(sql, i):
            j = word.end()
            if word.group(0) in {"E", "e"} and j < n and sql[j] == "'":
                k = _end_of_quoted(sql, j, "'", backslash=True)
                yield _Token("string", "''", line)
                line += sql.count("\n", j, k)
                i = k
            else:
                yield _Token("word", word.group(0), line)
                i = j
        else:
            yield _Token("op", c, line)
            i += 1


def _end_of_quoted(sql: str, start: int, quote: str, *, backslash: bool) -> int:
    """Index just after the quoted run starting at `start` (doubled quotes stay inside)."""
    j, n = start + 1, len(sql)
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
        elif c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return n


def _split_statements(sql: str) -> list[_Statement]:
    """Statements of `sql`, split at `;` outside strings, comments and routine/trigger bodies."""
    statements: list[_Statement] = []
    current: list[_Token] = []
    block = 0
    for token in _tokens(sql):
        if token.kind == "op" and token.text == ";" and block == 0:
            if current:
                statements.append(_Statement(current, current[0].line))
            current = []
            continue
        current.append(token)
        if token.kind == "word" and _upper(current[0]) == "CREATE":
            word = token.text.upper()
            if word == "BEGIN" or (block and word == "CASE"):
                block += 1
            elif block and word == "END":
                block -= 1
    if current:
        statements.append(_Statement(current, current[0].line))
    return statements


def _upper(token: _Token) -> str:
    return token.text.upper() if token.kind == "word" else ""


_NOT_A_COLUMN = {"CONSTRAINT", "INDEX", "KEY", "PRIMARY", "FOREIGN", "CHECK", "PARTITION", "UNIQUE"}
_NAME_END = {"CASCADE", "RESTRICT", "PURGE"}


class _Reader:
    """A cursor over one statement's tokens."""

    def __init__(self, tokens: Sequence[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return _upper(self.tokens[j]) if j < len(self.tokens) else ""

    def accept(self, *words: str) -> bool:
        """Consume `words` if they come next, all of them."""
        for offset, word in enumerate(words):
            if self.peek(offset) != word:
                return False
        self.i += len(words)
        return True

    def name(self) -> str:
        """A possibly qualified, possibly quoted name (``public."Orders"``), or ``""``."""
        parts: list[str] = []
        while self.i < len(self.tokens) and self.tokens[self.i].kind in {"word", "ident"}:
            parts.append(self.tokens[self.i].text)
            self.i += 1
            if self.i < len(self.tokens) and self.tokens[self.i].text == ".":
                self.i += 1
            else:
                break
        return ".".join(parts)

    def names(self) -> list[str]:
        """A comma-separated list of names (as after DROP TABLE or TRUNCATE)."""
        found: list[str] = []
        while True:
            if self.peek() in _NAME_END:
                break
            name = self.name()
            if not name:
                break
            found.append(name)
            if self.i < len(self.tokens) and self.tokens[self.i].text == ",":
                self.i += 1
            else:
                break
        return found


def is_destructive(sql: str) -> list[str]:
    """What in `sql` destroys or renames data, one short description per finding.

    Finds ``DROP TABLE`` (also ``DROP SCHEMA``/``DROP DATABASE``), dropping a column
    (``ALTER TABLE t DROP [COLUMN] c``), changing a column's type (``ALTER TABLE t ALTER
    [COLUMN] c [SET DATA] TYPE …``), renaming a table or column (``ALTER TABLE … RENAME``,
    MySQL's ``RENAME TABLE`` and ``CHANGE``), ``TRUNCATE``, and ``DELETE FROM`` without ``WHERE``.
    Comments, string literals and dollar-quoted bodies are ignored, and so are ``CREATE``
    statements (a trigger or function body runs later, not during the migration). An empty list
    means nothing destructive was found. Examples: ``["DROP TABLE orders"]``,
    ``["ALTER TABLE products RENAME COLUMN name TO title"]``.
    """
    findings: list[str] = []
    for statement in _split_statements(sql):
        tokens = statement.tokens
        if _upper(tokens[0]) == "CREATE":
            continue
        findings.extend(_destructive_in(tokens))
    return findings


def _destructive_in(tokens: Sequence[_Token]) -> list[str]:
    r = _Reader(tokens)
    found: list[str] = []
    if r.accept("DROP"):
        r.accept("TEMPORARY")
        kind = r.peek()
        if kind in {"TABLE", "SCHEMA", "DATABASE"}:
            r.i += 1
            r.accept("IF", "EXISTS")
            found += [f"DROP {kind} {name}" for name in r.names()]
    elif r.accept("TRUNCATE"):
        r.accept("TABLE")
        r.accept("ONLY")
        found += [f"TRUNCATE {name}" for name in r.names()]
    elif r.accept("RENAME", "TABLE"):
        while True:
            old = r.name()
            if not (old and r.accept("TO")):
                break
            found.append(f"RENAME TABLE {old} TO {r.name()}")
            if r.i < len(tokens) and tokens[r.i].text == ",":
                r.i += 1
            else:
                break
    elif r.accept("ALTER", "TABLE"):
        r.accept("IF", "EXISTS")
        r.accept("ONLY")
        table = r.name()
        if r.i < len(tokens) and tokens[r.i].text == "*":
            r.i += 1
        for action in _top_level_split(tokens[r.i :]):
            found += _alter_action(table, action)
    found += _deletes_without_where(tokens)
    return found


def _top_level_split(tokens: Sequence[_Token]) -> list[list[_Token]]:
    """Split at commas outside parentheses (the actions of one ALTER TABLE)."""
    parts: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind == "op" and token.text == "(":
            depth += 1
        elif token.kind == "op" and token.text == ")":
            depth -= 1
        elif token.kind == "op" and token.text == "," and depth == 0:
            parts.append([])
            continue
        parts[-1].append(token)
    return [p for p in parts if p]


def _alter_action(table: str, action: Sequence[_Token]) -> list[str]:
    r = _Reader(action)
    if r.accept("DROP"):
        if r.peek() in _NOT_A_COLUMN:
            return []
        r.accept("COLUMN")
        r.accept("IF", "EXISTS")
        column = r.name()
        return [f"ALTER TABLE {table} DROP COLUMN {column}"] if column else []
    if r.accept("RENAME"):
        if r.accept("TO") or r.accept("AS"):
            return [f"ALTER TABLE {table} RENAME TO {r.name()}"]
        if r.peek() in _NOT_A_COLUMN:
            return []
        r.accept("COLUMN")
        old = r.name()
        if old and r.accept("TO"):
            return [f"ALTER TABLE {table} RENAME COLUMN {old} TO {r.name()}"]
        return []
    if r.accept("ALTER"):
        r.accept("COLUMN")
        column = r.name()
        if r.accept("TYPE") or r.accept("SET", "DATA", "TYPE"):
            return [f"ALTER TABLE {table} ALTER COLUMN {column} TYPE (type change)"]
        return []
    if r.accept("CHANGE"):
        r.accept("COLUMN")
        old, new = r.name(), r.name()
        if old and new and old.strip('`"').lower() != new.strip('`"').lower():
            return [f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}"]
    return []


def _deletes_without_where(tokens: Sequence[_Token]) -> list[str]:
    found: list[str] = []
    depth = 0
    open_deletes: list[tuple[int, str]] = []  # (depth, table) of DELETEs still without WHERE
    for index, token in enumerate(tokens):
        word = _upper(token)
        if token.kind == "op" and token.text == "(":
            depth += 1
        elif token.kind == "op" and token.text == ")":
            found += [f"DELETE FROM {t} without WHERE" for d, t in open_deletes if d == depth]
            open_deletes = [(d, t) for d, t in open_deletes if d != depth]
            depth -= 1
        elif word == "DELETE" and index + 1 < len(tokens) and _upper(tokens[index + 1]) == "FROM":
            r = _Reader(tokens)
            r.i = index + 2
            r.accept("ONLY")
            open_deletes.append((depth, r.name() or "?"))
        elif word == "WHERE":
            open_deletes = [(d, t) for d, t in open_deletes if d != depth]
    found += [f"DELETE FROM {t} without WHERE" for _, t in open_deletes]
    return found
