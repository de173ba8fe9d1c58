"""The durable state store of shipyard.

SQLAlchemy 2 + Alembic; SQLite by default, PostgreSQL by URL. Everything outside
this package uses only `Store`, the records and `new_id`; SQLAlchemy never leaks out.
No secret value is ever stored.
"""

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
