"""State store URLs: which ones are accepted, how they map to drivers, how they are shown.

- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite://` (in memory),
  or a bare filesystem path (taken as a SQLite file);
- `postgresql://user@host/db` (and `postgres://...`): rewritten to the psycopg 3 driver,
  `postgresql+psycopg://`; an explicit `postgresql+driver://` is kept as given.

A URL shown to a person always goes through `mask_url`, which hides the password
(and any query parameter that looks like one).
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from shipyard.errors import StoreError

__all__ = ["is_memory_sqlite", "mask_url", "normalize_url", "scrub", "secrets_of", "sqlite_path"]

_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
MASK = "***"


def mask_url(url: str | URL) -> str:
    """The URL with its password (and password-like query values) replaced by `***`."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    if parsed.password is not None:
        parsed = parsed.set(password=MASK)
    if parsed.query:
        parsed = parsed.set(
            query={
                k: (MASK if _SECRET_QUERY_KEYS.search(k) else v) for k, v in parsed.query.items()
            }
        )
    return parsed.render_as_string(hide_password=False).replace("%2A%2A%2A", MASK)


def secrets_of(url: URL) -> list[str]:
    """The secret strings inside a URL (its password, password-like query values)."""
    out: list[str] = []
    if url.password:
        out.append(str(url.password))
    for key, value in url.query.items():
        if _SECRET_QUERY_KEYS.search(key):
            out.extend([value] if isinstance(value, str) else list(value))
    return [s for s in out if s]


def scrub(text: str, url: URL) -> str:
    """`text` with every secret of `url` replaced by `***` (for driver error messages)."""
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def normalize_url(url: str) -> URL:
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
        return URL.create("sqlite", database=raw)
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(
            f"the state store URL {mask_url(raw)} cannot be parsed: {exc}",
            hint="use sqlite:///path/to/state.db or postgresql://user@host:5432/dbname",
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
    if backend == "sqlite":
        return parsed
    raise StoreError(
        f"the state store URL {mask_url(raw)} uses {backend!r}, which shipyard does not support",
        hint="use sqlite:///path/to/state.db (default) or postgresql://user@host:5432/dbname",
    )


def is_memory_sqlite(url: URL) -> bool:
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL points at (None for in-memory databases and `file:` URIs)."""
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        return None
    return Path(database)
