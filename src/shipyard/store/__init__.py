"""The durable state store of shipyard.

SQLAlchemy 2 + Alembic; SQLite by default, PostgreSQL by URL. Everything outside
this package uses only `Store`, the records and `new_id`; SQLAlchemy never leaks out.
No secret value is ever stored.

`Store` and `mask_url` are loaded on first use (PEP 562): the records and ids are plain
dataclasses, and a command that only reads them must not pay for importing SQLAlchemy.
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
    """Import the SQLAlchemy-backed names when they are first asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
