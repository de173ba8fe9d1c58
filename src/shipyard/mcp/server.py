"""shipyard as MCP tools, with the guard rails a production deploy needs.

Every tool is a thin call into `service.Shipyard` (one per call, so an edited shipyard.toml is
read again), run in a worker thread (the service blocks: git, SQLite, the engine's own loop).
Guard rails, all decided here at the adapter's edge because they are about *who asks*:

- a protected environment is confirmed by a person through elicitation (the SDK's
  `Resolve`/`Elicit`, so it works on every protocol revision); a client that cannot ask is
  refused unless the server was started with `allow_unconfirmed`;
- read-only mode registers no write tool at all; an allow-list registers only the tools named
  and refuses an unknown name at start;
- every text leaving the server (results, errors, progress, journal) passes the environment's
  redactor; every write records the client's name as the deployment's `created_by`.

This module does not use `from __future__ import annotations`: the SDK reads the tools'
annotations at registration, and those name closures (the resolvers) it cannot look up later.
"""

import functools
import inspect
import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from shipyard import __version__
from shipyard.config import Environment
from shipyard.core.plan import Selection, TestStage
from shipyard.core.secrets import Redactor
from shipyard.engine.runner import ProgressEvent
from shipyard.errors import DeploymentFailed, RollbackFailed, ShipyardError, UsageError
from shipyard.mcp.models import (
    ChangesResult,
    DeploymentDoc,
    ErrorInfo,
    HealthResult,
    HistoryResult,
    PlanResult,
    SecretsResult,
    StatusResult,
)
from shipyard.service import DeploymentView, PlanRequest, Shipyard, UnhealthyReport
from shipyard.store import EventRecord, LockOwner

__all__ = ["READ_TOOLS", "WRITE_TOOLS", "McpOptions", "build_server"]

READ_TOOLS = ("plan", "status", "history", "health", "validate_secrets", "detect_changes")
WRITE_TOOLS = ("deploy", "promote", "rollback")
POLL_S = 0.25  # how often a running deployment's journal is read for progress notifications
CLIENT_NAME_CHARS = 64
MAX_ARGUMENT_CHARS = 256

log = logging.getLogger("shipyard.mcp")
Ctx = Context[Any, Any]
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class McpOptions:
    """How much the server lets a client do."""

    read_only: bool = False  # register no write tool at all
    tools: frozenset[str] | None = None  # the allow-list (None: every tool)
    allow_unconfirmed: bool = False  # a client that cannot elicit may still touch protected envs

    def enabled(self) -> tuple[str, ...]:
        """The tools to register; UsageError for a name that is not a tool, or a write tool
        named in read-only mode (a typo must not silently leave a tool out, or in)."""
        known = READ_TOOLS + WRITE_TOOLS
        wanted = known if self.tools is None else tuple(t for t in known if t in self.tools)
        unknown = sorted(set(self.tools or ()) - set(known))
        if unknown:
            raise UsageError(
                f"unknown MCP tool {', '.join(map(repr, unknown))} in the allow-list",
                hint=f"the tools are: {', '.join(known)}",
            )
        if self.read_only:
            writes = [t for t in wanted if t in WRITE_TOOLS and self.tools is not None]
            if writes:
                raise UsageError(
                    f"read-only mode offers no write tool, but the allow-list names "
                    f"{', '.join(writes)}",
                    hint=f"drop them, or leave out read-only; read tools: {', '.join(READ_TOOLS)}",
                )
            wanted = tuple(t for t in wanted if t in READ_TOOLS)
        return wanted


class Confirmation(BaseModel):
    """The form a person answers before a protected environment is touched."""

    confirm: bool = Field(title="Go ahead", description="Check to let it run; nothing runs if not.")


@dataclass(frozen=True)
class _NoQuestion:
    """A resolver's answer when nobody had to be asked; `note` goes into `created_by`."""

    note: str


def _text(exc: ShipyardError) -> str:
    return f"{exc.type}: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else "")


@contextmanager
def _boundary(redact: Callable[[str], str]) -> Iterator[None]:
    """shipyard's errors become the tool's error text (redacted); a bug says it is one, and is
    logged with its traceback, redacted too (a value in an exception's text stays out)."""
    try:
        yield
    except ToolError:
        raise
    except ShipyardError as exc:
        raise ToolError(redact(_text(exc))) from None
    except Exception as exc:
        log.error("%s", redact("".join(traceback.format_exception(exc))))
        raise ToolError(
            redact(f"internal error in shipyard: {type(exc).__name__}: {exc}")
        ) from None


def _client(ctx: Ctx) -> str:
    """The client's name as it introduced itself (untrusted: printable, short)."""
    params = ctx.session.client_params
    name = params.client_info.name if params is not None else ""
    shown = "".join(ch for ch in name if ch.isprintable())[:CLIENT_NAME_CHARS]
    return shown or "unnamed client"


def _http_caller(ctx: Ctx) -> Any:
    """Who called through `shipyard serve` (its bearer token: `.name`, `.scope`, `.allows`),
    or None on stdio and on a server that does not authenticate."""
    request = getattr(ctx.request_context, "request", None)
    scope = getattr(request, "scope", None)
    return scope.get("shipyard.caller") if isinstance(scope, dict) else None


def _can_elicit(ctx: Ctx) -> bool:
    """Whether the client declared form elicitation (a bare `elicitation: {}` counts)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _journal_line(event: EventRecord) -> str:
    where = " ".join(x for x in (event.step, event.component) if x)
    parts = (event.kind, where, event.status or "", event.message or "")
    return " ".join(p for p in parts if p)


def build_server(
    project_dir: Path,
    options: McpOptions | None = None,
    *,
    service: Callable[[], Shipyard] | None = None,
) -> MCPServer[Any]:
    """The MCP server over the project at `project_dir`; `service` makes the Shipyard each call
    uses (dependency injection: tests pass one with their own environment)."""
    options = options or McpOptions()
    enabled = options.enabled()
    make = service or (lambda: Shipyard(project_dir))
    server: MCPServer[Any] = MCPServer(
        "shipyard",
        title="shipyard",
        version=__version__,
        instructions=(
            "Deploy this project: call plan, show the user its summary, then deploy(plan_id). "
            "A protected environment asks the user for confirmation. status(deployment_id) and "
            "the resource shipyard://deployments/{id}/log follow a deployment."
        ),
        log_level="WARNING",
    )

    async def redact_tool_errors(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """The text of a failed tool call, on its way out (in its wire form), without the
        values the SDK's own argument errors quote, and through every environment's redactor."""
        result = await call_next(ctx)
        if ctx.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
            redact = await _call(every_secret)
            for block in result.get("content") or []:
                if isinstance(block, dict) and isinstance(block.get("text"), str):
                    block["text"] = redact(_unquoted(block["text"]))
        return result

    def every_secret() -> Callable[[str], str]:
        try:
            with opened() as svc:
                return svc.redactor_all()
        except ShipyardError:
            return str  # no config, no secrets: nothing to redact

    server.middleware.append(redact_tool_errors)

    @contextmanager
    def opened(**arguments: str | list[str] | None) -> Iterator[Shipyard]:
        """A Shipyard for one call, once the call's text `arguments` are found usable."""
        _check_text(arguments)
        svc = make()
        try:
            yield svc
        finally:
            svc.close()

    @asynccontextmanager
    async def calling(
        secrets_of: str | None, /, **arguments: str | list[str] | None
    ) -> AsyncIterator[tuple[Shipyard, Redactor]]:
        """`opened`, plus the redactor of environment `secrets_of` (read in a worker thread:
        a secrets source may run a command) and the error boundary that uses it."""
        with opened(**arguments) as svc:
            redact = await _call(svc.redactor, secrets_of)
            with _boundary(redact):
                yield svc, redact

    def created_by(ctx: Ctx, note: str) -> str:
        who = LockOwner.current()
        return f"mcp:{_client(ctx)} ({who.user}@{who.host})" + (f", {note}" if note else "")

    def deploy_caller(ctx: Ctx) -> Any:
        """Under `shipyard serve`, the bearer token, which must allow deploys for a write (the
        server lets any token with the read scope reach /mcp); None over stdio."""
        caller = _http_caller(ctx)
        if caller is not None and not caller.allows("deploy"):
            raise ToolError(
                f"token {caller.name!r} has the {caller.scope} scope; this tool needs deploy; "
                "nothing was changed\nhint: use a token with the deploy scope"
            )
        return caller

    def writer(ctx: Ctx, note: str) -> str:
        """`created_by` of a write (refused for a token that may not deploy)."""
        caller = deploy_caller(ctx)
        return created_by(ctx, note) + (f", token {caller.name}" if caller else "")

    # --- confirmation of protected environments --------------------------------------------

    def gate(ctx: Ctx, env: Environment, question: str) -> _NoQuestion | Elicit[Confirmation]:
        if not env.protected:
            return _NoQuestion("")
        deploy_caller(ctx)  # a token that may not deploy is refused before a person is asked
        if _can_elicit(ctx):
            return Elicit(question, Confirmation)
        if options.allow_unconfirmed:
            return _NoQuestion("unconfirmed: the client cannot ask, --allow-unconfirmed")
        raise ToolError(
            f"environment {env.name!r} is protected: this needs a person's confirmation, and "
            f"this MCP client ({_client(ctx)}) cannot ask for it (no elicitation support); "
            "nothing was changed\nhint: use a client that supports elicitation, or the CLI "
            f"(`shipyard deploy --env {env.name}` asks on a terminal)"
        )

    def confirm_deploy(plan_id: str, ctx: Ctx) -> _NoQuestion | Elicit[Confirmation]:
        with opened(plan_id=plan_id) as svc, _boundary(svc.redactor(None)):
            saved = svc.saved_plan(plan_id)
            env = svc.environment(saved.environment)
            plan = saved.plan["plan"]
            if not plan["components"]:
                return _NoQuestion("")  # nothing would run: the tool says so, nobody is asked
            question = (
                f"Deploy commit {(saved.commit or '?')[:12]} to the protected environment "
                f"{env.name} ({plan['kind']}: {', '.join(plan['components'])}; "
                f"plan {saved.plan_hash})?"
            )
        return gate(ctx, env, question)

    def confirm_rollback(
        environment: str, ctx: Ctx, to: str | None = None
    ) -> _NoQuestion | Elicit[Confirmation]:
        with opened(environment=environment, to=to) as svc, _boundary(svc.redactor(None)):
            env = svc.environment(environment)
        target = f"deployment {to}" if to else "its previous good deployment"
        return gate(ctx, env, f"Roll the protected environment {env.name} back to {target}?")

    def confirm_promote(
        source: str, target: str, ctx: Ctx, deployment_id: str | None = None
    ) -> _NoQuestion | Elicit[Confirmation]:
        arguments = {"source": source, "target": target, "deployment_id": deployment_id}
        with opened(**arguments) as svc, _boundary(svc.redactor(None)):
            env = svc.environment(target)
            if not env.protected:
                return _NoQuestion("")
            plan = svc.plan_promote(source, target, deployment_id)
            what = f"deployment {deployment_id}" if deployment_id else "the last good deployment"
            question = (
                f"Promote {what} of {source} (commit {plan.commit[:12]}: "
                f"{', '.join(plan.components)}) to the protected environment {env.name}?"
            )
        return gate(ctx, env, question)

    def confirmed(outcome: ElicitationResult[Confirmation], what: str) -> str:
        """The note for `created_by`, or ToolError when the person did not say yes."""
        if isinstance(outcome, AcceptedElicitation):
            data = outcome.data
            if isinstance(data, _NoQuestion):
                return data.note
            if isinstance(data, Confirmation) and data.confirm:
                return "confirmed by the user"
            raise ToolError(f"{what} was not confirmed; nothing was changed")
        said = {"decline": "declined", "cancel": "cancelled"}.get(outcome.action, outcome.action)
        raise ToolError(f"{what} was {said} by the user; nothing was changed")

    # --- running a deployment with progress ---------------------------------------------------

    async def run_deployment(
        ctx: Ctx, svc: Shipyard, redact: Redactor, run: Callable[[], DeploymentView]
    ) -> CallToolResult:
        """Run `run` in a worker thread; meanwhile the journal becomes progress notifications
        (the first names the deployment id, for `status` and the log resource)."""
        started: list[str] = []

        def sink(event: ProgressEvent) -> None:
            if event.starts_deployment and not started:
                started.append(event.deployment_id)

        svc.sink = sink
        outcome: list[DeploymentView | Exception] = []
        done = anyio.Event()

        async def worker() -> None:
            try:
                outcome.append(await anyio.to_thread.run_sync(run))
            except Exception as exc:  # re-raised below, after the last progress
                outcome.append(exc)
            finally:
                done.set()

        seq = 0
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker)
            while True:
                finished = done.is_set()
                if started:
                    events = await anyio.to_thread.run_sync(svc.store.events, started[0], seq)
                    for event in events:
                        seq = event.seq
                        line = f"deployment {started[0]}: {_journal_line(event)}"
                        await ctx.report_progress(seq, None, redact(line))
                if finished:
                    break
                with anyio.move_on_after(POLL_S):
                    await done.wait()
        result = outcome[0]
        if isinstance(result, DeploymentView):
            doc = DeploymentDoc.model_validate(redact.data(_plain(result.to_dict())))
            return CallToolResult(
                content=[TextContent(type="text", text=_summary(doc))],
                structured_content=doc.model_dump(mode="json"),
            )
        if isinstance(result, DeploymentFailed | RollbackFailed) and started:
            # The deployment record is the useful answer: it says what ran and what was undone.
            view = await _call(svc.deployment, started[0])
            failure = ErrorInfo.model_validate(redact.data(result.to_dict()))
            doc = DeploymentDoc.model_validate(
                {**redact.data(_plain(view.to_dict())), "failure": failure}
            )
            return CallToolResult(
                content=[TextContent(type="text", text=_summary(doc) + "\n" + failure.message)],
                structured_content=doc.model_dump(mode="json"),
                is_error=True,
            )
        raise result

    # --- the tools ---------------------------------------------------------------------------

    def tool(title: str, annotations: ToolAnnotations) -> Callable[[F], F]:
        """`server.tool`, with the docstring's indentation taken out of the description."""

        def register(fn: F) -> F:
            description = inspect.cleandoc(fn.__doc__ or "")
            server.tool(title=title, description=description, annotations=annotations)(fn)
            return fn

        return register

    read = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
    write = ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
    )

    if "plan" in enabled:

        @tool(
            title="Plan a deploy",
            annotations=ToolAnnotations(
                read_only_hint=True,
                destructive_hint=False,
                idempotent_hint=False,
                open_world_hint=False,
            ),
        )
        async def plan(
            environment: Annotated[str, Field(description="The environment to deploy to.")],
            ctx: Ctx,
            full: Annotated[bool, Field(description="Deploy every component.")] = False,
            changed: Annotated[
                bool, Field(description="What changed since the last good deployment.")
            ] = False,
            only: Annotated[tuple[str, ...], Field(description="Only these components.")] = (),
            ref: Annotated[str, Field(description="The git ref to deploy.")] = "HEAD",
            tests: Annotated[TestStage, Field(description="Which tests run.")] = "none",
        ) -> PlanResult:
            """What a deploy would do, without doing it; saved under a plan_id for deploy.

            Without full/changed/only: changed when the environment has a last good
            deployment, full otherwise (`why` says which)."""
            async with calling(environment, environment=environment, ref=ref, only=list(only)) as (
                svc,
                redact,
            ):
                selection = _selection(full, changed, only)
                made = await _call(
                    svc.plan, environment, selection=selection, only=only, ref=ref, tests=tests
                )
                request = PlanRequest(made.environment, selection, only, ref, tests)
                plan_id = await _call(svc.save_plan, made, request, created_by(ctx, ""))
                env = await _call(svc.environment, made.environment)
                doc = {
                    **made.to_dict(),
                    "plan_id": plan_id,
                    "protected": env.protected,
                    "deployable": bool(made.components),
                    "summary": made.to_text(),
                }
                return PlanResult.model_validate(redact.data(_plain(doc)))

    if "deploy" in enabled:

        @tool(title="Deploy a plan", annotations=write)
        async def deploy(
            plan_id: Annotated[str, Field(description="A plan_id from the plan tool.")],
            ctx: Ctx,
            confirmation: Annotated[ElicitationResult[Confirmation], Resolve(confirm_deploy)],
            allow_destructive: Annotated[
                bool, Field(description="Allow migrations that drop or rename.")
            ] = False,
            allow_irreversible: Annotated[
                bool, Field(description="Allow migrations without a down step.")
            ] = False,
        ) -> Annotated[CallToolResult, DeploymentDoc]:
            """Run a saved plan: build, migrate, start in dependency order with health checks,
            switch; roll back on failure. Refused if the plan no longer matches the repository
            or the environment (make a new plan then). Progress names the deployment id."""
            async with calling(None, plan_id=plan_id) as (svc, _):
                saved = await _call(svc.saved_plan, plan_id)
                redact = await _call(svc.redactor, saved.environment)
                with _boundary(redact):
                    note = confirmed(confirmation, f"deploying to {saved.environment}")
                    the_plan = await _call(svc.replan, plan_id)
                    if not the_plan.components:
                        raise UsageError(f"nothing to deploy: {the_plan.why}")
                    run = functools.partial(
                        svc.deploy,
                        the_plan,
                        allow_destructive=allow_destructive,
                        allow_irreversible=allow_irreversible,
                        created_by=writer(ctx, note),
                    )
                    return await run_deployment(ctx, svc, redact, run)

    if "rollback" in enabled:

        @tool(title="Roll back an environment", annotations=write)
        async def rollback(
            environment: Annotated[str, Field(description="The environment to roll back.")],
            ctx: Ctx,
            confirmation: Annotated[ElicitationResult[Confirmation], Resolve(confirm_rollback)],
            to: Annotated[
                str | None,
                Field(description="A good deployment id (default: the previous good one)."),
            ] = None,
        ) -> Annotated[CallToolResult, DeploymentDoc]:
            """Go back to the previous good deployment (or `to`), as a new deployment of kind
            rollback. Progress names the deployment id."""
            async with calling(environment, environment=environment, to=to) as (svc, redact):
                note = confirmed(confirmation, f"rolling back {environment}")
                run = functools.partial(
                    svc.rollback, environment, to=to, created_by=writer(ctx, note)
                )
                return await run_deployment(ctx, svc, redact, run)

    if "promote" in enabled:

        @tool(title="Promote to another environment", annotations=write)
        async def promote(
            source: Annotated[str, Field(description="The environment promoted from.")],
            target: Annotated[str, Field(description="The environment to deploy to.")],
            ctx: Ctx,
            confirmation: Annotated[ElicitationResult[Confirmation], Resolve(confirm_promote)],
            deployment_id: Annotated[
                str | None,
                Field(description="A good deployment of source (default: its last good one)."),
            ] = None,
        ) -> Annotated[CallToolResult, DeploymentDoc]:
            """Deploy to target exactly what a deployment of source released: the same
            artifacts (nothing rebuilt), with target's own secrets and settings, as a new
            deployment of kind promote. Progress names the deployment id."""
            arguments = {"source": source, "target": target, "deployment_id": deployment_id}
            async with calling(target, **arguments) as (svc, redact):
                note = confirmed(confirmation, f"promoting to {target}")
                run = functools.partial(
                    svc.promote, source, target, deployment_id, created_by=writer(ctx, note)
                )
                return await run_deployment(ctx, svc, redact, run)

    if "status" in enabled:

        @tool(
            title="Status",
            annotations=ToolAnnotations(
                read_only_hint=True, destructive_hint=False, open_world_hint=True
            ),
        )
        async def status(
            environment: Annotated[str, Field(description="The environment.")],
            deployment_id: Annotated[
                str | None, Field(description="A deployment id (or a unique prefix) to follow.")
            ] = None,
        ) -> StatusResult:
            """A deployment (poll it while it runs), or what is active now in an environment
            (this one probes each component's health)."""
            async with calling(
                environment, environment=environment, deployment_id=deployment_id
            ) as (svc, redact):
                if deployment_id:
                    view = await _call(svc.deployment, deployment_id)
                    if view.record.environment != environment:
                        raise UsageError(
                            f"deployment {view.record.id} is in environment "
                            f"{view.record.environment!r}, not {environment!r}"
                        )
                    doc = redact.data(_plain(view.to_dict()))
                    return StatusResult(
                        environment=environment, deployment=DeploymentDoc.model_validate(doc)
                    )
                report = await _call(svc.environment_status, environment)
                return StatusResult.model_validate(
                    {"environment": environment, "active": redact.data(_plain(report))}
                )

    if "history" in enabled:

        @tool(title="History", annotations=read)
        async def history(
            environment: Annotated[str, Field(description="The environment.")],
            limit: Annotated[int, Field(ge=1, le=500, description="How many, newest first.")] = 20,
        ) -> HistoryResult:
            """Past deployments of an environment, newest first."""
            async with calling(environment, environment=environment) as (svc, redact):
                views = await _call(svc.history, environment, limit)
                docs = [redact.data(_plain(v.to_dict())) for v in views]
                return HistoryResult.model_validate(
                    {"environment": environment, "deployments": docs}
                )

    if "health" in enabled:

        @tool(
            title="Health",
            annotations=ToolAnnotations(
                read_only_hint=True, destructive_hint=False, open_world_hint=True
            ),
        )
        async def health(
            environment: Annotated[str, Field(description="The environment.")],
        ) -> HealthResult:
            """Run every component's health check now (ok is false when one fails)."""
            async with calling(environment, environment=environment) as (svc, redact):
                try:
                    results, ok = await _call(svc.health, environment), True
                except UnhealthyReport as report:
                    results, ok = report.results, False
                components = [redact.data(_plain(r.to_dict())) for r in results]
                return HealthResult.model_validate(
                    {"environment": environment, "ok": ok, "components": components}
                )

    if "validate_secrets" in enabled:

        @tool(title="Check secrets", annotations=read)
        async def validate_secrets(
            environment: Annotated[
                str | None, Field(description="The environment (default: every one).")
            ] = None,
        ) -> SecretsResult:
            """Presence, rules and environment match of the secrets, as `shipyard secrets
            check`: names, places and fingerprints only, never a value (ok is false when a
            finding is an error)."""
            async with calling(environment, environment=environment) as (svc, redact):
                report = await _call(svc.secrets_check, environment)
                return SecretsResult.model_validate(redact.data(_plain(report.to_dict())))

    if "detect_changes" in enabled:

        @tool(title="Detect changes", annotations=read)
        async def detect_changes(
            environment: Annotated[str, Field(description="The environment.")],
            since: Annotated[
                str | None,
                Field(description="Count from this ref (default: the last good deployment)."),
            ] = None,
            ref: Annotated[str, Field(description="Up to this git ref.")] = "HEAD",
        ) -> ChangesResult:
            """Changed files → affected components with reasons, breaking changes, and
            whether a full deploy is required, as `shipyard changes`."""
            arguments = {"environment": environment, "since": since, "ref": ref}
            async with calling(environment, **arguments) as (svc, redact):
                report = await _call(svc.changes, since, ref, environment)
                return ChangesResult.model_validate(redact.data(_plain(report.to_dict())))

    @server.resource(
        "shipyard://deployments/{deployment_id}/log",
        name="deployment-log",
        title="Deployment journal",
        description="Every step start, finish and failure of a deployment, one per line.",
        mime_type="text/plain",
    )
    async def deployment_log(deployment_id: str) -> str:
        try:
            return await read_log(deployment_id)
        except ToolError as exc:  # a resource reports its failure as a ResourceError
            raise ResourceError(str(exc)) from None

    async def read_log(deployment_id: str) -> str:
        async with calling(None, deployment_id=deployment_id) as (svc, _):
            view = await _call(svc.deployment, deployment_id)
            events = await _call(svc.events, view.record.id)
            redact = await _call(svc.redactor, view.record.environment)
            lines = [
                f"{e.at.isoformat(timespec='milliseconds')} {_journal_line(e)}" for e in events
            ]
            return redact("\n".join(lines) + "\n")

    return server


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking service call, in a worker thread (the event loop keeps serving)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _unquoted(text: str) -> str:
    """A pydantic error text without the rejected input: its `[type=…, input_value=…]` part
    (the value, cut in the middle, would slip past a redactor) and its link lines go."""
    lines = [line.split(" [type=", 1)[0] for line in text.splitlines()]
    return "\n".join(line for line in lines if "For further information visit" not in line)


def _check_text(arguments: dict[str, str | list[str] | None]) -> None:
    """Refuse a text argument with control characters (a NUL, a lone surrogate) or of an
    unreasonable length, naming it without echoing it (it could be anything, even a secret)."""
    for name, value in arguments.items():
        values = [value] if isinstance(value, str) else value or []
        if any(not v.isprintable() or len(v) > MAX_ARGUMENT_CHARS for v in values):
            raise ToolError(
                f"{name}: expected printable text of at most {MAX_ARGUMENT_CHARS} characters "
                "(no control characters); nothing was done"
            )


def _selection(full: bool, changed: bool, only: tuple[str, ...]) -> Selection | None:
    chosen = [name for name, on in (("full", full), ("changed", changed), ("only", only)) if on]
    if len(chosen) > 1:
        raise UsageError(f"choose one of {', '.join(chosen)}")
    return "only" if only else "full" if full else "changed" if changed else None


def _plain(data: Any) -> Any:
    """Through JSON once, so every value is a plain str/number/list/dict for the redactor."""
    return json.loads(json.dumps(data, default=str))


def _summary(doc: DeploymentDoc) -> str:
    parts = ", ".join(f"{c.name} {c.status}" for c in doc.components)
    return f"deployment {doc.id} ({doc.kind}) of {doc.environment}: {doc.status}" + (
        f" — {parts}" if parts else ""
    )
