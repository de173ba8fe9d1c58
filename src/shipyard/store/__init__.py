"""The durable state store of shipyard.

SQLAlchemy 2 (Core) + Alembic; SQLite by default, PostgreSQL by URL; a SQLite store at the
current schema is read and written through the standard library's sqlite3 alone
(docs/architecture.md, "The store's layers").
Everything outside this package uses only `Store`, the records and `new_id`; SQLAlchemy
never leaks out. No secret value is ever stored.

`Store` and `mask_url` are loaded on first use (PEP 562): a command that only needs the
records and ids does not import the store's modules at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipyard.store.ids import id_timestamp, is_uuid7, new_id
from shipyard.store.records import (
    COMPONENT_STATUSES,
    DEPLOYMENT_KINDS,
    DEPLOYMENT_STATUSES,
    FINISHED_STATUSES,
    UNFINISHED_STATUSES,
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    EventRecord,
    LockEventRecord,
    LockOwner,
    LockRecord,
    PlanRecord,
    ReleaseSpecRecord,
    SnapshotEntry,
)

if TYPE_CHECKING:
    from shipyard.store.store import Clock, Store
    from shipyard.store.urls import mask_url

__all__ = [
    "COMPONENT_STATUSES",
    "DEPLOYMENT_KINDS",
    "DEPLOYMENT_STATUSES",
    "FINISHED_STATUSES",
    "UNFINISHED_STATUSES",
    "ArtifactRecord",
    "Clock",
    "ComponentRecord",
    "DeploymentRecord",
    "EventRecord",
    "LockEventRecord",
    "LockOwner",
    "LockRecord",
    "PlanRecord",
    "ReleaseSpecRecord",
    "SnapshotEntry",
    "Store",
    "id_timestamp",
    "is_uuid7",
    "mask_url",
    "new_id",
]


_LAZY = {
    "Clock": "shipyard.store.store",
    "Store": "shipyard.store.store",
    "mask_url": "shipyard.store.urls",
}


def __getattr__(name: str) -> Any:
    """Import the store's own modules when their names are first asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
