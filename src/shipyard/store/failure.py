"""A database failure told to a person: the message names the store, the hint what to do.

Shared by both read paths (SQLAlchemy's and the stdlib `sqlite3` one), so that a failure
reads the same whichever path met it. The driver's text is scrubbed of the URL's secrets.
"""

from __future__ import annotations

from shipyard.errors import StoreError
from shipyard.store.urls import StoreUrl, scrub, sqlite_path

__all__ = ["BUSY_TIMEOUT_MS", "closed_store", "os_failure", "store_error"]

# How long a SQLite connection waits for another process's write lock.
BUSY_TIMEOUT_MS = 30_000


def os_failure(masked: str, action: str, exc: OSError) -> StoreError:
    """The StoreError for a file-system failure under the store (its path, its permissions)."""
    return StoreError(
        f"state store {masked}: could not {action}: {exc.strerror or exc}",
        hint="check the state store's path and permissions",
    )


def closed_store(masked: str) -> StoreError:
    return StoreError(f"state store {masked} is closed", hint="open it again with Store.open(url)")


def store_error(
    masked: str,
    url: StoreUrl,
    action: str,
    reason: str,
    *,
    integrity: bool = False,
    integrity_hint: str | None = None,
    invalidated: bool = False,
    unreachable: bool = False,
) -> StoreError:
    """The StoreError for a driver's `reason` (first line kept, secrets scrubbed)."""
    lines = reason.strip().splitlines()
    text = scrub(lines[0] if lines else "unknown error", url)
    low = text.lower()
    if integrity:
        hint = integrity_hint or "the record conflicts with one already stored"
    elif "database is locked" in low or "database table is locked" in low:
        hint = (
            f"another process held the SQLite write lock longer than "
            f"{BUSY_TIMEOUT_MS // 1000}s; retry, or use PostgreSQL when several "
            "machines deploy at once"
        )
    elif "unable to open database file" in low or "readonly database" in low:
        hint = "check that the state file's folder exists and is writable"
    elif 'database "' in low and "does not exist" in low:
        hint = "create that database first (e.g. `createdb NAME`), or fix the URL"
    elif "no such table" in low or ("relation" in low and "does not exist" in low):
        hint = (
            "the database is not at the schema this shipyard expects; "
            "was it migrated by another tool or partly deleted?"
        )
    elif "file is not a database" in low or "disk image is malformed" in low:
        path = sqlite_path(url)
        hint = (
            f"the state file {path} is damaged or is not a shipyard state database: "
            "put back a good copy (from a backup); to start a new, empty history on "
            f"purpose, move it aside and create it empty: `mv {path} {path}.broken && "
            f"touch {path}`"
        )
    elif invalidated:
        hint = "the connection to the database was lost; retry"
    else:
        hint = (
            "check that the database is running and reachable and that the URL is right "
            "(`state` in [project] of shipyard.toml, or $SHIPYARD_STATE_URL)"
        )
    if unreachable:
        return StoreError(f"state store {masked} is unreachable: {text}", hint=hint)
    return StoreError(f"state store {masked}: could not {action}: {text}", hint=hint)
