"""Typed, validated configuration: what `shipyard.toml` means once it is loaded.

The models are frozen dataclasses built only by `loader.py`, which has already
checked every field, so code that receives a `Config` can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Tier = Literal["production", "staging", "development"]
TargetKind = Literal["local", "ssh"]
# strict: any change to a contract file makes dependents deploy; semantic: only a change
# that breaks consumers does (an OpenAPI document compared operation by operation).
ContractMode = Literal["strict", "semantic"]
MigrationTool = Literal["sql", "alembic", "django", "command"]
TestStage = Literal["none", "smoke", "e2e", "full"]
RouterKind = Literal["builtin", "haproxy"]

TARGETS: tuple[TargetKind, ...] = ("local", "ssh")
# The migration tools this version can run; `validate` refuses any other.
MIGRATION_TOOLS: tuple[MigrationTool, ...] = ("sql", "alembic", "django", "command")
TIERS: tuple[Tier, ...] = ("production", "staging", "development")
TEST_STAGES: tuple[TestStage, ...] = ("none", "smoke", "e2e", "full")
# What serves public ports: the agent itself (nothing to install) or a HAProxy it steers.
ROUTER_KINDS: tuple[RouterKind, ...] = ("builtin", "haproxy")


@dataclass(frozen=True)
class HealthCheck:
    """How to judge that a release is up: one probe kind plus timing."""

    http: str | None = None
    tcp: bool = False
    command: str | None = None
    status: tuple[int, ...] = ()  # empty: any 2xx or 3xx
    interval: float = 0.2
    timeout: float = 2.0
    deadline: float = 30.0
    stable_for: float = 1.0

    @property
    def kind(self) -> Literal["http", "tcp", "command", "process"]:
        if self.http is not None:
            return "http"
        if self.command is not None:
            return "command"
        if self.tcp:
            return "tcp"
        return "process"


@dataclass(frozen=True)
class Migrations:
    """The component's schema migrations: a tool and where its files are."""

    tool: MigrationTool
    dir: str | None = None  # sql: folder of NNNN_name.up.sql / .down.sql
    config: str | None = None  # alembic: alembic.ini
    manage: str | None = None  # django: manage.py (default)
    up: str | None = None  # command: apply everything pending
    down: str | None = None  # command: go down to $SHIPYARD_TARGET_REVISION
    current: str | None = None  # command: print the current revision


@dataclass(frozen=True)
class PythonEnv:
    """The component's Python dependencies: one of a requirements file or a uv project.

    Paths are relative to the component's folder. shipyard builds a relocatable environment
    from it, cached by the digest of the file (or lock), the Python version and the platform.
    """

    requirements: str | None = None  # requirements.txt, pinned (pip freeze, uv pip compile)
    project: str | None = None  # folder with pyproject.toml and uv.lock
    version: str | None = None  # "3.12": a Python of this version; default: the system's python3

    @property
    def lock_file(self) -> str:
        """The file whose content decides the environment (relative to the component)."""
        if self.requirements is not None:
            return self.requirements
        return f"{(self.project or '.').rstrip('/')}/uv.lock"


@dataclass(frozen=True)
class Component:
    """One deployable part of the project."""

    name: str
    path: str
    start: str
    inputs: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    build: str | None = None
    artifact: str = "."
    port: int | None = None
    secrets: tuple[str, ...] = ()
    health: HealthCheck = field(default_factory=HealthCheck)
    migrations: Migrations | None = None
    tests: dict[str, str] = field(default_factory=dict)
    contract: tuple[str, ...] = ()  # API contract files: a change forces dependents to deploy
    contract_mode: ContractMode = "strict"
    env: dict[str, str] = field(default_factory=dict)  # plain, non-secret settings
    stop_timeout: float = 10.0
    warm_for: float = 30.0
    drain_timeout: float = 30.0
    python: PythonEnv | None = None


# Fields an environment may override for one component.
OVERRIDABLE = frozenset(
    {"port", "start", "health", "env", "stop_timeout", "warm_for", "drain_timeout"}
)


@dataclass(frozen=True)
class SecretsSource:
    """Where an environment's secrets come from."""

    kind: Literal["dotenv", "env_prefix", "command"]
    value: str


@dataclass(frozen=True)
class Rolling:
    """How many hosts change at once (ssh target)."""

    batch: str = "100%"
    max_fail: int = 0


@dataclass(frozen=True)
class Environment:
    """A named place to deploy to."""

    name: str
    target: TargetKind
    root: str
    tier: Tier
    hosts: tuple[str, ...] = ()
    protected: bool = False
    secrets: SecretsSource | None = None
    rolling: Rolling = field(default_factory=Rolling)
    tests: TestStage = "none"  # the test stage a deploy runs when --tests is not given
    overrides: dict[str, Component] = field(default_factory=dict)  # effective components
    router: RouterKind = "builtin"


@dataclass(frozen=True)
class SecretRule:
    """Checks for one secret's value (never the value itself)."""

    name: str
    format: str | None = None
    schemes: tuple[str, ...] = ()
    production_forbid_hosts: tuple[str, ...] = ()
    min_length: int | None = None
    min_entropy: float | None = None
    pattern: str | None = None
    production: str | None = None
    other: str | None = None
    min: int | None = None  # format int: the smallest allowed value
    max: int | None = None


@dataclass(frozen=True)
class Project:
    """Project-wide settings."""

    name: str
    default_environment: str
    state: str = "sqlite:///.shipyard/state.db"
    keep_releases: int = 5
    global_inputs: tuple[str, ...] = ("shipyard.toml",)
    max_parallel: int = 4
    # How long a deploy's lock and its lease on the agent outlive an orchestrator that stopped
    # renewing them: after it, the agent undoes a deploy that had not committed.
    lock_ttl: float = 15.0


@dataclass(frozen=True)
class Config:
    """A whole, valid shipyard.toml."""

    root: Path  # the project folder
    file: Path
    project: Project
    environments: dict[str, Environment]
    components: dict[str, Component]
    secret_rules: dict[str, SecretRule] = field(default_factory=dict)

    def environment(self, name: str | None) -> Environment:
        """The named environment (the default one for None)."""
        from shipyard.errors import UsageError

        env_name = name or self.project.default_environment
        try:
            return self.environments[env_name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise UsageError(
                f"unknown environment {env_name!r}",
                hint=f"environments in {self.file.name}: {known}",
            ) from None

    def components_for(self, env: Environment) -> dict[str, Component]:
        """Every component as it runs in `env`, with the environment's overrides applied."""
        return {name: env.overrides.get(name, comp) for name, comp in self.components.items()}


def with_overrides(component: Component, **changes: object) -> Component:
    """A copy of `component` with some fields replaced (used for environment overrides)."""
    return replace(component, **changes)  # type: ignore[arg-type]
