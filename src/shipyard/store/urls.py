"""State store URLs: which ones are accepted, how they map to drivers, how they are shown.

- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite://` (in memory),
  or a bare filesystem path (taken as a SQLite file);
- `postgresql://user@host/db` (and `postgres://...`): rewritten to the psycopg 3 driver,
  `postgresql+psycopg://`; an explicit `postgresql+driver://` is kept as given.

A URL shown to a person always goes through `mask_url`, which hides the password
(and any query parameter that looks like one).

Parsed here with the standard library, the way SQLAlchemy's `make_url` parses (same
grammar, same unquoting, same rendering): reading a SQLite store must not import SQLAlchemy
(docs/architecture.md, "Start-up"). `StoreUrl.sqlalchemy()` gives SQLAlchemy's URL.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote

from shipyard.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "StoreUrl",
    "is_memory_sqlite",
    "mask_url",
    "normalize_url",
    "parse_url",
    "scrub",
    "secrets_of",
    "sqlite_path",
]

_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
MASK = "***"
# SQLAlchemy 2's URL grammar (sqlalchemy/engine/url.py, `_parse_url`).
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)

QueryValue = str | tuple[str, ...]


@dataclass(frozen=True)
class StoreUrl:
    """A parsed database URL (the fields of SQLAlchemy's `URL`)."""

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: Mapping[str, QueryValue] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql` (the driver name without its `+driver`)."""
        return self.drivername.partition("+")[0]

    def replace(self, **changes: Any) -> StoreUrl:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        # Never the password: a URL in a test failure, a log line or an exception is masked.
        return f"StoreUrl({mask_url(self)!r})"

    __str__ = __repr__

    def render(self) -> str:
        """The URL as text, password included (as SQLAlchemy renders it)."""
        s = self.drivername + "://"
        if self.username is not None:
            s += quote(self.username, safe=" +")
            if self.password is not None:
                s += ":" + quote(self.password, safe=" +")
            s += "@"
        if self.host is not None:
            s += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            s += ":" + str(self.port)
        if self.database is not None:
            s += "/" + quote(self.database, safe=" +/")
        if self.query:
            s += "?" + "&".join(
                f"{quote_plus(k)}={quote_plus(v)}"
                for k in sorted(self.query)
                for v in _values(self.query[k])
            )
        return s

    def sqlalchemy(self) -> URL:
        """The same URL as SQLAlchemy's type (imports SQLAlchemy)."""
        from sqlalchemy.engine import URL

        return URL.create(
            self.drivername,
            username=self.username,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
            query={k: list(v) if isinstance(v, tuple) else v for k, v in self.query.items()},
        )


def _values(value: QueryValue) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else (value,)


def parse_url(text: str) -> StoreUrl:
    """Parse like SQLAlchemy's `make_url`; ValueError when `text` is not a URL."""
    match = _URL.match(text)
    if match is None:
        raise ValueError("Could not parse SQLAlchemy URL from given URL string")
    parts = match.groupdict()
    query: dict[str, QueryValue] = {}
    for key, value in parse_qsl(parts["query"] or ""):
        query[key] = (*_values(query[key]), value) if key in query else value
    port = parts["port"]
    return StoreUrl(
        drivername=parts["name"],
        username=None if parts["username"] is None else unquote(parts["username"]),
        password=None if parts["password"] is None else unquote(parts["password"]),
        host=parts["ipv4host"] or parts["ipv6host"],
        port=int(port) if port else None,
        database=None if parts["database"] is None else unquote(parts["database"]),
        query=query,
    )


def mask_url(url: str | StoreUrl) -> str:
    """The URL with its password (and password-like query values) replaced by `***`."""
    try:
        parsed = parse_url(url) if isinstance(url, str) else url
    except ValueError:
        assert isinstance(url, str)
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    if parsed.password is not None:
        parsed = parsed.replace(password=MASK)
    if parsed.query:
        parsed = parsed.replace(
            query={
                k: (MASK if _SECRET_QUERY_KEYS.search(k) else v) for k, v in parsed.query.items()
            }
        )
    return parsed.render().replace("%2A%2A%2A", MASK)


def secrets_of(url: StoreUrl) -> list[str]:
    """The secret strings inside a URL (its password, password-like query values)."""
    out: list[str] = []
    if url.password:
        out.append(url.password)
    for key, value in url.query.items():
        if _SECRET_QUERY_KEYS.search(key):
            out.extend(_values(value))
    return [s for s in out if s]


def scrub(text: str, url: StoreUrl) -> str:
    """`text` with every secret of `url` replaced by `***` (for driver error messages)."""
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def normalize_url(url: str) -> StoreUrl:
    """Parse a state URL and pick the driver; raises StoreError for unusable URLs."""
    raw = url.strip()
    if not raw:
        raise StoreError(
            "the state store URL is empty",
            hint="set `state` in [project] of shipyard.toml or $SHIPYARD_STATE_URL, "
            "e.g. sqlite:///.shipyard/state.db",
        )
    if "://" not in raw:
        # A bare path: a SQLite file.
        return StoreUrl("sqlite", database=raw)
    try:
        parsed = parse_url(raw)
    except ValueError as exc:
        raise StoreError(
            f"the state store URL {mask_url(raw)} cannot be parsed: {exc}",
            hint="use sqlite:///path/to/state.db or postgresql://user@host:5432/dbname",
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        return parsed.replace(drivername=f"postgresql+{driver or 'psycopg'}")
    if backend == "sqlite":
        return parsed
    raise StoreError(
        f"the state store URL {mask_url(raw)} uses {backend!r}, which shipyard does not support",
        hint="use sqlite:///path/to/state.db (default) or postgresql://user@host:5432/dbname",
    )


def is_memory_sqlite(url: StoreUrl) -> bool:
    if url.backend != "sqlite":
        return False
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def sqlite_path(url: StoreUrl) -> Path | None:
    """The file a SQLite URL points at (None for in-memory databases and `file:` URIs)."""
    if url.backend != "sqlite" or is_memory_sqlite(url):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        return None
    return Path(database)
