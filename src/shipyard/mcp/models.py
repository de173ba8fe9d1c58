"""What the MCP tools answer: pydantic models, published to clients as each tool's outputSchema.

They mirror the `--json` shapes of docs/cli.md (the same keys, so a script and an assistant read
one vocabulary). Each model allows extra keys: what the service adds later reaches clients too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorInfo(_Open):
    type: str
    message: str
    hint: str | None = None


class PlanStep(_Open):
    id: str
    kind: str
    component: str | None = None
    after: list[str] = Field(default_factory=list)


class PlanResult(_Open):
    """A saved plan: deploy it with `deploy(plan_id)` while it still matches."""

    plan_id: str = Field(description="Pass it to the deploy tool.")
    plan_hash: str
    environment: str
    protected: bool = Field(description="Deploying asks a person for confirmation first.")
    deployable: bool = Field(description="False when there is nothing to deploy (see why).")
    kind: str
    commit: str
    base_commit: str | None = None
    why: str
    components: list[str]
    reasons: dict[str, list[str]] = Field(default_factory=dict)
    levels: list[list[str]]
    steps: list[PlanStep]
    tests: str
    migrate: bool
    config_note: str | None = None
    drift: dict[str, str] = Field(default_factory=dict)
    summary: str = Field(description="The plan as `shipyard plan` prints it.")


class DeployedComponent(_Open):
    name: str
    status: str
    release: str | None = None
    previous_release: str | None = None
    artifact: str | None = None


class DeploymentDoc(_Open):
    """The deployment shape of docs/cli.md; `failure` says why a failed one failed."""

    id: str
    environment: str
    kind: str
    status: str
    commit: str | None = None
    base_commit: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    error: str | None = None
    created_by: str | None = None
    components: list[DeployedComponent] = Field(default_factory=list)
    failure: ErrorInfo | None = None


class ActiveComponent(_Open):
    name: str
    release: str | None = None
    commit: str | None = None
    healthy: bool
    deployment_id: str | None = None


class EnvironmentStatus(_Open):
    environment: str
    last_good_deployment: str | None = None
    components: list[ActiveComponent]


class StatusResult(BaseModel):
    """A deployment (when `deployment_id` was given), or what is active now."""

    environment: str
    deployment: DeploymentDoc | None = None
    active: EnvironmentStatus | None = None


class HistoryResult(BaseModel):
    environment: str
    deployments: list[DeploymentDoc] = Field(description="Newest first.")


class ComponentHealthDoc(_Open):
    name: str
    release: str | None = None
    healthy: bool
    detail: str | None = None


class HealthResult(BaseModel):
    environment: str
    ok: bool
    components: list[ComponentHealthDoc]


class SecretFinding(_Open):
    rule: str
    name: str
    severity: str = Field(description="error or warning")
    location: str
    message: str


class SecretsResult(_Open):
    """The `secrets check --json` document: names, places and fingerprints, never a value."""

    ok: bool
    checked: list[str] = Field(default_factory=list)
    findings: list[SecretFinding]


class AffectedComponent(_Open):
    name: str
    reasons: list[str]


class BreakingChange(_Open):
    kind: str
    component: str | None = None
    detail: str


class ChangesResult(_Open):
    """The `changes --json` document."""

    base: str | None = None
    head: str
    changed_files: list[str]
    affected: list[AffectedComponent]
    breaking: list[BreakingChange]
    full_deploy_required: bool
    why_full: str | None = None
