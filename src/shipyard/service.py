"""The one façade every adapter (CLI, HTTP API, MCP) calls.

Adapters parse input and render output; everything else happens here or below:
the service loads config and secrets, opens the store, builds the engine's
context with a target, and turns results into plain records.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.config import (
    CONFIG_FILE,
    Component,
    Config,
    Environment,
    SecretsSource,
    load_config,
)
from shipyard.core.changes import ChangeReport
from shipyard.core.graph import Graph
from shipyard.core.plan import (
    Plan,
    Selection,
    TestStage,
    plan_deploy,
    plan_promote,
    plan_rollback,
)
from shipyard.core.secrets import Finding, Fingerprinter, Redactor, SecretsReport
from shipyard.effects.changes import Base, detect_changes
from shipyard.effects.config_at_commit import load_config_at, same_config_text
from shipyard.effects.git import Repo, check_ref
from shipyard.effects.secrets import LoadedSecrets, fingerprinter, read_secrets, readable
from shipyard.errors import (
    GitError,
    HealthCheckError,
    PreflightError,
    SecretsError,
    ShipyardError,
    StoreError,
    UsageError,
)
from shipyard.targets.base import Observation, ProbeSpec, RunningRelease, Target

# The engine, the store (SQLAlchemy) and the local target (the agent client) are imported
# where they are used: `validate` and `graph` need none of them, and every CLI command pays
# for what this module imports at its top (docs/architecture.md, "Start-up").
if TYPE_CHECKING:
    from shipyard.engine.gc import GcReport
    from shipyard.engine.runner import EngineContext, ProgressSink
    from shipyard.store import DeploymentRecord, EventRecord, LockRecord, PlanRecord, Store


def _local_target(env: Environment, root: Path) -> Target:
    from shipyard.targets.local import LocalTarget

    return LocalTarget(root, router=env.router)


if TYPE_CHECKING:
    from shipyard.effects.leaks import Leak

STATE_URL_VARIABLE = "SHIPYARD_STATE_URL"
LEAK_CACHE = Path(".shipyard") / "leak-scan"  # blobs the preflight's leak scan found clean
DISK_RECORD = Path(".shipyard") / "disk.json"  # what gc (or `status --disk`) last measured
DISK_GROUPS = ("environments", "artifacts", "releases", "cache", "total")
# Saved plans are kept a day, at most the newest 50 per environment (pruned at each save).
PLAN_MAX_AGE_S = 24 * 3600.0
PLAN_KEEP = 50


@dataclass(frozen=True)
class ValidationReport:
    """What `shipyard validate` found in a valid config."""

    file: str
    project: str
    components: list[str]
    environments: list[str]
    levels: list[list[str]]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "file": self.file,
            "project": self.project,
            "components": self.components,
            "environments": self.environments,
            "levels": self.levels,
        }


@dataclass(frozen=True)
class DeploymentView:
    """A deployment with its components: the deployment shape of docs/cli.md."""

    record: DeploymentRecord
    components: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "components": self.components}


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    release: str | None
    observation: Observation | None

    def to_dict(self) -> dict[str, Any]:
        obs = self.observation
        return {
            "name": self.name,
            "release": self.release,
            "healthy": bool(obs and obs.ok),
            **(obs.to_dict() if obs else {"detail": "not running"}),
        }


@dataclass(frozen=True)
class PlanRequest:
    """What a plan was asked for (the plan flags), kept with a saved plan to make it again."""

    environment: str
    selection: Selection | None = None
    only: tuple[str, ...] = ()
    ref: str = "HEAD"
    tests: TestStage = "none"
    migrate: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "only": list(self.only)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanRequest:
        return cls(**{**data, "only": tuple(data.get("only", ()))})


class Shipyard:
    """A project and everything that can be done with it."""

    def __init__(
        self,
        project_dir: Path,
        *,
        sink: ProgressSink | None = None,
        target_factory: Callable[[Environment, Path], Target] | None = None,
        environ: dict[str, str] | None = None,
        on_secrets: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """`on_secrets` is told every set of values this service reads (a server's log
        redactor learns them: a secret added while it runs is redacted from then on)."""
        self.project_dir = project_dir.resolve()
        self.sink = sink
        self.environ = dict(os.environ) if environ is None else environ
        self._target_factory = target_factory or _local_target
        self._targets: dict[str, Target] = {}
        self._commit_configs: dict[str, Config] = {}
        self._redactors: dict[str, Redactor] = {}
        self._on_secrets = on_secrets
        # Each source read once per service, in memory only: a command source runs once per
        # deploy, not for the context, the checks and the leak scan each.
        self._read: dict[SecretsSource | None, LoadedSecrets | SecretsError] = {}
        # Credentials the leak scanner found (by rule@location): redacted like secrets.
        self.scanned_secrets: dict[str, str] = {}
        # What adapters should tell the user besides the result (an agent that was restarted).
        self.notices: list[str] = []

    # --- configuration and resources ----------------------------------------------------

    @cached_property
    def config(self) -> Config:
        return load_config(self.project_dir)

    def graph(self) -> Graph:
        """The dependency graph of the project's components."""
        return Graph({c.name: c.depends_on for c in self.config.components.values()})

    def validate(self) -> ValidationReport:
        """Load and check the config (schema, graph, paths, ports); raise ConfigError if bad."""
        config = self.config
        return ValidationReport(
            file=str(config.file),
            project=config.project.name,
            components=sorted(config.components),
            environments=sorted(config.environments),
            levels=self.graph().levels(),
        )

    @property
    def state_url(self) -> str:
        url = self.environ.get(STATE_URL_VARIABLE) or self.config.project.state
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////"):
            url = prefix + str(self.project_dir / url[len(prefix) :])
        return url

    @cached_property
    def store(self) -> Store:
        from shipyard.store import Store

        self._refuse_lost_state_file()
        return Store.open(self.state_url)

    def _refuse_lost_state_file(self) -> None:
        """A missing SQLite state file is created empty, unless releases say it was lost.

        An empty history would make a deployed project look never deployed (a full deploy
        with no previous release to roll back to), so that needs the user's say-so.
        """
        from shipyard.store.urls import normalize_url, sqlite_path

        path = sqlite_path(normalize_url(self.state_url))
        if path is None or path.exists():
            return
        deployed = [
            f"{name} in {env.name}"
            for env in self.config.environments.values()
            if env.target == "local"
            for name in self.config.components
            if self.target(env).current(name)
        ]
        if deployed:
            raise StoreError(
                f"the state database {path} is missing, but this project was deployed "
                f"({', '.join(deployed)} have releases): it was deleted or moved, and "
                "shipyard will not treat the project as never deployed",
                hint=f"put the file back (from a backup); to start a new, empty history "
                f"on purpose, create it empty: `touch {path}`",
            )

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    @cached_property
    def repo(self) -> Repo:
        return Repo(self.project_dir)

    @cached_property
    def project_prefix(self) -> str:
        relative = self.project_dir.relative_to(self.repo.toplevel().resolve())
        return "" if relative == Path(".") else relative.as_posix()

    def environment(self, name: str | None) -> Environment:
        return self.config.environment(name)

    def target(self, env: Environment) -> Target:
        if env.name not in self._targets:
            if env.target != "local":
                raise UsageError(
                    f"environment {env.name!r} uses the {env.target!r} target, "
                    "which this version cannot drive yet",
                    hint='deploy to an environment with target = "local"',
                )
            self._targets[env.name] = self._target_factory(env, self.project_dir / env.root)
        return self._targets[env.name]

    def redactor(self, env_name: str | None = None) -> Redactor:
        """Every secret value of an environment, for adapters to redact what they show.

        Empty when the environment or its secrets cannot be loaded (the command then says why).
        """
        try:
            return self._redactor(self.environment(env_name))
        except ShipyardError:
            return Redactor()

    def redactor_all(self) -> Redactor:
        """Every secret value of every environment (for output about all of them)."""
        everything = Redactor()
        for env in self.config.environments.values():
            try:
                values = self.read_secrets(env.secrets).values
            except ShipyardError:
                continue
            everything.add({f"{name}@{env.name}": v for name, v in values.items()})
        everything.add(self.scanned_secrets)
        return everything

    def config_at(self, commit: str, *, work_tree: bool = False) -> Config:
        """shipyard.toml as it is at `commit` (the work tree's with `work_tree`, for
        --allow-dirty): a deploy of a commit runs with that commit's settings."""
        if work_tree:
            return self.config
        if commit not in self._commit_configs:
            self._commit_configs[commit] = load_config_at(
                self.repo, commit, self.project_dir, self.project_prefix
            )
        return self._commit_configs[commit]

    def _context(self, env: Environment, config: Config | None = None) -> EngineContext:
        from shipyard.effects.artifacts import ArtifactStore
        from shipyard.engine.runner import EngineContext

        values, _location = readable(self.read_secrets(env.secrets))
        redact = Redactor(values)
        redact.add(self.scanned_secrets)
        return EngineContext(
            config=config or self.config,
            env=env,
            lock_ttl=(config or self.config).project.lock_ttl,
            store=self.store,
            target=self.target(env),
            artifacts=ArtifactStore(self.project_dir / ".shipyard" / "artifacts"),
            repo=self.repo,
            project_prefix=self.project_prefix,
            secrets=values,
            redact=redact,
            sink=self.sink or (lambda event: None),
            preflight_findings=lambda plan: self._preflight_findings(env, config, plan, redact),
        )

    # --- secrets ----------------------------------------------------------------------------

    def read_secrets(self, source: SecretsSource | None) -> LoadedSecrets:
        """A secrets source as this service first read it (SecretsError if it could not be).

        One snapshot serves the engine's context, the preflight checks, the leak scan's
        values and the redactors; it is kept in memory only, never written anywhere.
        """
        if source not in self._read:
            try:
                got = read_secrets(source, self.project_dir, self.environ)
            except SecretsError as exc:
                self._read[source] = exc
            else:
                self._read[source] = got
                if self._on_secrets is not None:
                    self._on_secrets(got.values)
        found = self._read[source]
        if isinstance(found, SecretsError):
            raise found
        return found

    @cached_property
    def fingerprint(self) -> Fingerprinter:
        """Keyed fingerprints of values (the project's key in `.shipyard/`, mode 0600)."""
        return fingerprinter(self.project_dir)

    def secrets_check(self, env_name: str | None = None) -> SecretsReport:
        """Presence, rules and environment match of one environment's secrets (every
        environment's without a name), each compared with every other environment."""
        from shipyard.secrets_check import secret_findings

        config = self.config
        envs = [self.environment(env_name)] if env_name else list(config.environments.values())
        findings = secret_findings(
            config,
            envs,
            read=self.read_secrets,
            fingerprint=self.fingerprint,
        )
        return SecretsReport(findings, checked=[e.name for e in envs])

    def _preflight_findings(
        self, env: Environment, config: Config | None, plan: Plan, redact: Redactor
    ) -> list[Finding]:
        """The secrets checks of a deployment: those of `secrets check` for the deployed
        components (as configured at the deployed commit), and a leak scan of the tree of
        the deployed commit (whatever it finds joins the deployment's redactor)."""
        from shipyard.effects.leaks import Allowlist, CleanBlobs, Scanner, scan_commit_tree
        from shipyard.secrets_check import environment_values, leak_findings, secret_findings

        config = config or self.config
        chosen = config.components_for(config.environment(env.name))
        findings = secret_findings(
            config,
            [config.environment(env.name)],
            read=self.read_secrets,
            fingerprint=self.fingerprint,
            components={env.name: {n: chosen[n] for n in plan.components if n in chosen}},
        )
        ignore = self.repo.blob_text(plan.commit, self._in_repo(".shipyardignore"))
        scanner = Scanner(
            values=environment_values(config, self.read_secrets),
            allowlist=Allowlist.parse(ignore or ""),
        )
        # Blobs this scanner (same rules, same secret values) found clean are not read again.
        cache = CleanBlobs(self.project_dir / LEAK_CACHE, scanner.cache_key(self.fingerprint))
        leaks = scan_commit_tree(
            scanner, self.repo.toplevel(), plan.commit, self.project_prefix, cache
        )
        self._learn(redact, leaks)
        return findings + leak_findings(leaks, config)

    def secrets_scan(
        self, paths: list[Path] | None = None, *, history: bool = False
    ) -> SecretsReport:
        """Leaked credentials in files (default: the project folder; in a shipyard project
        also its build artifacts and shipyard's logs) and, with `history`, in the lines every
        commit added. Works on any folder, with or without shipyard.toml or git."""
        from shipyard.effects.leaks import Allowlist, Scanner, scan_history, scan_paths
        from shipyard.secrets_check import environment_values, leak_findings

        root = self.project_dir
        config = self.config if (root / CONFIG_FILE).exists() else None
        values = environment_values(config, self.read_secrets) if config else {}
        scanner = Scanner(values=values, allowlist=Allowlist.load(root))
        targets = [p.resolve() for p in paths] if paths else [root]
        leaks, _size = scan_paths(scanner, root, targets)
        checked = [str(t) for t in targets]
        if config is not None and not paths:
            # No secret value belongs in a build artifact (builds see none) or a log.
            extra = [root / ".shipyard" / "artifacts"] + [
                root / env.root / "agent" for env in config.environments.values()
            ]
            extra = [folder for folder in extra if folder.is_dir()]
            more, _size = scan_paths(scanner, root, extra, use_git=False)
            leaks += more
            checked += [str(folder) for folder in extra]
        if history:
            try:
                top, prefix = self.repo.toplevel(), self.project_prefix
            except ShipyardError:
                raise UsageError(
                    f"{root} is not in a git repository: --history needs one",
                    hint="scan without --history, or scan a clone",
                ) from None
            seen = {leak.fingerprint for leak in leaks}
            leaks += [
                leak for leak in scan_history(scanner, top, prefix) if leak.fingerprint not in seen
            ]
            checked.append("git history")
        self._learn(None, leaks)
        return SecretsReport(leak_findings(leaks, config), checked=checked)

    def _learn(self, redact: Redactor | None, leaks: list[Leak]) -> None:
        """Credentials the scanner found are redacted from then on, wherever shown."""
        found = {f"{leak.rule}@{leak.location}": leak.secret for leak in leaks if leak.secret}
        self.scanned_secrets.update(found)
        for known in (redact, *self._redactors.values()):
            if known is not None:
                known.add(found)

    def _in_repo(self, relative: str) -> str:
        return f"{self.project_prefix}/{relative}" if self.project_prefix else relative

    # --- plan and deploy ------------------------------------------------------------------

    def plan(
        self,
        env_name: str | None = None,
        *,
        selection: Selection | None = None,
        only: tuple[str, ...] = (),
        ref: str = "HEAD",
        since: str | None = None,
        tests: TestStage | None = None,
        migrate: bool = True,
        allow_dirty: bool = False,
    ) -> Plan:
        """What a deploy would do, without doing it.

        `tests=None` runs the environment's default test stage (its `tests` key; none).

        Planned from shipyard.toml as it is at the deployed commit; with `allow_dirty` and
        the commit checked out, from the work tree's (the build uses the work tree too).
        """
        commit = self.repo.resolve(ref)
        work_tree = allow_dirty and commit == self.repo.resolve("HEAD")
        config = self.config_at(commit, work_tree=work_tree)
        env = config.environment(env_name or self.config.project.default_environment)
        base = self._base(env.name, since)
        report = None
        if base.commit is not None and selection in (None, "changed"):
            report = self._detect(commit, base, env.name, work_tree=work_tree)
        config_note = None
        if not work_tree and not same_config_text(
            self.repo, commit, self.project_dir, self.project_prefix
        ):
            config_note = (
                f"{CONFIG_FILE} at {commit[:12]} differs from the work tree's; this deploy "
                f"uses the one at {commit[:12]}"
                + (" (--allow-dirty uses the work tree's)" if ref == "HEAD" else "")
            )
        plan = plan_deploy(
            config,
            env.name,
            commit=commit,
            base_commit=base.commit,
            changes=report,
            selection=selection,
            only=only,
            tests=env.tests if tests is None else tests,
            migrate=migrate,
            base_note=base.missing,
        )
        plan = dataclasses.replace(
            plan,
            config_from="work tree" if work_tree else "commit",
            config_note=config_note,
            migrations=self._pending_migrations(env, config, plan, work_tree),
        )
        if plan.components:
            return plan
        return self._reconcile_plan(env, config, plan)

    def _pending_migrations(
        self, env: Environment, config: Config, plan: Plan, work_tree: bool
    ) -> dict[str, str]:
        """What each planned component's migrate step will find, for the plan to show."""
        comps = config.components_for(env)
        names = [n for n in plan.components if comps[n].migrations is not None]
        if not plan.migrate or not names:
            return {}
        from shipyard.engine import stages  # the engine only when there are migrations
        from shipyard.engine.runner import component_env

        shown: dict[str, str] = {}
        try:
            ctx = self._context(env, config)
        except ShipyardError as exc:
            return dict.fromkeys(names, f"not read: {exc.message}")
        for name in names:
            comp = comps[name]
            assert comp.migrations is not None
            if comp.migrations.tool != "sql":
                shown[name] = (
                    f"{comp.migrations.tool}: read and checked by migrate:{name}, from the "
                    "new release (destructive or irreversible steps stop the deploy there)"
                )
                continue
            current = ctx.target.current(name)
            if current is None:
                # Planning touches nothing: reading the schema of a component that has no
                # release here would create its folder (for `sqlite:///shared/…` paths).
                shown[name] = "first release here: migrate:" + name + " reads the schema"
                continue
            try:
                state = stages.sql_state_at(
                    repo=self.repo,
                    project_prefix=self.project_prefix,
                    comp=comp,
                    commit=plan.commit,
                    work_tree=work_tree,
                    target=ctx.target,
                    env=component_env(ctx, comp, current),
                )
                shown[name] = stages.describe_pending(state)
            except ShipyardError as exc:
                shown[name] = ctx.redact(f"not read: {exc.message}")
        return shown

    def _reconcile_plan(self, env: Environment, config: Config, idle: Plan) -> Plan:
        """Nothing changed: still, what runs must be what the last good deployment left, and
        healthy. If it is not, the plan restores it (a `reconcile` deployment) and says why."""
        target = self.target(env)
        good = self._good_deployments(env.name)
        if not good:
            return idle
        last, desired = good[0]
        drift = self._drift(env, target, desired)  # asks the agent: starts it if it is down
        notice = "; " + _agent_restarted(env) if self._agent_was_restarted(target) else ""
        if not drift:
            return dataclasses.replace(idle, why=idle.why + notice)
        releases = {name: desired[name] for name in drift}
        ctx = self._context(env, config)
        specs = {name: ctx.release_spec(name, release)[0] for name, release in releases.items()}
        plan = plan_rollback(
            dataclasses.replace(config, components={**config.components, **specs}),
            env.name,
            commit=last.commit or "",
            releases=releases,
            rollback_to=last.id,
            current_commit=last.commit,
        )
        return dataclasses.replace(
            plan,
            kind="reconcile",
            why=(
                f"reconcile: nothing changed since {last.id}, but what runs differs from it "
                f"({'; '.join(f'{n}: {w}' for n, w in drift.items())}); restoring it" + notice
            ),
            drift=drift,
        )

    def _observe(self, env: Environment, target: Target, spec: ProbeSpec) -> Observation:
        """One probe, its detail redacted and cut short as it is observed."""
        from shipyard.engine.observe import short_redacted

        seen = target.probe(spec)
        return dataclasses.replace(seen, detail=short_redacted(self._redactor(env), seen.detail))

    def _redactor(self, env: Environment) -> Redactor:
        if env.name not in self._redactors:
            try:
                values, _location = readable(self.read_secrets(env.secrets))
            except ShipyardError:
                values = {}  # no secrets could be read: none can leak from here either
            self._redactors[env.name] = Redactor(values)
            self._redactors[env.name].add(self.scanned_secrets)
        return self._redactors[env.name]

    @staticmethod
    def _agent_was_restarted(target: Target) -> bool:
        return bool(getattr(target, "agent_restarted", False))

    def _may_run(self, env: Environment, target: Target) -> bool:
        """Whether anything may run in `env`: only then is its agent asked (asking starts
        one, which would keep running after a command on a never-deployed environment, or
        on one whose agent `shipyard down` stopped)."""
        if getattr(target, "stopped_on_purpose", lambda: False)():
            return False
        names = self.config.components_for(env)
        return bool(self.store.list_deployments(env.name, limit=1)) or any(
            map(target.current, names)
        )

    def _check_agent(self, env: Environment, target: Target) -> dict[str, str]:
        """The routes of an environment that has run something: asking the agent restarts a
        dead one, noted here, since its public ports were down until now."""
        routes = target.routes()
        if self._agent_was_restarted(target) and _agent_restarted(env) not in self.notices:
            self.notices.append(_agent_restarted(env))
        return routes

    def _drift(self, env: Environment, target: Target, desired: dict[str, str]) -> dict[str, str]:
        """component → how what runs differs from `desired` (not running, not routed, or
        unhealthy by its own spec)."""
        from shipyard.engine.observe import probe_spec

        routes = target.routes()
        running = target.running()
        today = self.config.components_for(env)
        drift = {}
        for name, release in sorted(desired.items()):
            if name not in today:
                continue
            spec, _commit = self._release_spec(env, target, today[name], release)
            proc = running.get((name, release))
            if proc is None or proc.state not in ("running", "starting", "backing-off"):
                drift[name] = f"release {release} is {proc.state if proc else 'not running'}"
            elif spec.port and routes.get(name) != release:
                drift[name] = (
                    f"port {spec.port} serves {routes.get(name) or 'nothing'} instead of {release}"
                )
            else:
                observation = self._observe(env, target, probe_spec(spec, spec.port or proc.port))
                if not observation.ok:
                    drift[name] = f"release {release} is unhealthy: {observation.detail}"
        return drift

    def changes(
        self, since: str | None = None, ref: str = "HEAD", env_name: str | None = None
    ) -> ChangeReport:
        """Changed files → affected components with reasons, breaking changes, and whether a
        partial deploy is safe: from `since` (default: the environment's last good
        deployment) to `ref`. The store is opened only when the base comes from it."""
        check_ref(ref)
        if since is not None:
            check_ref(since)
        head = self.repo.resolve(ref)
        env = self.config_at(head).environment(env_name)  # its default environment
        return self._detect(head, self._base(env.name, since), env.name)

    def _detect(
        self, head: str, base: Base, env_name: str, *, work_tree: bool = False
    ) -> ChangeReport:
        return detect_changes(
            self.repo,
            self.project_prefix,
            head=head,
            base=base,
            config_at=lambda commit: self.config_at(commit, work_tree=work_tree and commit == head),
            env_name=env_name,
        )

    def _base(self, env_name: str, since: str | None) -> Base:
        """The commit changes are counted from: `since`, else the last good deployment's."""
        if since is not None:
            try:
                return Base(self.repo.resolve(since), deployed=False)
            except GitError:
                if not self.repo.is_shallow():
                    raise
                return Base(
                    None,
                    deployed=False,
                    missing=f"{since} is not in this shallow clone "
                    "(`git fetch --unshallow` fetches the rest)",
                )
        last = self.store.last_good_deployment(env_name)
        if last is None or not last.commit:
            return Base(None, deployed=True, missing=f"no previous good deployment of {env_name}")
        if not self.repo.has_commit(last.commit):
            cause = (
                "this is a shallow clone: `git fetch --unshallow` fetches the rest"
                if self.repo.is_shallow()
                else "rewritten history, or fetch it"
            )
            return Base(
                None,
                deployed=True,
                missing=f"the last good deployment's commit {last.commit[:12]} is not in this "
                f"repository ({cause})",
            )
        return Base(last.commit, deployed=True)

    def deploy(
        self,
        plan: Plan,
        *,
        rollback: bool = True,
        allow_dirty: bool = False,
        allow_destructive: bool = False,
        allow_irreversible: bool = False,
        wait_lock: float = 0.0,
        created_by: str | None = None,
    ) -> DeploymentView:
        """Run a plan. Raises DeploymentFailed (exit 1) after rolling back, LockedError (4)…

        `created_by` names who asked (an MCP client, an API token); default user@host."""
        import asyncio

        from shipyard.engine.runner import Deployment, DeployOptions

        config = self.config_at(plan.commit, work_tree=plan.config_from == "work tree")
        env = config.environment(plan.environment)
        dirty = [
            f for f in self.repo.dirty_files(self.project_prefix) if "/.shipyard/" not in f"/{f}"
        ]
        if dirty and not allow_dirty:
            shown = ", ".join(dirty[:5]) + (" …" if len(dirty) > 5 else "")
            raise PreflightError(
                f"the work tree has uncommitted changes: {shown}",
                hint="commit them, or pass --allow-dirty to build the work tree as it is",
            )
        head = self.repo.resolve("HEAD")
        options = DeployOptions(
            rollback=rollback,
            allow_destructive=allow_destructive,
            allow_irreversible=allow_irreversible,
            dirty=bool(dirty) and plan.commit == head,
            wait_lock=wait_lock,
            created_by=created_by or "",
        )
        ctx = self._context(env, config)
        if plan.kind in ("rollback", "reconcile"):
            # Each release comes back with its own spec, never today's shipyard.toml.
            specs = {n: ctx.release_spec(n, r)[0] for n, r in plan.releases.items()}
            ctx.components = {**ctx.components, **specs}
        record = asyncio.run(Deployment(ctx, plan, options).run())
        self._gc_after()
        return self.view(record)

    # --- disk -------------------------------------------------------------------------------

    def gc(self, env_name: str | None = None, *, dry_run: bool = False) -> GcReport:
        """Remove artifacts and Python environments no kept release, rollback target or
        other environment's active release needs; with `env_name`, first prune that
        environment's old release folders (as a successful deploy does)."""
        from shipyard.effects.artifacts import ArtifactStore
        from shipyard.engine.gc import collect_garbage
        from shipyard.engine.runner import reachable_releases

        if env_name is not None and not dry_run:
            env = self.environment(env_name)
            target = self.target(env)
            keep = self.config.project.keep_releases
            protected = reachable_releases(self.store, env.name, keep)
            for name in self.config.components:
                target.prune(name, keep, {r for c, r in protected if c == name})
        state = self.project_dir / ".shipyard"
        report = collect_garbage(
            self.store,
            ArtifactStore(state / "artifacts"),
            state / "pyenvs",
            self._environment_roots(),
            self.config.project.keep_releases,
            dry_run=dry_run,
        )
        if not dry_run and not report.skipped:
            self.disk_usage(measure=True)  # recorded for `status`, which only reads it
        return report

    def _gc_after(self) -> None:
        """After a successful deploy: collect garbage and tell the user (a notice; the
        deployment's journal is closed). Housekeeping: a failure here never fails the
        deployment, the next one tries again."""
        try:
            report = self.gc()
        except (ShipyardError, OSError) as exc:
            self.notices.append(f"gc skipped: {getattr(exc, 'message', exc)}")
            return
        if report.skipped:
            self.notices.append(f"gc skipped: {report.skipped}")
        elif report.artifacts or report.pyenvs:
            self.notices.append(
                f"gc: removed {len(report.artifacts)} artifacts and {len(report.pyenvs)} "
                f"python environments ({report.freed_bytes} bytes freed)"
            )

    def _environment_roots(self) -> dict[str, Path]:
        return {
            env.name: (self.project_dir / env.root).resolve()
            for env in self.config.environments.values()
            if env.target == "local"
        }

    def disk_usage(self, *, measure: bool = False) -> dict[str, Any]:
        """Bytes on disk (each file once) of releases, artifacts, Python environments and
        the wheel cache, and when that was measured (`measured_at`, UTC).

        Measuring walks every file of `.shipyard/` (tens of thousands in a few Python
        environments), so `status` reads what gc last measured (after every deploy) from
        `.shipyard/disk.json`; it measures only with `measure` or when nothing is recorded.
        """
        import json
        from datetime import UTC, datetime

        record = self.project_dir / DISK_RECORD
        if not measure:
            try:
                known = json.loads(record.read_text(encoding="utf-8"))
                if all(isinstance(known.get(k), int) for k in DISK_GROUPS):
                    return {
                        **{k: known[k] for k in DISK_GROUPS},
                        "measured_at": known.get("measured_at"),
                    }
            except (OSError, ValueError, AttributeError):
                pass  # none yet, or damaged: measured again below
        from shipyard.engine.gc import disk_usage  # only to measure: status reads the record

        state = self.project_dir / ".shipyard"
        releases = [
            folder
            for root in self._environment_roots().values()
            for folder in root.glob("*/releases")
        ]
        usage: dict[str, Any] = disk_usage(
            {
                "environments": [state / "pyenvs"],
                "artifacts": [state / "artifacts"],
                "releases": releases,
                "cache": [state / "cache"],
            }
        )
        usage["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if state.is_dir():  # a project that never ran anything gets no .shipyard/ from status
            staging = record.with_name(f".{record.name}.{os.getpid()}")
            try:
                staging.write_text(json.dumps(usage), encoding="utf-8")
                os.replace(staging, record)
            except OSError:
                pass  # measured all the same; the next status measures again
        return usage

    def rollback(
        self,
        env_name: str | None = None,
        *,
        to: str | None = None,
        wait_lock: float = 0.0,
        created_by: str | None = None,
    ) -> DeploymentView:
        """Back to the previous good deployment (or the one named), as a new deployment."""
        import asyncio

        from shipyard.engine.runner import Deployment, DeployOptions

        plan = self.rollback_plan(env_name, to=to)
        env = self.environment(plan.environment)
        ctx = self._context(env)
        # Each release comes back with its own spec, never today's shipyard.toml.
        specs = {n: ctx.release_spec(n, r)[0] for n, r in plan.releases.items()}
        ctx.components = {**ctx.components, **specs}
        options = DeployOptions(wait_lock=wait_lock, created_by=created_by or "")
        record = asyncio.run(Deployment(ctx, plan, options).run())
        return self.view(record)

    def rollback_plan(self, env_name: str | None = None, *, to: str | None = None) -> Plan:
        """What `rollback` would do (its plan, with the hash a confirmation names)."""
        env = self.environment(env_name)
        good = self._good_deployments(env.name)  # newest first, with what each left active
        if to is not None:
            wanted = self._succeeded(env.name, to, "only a good deployment can be rolled back to")
            found = next(((d, r) for d, r in good if d.id == wanted.id), None)
            if found is None:
                raise UsageError(f"deployment {wanted.id} is older than the history kept here")
            target, releases = found
        else:
            # The newest good deployment whose releases differ from what is active now.
            active = good[0][1] if good else {}
            earlier = [(d, r) for d, r in good[1:] if r != active]
            if not earlier:
                raise UsageError(
                    f"environment {env.name!r} has no earlier good deployment to roll back to",
                    hint="`shipyard history` shows what ran",
                )
            target, releases = earlier[0]
        ctx = self._context(env)
        specs = {name: ctx.release_spec(name, release)[0] for name, release in releases.items()}
        return plan_rollback(
            dataclasses.replace(self.config, components={**self.config.components, **specs}),
            env.name,
            commit=target.commit or "",
            releases=releases,
            rollback_to=target.id,
            current_commit=good[0][0].commit if good else None,
        )

    def promote(
        self,
        source: str,
        target: str,
        deployment_id: str | None = None,
        *,
        created_by: str | None = None,
        wait_lock: float = 0.0,
    ) -> DeploymentView:
        """Deploy to `target` exactly what a deployment of `source` released (default: its
        last good one): the same artifacts by digest, nothing rebuilt, the same release specs
        but for `target`'s own secrets and per-environment overrides, after `target`'s
        preflight. The new deployment (kind `promote`) names its source in `promoted_from`."""
        import asyncio

        from shipyard.engine.runner import Deployment, DeployOptions

        plan, config, specs = self._plan_promote(source, target, deployment_id)
        ctx = self._context(config.environment(target), config)
        ctx.components = {**ctx.components, **specs}
        options = DeployOptions(wait_lock=wait_lock, created_by=created_by or "")
        record = asyncio.run(Deployment(ctx, plan, options).run())
        return self.view(record)

    def plan_promote(self, source: str, target: str, deployment_id: str | None = None) -> Plan:
        """What `promote` would do, without doing it."""
        return self._plan_promote(source, target, deployment_id)[0]

    def _plan_promote(
        self, source: str, target: str, deployment_id: str | None
    ) -> tuple[Plan, Config, dict[str, Component]]:
        """A promotion's plan, the config at its commit and the specs its releases run with."""
        src, dst = self.environment(source), self.environment(target)
        if src.name == dst.name:
            raise UsageError(
                f"cannot promote {src.name} to itself",
                hint="`shipyard rollback` or `shipyard deploy` change one environment",
            )
        record = self._promotion_source(src.name, deployment_id)
        artifacts: dict[str, str] = {}
        for comp in self.store.components(record.id):
            if not comp.release:
                continue
            digest = comp.artifact or self._artifact_of_release(comp.component, comp.release)
            if digest is None:
                raise UsageError(
                    f"deployment {record.id} did not record the artifact of {comp.component}",
                    hint=f"promote the deployment that built it (`shipyard history --env "
                    f"{src.name}`)",
                )
            artifacts[comp.component] = digest
        if not artifacts or not record.commit:
            raise UsageError(f"deployment {record.id} of {src.name} released nothing to promote")
        config = self.config_at(record.commit, work_tree=record.dirty)
        if dst.name not in config.environments:
            raise UsageError(
                f"environment {dst.name!r} is not in {CONFIG_FILE} at {record.commit[:12]}, "
                f"the commit of deployment {record.id}",
                hint="deploy a commit that defines it to the source environment, then promote",
            )
        env = config.environment(dst.name)
        specs = self._promoted_specs(src, env, config, artifacts, record)
        last = self.store.last_good_deployment(dst.name)
        plan = plan_promote(
            dataclasses.replace(config, components={**config.components, **specs}),
            dst.name,
            commit=record.commit,
            artifacts=artifacts,
            promoted_from=record.id,
            source_environment=src.name,
            current_commit=last.commit if last else None,
        )
        return plan, config, specs

    def _promotion_source(self, environment: str, deployment_id: str | None) -> DeploymentRecord:
        if deployment_id is None:
            found = self.store.last_good_deployment(environment)
            if found is None:
                raise UsageError(
                    f"environment {environment!r} has no good deployment to promote",
                    hint=f"deploy to {environment} first",
                )
            return found
        return self._succeeded(
            environment, deployment_id, "only what passed its health checks can be promoted"
        )

    def _succeeded(self, environment: str, deployment_id: str, why: str) -> DeploymentRecord:
        """The named deployment of `environment`, which must have succeeded (UsageError: `why`
        says what only a good one can be used for)."""
        found = self.store.get_deployment(deployment_id)
        if found is None or found.environment != environment:
            raise UsageError(
                f"no deployment {deployment_id!r} in environment {environment!r}",
                hint=f"`shipyard history --env {environment}` lists them",
            )
        if found.status != "succeeded":
            raise UsageError(f"deployment {found.id} did not succeed ({found.status}); {why}")
        return found

    def _artifact_of_release(self, component: str, release: str) -> str | None:
        """The digest a release was made from: recorded by the deployment that made it (a
        release's id is its deployment's id), for a source that only re-activated it."""
        for comp in self.store.components(release):
            if comp.component == component and comp.release == release:
                return comp.artifact
        return None

    def _promoted_specs(
        self,
        src: Environment,
        dst: Environment,
        config: Config,
        artifacts: dict[str, str],
        record: DeploymentRecord,
    ) -> dict[str, Component]:
        """Each source release's own spec, with the target's per-environment settings."""
        from shipyard.config.models import OVERRIDABLE

        ctx = self._context_for_specs(src)
        today = config.components_for(dst)
        specs = {}
        for comp in self.store.components(record.id):
            if comp.component not in artifacts or not comp.release:
                continue
            spec, _commit = ctx.release_spec(comp.component, comp.release)
            mine = today.get(comp.component, spec)
            specs[comp.component] = dataclasses.replace(
                spec, **{key: getattr(mine, key) for key in OVERRIDABLE}
            )
        return specs

    def _context_for_specs(self, env: Environment) -> EngineContext:
        """An engine context that only reads release specs (no secrets are loaded)."""
        from shipyard.effects.artifacts import ArtifactStore
        from shipyard.engine.runner import EngineContext

        return EngineContext(
            config=self.config,
            env=env,
            store=self.store,
            target=self.target(env),
            artifacts=ArtifactStore(self.project_dir / ".shipyard" / "artifacts"),
            repo=self.repo,
            project_prefix=self.project_prefix,
            secrets={},
            redact=Redactor(),
        )

    def _good_deployments(
        self, environment: str, limit: int = 500
    ) -> list[tuple[DeploymentRecord, dict[str, str]]]:
        """Succeeded deployments, newest first, each with every component's release right after
        it (a partial deployment leaves the others where they were). One pass over history."""
        active: dict[str, str] = {}
        result = []
        for d in reversed(self.store.list_deployments(environment, limit=limit)):
            if d.status != "succeeded":
                continue
            for c in self.store.components(d.id):
                if c.release and c.component in self.config.components:
                    active[c.component] = c.release
            result.append((d, dict(active)))
        return result[::-1]

    # --- reading state --------------------------------------------------------------------

    def view(self, record: DeploymentRecord) -> DeploymentView:
        return DeploymentView(record, [c.to_dict() for c in self.store.components(record.id)])

    def deployment(self, deployment_id: str) -> DeploymentView:
        record = self.store.get_deployment(deployment_id)
        if record is None:
            raise UsageError(
                f"no deployment {deployment_id!r}", hint="`shipyard history` lists deployment ids"
            )
        return self.view(record)

    def history(self, env_name: str | None = None, limit: int = 20) -> list[DeploymentView]:
        env = self.environment(env_name)
        records = self.store.list_deployments(env.name, limit=limit)
        target = self.target(env)
        if records and self._may_run(env, target):
            self._check_agent(env, target)
        return [self.view(d) for d in records]

    def events(self, deployment_id: str, after_seq: int = 0) -> list[EventRecord]:
        record = self.deployment(deployment_id).record
        return self.store.events(record.id, after_seq)

    def deployments(
        self,
        env_name: str | None = None,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[DeploymentView]:
        """Deployments newest first (of every environment when `env_name` is None), filtered
        by status and kind, one page of `limit` after `offset`. Never asks an agent."""
        env = None if env_name is None else self.environment(env_name).name
        wanted = (status is not None) or (kind is not None)
        records = self.store.list_deployments(env, limit=None if wanted else offset + limit)
        chosen = [
            d
            for d in records
            if (status is None or d.status == status) and (kind is None or d.kind == kind)
        ]
        return [self.view(d) for d in chosen[offset : offset + limit]]

    def interrupted(self, env_name: str | None = None) -> list[DeploymentRecord]:
        """Unfinished deployments whose orchestrator is gone: no live lease holds the lock
        (it is free, expired, or its holder ran here and died). `recover` finishes them."""
        from shipyard.engine.recovery import owner_is_dead

        env = self.environment(env_name)
        unfinished = self.store.unfinished_deployments(env.name)
        if not unfinished:
            return []
        lock = self.store.get_lock(env.name)
        if (
            lock is not None
            and not lock.expired(self.store.now())
            and not owner_is_dead(lock.owner)
        ):
            return []
        return unfinished

    def environment_status(
        self, env_name: str | None = None, *, measure_disk: bool = False
    ) -> dict[str, Any]:
        """What is active now in an environment (the `status --env` shape of docs/cli.md);
        its `disk` as last measured (by gc), or measured now with `measure_disk`."""
        from shipyard.engine.observe import probe_spec

        env = self.environment(env_name)
        target = self.target(env)
        last = self.store.last_good_deployment(env.name)
        routes: dict[str, str] = {}
        running: dict[tuple[str, str], RunningRelease] = {}
        if self._may_run(env, target):
            routes = self._check_agent(env, target)
            running = target.running()
        made_by: dict[str, tuple[str, str | None]] = {}
        for d in reversed(self.store.list_deployments(env.name, limit=500)):
            if d.status == "succeeded":
                for c in self.store.components(d.id):
                    if c.release:
                        made_by[c.release + "/" + c.component] = (d.id, d.commit)
        components = []
        for name, today in self.config.components_for(env).items():
            release = routes.get(name) or target.current(name)
            comp, commit = self._release_spec(env, target, today, release)
            proc = running.get((name, release)) if release else None
            healthy = None
            if proc is not None and proc.state in ("running", "starting"):
                port = comp.port or proc.port
                healthy = target.probe(probe_spec(comp, port)).ok
            origin = made_by.get(f"{release}/{name}", (None, None))
            components.append(
                {
                    "name": name,
                    "release": release,
                    "commit": commit or origin[1],
                    "healthy": bool(healthy),
                    "deployment_id": origin[0],
                    "state": proc.state if proc else ("stopped" if release else "not deployed"),
                    "port": comp.port,
                    "pid": proc.pid if proc else None,
                }
            )
        return {
            "environment": env.name,
            "last_good_deployment": last.id if last else None,
            "components": components,
            # A person's attention: `shipyard recover` finishes these (or marks them superseded).
            "rollback_failed": [
                {"id": d.id, "error": d.error} for d in self._rollback_failed(env.name)
            ],
            "disk": self.disk_usage(measure=measure_disk),
        }

    def _release_spec(
        self, env: Environment, target: Target, today: Component, release: str | None
    ) -> tuple[Component, str | None]:
        """A release's own spec and commit (today's config for one made before specs)."""
        from shipyard.engine.observe import saved_release_spec

        if release:
            found = saved_release_spec(self.store, target, env.name, today.name, release)
            if found is not None:
                return found
        return today, None

    def health(self, env_name: str | None = None) -> list[ComponentHealth]:
        """Run every component's health check now (through its public port)."""
        from shipyard.engine.observe import probe_spec

        env = self.environment(env_name)
        target = self.target(env)
        running: dict[tuple[str, str], RunningRelease] = {}
        routes: dict[str, str] = {}
        if self._may_run(env, target):
            routes = self._check_agent(env, target)
            running = target.running()
        results = []
        for name, today in self.config.components_for(env).items():
            release = routes.get(name) or target.current(name)
            comp, _commit = self._release_spec(env, target, today, release)
            proc = running.get((name, release)) if release else None
            obs = None
            if proc is not None and proc.state != "stopped":
                obs = self._observe(env, target, probe_spec(comp, comp.port or proc.port))
            results.append(ComponentHealth(name, release, obs))
        bad = [r.name for r in results if not (r.observation and r.observation.ok)]
        if bad:
            raise UnhealthyReport(results, bad, env.name)
        return results

    # --- saved plans: deploy exactly what was shown (MCP, API) -----------------------------

    def save_plan(self, plan: Plan, request: PlanRequest, created_by: str | None = None) -> str:
        """Keep `plan` and the request that made it; returns the plan id for `replan`.

        Old plans go at the same time: older than a day, or beyond each environment's newest
        50. None of an environment whose lock is held goes: a deployment running there may
        have been started from one of them (an MCP `deploy(plan_id)` reads its plan again).
        """
        from datetime import timedelta

        from shipyard.store import PlanRecord, new_id

        plan_id = new_id()
        self.store.save_plan(
            PlanRecord(
                id=plan_id,
                environment=plan.environment,
                plan_hash=plan.plan_hash,
                commit=plan.commit,
                plan={"request": request.to_dict(), "plan": plan.to_dict()},
                created_by=created_by,
            )
        )
        now = self.store.now()
        busy = [
            name
            for name in self.config.environments
            if (lock := self.store.get_lock(name)) is not None and not lock.expired(now)
        ]
        self.store.prune_plans(timedelta(seconds=PLAN_MAX_AGE_S), PLAN_KEEP, protect=busy)
        return plan_id

    def saved_plan(self, plan_id: str) -> PlanRecord:
        found = self.store.get_plan(plan_id.strip())
        if found is None:
            raise UsageError(
                f"no saved plan {plan_id!r}",
                hint="make one with the plan tool (its answer carries the plan_id)",
            )
        return found

    def replan(self, plan_id: str) -> Plan:
        """The saved plan, made again from its request: refused (PreflightError) unless it
        is still the same plan, for the same base, so a deploy runs what was reviewed."""
        saved = self.saved_plan(plan_id)
        request = PlanRequest.from_dict(saved.plan["request"])
        before = saved.plan["plan"]
        now = self.plan(
            request.environment,
            selection=request.selection,
            only=request.only,
            ref=request.ref,
            tests=request.tests,
            migrate=request.migrate,
        )
        changes = []
        if now.commit != saved.commit:
            changes.append(
                f"{request.ref} moved from {(saved.commit or '?')[:12]} to {now.commit[:12]}"
            )
        if now.base_commit != before.get("base_commit"):
            last = self.store.last_good_deployment(now.environment)
            changes.append(
                f"{now.environment} changed: its last good deployment is now "
                f"{last.id if last else 'none'}"
            )
        if now.plan_hash != saved.plan_hash and not changes:
            changes.append(f"what it would do differs: {now.why}")
        if changes:
            raise PreflightError(
                f"plan {saved.id} (hash {saved.plan_hash}) no longer matches the repository "
                f"and the environment: {'; '.join(changes)}; nothing was deployed",
                hint="make a new plan and review it",
            )
        return now

    # --- locks, recovery, down ---------------------------------------------------------------

    def lock_status(self, env_name: str | None = None) -> LockRecord | None:
        return self.store.get_lock(self.environment(env_name).name)

    def lock_release(
        self, env_name: str | None = None, *, force: bool = False
    ) -> LockRecord | None:
        env = self.environment(env_name)
        held = self.store.get_lock(env.name)
        if held is None:
            return None  # nothing to release
        if not force:
            raise UsageError(
                f"the lock of {env.name} is held by deployment {held.deployment_id} "
                f"({held.owner}); releasing another deployment's lock needs --force",
                hint="make sure that deployment is really dead first",
            )
        from shipyard.store import LockOwner

        return self.store.force_release_lock(env.name, by=str(LockOwner.current()))

    def recover(self, env_name: str | None = None) -> list[DeploymentView]:
        """Finish the rollback of every interrupted deployment of an environment.

        Also retries the newest deployment if its rollback failed earlier.
        """
        import asyncio

        from shipyard.engine.recovery import hold_lock, recover_deployment, supersede

        env = self.environment(env_name)
        ctx = self._context(env)
        from shipyard.store import new_id

        holder = new_id()

        async def run() -> list[str]:
            done = await hold_lock(ctx, holder)
            try:
                for record in self._rollback_failed(env.name):
                    newer = self._superseded_by(env.name, record)
                    if newer is not None:
                        reason = (
                            f"superseded: deployment {newer.id} succeeded later and replaced "
                            f"every component it left ({', '.join(self._touched(record))}); "
                            "rolling it back now would undo that newer deployment"
                        )
                        await asyncio.to_thread(supersede, ctx, record.id, reason)
                    else:
                        await recover_deployment(ctx, record.id)
                    done.append(record.id)
            finally:
                self.store.release_lock(env.name, holder)
            return done

        return [self.deployment(i) for i in asyncio.run(run())]

    def _rollback_failed(self, environment: str) -> list[DeploymentRecord]:
        """Deployments whose rollback failed and that nothing finished yet, oldest first."""
        history = self.store.list_deployments(environment, limit=500)
        return [d for d in reversed(history) if d.status == "rollback_failed"]

    def _touched(self, record: DeploymentRecord) -> list[str]:
        return sorted({e.component for e in self.store.snapshot(record.id)})

    def _superseded_by(self, environment: str, record: DeploymentRecord) -> DeploymentRecord | None:
        """The newest good deployment after `record` if, together with the good ones between,
        it replaced every component `record` touched (its rollback is then moot)."""
        left = set(self._touched(record))
        found = None
        for d in reversed(self.store.list_deployments(environment, limit=500)):
            if d.id <= record.id or d.status != "succeeded":
                continue
            left -= {c.component for c in self.store.components(d.id) if c.release}
            found = d
        return found if found is not None and not left else None

    def down(self, env_name: str | None = None, component: str | None = None) -> list[str]:
        from shipyard.targets.local import LocalTarget

        env = self.environment(env_name)
        if component is not None and component not in self.config.components:
            raise UsageError(f"unknown component {component!r}")
        target = self.target(env)
        stopped = target.down(component)
        if component is None and isinstance(target, LocalTarget):
            target.shutdown_agent()
        return stopped


def _agent_restarted(env: Environment) -> str:
    """What a command says when it had to start a dead host agent again."""
    return (
        f"the host agent of {env.name} was not running (its public ports were down): "
        "it was restarted"
    )


class UnhealthyReport(HealthCheckError):
    """`shipyard health` found problems; carries the full report for rendering."""

    def __init__(self, results: list[ComponentHealth], bad: list[str], env: str) -> None:
        super().__init__(
            f"unhealthy in {env}: {', '.join(bad)}",
            hint="`shipyard status --env ENV` shows what runs; the agent log has details",
        )
        self.results = results
