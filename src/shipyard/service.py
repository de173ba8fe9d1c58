"""The one façade every adapter (CLI, HTTP API, MCP) calls.

Adapters parse input and render output; everything else happens here or below:
the service loads config and secrets, opens the store, builds the engine's
context with a target, and turns results into plain records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from shipyard.config import CONFIG_FILE, Component, Config, Environment, load_config
from shipyard.core.graph import Graph
from shipyard.core.plan import Plan, Selection, TestStage, plan_deploy, plan_rollback
from shipyard.core.secrets import Redactor
from shipyard.effects.artifacts import ArtifactStore
from shipyard.effects.config_at_commit import load_config_at, same_config_text
from shipyard.effects.git import Repo
from shipyard.effects.secrets import load_secrets
from shipyard.engine.recovery import hold_lock, owner_is_dead, recover_deployment, supersede
from shipyard.engine.runner import (
    Deployment,
    DeployOptions,
    EngineContext,
    ProgressSink,
    probe_spec,
    saved_release_spec,
    short_redacted,
)
from shipyard.errors import (
    HealthCheckError,
    PreflightError,
    ShipyardError,
    StoreError,
    UsageError,
)
from shipyard.store import DeploymentRecord, EventRecord, LockOwner, LockRecord, Store, new_id
from shipyard.store.urls import normalize_url, sqlite_path
from shipyard.targets.base import Observation, ProbeSpec, RunningRelease, Target
from shipyard.targets.local import LocalTarget

STATE_URL_VARIABLE = "SHIPYARD_STATE_URL"


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


class Shipyard:
    """A project and everything that can be done with it."""

    def __init__(
        self,
        project_dir: Path,
        *,
        sink: ProgressSink | None = None,
        target_factory: Callable[[Environment, Path], Target] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.project_dir = project_dir.resolve()
        self.sink = sink
        self.environ = dict(os.environ) if environ is None else environ
        self._target_factory = target_factory or (lambda env, root: LocalTarget(root))
        self._targets: dict[str, Target] = {}
        self._commit_configs: dict[str, Config] = {}
        self._redactors: dict[str, Redactor] = {}
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
        self._refuse_lost_state_file()
        return Store.open(self.state_url)

    def _refuse_lost_state_file(self) -> None:
        """A missing SQLite state file is created empty, unless releases say it was lost.

        An empty history would make a deployed project look never deployed (a full deploy
        with no previous release to roll back to), so that needs the user's say-so.
        """
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
        values, _location = load_secrets(env.secrets, self.project_dir, self.environ)
        return EngineContext(
            config=config or self.config,
            env=env,
            store=self.store,
            target=self.target(env),
            artifacts=ArtifactStore(self.project_dir / ".shipyard" / "artifacts"),
            repo=self.repo,
            project_prefix=self.project_prefix,
            secrets=values,
            redact=Redactor(values),
            sink=self.sink or (lambda event: None),
        )

    # --- plan and deploy ------------------------------------------------------------------

    def plan(
        self,
        env_name: str | None = None,
        *,
        selection: Selection | None = None,
        only: tuple[str, ...] = (),
        ref: str = "HEAD",
        since: str | None = None,
        tests: TestStage = "none",
        migrate: bool = True,
        allow_dirty: bool = False,
    ) -> Plan:
        """What a deploy would do, without doing it.

        Planned from shipyard.toml as it is at the deployed commit; with `allow_dirty` and
        the commit checked out, from the work tree's (the build uses the work tree too).
        """
        commit = self.repo.resolve(ref)
        work_tree = allow_dirty and commit == self.repo.resolve("HEAD")
        config = self.config_at(commit, work_tree=work_tree)
        env = config.environment(env_name or self.config.project.default_environment)
        base, note = self._base_commit(env, since)
        changed = None
        if base is not None:
            changed = self._project_files(self.repo.changed_files(base, commit))
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
            base_commit=base,
            changed_files=changed,
            selection=selection,
            only=only,
            tests=tests,
            migrate=migrate,
            base_note=note,
        )
        plan = dataclasses.replace(
            plan, config_from="work tree" if work_tree else "commit", config_note=config_note
        )
        if plan.components:
            return plan
        return self._reconcile_plan(env, config, plan)

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
        seen = target.probe(spec)
        return dataclasses.replace(seen, detail=short_redacted(self._redactor(env), seen.detail))

    def _redactor(self, env: Environment) -> Redactor:
        if env.name not in self._redactors:
            try:
                values, _location = load_secrets(env.secrets, self.project_dir, self.environ)
            except ShipyardError:
                values = {}  # no secrets could be read: none can leak from here either
            self._redactors[env.name] = Redactor(values)
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

    def _base_commit(self, env: Environment, since: str | None) -> tuple[str | None, str | None]:
        if since is not None:
            return self.repo.resolve(since), None
        last = self.store.last_good_deployment(env.name)
        if last is None or not last.commit:
            return None, f"no previous good deployment of {env.name}"
        if not self.repo.has_commit(last.commit):
            return None, (
                f"the last good deployment's commit {last.commit[:12]} is not in this "
                "repository (shallow clone or rewritten history)"
            )
        return last.commit, None

    def _project_files(self, paths: list[str]) -> list[str]:
        prefix = self.project_prefix
        if not prefix:
            return paths
        return [p[len(prefix) + 1 :] for p in paths if p.startswith(prefix + "/")]

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
        return self.view(record)

    def rollback(
        self,
        env_name: str | None = None,
        *,
        to: str | None = None,
        wait_lock: float = 0.0,
        created_by: str | None = None,
    ) -> DeploymentView:
        """Back to the previous good deployment (or the one named), as a new deployment."""
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
            wanted = self.store.get_deployment(to)
            if wanted is None or wanted.environment != env.name:
                raise UsageError(
                    f"no deployment {to!r} in environment {env.name!r}",
                    hint=f"`shipyard history --env {env.name}` lists them",
                )
            if wanted.status != "succeeded":
                raise UsageError(
                    f"deployment {wanted.id} did not succeed ({wanted.status}); "
                    "only a good deployment can be rolled back to"
                )
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

    def environment_status(self, env_name: str | None = None) -> dict[str, Any]:
        """What is active now in an environment (the `status --env` shape of docs/cli.md)."""
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
        }

    def _release_spec(
        self, env: Environment, target: Target, today: Component, release: str | None
    ) -> tuple[Component, str | None]:
        """A release's own spec and commit (today's config for one made before specs)."""
        if release:
            found = saved_release_spec(self.store, target, env.name, today.name, release)
            if found is not None:
                return found
        return today, None

    def health(self, env_name: str | None = None) -> list[ComponentHealth]:
        """Run every component's health check now (through its public port)."""
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
        return self.store.force_release_lock(env.name, by=str(LockOwner.current()))

    def recover(self, env_name: str | None = None) -> list[DeploymentView]:
        """Finish the rollback of every interrupted deployment of an environment.

        Also retries the newest deployment if its rollback failed earlier.
        """
        env = self.environment(env_name)
        ctx = self._context(env)
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
