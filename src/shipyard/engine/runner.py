"""The runner: executes a Plan step by step, journals every transition, rolls back on failure.

Steps run as soon as the steps they come `after` have succeeded, so independent
components of one dependency level build and start in parallel (bounded by
`max_parallel`). Every step start, finish and failure is written to the store's
journal before the runner moves on, so a crashed deployment can be recovered
from the journal and the host's actual state (see `restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from shipyard.config import Component, Config, Environment, PythonEnv
from shipyard.core.graph import Graph
from shipyard.core.health import HealthJudge
from shipyard.core.plan import Plan, Step
from shipyard.core.secrets import Finding, Redactor
from shipyard.core.spec import release_document
from shipyard.effects.artifacts import ArtifactStore, build_path_references, input_digest
from shipyard.effects.git import Repo
from shipyard.effects.migrations import IrreversibleMigration, MigrationState
from shipyard.effects.process import child_environment, child_path, run_command
from shipyard.effects.pyenv import (
    VENV,
    EnvStore,
    Interpreter,
    env_digest,
    find_interpreter,
    find_uv,
    git_blob_id,
    pip_index_settings,
)
from shipyard.engine import stages
from shipyard.engine.observe import probe_spec, saved_release_spec, short_redacted
from shipyard.engine.states import DEPLOYMENT_TRANSITIONS, check_transition
from shipyard.errors import (
    AgentError,
    DeploymentFailed,
    PreflightError,
    RollbackFailed,
    SecretsError,
    ShipyardError,
)
from shipyard.store import Store
from shipyard.store.ids import new_id
from shipyard.store.records import (
    ArtifactRecord,
    ComponentRecord,
    DeploymentRecord,
    LockOwner,
    ReleaseSpecRecord,
    SnapshotEntry,
)
from shipyard.targets.base import Observation, ProbeSpec, Target

T = TypeVar("T")

# Every step has a deadline (seconds); `activate` gets the health deadline plus "start".
STEP_DEADLINES: dict[str, float] = {
    "preflight": 120.0,
    "snapshot": 60.0,
    "build": 15 * 60.0,
    "test": 15 * 60.0,
    "release": 5 * 60.0,
    "migrate": 10 * 60.0,
    "start": 30.0,
    "switch": 60.0,
    "verify": 60.0,
    "finish": 120.0,
}
LOCK_TTL = 15.0


@dataclass(frozen=True)
class ProgressEvent:
    """What adapters render live: one journal line."""

    deployment_id: str
    kind: str  # deployment, step, health, log
    step: str | None
    component: str | None
    status: str | None
    message: str | None
    at: float

    @property
    def starts_deployment(self) -> bool:
        """The first line of the deployment a run created. Lines before it belong to dead
        deployments that taking the lock recovered first (they never go back to pending)."""
        return self.kind == "deployment" and self.status == "pending"


ProgressSink = Callable[[ProgressEvent], None]


@dataclass
class DeployOptions:
    """Flags of one deployment."""

    rollback: bool = True
    allow_destructive: bool = False
    allow_irreversible: bool = False
    dirty: bool = False
    wait_lock: float = 0.0
    created_by: str = ""


@dataclass
class EngineContext:
    """Everything the engine needs, injected (a target, a store, a clock, a sink)."""

    config: Config
    env: Environment
    store: Store
    target: Target
    artifacts: ArtifactStore
    repo: Repo
    project_prefix: str  # the project folder relative to the git work-tree root
    secrets: dict[str, str]
    redact: Redactor
    sink: ProgressSink = lambda event: None
    owner: LockOwner = field(default_factory=LockOwner.current)
    lock_ttl: float = LOCK_TTL
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Secrets (and leak) checks run first in preflight, before anything is touched; each
    # error refuses the deployment (exit 3). Rollbacks skip them: they restore what ran.
    preflight_findings: Callable[[Plan], list[Finding]] | None = None
    # The specs this deployment activates, component → resolved settings (default: the
    # config's, for its environment). A rollback passes the specs of the releases it restores.
    components: dict[str, Component] = field(default_factory=dict)
    # Python environments of components (default: under the project's .shipyard/, with uv
    # when it runs here and pip's index settings).
    pyenvs: EnvStore | None = None
    _specs: dict[tuple[str, str], tuple[Component, str | None]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        if not self.components:
            self.components = self.config.components_for(self.env)

    @property
    def python_envs(self) -> EnvStore:
        if self.pyenvs is None:
            state = self.config.root / ".shipyard"
            self.pyenvs = EnvStore(
                state / "pyenvs", state / "cache", find_uv(), pip_index_settings()
            )
        return self.pyenvs

    @property
    def graph(self) -> Graph:
        return graph_of(self.components)

    def release_spec(self, name: str, release: str) -> tuple[Component, str | None]:
        """(spec, commit) of one release: what it was deployed with, never today's config.

        From the store; else from `release.json` beside the release (a store that was
        replaced); else, for a release made before specs were kept, the config's.
        """
        key = (name, release)
        if key not in self._specs:
            found = saved_release_spec(self.store, self.target, self.env.name, name, release)
            if found is None:
                fallback = self.components.get(name) or self.config.components_for(self.env).get(
                    name
                )
                if fallback is None:
                    raise DeploymentFailed(
                        f"{name} release {release} has no saved spec and {name} is not in "
                        "the config any more",
                        hint=f"add [components.{name}] back, or stop it with "
                        f"`shipyard down --component {name}`",
                    )
                return fallback, None
            self._specs[key] = found
        return self._specs[key]

    def save_release_spec(
        self,
        comp: Component,
        release: str,
        commit: str,
        store_write: Callable[[ReleaseSpecRecord], None] | None = None,
    ) -> None:
        """Keep a new release's spec in the store and beside it as `release.json`; the
        store's copy through `store_write` if given (a deployment's journal writer)."""
        document = release_document(comp, environment=self.env.name, release=release, commit=commit)
        (store_write or self.store.save_release_spec)(
            ReleaseSpecRecord(
                environment=self.env.name,
                component=comp.name,
                release=release,
                commit=commit,
                spec=document["spec"],
            )
        )
        self.target.write_release_document(comp.name, release, document)
        self._specs[(comp.name, release)] = (comp, commit)


def graph_of(components: Mapping[str, Component]) -> Graph:
    """The dependency graph of these components (dependencies outside the set are ignored)."""
    return Graph(
        {n: tuple(d for d in c.depends_on if d in components) for n, c in components.items()}
    )


class StepFailed(DeploymentFailed):
    """A step failed; carries the step and component for the rollback reason."""

    def __init__(self, step: Step, cause: ShipyardError | str) -> None:
        text = cause.message if isinstance(cause, ShipyardError) else cause
        where = f"step {step.id}"
        super().__init__(f"{where} failed: {text}", hint=getattr(cause, "hint", None))
        self.step = step
        self.cause = cause


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Write:
    """One queued write of a JournalWriter."""

    write: Callable[..., object]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: object = None
    done: Future[None] = field(default_factory=Future)


class JournalWriter:
    """A deployment's journal and component records, written in order on a thread of their own.

    Each write took 1–4 ms of the event loop (SQLAlchemy building the statement, then SQLite),
    about 20 per component. Here the loop only queues them; one thread writes them, in the
    order they were made, everything queued meanwhile in one transaction. The durability order
    is kept by `durable()`: every host operation (`_settled`) and every direct store call of
    the deployment first waits until everything journaled before it is written, so the journal
    never lags behind what was done to the host. A failed write is raised by the next
    `durable()`/`wait()`, in the step that waited.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipyard-journal")
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._last: Future[None] | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self._queue(_Write(write, args, kwargs))

    def replace(self, key: object, write: Callable[..., object], *args: Any) -> None:
        """Queue a write that replaces everything about `key` (a component's record): of
        several for one key in one batch only the newest is written. The batch commits as
        one, so no state in between was ever visible anyway."""
        self._queue(_Write(write, args, {}, key))

    def _queue(self, entry: _Write) -> None:
        with self._lock:  # also from a host thread (a release's spec): `_last` stays the last
            self._pending.append(entry)
            first = len(self._pending) == 1
            self._last = entry.done
        if first:  # otherwise the drain already scheduled takes it too
            self._thread.submit(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        newest = {e.key: i for i, e in enumerate(batch) if e.key is not None}
        todo = [e for i, e in enumerate(batch) if e.key is None or newest[e.key] == i]
        try:
            with self._store.batch("write the deployment's journal"):
                for entry in todo:
                    entry.write(*entry.args, **entry.kwargs)
        except Exception:
            # The transaction was rolled back: write them one by one, keeping the good ones.
            for entry in todo:
                try:
                    entry.write(*entry.args, **entry.kwargs)
                except Exception as exc:  # kept for the step that waits next
                    if self._error is None:
                        self._error = exc
        for entry in batch:
            with contextlib.suppress(InvalidStateError):  # nobody may cancel it, but never hang
                entry.done.set_result(None)

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def durable(self) -> None:
        """Return once every write queued so far is in the store (without blocking the loop)."""
        last = self._last
        if last is not None and not last.done():
            # Shielded: a cancelled step must not cancel the write it waited for (wrap_future
            # would), which would leave the writes after it unconfirmed and their waiters stuck.
            await asyncio.shield(asyncio.wrap_future(last))
        self._raise()

    def wait(self) -> None:
        """`durable()` for synchronous code (blocks the caller)."""
        last = self._last
        if last is not None:
            last.result()
        self._raise()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


# What `_settled` waits for before a host operation: the running deployment's journal.
_durable: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "shipyard_durable", default=None
)


class Deployment:
    """One run of a Plan against one environment."""

    def __init__(self, ctx: EngineContext, plan: Plan, options: DeployOptions) -> None:
        self.ctx = ctx
        self.plan = plan
        self.options = options
        self.id = new_id()
        self.release = self.id  # every new release of this deployment shares its id
        self.status = "pending"
        self.digests: dict[str, str] = dict(plan.artifacts)  # a promotion's are known already
        self.ports: dict[str, int] = {}  # component → private port of its new release
        self.snapshot: dict[str, SnapshotEntry] = {}
        self.export_dir: Path | None = None
        self._export_lock = asyncio.Lock()
        # Commands (build, test, migrate) and host operations (unpack a release, start or stop a
        # process) have separate limits, so one level's releases and starts never queue behind
        # the next level's builds.
        self._slots = asyncio.Semaphore(ctx.config.project.max_parallel)
        self._host_slots = asyncio.Semaphore(ctx.config.project.max_parallel)
        self._records: dict[str, ComponentRecord] = {}
        self._files_cache: dict[str, str] | None = None
        self._files_lock = threading.Lock()
        # Digests of every component this deployment asked about (dependencies outside the
        # selection too), each with its Python environment's digest: (artifact, pyenv).
        self._digest_memo: dict[str, tuple[str, str | None]] = {}
        self._digest_lock = threading.RLock()
        self._interpreters: dict[str | None, Interpreter] = {}
        self._env_locks: dict[str, asyncio.Lock] = {}
        self.committed = False
        self.leased = False
        self.writes = JournalWriter(ctx.store)

    # --- journal -------------------------------------------------------------------------

    def journal(
        self,
        kind: str,
        *,
        step: str | None = None,
        component: str | None = None,
        status: str | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        safe = self.ctx.redact(message) if message else None
        self.writes.submit(
            self.ctx.store.append_event,
            self.id,
            kind,
            step=step,
            component=component,
            status=status,
            message=safe,
            data=self.ctx.redact.data(data) if data is not None else None,
            at=self.ctx.store.now(),  # when it happened, not when the writer got to it
        )
        self.ctx.sink(
            ProgressEvent(self.id, kind, step, component, status, safe, self.ctx.monotonic())
        )

    def set_status(self, new: str, error: str | None = None) -> None:
        check_transition(DEPLOYMENT_TRANSITIONS, self.status, new)
        fields: dict[str, Any] = {"status": new}
        if new == "running":
            fields["started_at"] = _now()
        if new in ("succeeded", "rolled_back", "rollback_failed") or (
            new == "failed" and not self.options.rollback
        ):
            fields["finished_at"] = _now()
        if new == "failed" and self.status == "pending":
            fields["started_at"] = fields["finished_at"] = _now()
        if error is not None:
            fields["error"] = self.ctx.redact(error)
        self.writes.wait()  # the status after everything journaled before it
        self.ctx.store.update_deployment(self.id, **fields)
        self.status = new
        self.journal("deployment", status=new, message=error)

    def component_record(self, name: str, **changes: Any) -> None:
        current = self._records.get(name) or ComponentRecord(
            deployment_id=self.id, component=name, host=self.ctx.target.host
        )
        for key in ("error", "health"):  # text that came from the release or a command
            if changes.get(key) is not None:
                changes[key] = self.ctx.redact.data(changes[key])
        updated = current.replace(**changes)
        self._records[name] = updated
        self.writes.replace(("component", name), self.ctx.store.set_component, updated)

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> DeploymentRecord:
        """Lock, execute, roll back on failure, unlock. Returns the final record."""
        ctx = self.ctx
        from shipyard.engine.recovery import hold_lock

        await hold_lock(ctx, self.id, wait=self.options.wait_lock)
        try:
            ctx.store.create_deployment(
                DeploymentRecord(
                    id=self.id,
                    environment=ctx.env.name,
                    kind=self.plan.kind,
                    commit=self.plan.commit,
                    base_commit=self.plan.base_commit,
                    plan_hash=self.plan.plan_hash,
                    dirty=self.options.dirty,
                    rollback_of=self.plan.rollback_to,
                    promoted_from=self.plan.promoted_from,
                    created_by=self.options.created_by or str(ctx.owner),
                    options={
                        "tests": self.plan.tests,
                        "migrate": self.plan.migrate,
                        "rollback": self.options.rollback,
                        "components": list(self.plan.components),
                    },
                )
            )
            self.journal("deployment", status="pending", message=self.plan.why)
            durable = _durable.set(self.writes.durable)  # tasks made from here inherit it
            heartbeat = asyncio.create_task(self._heartbeat())
            try:
                await self._execute()
            finally:
                heartbeat.cancel()
                _durable.reset(durable)
        finally:
            try:
                self.writes.wait()
            finally:
                self.writes.close()
                ctx.store.release_lock(ctx.env.name, self.id)
                self._cleanup_export()
        record = ctx.store.get_deployment(self.id)
        assert record is not None
        return record

    async def _heartbeat(self) -> None:
        while True:
            await self.ctx.sleep(self.ctx.lock_ttl / 3)
            await _settled(self.ctx.store.heartbeat, self.ctx.env.name, self.id, self.ctx.lock_ttl)
            if self.leased:
                try:
                    await self._lease()
                except ShipyardError as exc:
                    # The host undid the switch on its own (this process stalled past the
                    # lease): the rollback will find that state; keep the journal honest.
                    self.leased = False
                    self.journal("lease", status="lapsed", message=exc.message)

    async def _lease(self) -> None:
        """Set or renew the host's lease: should this process die before the commit point,
        the agent routes back to the snapshot releases and stops the new ones on its own."""
        revert = [(name, self.snapshot[name].release) for name in self.snapshot]
        discard = [
            (name, self.plan.releases.get(name, self.release))
            for name in self.plan.components
            if self.plan.releases.get(name, self.release) != self.snapshot[name].release
        ]
        await _settled(self.ctx.target.lease, self.id, self.ctx.lock_ttl, revert, discard)
        self.leased = True

    async def _end_lease(self) -> None:
        if self.leased:
            self.leased = False
            await _settled(_end_lease_quietly, self.ctx, self.id)

    async def _execute(self) -> None:
        self.set_status("running")
        try:
            await self._run_steps()
        except (Exception, asyncio.CancelledError) as exc:
            if self.committed:
                await self._finish_forward(exc)
                return
            reason = _reason(exc)
            if not self.snapshot:
                # Refused or failed before anything changed: nothing to undo.
                self.set_status("failed", reason)
                self.writes.wait()
                self.ctx.store.update_deployment(self.id, finished_at=_now())
                if isinstance(exc, ShipyardError):
                    raise
                raise DeploymentFailed(f"deployment {self.id} failed: {reason}") from None
            self.set_status("failed", reason)
            if not self.options.rollback:
                raise DeploymentFailed(
                    f"deployment {self.id} failed: {reason}",
                    hint="it was left as it failed (--no-rollback); "
                    f"`shipyard rollback --env {self.ctx.env.name}` undoes it",
                ) from None
            self.set_status("rolling_back", reason)
            try:
                try:
                    await restore(self.ctx, self, list(self.plan.components))
                finally:
                    await self._end_lease()
            except Exception as rollback_error:  # an unexpected one is a failed rollback too
                said = _reason(rollback_error)
                self.set_status("rollback_failed", f"{reason}; rollback: {said}")
                raise RollbackFailed(
                    f"deployment {self.id} failed ({reason}) and its rollback failed: {said}",
                    hint=f"run `shipyard recover --env {self.ctx.env.name}` to try again; "
                    "check `shipyard status` for what is running",
                ) from None
            self.set_status("rolled_back", reason)
            if isinstance(exc, PreflightError):
                # Refused at a component's migrate step (its tool's checks need the release):
                # nothing was migrated or switched; a refusal, not a failure.
                raise PreflightError(
                    f"deployment {self.id} refused and rolled back: {reason}", hint=exc.hint
                ) from None
            # Interrupted (Ctrl-C) or failed, the outcome is the same: rolled back, exit 1.
            raise DeploymentFailed(
                f"deployment {self.id} failed and was rolled back: {reason}",
                hint=getattr(exc, "hint", None) or f"see `shipyard logs {self.id[:13]}`",
            ) from None
        self.set_status("succeeded")
        await prune_releases(self.ctx, self.plan.components)

    async def _finish_forward(self, exc: BaseException) -> None:
        """A failure after the commit point: finish the deployment, never roll it back."""
        self.journal(
            "finish",
            step="finish",
            status="incomplete",
            message=f"after the commit point: {_reason(exc)}; finishing forward",
        )
        new = {n: self.plan.releases.get(n, self.release) for n in self.plan.components}
        problems = await finish_deployment(self.ctx, self.id, new, self.snapshot, self.journal)
        if problems:
            self.journal("finish", step="finish", status="incomplete", message="; ".join(problems))
        self.set_status("succeeded")
        await prune_releases(self.ctx, self.plan.components)

    async def _run_steps(self) -> None:
        done: dict[str, asyncio.Future[None]] = {
            s.id: asyncio.get_running_loop().create_future() for s in self.plan.steps
        }

        async def run_one(step: Step) -> None:
            for dep in step.after:
                await done[dep]
            await self._run_step(step)
            done[step.id].set_result(None)

        tasks = [asyncio.create_task(run_one(s), name=s.id) for s in self.plan.steps]
        if any(s.kind == "build" for s in self.plan.steps):
            tasks.append(asyncio.create_task(_look(self._warm_digests), name="digests"))
        try:
            # The first failure wins; the rest are cancelled before rollback starts.
            for finished in asyncio.as_completed(tasks):
                await finished
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for fut in done.values():
                if not fut.done():
                    fut.cancel()

    def step_deadline(self, step: Step) -> float:
        """How long a step may take before it fails (and the deployment rolls back)."""
        if step.kind == "activate" and step.component:
            return self.ctx.components[step.component].health.deadline + STEP_DEADLINES["start"]
        return STEP_DEADLINES[step.kind]

    async def _run_step(self, step: Step) -> None:
        handler = getattr(self, f"_step_{step.kind}")
        # `activate` takes a slot only for starting its process (in `_step_activate`): waiting
        # for a release to become healthy is not work, and holding a slot for the whole health
        # window (`stable_for`, default 1 s) kept the next level's builds waiting.
        slots = {
            "build": self._slots,
            "test": self._slots,
            "migrate": self._slots,
            "release": self._host_slots,
        }.get(step.kind)
        started = self.ctx.monotonic()
        deadline = self.step_deadline(step)
        self.journal("step", step=step.id, component=step.component, status="running")
        try:
            try:
                # The step is in the journal before anything it does reaches the host.
                await self.writes.durable()
                if slots is not None:
                    async with slots:
                        await asyncio.wait_for(handler(step), deadline)
                else:
                    await asyncio.wait_for(handler(step), deadline)
            except TimeoutError:
                raise DeploymentFailed(
                    f"{step.id} did not finish within its deadline of {deadline:g}s",
                    hint="find what hangs in `shipyard logs`; raise the health deadline if the "
                    "component is just slow to start",
                ) from None
            except ShipyardError:
                raise
            except OSError as exc:  # a file or folder problem on this machine, said plainly
                raise DeploymentFailed(
                    f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")
                ) from None
            except Exception as exc:  # a bug must still end as this step's failure
                raise DeploymentFailed(
                    f"unexpected error in {step.id}: {type(exc).__name__}: {exc}",
                    hint="this is a bug in shipyard; the deployment was handled as failed",
                ) from None
        except asyncio.CancelledError:
            self.journal("step", step=step.id, component=step.component, status="cancelled")
            raise
        except ShipyardError as exc:
            self.journal(
                "step",
                step=step.id,
                component=step.component,
                status="failed",
                message=exc.message,
            )
            if step.component:
                self.component_record(step.component, status="failed", error=exc.message)
            if isinstance(exc, PreflightError):
                raise
            raise StepFailed(step, exc) from None
        self.journal(
            "step",
            step=step.id,
            component=step.component,
            status="succeeded",
            data={"duration_s": round(self.ctx.monotonic() - started, 3)},
        )

    # --- steps -------------------------------------------------------------------------------

    async def _step_preflight(self, step: Step) -> None:
        ctx = self.ctx
        if ctx.preflight_findings is not None and self.plan.kind not in ("rollback", "reconcile"):
            await self._check_secrets(step, ctx.preflight_findings)
        await _settled(ctx.target.prepare)
        needed = {n: ctx.components[n].secrets for n in self.plan.components}
        missing = sorted({s for names in needed.values() for s in names if not ctx.secrets.get(s)})
        if missing:
            raise PreflightError(
                f"secrets missing for environment {ctx.env.name!r}: {', '.join(missing)}",
                hint="add them to the environment's secrets source",
            )
        await self._check_public_ports()
        usage = shutil.disk_usage(
            ctx.artifacts.root.parent if ctx.artifacts.root.parent.exists() else ctx.config.root
        )
        if usage.free < 100 * 1024 * 1024:
            raise PreflightError(
                f"only {usage.free // (1024 * 1024)} MiB free on the build disk",
                hint="free some space (old artifacts live in .shipyard/artifacts)",
            )
        for name, digest in self.plan.artifacts.items():
            if not ctx.artifacts.has(name, digest):
                raise PreflightError(
                    f"the artifact {digest[:12]} of {name} is no longer in "
                    f"{ctx.artifacts.root}: it cannot be promoted as built",
                    hint="deploy the source environment again (it rebuilds the artifact), "
                    "then promote that deployment",
                )
        if self.plan.kind in ("rollback", "reconcile"):
            for name, release in self.plan.releases.items():
                if not ctx.target.has_release(name, release):
                    raise PreflightError(
                        f"release {release} of {name} is no longer on {ctx.target.host}",
                        hint="it was pruned; deploy that commit again instead",
                    )
        else:
            await _settled(self._check_pending_migrations)

    async def _check_secrets(self, step: Step, check: Callable[[Plan], list[Finding]]) -> None:
        """Every finding journaled (names, places, fingerprints: never a value); any error
        refuses the deployment, listing them all."""
        findings = await _look(check, self.plan)
        for finding in findings:
            self.journal(
                "secrets",
                step=step.id,
                status=finding.severity,
                message=f"[{finding.rule}] {finding.message}",
                data={"rule": finding.rule, "name": finding.name, "location": finding.location},
            )
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            raise SecretsError(
                f"{len(errors)} problem(s) with the secrets of {self.ctx.env.name!r} "
                "(or leaked in the deployed commit):\n  "
                + "\n  ".join(f"[{f.rule}] {f.message}" for f in errors),
                hint=f"`shipyard secrets check --env {self.ctx.env.name}` and `shipyard secrets "
                "scan` list every finding (values are never shown); `shipyard:allow` on a line "
                "or a .shipyardignore entry allows what is meant to be there",
            )

    async def _check_public_ports(self) -> None:
        """A public port held by another process is found now, not at `switch`."""
        ctx = self.ctx
        routed = await _look(ctx.target.routed_ports)
        ours = set(routed.values())
        for name in self.plan.components:
            port = ctx.components[name].port
            if port is None or port in ours:
                continue
            if not await _look(ctx.target.port_available, port):
                raise PreflightError(
                    f"port {port} of component {name} is already in use by another process "
                    f"on {ctx.target.host}",
                    hint=f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it), "
                    f"or change components.{name}.port",
                )

    def _check_pending_migrations(self) -> None:
        """Refuse destructive or irreversible pending `sql` migrations unless allowed (exit 3);
        the other tools' steps are checked by the migrate step, from the new release."""
        ctx = self.ctx
        if not self.plan.migrate:
            return
        for name in self.plan.components:
            comp = ctx.components[name]
            if comp.migrations is None or comp.migrations.tool != "sql":
                continue
            state = stages.sql_state_at(
                repo=ctx.repo,
                project_prefix=ctx.project_prefix,
                comp=comp,
                commit=self.plan.commit,
                work_tree=self.options.dirty,
                target=ctx.target,
                env=self.release_env(comp, ctx.target.current(name) or ""),
            )
            stages.check_migrations(
                name,
                state,
                allow_destructive=self.options.allow_destructive,
                allow_irreversible=self.options.allow_irreversible,
            )

    async def _step_snapshot(self, step: Step) -> None:
        ctx = self.ctx
        routes, (last_good, good_records) = await asyncio.gather(
            _look(ctx.target.routes), _look(_last_good, ctx.store, ctx.env.name)
        )
        good_components = {c.component: c for c in good_records}

        async def entry_of(name: str) -> SnapshotEntry:
            comp = ctx.components[name]
            release = routes.get(name) or await _look(ctx.target.current, name)
            revision = None
            # Only `sql` reads a revision without a release's files; for the other tools a
            # first deploy's revision is read by its migrate step, from the new release.
            if comp.migrations is not None and (release or comp.migrations.tool == "sql"):
                revision = await _settled(
                    ctx.target.migration_revision,
                    name,
                    release or "",
                    comp.migrations,
                    self.release_env(comp, release or ""),
                )
            good = good_components.get(name)
            commit = None
            if release:
                commit = (await _look(ctx.release_spec, name, release))[1]
            if commit is None and last_good and good and good.release == release:
                commit = last_good.commit
            return SnapshotEntry(
                component=name,
                host=ctx.target.host,
                release=release,
                artifact=good.artifact if good and good.release == release else None,
                migration_revision=revision,
                commit=commit,
                deployment_id=last_good.id if last_good and good else None,
            )

        # Every component at once: each may ask the host and the store a few questions.
        results = await asyncio.gather(
            *(entry_of(name) for name in self.plan.components), return_exceptions=True
        )
        entries = [_raised(r) for r in results]
        for entry in entries:
            self.snapshot[entry.component] = entry
            self.component_record(entry.component, previous_release=entry.release, status="pending")
        # Queued after the records, like them; the lease (a host operation) waits for both.
        self.writes.submit(ctx.store.save_snapshot, self.id, entries)
        await self._lease()

    async def _export(self) -> Path:
        async with self._export_lock:
            if self.export_dir is None:
                folder = Path(tempfile.mkdtemp(prefix=f"shipyard-build-{self.id[:8]}-"))
                if self.options.dirty:
                    await _settled(_copy_work_tree, self.ctx.repo, folder)
                else:
                    await _settled(self.ctx.repo.export, self.plan.commit, folder)
                self.export_dir = folder
            return self.export_dir

    def _cleanup_export(self) -> None:
        if self.export_dir is not None:
            shutil.rmtree(self.export_dir, ignore_errors=True)

    async def _step_build(self, step: Step) -> None:
        ctx = self.ctx
        name = step.component
        assert name is not None
        comp = ctx.components[name]
        # Usually computed already (`_warm_digests`): then no thread is needed to read it.
        known = self._digest_memo.get(name)
        if known is None:
            known = await _look(self._component_digest, name)
        digest, env_digest = known
        self.digests[name] = digest
        self.component_record(name, status="building", artifact=digest, started_at=_now())
        if ctx.artifacts.has(name, digest):
            self._built(step, name, digest, "reused", "already built")
            return
        export = await self._export()
        build_dir = export / self.ctx.project_prefix / comp.path
        env_path = None
        if comp.python is not None and env_digest is not None:
            env_path = await self._python_env(step, comp, comp.python, env_digest, build_dir)
        if comp.build:
            await run_command(
                comp.build,
                cwd=build_dir,
                env=self._build_env([str(env_path / "bin")] if env_path else []),
                timeout=STEP_DEADLINES["build"],
                where=f"build of {name}",
                redact=ctx.redact,
            )
        source = build_dir / comp.artifact
        if not source.is_dir():
            raise DeploymentFailed(
                f"the build of {name} did not produce its artifact folder {comp.artifact!r}",
                hint=f"check components.{name}.artifact and the build command",
            )
        stuck = await _look(build_path_references, source, export)
        if stuck:
            shown = "; ".join(stuck[:5]) + (
                f"; and {len(stuck) - 5} more" if len(stuck) > 5 else ""
            )
            raise DeploymentFailed(
                f"the artifact of {name} would break once its build folder is deleted: {shown}",
                hint="a virtual environment made by `build` keeps the build folder's path: "
                f'declare components.{name}.python = {{ requirements = "requirements.txt" }} '
                "instead (shipyard builds a relocatable environment), or run tools as "
                "`python -m NAME` rather than by their script",
            )
        links: dict[str, Path] = {}
        if env_path is not None:
            if (source / VENV).exists():
                raise DeploymentFailed(
                    f"the artifact of {name} has a {VENV} folder of its own, where its Python "
                    "environment goes",
                    hint=f"do not create or commit {VENV}: shipyard builds it from "
                    f"components.{name}.python",
                )
            links[VENV] = env_path
        path, size = await _settled(
            functools.partial(
                ctx.artifacts.put,
                name,
                digest,
                source,
                links=links,
                metadata={"pyenv": env_digest} if env_digest else {},
            )
        )
        # Queued: written in order with the journal, before the release step reaches the host.
        self.writes.submit(
            ctx.store.record_artifact,
            ArtifactRecord(
                component=name,
                digest=digest,
                path=str(path),
                size_bytes=size,
                created_at=_now(),
                build_command=comp.build,
                commit=self.plan.commit,
                dirty=self.options.dirty,
            ),
        )
        self._built(step, name, digest, "built", f"({size} bytes)")

    def _warm_digests(self) -> None:
        """Compute every component's digest while preflight runs, so that a build finds its
        own ready instead of listing and hashing on its way to the command (under load
        that was 20-70 ms of each level's critical path). A failure is left for the build
        step, which asks again and says why."""
        for name in self.plan.components:
            with contextlib.suppress(Exception):
                self._component_digest(name)

    def _component_digest(self, name: str) -> tuple[str, str | None]:
        """The artifact digest of a component and its Python environment's digest: a
        function of its inputs, build settings, environment and its dependencies' digests
        (computed the same way whether or not they are in this deployment)."""
        with self._digest_lock:
            if name not in self._digest_memo:
                comp = self.ctx.components[name]
                files = self._input_files()
                deps = {d: self._component_digest(d)[0] for d in comp.depends_on}
                env = self._env_digest(comp, comp.python, files) if comp.python else None
                digest = input_digest(comp, files, self.ctx.config.project.global_inputs, deps, env)
                self._digest_memo[name] = (digest, env)
            return self._digest_memo[name]

    def _env_digest(self, comp: Component, spec: PythonEnv, files: Mapping[str, str]) -> str:
        relative = os.path.normpath(os.path.join(comp.path, spec.lock_file))
        if self.options.dirty:
            file = self.ctx.repo.toplevel() / self.ctx.project_prefix / relative
            lock_id = git_blob_id(file.read_bytes()) if file.is_file() else None
        else:
            lock_id = files.get(relative)
        if lock_id is None:
            raise DeploymentFailed(
                f"{comp.name}: {relative} (from components.{comp.name}.python) is not in "
                f"commit {self.plan.commit[:12]}",
                hint="commit it (the environment is built from the committed file)",
            )
        interpreter = self._interpreter(comp, spec.version)
        return env_digest(spec, lock_id, interpreter, self.ctx.python_envs.tool)

    def _interpreter(self, comp: Component, version: str | None) -> Interpreter:
        if version not in self._interpreters:
            found = find_interpreter(version, self.ctx.python_envs.uv)
            if found is None:
                raise DeploymentFailed(
                    f"{comp.name}: no Python {version or '3'} on this machine "
                    "(shipyard's own interpreter is never used for an application)",
                    hint=f"install python{version or '3'}, or change "
                    f"components.{comp.name}.python.version",
                )
            self._interpreters[version] = found
        return self._interpreters[version]

    async def _python_env(
        self, step: Step, comp: Component, spec: PythonEnv, digest: str, folder: Path
    ) -> Path:
        """The component's environment, built unless one with its digest exists already."""
        envs = self.ctx.python_envs
        async with self._env_locks.setdefault(digest, asyncio.Lock()):
            if envs.has(digest):
                self.journal(
                    "pyenv",
                    step=step.id,
                    component=comp.name,
                    status="reused",
                    message=f"python environment {digest[:12]} reused (nothing installed)",
                    data={"digest": digest},
                )
                return envs.path(digest)
            built = await envs.build(
                digest,
                spec,
                folder,
                self._interpreter(comp, spec.version),
                where=f"python environment of {comp.name}",
                redact=self.ctx.redact,
                timeout=STEP_DEADLINES["build"],
            )
            self.journal(
                "pyenv",
                step=step.id,
                component=comp.name,
                status="built",
                message=f"python environment {digest[:12]} installed with {built.tool}: "
                f"{built.packages} packages in {built.seconds:.1f}s",
                data={"digest": digest, "tool": built.tool, "packages": built.packages},
            )
            return envs.path(digest)

    def _built(self, step: Step, name: str, digest: str, how: str, note: str) -> None:
        self.journal(
            "build",
            step=step.id,
            component=name,
            status=how,
            message=f"artifact {digest[:12]} {note}",
            data={"digest": digest},
        )
        self.component_record(name, status="built")

    def _input_files(self) -> dict[str, str]:
        """Project-relative path → blob id (or content hash for a dirty build), read once."""
        with self._files_lock:  # parallel builds ask at the same time: list the tree once
            return self._list_input_files()

    def _list_input_files(self) -> dict[str, str]:
        if self._files_cache is None:
            prefix = self.ctx.project_prefix
            strip = len(prefix) + 1 if prefix else 0
            if self.options.dirty:
                paths = [
                    p
                    for p in self.ctx.repo.tracked_and_untracked()
                    if not prefix or p.startswith(prefix + "/")
                ]
                hashed = self.ctx.repo.work_tree_digest(paths)
                self._files_cache = {p[strip:]: h for p, h in hashed.items()}
            else:
                entries = self.ctx.repo.tree(self.plan.commit, prefix)
                self._files_cache = {e.path[strip:]: e.blob for e in entries}
        return self._files_cache

    def _build_env(self, first: Iterable[str] = ()) -> dict[str, str]:
        # Builds see no secrets: one artifact serves every environment.
        env = {k: v for k, v in child_environment().items() if not k.startswith("SHIPYARD_")}
        env["PATH"] = search_path(self.ctx, first)
        env["SHIPYARD_COMMIT"] = self.plan.commit
        return env

    def release_env(self, comp: Component, release: str) -> dict[str, str]:
        return component_env(self.ctx, comp, release, self.plan.commit)

    def _dependency_urls(self, comp: Component) -> dict[str, str]:
        # Dependencies in this deployment are reached on their new release's private port.
        return service_urls(self.ctx, comp.depends_on, self.ports)

    async def _step_release(self, step: Step) -> None:
        name = step.component
        assert name is not None
        comp = self.ctx.components[name]
        artifact = self.ctx.artifacts.path(name, self.digests[name])
        env = self.release_env(comp, self.release)
        await _settled(self._unpack, comp, artifact, env)
        self.component_record(name, release=self.release, artifact=self.digests[name])

    def _unpack(self, comp: Component, artifact: Path, env: Mapping[str, str]) -> None:
        """Install the release and keep its spec, in one thread. The store's copy of the spec
        is queued with the journal (written before anything that follows reaches the host),
        not written here behind the journal writer's transaction."""
        self.ctx.target.install(comp.name, self.release, artifact, env)
        self.ctx.save_release_spec(
            comp,
            self.release,
            self.plan.commit,
            lambda record: self.writes.submit(self.ctx.store.save_release_spec, record),
        )

    async def _step_test(self, step: Step) -> None:
        name = step.component
        assert name is not None
        comp = self.ctx.components[name]
        stage = self.plan.tests
        env = {
            **child_environment(),
            **self.release_env(comp, self.release),
            **self._dependency_urls(comp),
            **service_urls(self.ctx, self.ports, self.ports),  # every new release, for e2e tests
        }
        await stages.run_tests(
            component=name,
            stage=stage,
            command=comp.tests[stage],
            cwd=self.ctx.target.release_dir(name, self.release),
            env=env,
            timeout=STEP_DEADLINES["test"],
            redact=self.ctx.redact,
            journal=self.journal,
            step=step.id,
        )

    async def _step_migrate(self, step: Step) -> None:
        name = step.component
        assert name is not None
        comp = self.ctx.components[name]
        assert comp.migrations is not None
        self.component_record(name, status="migrating")
        known: MigrationState | None = None  # the state read below, for the deploy's migrate
        if self.plan.kind in ("rollback", "reconcile"):
            # Down to the revision that deployment ran with, using the files of the
            # release active now (only it knows the newer revisions' down steps).
            release = self.snapshot[name].release or self.plan.releases[name]
            target_revision = _revision_after(self.ctx.store, self.plan.rollback_to or "", name)
        else:
            release, target_revision = self.release, None
            state = await _settled(
                self.ctx.target.migration_state,
                name,
                release,
                comp.migrations,
                self.release_env(comp, release),
            )
            self.journal(
                "migrations",
                step=step.id,
                component=name,
                status="pending",
                message=stages.describe_pending(state),
                data=state.to_dict(),
            )
            entry = self.snapshot[name]
            if entry.release is None and entry.migration_revision != state.current:
                self.snapshot[name] = dataclasses.replace(entry, migration_revision=state.current)
                # Through the writer, in order; the migration (host operation) waits for it.
                self.writes.submit(
                    self.ctx.store.save_snapshot, self.id, list(self.snapshot.values())
                )
            stages.check_migrations(
                name,
                state,
                allow_destructive=self.options.allow_destructive,
                allow_irreversible=self.options.allow_irreversible,
            )
            known = state
        try:
            before, after = await _settled(
                self.ctx.target.migrate,
                name,
                release,
                comp.migrations,
                self.release_env(comp, release),
                target_revision,
                known,  # just read and checked: not read again
            )
        except IrreversibleMigration as exc:
            if target_revision is None:
                raise
            # A rollback over a step without a down step: the code goes back, the schema
            # stays, and the record says so.
            self.journal(
                "migrated",
                step=step.id,
                component=name,
                status="kept",
                message=f"schema left at the newer revision: {exc.message}",
            )
            return
        self.journal(
            "migrated",
            step=step.id,
            component=name,
            status="succeeded",
            message=f"schema {before or '(none)'} → {after or '(none)'}",
            data={"before": before, "after": after},
        )

    async def _step_activate(self, step: Step) -> None:
        name = step.component
        assert name is not None
        comp = self.ctx.components[name]
        release = self.plan.releases.get(name, self.release)
        self.component_record(name, status="starting", release=release)
        warm = (await _look(self.ctx.target.running, name)).get((name, release))
        if warm is not None and warm.state == "running" and warm.port is not None:
            # Still warm (a rollback inside `warm_for`): it has been serving and its links
            # follow the active dependencies; one good probe says it still serves.
            self.ports[name] = warm.port
            self.component_record(name, port=warm.port)
            observation = await observe(self.ctx, probe_spec(comp, warm.port))
            if observation.ok:
                self.journal(
                    "health",
                    step=step.id,
                    component=name,
                    status="ok",
                    data=observation.to_dict(),
                )
                self.component_record(name, status="healthy", health=observation.to_dict())
                return
        pinned = {d: self.plan.releases.get(d, self.release) for d in self.plan.components}
        env = {
            **self.release_env(comp, release),
            **await link_urls(self.ctx, comp, release, pinned),
        }
        if self.plan.kind in ("rollback", "reconcile"):
            commit = (await _look(self.ctx.release_spec, name, release))[1]
            env["SHIPYARD_COMMIT"] = commit or _commit_of_release(self.ctx.store, self.plan, name)
        async with self._host_slots:
            running = await _settled(
                self.ctx.target.start, name, release, comp.start, env, comp.stop_timeout
            )
        if running.port is not None:
            self.ports[name] = running.port
        self.component_record(name, port=running.port)
        observation = await wait_healthy(self.ctx, comp, release, running.port, self.journal)
        self.component_record(name, status="healthy", health=observation.to_dict())

    async def _step_switch(self, step: Step) -> None:
        ctx = self.ctx

        async def route(name: str) -> None:
            comp = ctx.components[name]
            release = self.plan.releases.get(name, self.release)
            if comp.port is not None:
                await _route(ctx, comp, release)
                self.journal(
                    "routed",
                    step=step.id,
                    component=name,
                    status="succeeded",
                    message=f":{comp.port} → {release}",
                )

        new = {n: self.plan.releases.get(n, self.release) for n in self.plan.components}
        # Every public port (and every port-less component) at once: the window in which
        # some serve the new version and others the old one is one call, not one per component.
        results = await asyncio.gather(
            *(route(name) for name in self.plan.components),
            *(
                _settled(ctx.target.activate, name, release)
                for name, release in new.items()
                if ctx.components[name].port is None
            ),
            return_exceptions=True,
        )
        for routed in results:
            _raised(routed)
        # The new releases were linked to their new dependencies; from now on they follow
        # whatever release of each dependency is active (a later partial deploy, a rollback).
        # The `current` links go meanwhile, in one thread (each is a quick rename).
        calls: list[Awaitable[object]] = [
            link_urls(ctx, ctx.components[name], release, {}) for name, release in new.items()
        ]
        calls.append(_settled(_set_currents, ctx.target, new))
        for result in await asyncio.gather(*calls, return_exceptions=True):
            _raised(result)
        for name in new:
            self.component_record(name, status="active")

    async def _step_verify(self, step: Step) -> None:
        # Every component at once (one probe each): one after another, 30 probes were most
        # of this step.
        comps = [self.ctx.components[name] for name in self.plan.components]
        problems = await self._check_all(
            step, [(comp, comp.port or self.ports.get(comp.name)) for comp in comps]
        )
        failures = [
            f"{comp.name}: {problem}"
            for comp, problem in zip(comps, problems, strict=True)
            if problem
        ]
        failures += await self._verify_untouched_dependents(step)
        if failures:
            raise DeploymentFailed("final health check failed: " + "; ".join(failures))
        # The commit point: every port is switched and verified. From here on a failure or a
        # crash finishes the deployment forward; it is never rolled back.
        # The lease ends first: a crash between the two leaves a verified deployment that
        # recovery rolls back (safe), never a committed one whose routes the host undoes.
        await self._end_lease()
        self.committed = True
        self.journal("committed", step=step.id, status="succeeded")

    async def _verify_untouched_dependents(self, step: Step) -> list[str]:
        """Dependents this deployment did not replace now reach its new releases: check them
        (with their own spec) so a partial deploy cannot break what it did not touch."""
        ctx = self.ctx
        graph = graph_of(ctx.config.components_for(ctx.env))
        deployed = set(self.plan.components)
        todo, seen = list(deployed), set(deployed)
        while todo:
            for dependent in graph.dependents(todo.pop()):
                if dependent not in seen:
                    seen.add(dependent)
                    todo.append(dependent)
        untouched = [n for n in graph.order() if n in seen - deployed]
        if not untouched:
            return []
        routes = await _look(ctx.target.routes)
        running = await _look(ctx.target.running)
        checks: list[tuple[Component, int | None]] = []
        for name in untouched:
            release = routes.get(name) or await _look(ctx.target.current, name)
            proc = running.get((name, release)) if release else None
            if release is None or not _is_up(proc) or proc is None:
                continue
            comp = (await _look(ctx.release_spec, name, release))[0]
            checks.append((comp, comp.port or proc.port))
        problems = await self._check_all(step, checks)
        return [
            f"{comp.name} (not redeployed, depends on what was) is unhealthy: {problem}"
            for (comp, _), problem in zip(checks, problems, strict=True)
            if problem
        ]

    async def _check_all(
        self, step: Step, checks: list[tuple[Component, int | None]]
    ) -> list[str | None]:
        """Probe each component once, all at once, and journal what each saw (in the order
        given); per component the problem, or None when healthy."""
        results = await asyncio.gather(
            *(observe(self.ctx, probe_spec(comp, port)) for comp, port in checks),
            return_exceptions=True,
        )
        observations = [_raised(r) for r in results]
        for (comp, _), observation in zip(checks, observations, strict=True):
            self.journal(
                "health",
                step=step.id,
                component=comp.name,
                status="ok" if observation.ok else "failing",
                data=observation.to_dict(),
            )
        return [None if o.ok else o.detail for o in observations]

    async def _step_finish(self, step: Step) -> None:
        new = {n: self.plan.releases.get(n, self.release) for n in self.plan.components}
        problems = await finish_deployment(self.ctx, self.id, new, self.snapshot, self.journal)
        for name in self.plan.components:
            self.component_record(name, finished_at=_now())
        if problems:
            # Past the commit point a problem here never fails the deployment: the new
            # releases serve and were verified. Say what is left, in the journal.
            self.journal("finish", step=step.id, status="incomplete", message="; ".join(problems))


async def finish_deployment(
    ctx: EngineContext,
    deployment_id: str,
    new: Mapping[str, str],
    snapshot: Mapping[str, SnapshotEntry],
    journal: Callable[..., None],
) -> list[str]:
    """Retire the previous releases of a committed deployment (idempotent; recovery too).

    Dependents first, each stop waiting for its drain, so a request still in flight on an
    old dependent never reaches an already stopped old dependency. Returns what is left.
    """
    problems: list[str] = []
    running = await _look(ctx.target.running)
    routes = await _look(ctx.target.routes)
    old: dict[str, str] = {}
    for name, release in new.items():
        entry = snapshot.get(name)
        previous = entry.release if entry else None
        if previous and previous != release and _is_up(running.get((name, previous))):
            if routes.get(name) == previous:
                continue  # routed again by a newer change: not ours to stop
            old[name] = previous
    specs: dict[str, Component] = {}

    async def spec_of(name: str, release: str) -> None:
        try:
            specs[name] = (await _look(ctx.release_spec, name, release))[0]
        except ShipyardError:
            specs[name] = ctx.components.get(name) or Component(name=name, path=".", start="")

    await asyncio.gather(*(spec_of(name, release) for name, release in old.items()))
    # The host agent stops them later, dependents first, each after its drain, once its
    # `warm_for` has passed: a rollback inside that window is a route switch.
    items = [
        (name, old[name], specs[name].warm_for)
        for level in reversed(graph_of(specs).levels())
        for name in level
    ]
    if items:
        try:
            await _settled(ctx.target.retire, items)
            for name, release, after in items:
                journal(
                    "retired",
                    step="finish",
                    component=name,
                    status="scheduled",
                    message=f"{release} stops in {after:g}s",
                    data={"release": release, "after_s": after},
                )
        except ShipyardError as exc:
            problems.append(f"old releases not scheduled to stop: {exc.message}")

    async def point(name: str, release: str) -> None:
        try:
            if ctx.target.current(name) != release:
                await _settled(ctx.target.set_current, name, release)
        except OSError as exc:
            problems.append(f"{name}: `current` not pointed at {release}: {_reason(exc)}")

    await asyncio.gather(*(point(name, release) for name, release in new.items()))
    return problems


def _end_lease_quietly(ctx: EngineContext, holder: str) -> None:
    """End a deployment's lease on the host; an agent that cannot be reached has none."""
    with contextlib.suppress(ShipyardError):
        ctx.target.lease_end(holder)


def reachable_releases(store: Store, environment: str, keep: int) -> set[tuple[str, str]]:
    """(component, release) pairs that must stay on disk whatever `keep_releases` says.

    The snapshot releases of every unfinished (or rollback_failed) deployment, and every
    release active after one of the last `keep` good deployments, or after the one a plain
    `rollback` goes back to.
    """
    history = store.list_deployments(environment, limit=500)
    protected: set[tuple[str, str]] = set()
    active: dict[str, str] = {}
    states: list[dict[str, str]] = []
    for record in reversed(history):
        if record.status in ("pending", "running", "rolling_back", "failed", "rollback_failed"):
            for entry in store.snapshot(record.id):
                if entry.release:
                    protected.add((entry.component, entry.release))
            for c in store.components(record.id):
                if c.release:
                    protected.add((c.component, c.release))
        if record.status == "succeeded":
            for c in store.components(record.id):
                if c.release:
                    active[c.component] = c.release
            states.append(dict(active))
    # The newest `keep` states, and always the newest earlier one that differs from what
    # is active now: that is where a plain `rollback` goes.
    newest_first = states[::-1]
    for index, state in enumerate(newest_first):
        if index < max(keep, 1):
            protected |= set(state.items())
        elif state != newest_first[0]:
            protected |= set(state.items())
            break
    return protected


async def prune_releases(ctx: EngineContext, components: Iterable[str]) -> None:
    """Remove old release folders of closed deployments; never a release a rollback needs."""
    keep = ctx.config.project.keep_releases
    protected = await _look(reachable_releases, ctx.store, ctx.env.name, keep)

    async def prune(name: str) -> None:
        mine = {release for comp, release in protected if comp == name}
        # Pruning is housekeeping: a failure is left for the next deployment to retry.
        with contextlib.suppress(ShipyardError, OSError):
            await _settled(ctx.target.prune, name, keep, mine)

    await asyncio.gather(*(prune(name) for name in components))


async def wait_healthy(
    ctx: EngineContext,
    comp: Component,
    release: str,
    port: int | None,
    journal: Callable[..., None],
    *,
    step: str | None = None,
) -> Observation:
    """Probe until healthy for `stable_for`, or fail at the deadline with the log tail."""
    judge = HealthJudge(comp.health, start=ctx.monotonic())
    spec = probe_spec(comp, port)
    step = step or f"activate:{comp.name}"
    while True:
        observation = await observe(ctx, spec)
        verdict = judge.observe(observation.ok, ctx.monotonic())
        if verdict == "healthy":
            journal(
                "health",
                step=step,
                component=comp.name,
                status="ok",
                data=observation.to_dict(),
            )
            return observation
        if verdict == "failed":
            tail = await _look(ctx.target.logs, comp.name, release, 15)
            journal(
                "health",
                step=step,
                component=comp.name,
                status="failing",
                data=observation.to_dict(),
            )
            log = "\n".join(f"  | {ctx.redact(line)}" for line in tail)
            raise DeploymentFailed(
                f"{comp.name} release {release} did not become healthy within "
                f"{comp.health.deadline:g}s: {observation.detail}"
                + (f"\n  last lines of its log:\n{log}" if log else ""),
                hint="check the component's health settings and its log "
                "(`shipyard logs` shows the journal)",
            )
        await ctx.sleep(comp.health.interval)


async def observe(ctx: EngineContext, spec: ProbeSpec) -> Observation:
    """Run one probe on the host. Its detail (an excerpt of what the release answered, which
    may echo a secret) is redacted and cut short here, the moment it is observed."""
    seen = await _look(ctx.target.probe, spec)
    return dataclasses.replace(seen, detail=short_redacted(ctx.redact, seen.detail))


# Host operations (agent requests, probes, file work) and store calls are blocking and run
# in threads. asyncio's default pool has min(32, cpus + 4) threads, 6 on 2 cores: fewer than
# the calls one level of components makes at once (a start, then a probe every `interval`,
# per component), so they queued behind each other.
_host_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ThreadPoolExecutor] = (
    weakref.WeakKeyDictionary()
)


def use_host_pool(max_parallel: int) -> None:
    """Give the running loop a thread pool sized for `max_parallel` components (once per
    loop; `asyncio.run` shuts it down with the loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _host_pools:
        pool = ThreadPoolExecutor(
            max_workers=max(16, 4 * max_parallel), thread_name_prefix="shipyard-host"
        )
        _host_pools[loop] = pool
        loop.set_default_executor(pool)


async def _settled(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call that acts on the host in a thread, after the journal entries made
    before it are durable (see JournalWriter)."""
    durable = _durable.get()
    if durable is not None:
        await durable()
    return await _look(call, *args, **kwargs)


async def _look(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call in a thread that a cancellation cannot abandon.

    Called directly only for calls that change nothing (a probe, a listing, a store read, a
    digest): they need not wait for the journal, which under load took 5-40 ms a call.

    A thread cannot be stopped: when a step is cancelled (another step failed, Ctrl-C)
    while `target.start` runs, the plain `asyncio.to_thread` returns at once and the call
    still reaches the host later, after the rollback has looked at what runs, so the new
    release is left running. Here the cancellation waits until the call has finished, and
    only then goes on, so whatever the call did is there for the rollback to undo.
    """
    task = asyncio.ensure_future(asyncio.to_thread(call, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:
                continue
        raise


def _last_good(
    store: Store, environment: str
) -> tuple[DeploymentRecord | None, list[ComponentRecord]]:
    """The environment's last good deployment and its component records."""
    record = store.last_good_deployment(environment)
    return record, store.components(record.id) if record else []


def _set_currents(target: Target, releases: Mapping[str, str | None]) -> None:
    for name, release in releases.items():
        target.set_current(name, release)


def _raised(result: T | BaseException) -> T:
    """A result of `gather(..., return_exceptions=True)`, or its exception raised."""
    if isinstance(result, BaseException):
        raise result
    return result


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted (Ctrl-C or deadline)"
    if isinstance(exc, ShipyardError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _copy_work_tree(repo: Repo, dest: Path) -> None:
    root = repo.toplevel()
    for rel in repo.tracked_and_untracked():
        src = root / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _revision_after(store: Store, deployment_id: str, component: str) -> str | None:
    """The schema revision `component` had when `deployment_id` finished."""
    revision = None
    found = False
    for event in store.events(deployment_id):
        if event.kind == "migrated" and event.component == component and event.data:
            revision, found = event.data.get("after"), True
    if found:
        return revision
    for entry in store.snapshot(deployment_id):
        if entry.component == component:
            return entry.migration_revision
    return None


def _commit_of_release(store: Store, plan: Plan, component: str) -> str:
    record = store.get_deployment(plan.releases[component])
    return record.commit or "" if record else ""


async def restore(
    ctx: EngineContext,
    deployment: Deployment | None,
    order: list[str],
    deployment_id: str | None = None,
) -> None:
    """Put every component back on its snapshot release (idempotent; used by recovery too).

    Works from the snapshot and the host's actual state, not from memory, so it
    finishes the job whatever point a deployment reached before it failed or died.
    Make before break: a previous release is running and healthy (by its own spec)
    before its port is routed back, and only then is the new release stopped.
    """
    dep_id = deployment.id if deployment else deployment_id
    assert dep_id is not None
    snapshot = {e.component: e for e in ctx.store.snapshot(dep_id)}
    record = ctx.store.get_deployment(dep_id)
    plan_releases: dict[str, str] = {}
    if deployment is not None:
        plan_releases = deployment.plan.releases
    elif record and record.kind in ("rollback", "reconcile"):
        plan_releases = {c.component: c.release for c in ctx.store.components(dep_id) if c.release}
    journal = deployment.journal if deployment else _journal_for(ctx, dep_id)
    new_of = {n: plan_releases.get(n, dep_id) for n in order}
    # A component whose snapshot release is the one this deployment activates (a reconcile
    # restarting what should run) has nothing to go back to.
    wanted = [n for n in order if n in snapshot and snapshot[n].release != new_of[n]]
    problems: list[str] = []
    new_specs: dict[str, Component] = {}
    prev_specs: dict[str, Component] = {}
    for name in wanted:
        try:
            new_specs[name] = (await _look(ctx.release_spec, name, new_of[name]))[0]
            previous = snapshot[name].release
            prev_specs[name] = (
                (await _look(ctx.release_spec, name, previous))[0] if previous else new_specs[name]
            )
        except ShipyardError as exc:
            problems.append(f"{name}: {exc.message}")
    touched = graph_of({n: prev_specs[n] for n in wanted if n in prev_specs}).order()
    running = await _look(ctx.target.running)
    routes = await _look(ctx.target.routes)
    restarted: set[str] = set()

    async def schema_moved() -> bool:
        """Whether a component's schema is no longer at its snapshot revision."""
        for name in touched:
            comp, files_from = new_specs[name], new_of[name]
            if comp.migrations is None or not ctx.target.has_release(name, files_from):
                continue
            env = component_env(ctx, comp, files_from)
            current = await _settled(
                ctx.target.migration_revision, name, files_from, comp.migrations, env
            )
            if current != snapshot[name].migration_revision:
                return True
        return False

    patient = True  # wait a health deadline for a running previous release that fails a probe

    async def make(name: str) -> None:
        """Start the previous release if it is not running, and wait until it is healthy."""
        comp = prev_specs[name]
        previous = snapshot[name].release
        assert previous is not None
        proc = running.get((name, previous))
        if _is_up(proc) and proc is not None:
            quick = await observe(ctx, probe_spec(comp, proc.port))
            if quick.ok:
                return
            if not patient:
                # It served before this deployment and fails now, on a newer schema: waiting
                # a whole health deadline would not help; the schema goes down first.
                raise DeploymentFailed(f"unhealthy on the newer schema: {quick.detail}")
            port = proc.port
        else:
            env = {
                **component_env(ctx, comp, previous, snapshot[name].commit or ""),
                **await link_urls(ctx, comp, previous, {}),
            }
            started = await _settled(
                ctx.target.start, name, previous, comp.start, env, comp.stop_timeout
            )
            port = started.port
            restarted.add(name)  # on a new private port: its route must be renewed
        await wait_healthy(ctx, comp, previous, port, journal, step="rollback")

    async def route_back(name: str) -> None:
        comp = prev_specs[name]
        previous = snapshot[name].release
        if previous is None:
            if routes.get(name):
                await _settled(ctx.target.unroute, name)
            return
        if not comp.port:
            await _settled(ctx.target.activate, name, previous)
        if comp.port and (routes.get(name) != previous or name in restarted):
            await _route(ctx, comp, previous)
            journal(
                "routed",
                step="rollback",
                component=name,
                status="succeeded",
                message=f":{comp.port} → {previous}",
            )

    async def break_new(name: str) -> None:
        new = new_of[name]
        if new != snapshot[name].release and (name, new) in running:
            await _settled(ctx.target.stop, name, new)

    async def make_route_break(names: list[str], later: dict[str, str]) -> None:
        """Make (level by level), then route back, then stop the new releases."""
        made: list[str] = []
        for level in graph_of({n: prev_specs[n] for n in names}).levels():
            results = await asyncio.gather(
                *(make(n) for n in level if snapshot[n].release), return_exceptions=True
            )
            todo = [n for n in level if snapshot[n].release]
            for name, result in zip(todo, results, strict=True):
                if isinstance(result, BaseException):
                    later[name] = _reason(result)
                else:
                    made.append(name)
            made += [n for n in level if not snapshot[n].release]
        # Dependents first (reverse order), each level's ports in one step.
        routed: list[str] = []
        for level in reversed(graph_of({n: prev_specs[n] for n in made}).levels()):
            results = await asyncio.gather(*(route_back(n) for n in level), return_exceptions=True)
            for name, result in zip(level, results, strict=True):
                if isinstance(result, BaseException):
                    later[name] = _reason(result)
                else:
                    routed.insert(0, name)
        # Dependents first: an old dependent still draining may call its new dependency.
        for name in reversed(routed):
            try:
                await break_new(name)
            except ShipyardError as exc:
                problems.append(f"{name}: new release {new_of[name]} not stopped: {exc.message}")

    # 1. Make, route back, break: everything whose previous release can run as it is.
    failed_first: dict[str, str] = {}
    try:
        patient = not await schema_moved()
    except ShipyardError:
        patient = True  # the revision cannot be read: step 2 reports why
    await make_route_break(touched, failed_first)
    patient = True
    # 2. Schema back to the snapshot revision, newest dependents first, with the newer
    #    release's files and spec (only it knows the newer revisions' down steps).
    for name in reversed(touched):
        comp = new_specs[name]
        entry = snapshot[name]
        if comp.migrations is None:
            continue
        new = new_of[name]
        files_from = new if ctx.target.has_release(name, new) else entry.release
        if not files_from:
            continue
        try:
            env = component_env(ctx, comp, files_from)
            current = await _settled(
                ctx.target.migration_revision, name, files_from, comp.migrations, env
            )
            if current != entry.migration_revision:
                before, after = await _settled(
                    ctx.target.migrate,
                    name,
                    files_from,
                    comp.migrations,
                    env,
                    entry.migration_revision or "",
                )
                journal(
                    "migrated",
                    step="rollback",
                    component=name,
                    status="succeeded",
                    message=f"schema {before or '(none)'} → {after or '(none)'}",
                    data={"before": before, "after": after},
                )
        except IrreversibleMigration as exc:
            # Allowed at deploy time (--allow-irreversible): the code is back, the schema
            # stays where the irreversible step left it; the record says so.
            journal(
                "migrated",
                step="rollback",
                component=name,
                status="kept",
                message=f"schema left at the newer revision: {exc.message}",
            )
        except ShipyardError as exc:
            problems.append(
                f"{name}: schema not restored to "
                f"{entry.migration_revision or '(none)'}: {exc.message}"
            )
    # 3. What could not run on the newer schema gets a second chance on the restored one.
    failed_again: dict[str, str] = {}
    if failed_first:
        running = await _look(ctx.target.running)
        routes = await _look(ctx.target.routes)
        await make_route_break([n for n in touched if n in failed_first], failed_again)
        for name, why in failed_again.items():
            problems.append(
                f"{name}: previous release {snapshot[name].release} not restored: {why}"
            )
    for name in touched:
        if name not in failed_again:
            try:
                await _settled(ctx.target.set_current, name, snapshot[name].release)
            except (ShipyardError, OSError) as exc:
                problems.append(f"{name}: `current` not restored: {_reason(exc)}")
    # 4. Verify what is active now, through the public ports.
    for name in touched:
        comp = prev_specs[name]
        previous = snapshot[name].release
        if previous is None or not comp.port:
            continue
        observation = await observe(ctx, probe_spec(comp, comp.port))
        journal(
            "health",
            step="rollback",
            component=name,
            status="ok" if observation.ok else "failing",
            data=observation.to_dict(),
        )
        if not observation.ok:
            problems.append(
                f"{name}: previous release {previous} is unhealthy: {observation.detail}"
            )
    # Recovery has no Deployment object: close the records its dead orchestrator left.
    records = {} if deployment else {c.component: c for c in ctx.store.components(dep_id)}
    for name in touched:
        if deployment is not None:
            deployment.component_record(name, status="rolled_back", finished_at=_now())
        elif name in records:
            ctx.store.set_component(records[name].replace(status="rolled_back", finished_at=_now()))
    if problems:
        raise RollbackFailed(
            "left to do: " + "; ".join(problems),
            hint="fix the cause, then `shipyard recover` finishes the rollback",
        )


def _is_up(release: Any) -> bool:
    return release is not None and release.state in ("running", "starting", "backing-off")


def component_env(
    ctx: EngineContext, comp: Component, release: str, commit: str = ""
) -> dict[str, str]:
    """The env a component's process gets (without PORT and dependency URLs)."""
    env = {n: ctx.secrets[n] for n in comp.secrets if n in ctx.secrets}
    env.update(comp.env)
    env.update(
        {
            "SHIPYARD_ENV": ctx.env.name,
            "SHIPYARD_RELEASE": release,
            "SHIPYARD_COMMIT": commit,
            "SHIPYARD_COMPONENT": comp.name,
        }
    )
    first = []
    if comp.python is not None and release:
        first.append(str(ctx.target.release_dir(comp.name, release) / VENV / "bin"))
    env.setdefault("PATH", search_path(ctx, first))
    return env


def search_path(ctx: EngineContext, first: Iterable[str] = ()) -> str:
    """PATH for the component's processes: `first`, then the user's PATH without shipyard's
    own venv (a `python` link to the system's python3 last, when only that exists)."""
    return child_path(first=first, shims=ctx.config.root / ".shipyard" / "bin")


async def _route(ctx: EngineContext, comp: Component, release: str) -> None:
    """Send the component's public port to `release` (HTTP mode when its health check is HTTP)."""
    assert comp.port is not None
    try:
        await _settled(
            ctx.target.route,
            comp.name,
            comp.port,
            release,
            http=comp.health.kind == "http",
            drain_timeout=comp.drain_timeout,
        )
    except AgentError as exc:
        if exc.code != "route_conflict":
            raise
        # The release listens on another public port (or mode) than the one routed now:
        # the old port closes (after its drain) and the release's own port opens.
        await _settled(ctx.target.unroute, comp.name)
        await _settled(
            ctx.target.route,
            comp.name,
            comp.port,
            release,
            http=comp.health.kind == "http",
            drain_timeout=comp.drain_timeout,
        )


async def link_urls(
    ctx: EngineContext, comp: Component, release: str, pinned: Mapping[str, str]
) -> dict[str, str]:
    """`SHIPYARD_URL_<DEP>` for a release: a stable port the host agent keeps per dependency
    and consumer, pinned to the dependency's release in `pinned` (a new one being activated
    with it), else following the dependency's active release."""
    consumer = f"{comp.name}/{release}"
    ports = await asyncio.gather(
        *(_settled(ctx.target.link, dep, consumer, pinned.get(dep)) for dep in comp.depends_on)
    )
    return {
        f"SHIPYARD_URL_{dep.upper().replace('-', '_')}": f"http://127.0.0.1:{port}"
        for dep, port in zip(comp.depends_on, ports, strict=True)
    }


def service_urls(
    ctx: EngineContext, names: Iterable[str], private_ports: Mapping[str, int]
) -> dict[str, str]:
    """`SHIPYARD_URL_<NAME>` for each component: its private port if given, else its public one."""
    urls = {}
    for name in names:
        port = private_ports.get(name) or ctx.components[name].port
        if port:
            urls[f"SHIPYARD_URL_{name.upper().replace('-', '_')}"] = f"http://127.0.0.1:{port}"
    return urls


def _journal_for(ctx: EngineContext, deployment_id: str) -> Callable[..., None]:
    def journal(kind: str, **fields: Any) -> None:
        message = ctx.redact(fields["message"]) if fields.get("message") else None
        data = fields.get("data")
        ctx.store.append_event(
            deployment_id,
            kind,
            step=fields.get("step"),
            component=fields.get("component"),
            status=fields.get("status"),
            message=message,
            data=ctx.redact.data(data) if data is not None else None,
        )
        ctx.sink(
            ProgressEvent(
                deployment_id,
                kind,
                fields.get("step"),
                fields.get("component"),
                fields.get("status"),
                message,
                ctx.monotonic(),
            )
        )

    return journal
