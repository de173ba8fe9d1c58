"""The shapes the API answers and accepts (its OpenAPI schemas).

Answers carry the keys docs/cli.md promises for `--json`; more keys are allowed, so a newer
server can add fields without breaking a client that validates against an older schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A git ref as a person types it; never an option (`-…`) for the git command it reaches.
REF_PATTERN = r"^[A-Za-z0-9_.@{}~^/][A-Za-z0-9_.@{}~^/+-]{0,199}$"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ComponentState(Open):
    name: str
    status: str
    release: str | None
    previous_release: str | None
    artifact: str | None


class DeploymentOut(Open):
    id: str
    environment: str
    kind: str
    status: str
    commit: str | None
    base_commit: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: str | None
    created_by: str | None = None
    components: list[ComponentState]


class DeploymentPage(BaseModel):
    items: list[DeploymentOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="pass as `offset` for the next page; null: last")


class EventOut(Open):
    deployment_id: str
    seq: int
    at: str | None
    kind: str
    step: str | None
    component: str | None
    status: str | None
    message: str | None
    data: dict[str, object] | None


class ActiveComponent(Open):
    name: str
    release: str | None
    commit: str | None
    healthy: bool
    deployment_id: str | None
    state: str
    since: str | None = Field(None, description="when the deployment that made it active ended")


class EnvironmentOut(Open):
    environment: str
    tier: str
    protected: bool
    target: str
    last_good_deployment: str | None
    components: list[ActiveComponent]


class HealthOut(BaseModel):
    ok: bool
    components: list[dict[str, object]]


class StepOut(Open):
    id: str
    kind: str
    component: str | None
    after: list[str]


class PlanOut(Open):
    environment: str
    kind: str
    commit: str
    base_commit: str | None
    why: str
    components: list[str]
    levels: list[list[str]]
    steps: list[StepOut]
    plan_hash: str
    protected: bool = Field(description="a deploy of this plan needs `confirm` = plan_hash")


class GraphNode(BaseModel):
    depends_on: list[str]


class GraphOut(BaseModel):
    components: dict[str, GraphNode]
    levels: list[list[str]]


class Accepted(BaseModel):
    """A deployment the server started: follow it at `stream` (server-sent events)."""

    id: str
    status: str = "running"
    url: str
    events: str
    stream: str
    page: str


class NothingToDeploy(BaseModel):
    deployed: Literal[False] = False
    plan: PlanOut


class Selection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str | None = Field(None, pattern=NAME_PATTERN)
    selection: Literal["full", "changed", "only"] | None = Field(
        None,
        description="default: `only` when `only` names components, else changed when the "
        "environment has a reachable last good deployment, full otherwise",
    )
    only: list[str] = Field(default_factory=list, max_length=200)
    ref: str = Field("HEAD", pattern=REF_PATTERN)
    tests: Literal["none", "smoke", "e2e", "full"] = "none"
    migrate: bool = True


class DeployRequest(Selection):
    rollback: bool = True
    allow_destructive: bool = False
    allow_irreversible: bool = False
    wait_lock: float = Field(0.0, ge=0, le=3600, description="seconds to wait for the lock")
    confirm: str | None = Field(
        None, max_length=64, description="the plan_hash: required for a protected environment"
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str | None = Field(None, pattern=NAME_PATTERN)
    to: str | None = Field(None, max_length=64, description="a deployment id (default: previous)")
    wait_lock: float = Field(0.0, ge=0, le=3600)
    confirm: str | None = Field(None, max_length=64)


class Recovered(BaseModel):
    recovered: list[DeploymentOut]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(pattern=NAME_PATTERN, description="the environment promoted from")
    target: str = Field(pattern=NAME_PATTERN, description="the environment promoted to")
    deployment: str | None = Field(
        None, max_length=64, description="a deployment of `source` (default: its last good one)"
    )
    wait_lock: float = Field(0.0, ge=0, le=3600)
    confirm: str | None = Field(None, max_length=64)


class AffectedOut(Open):
    name: str
    reasons: list[str]


class BreakingOut(Open):
    kind: str
    component: str | None
    detail: str | None


class ChangesOut(Open):
    base: str | None
    head: str
    changed_files: list[str]
    affected: list[AffectedOut]
    breaking: list[BreakingOut]
    full_deploy_required: bool
    why_full: str | None


class FindingOut(Open):
    rule: str
    name: str | None
    severity: str
    location: str | None
    message: str


class SecretsOut(Open):
    """Names, places and fingerprints only: never a secret's value."""

    ok: bool
    findings: list[FindingOut]
