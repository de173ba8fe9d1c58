"""The HTTP API and dashboard: a FastAPI app, thin over `service.Shipyard`.

Every route that touches the service is a plain function, so FastAPI runs it in its thread
pool (the service is synchronous and runs its own event loop for a deployment). Each request
gets a fresh `Shipyard`, so a changed shipyard.toml is seen without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shipyard import __version__
from shipyard.api import problems
from shipyard.api.auth import COOKIE, Caller, Tokens
from shipyard.api.controller import Controller
from shipyard.api.models import (
    NAME_PATTERN,
    REF_PATTERN,
    Accepted,
    ChangesOut,
    DeploymentOut,
    DeploymentPage,
    DeployRequest,
    EnvironmentOut,
    EventOut,
    GraphOut,
    HealthOut,
    NothingToDeploy,
    PlanOut,
    PromoteRequest,
    Recovered,
    RollbackRequest,
    SecretsOut,
)
from shipyard.api.problems import ProblemError
from shipyard.api.runs import Runs
from shipyard.core.plan import Plan
from shipyard.core.secrets import Redactor
from shipyard.engine.runner import ProgressSink
from shipyard.errors import ShipyardError, UsageError
from shipyard.service import DeploymentView, Shipyard, UnhealthyReport
from shipyard.store.records import FINISHED_STATUSES, EventRecord

log = logging.getLogger("shipyard.api")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
API = "/api/v1"


class Settings:
    """What every route needs: the project, the tokens, the running deployments."""

    def __init__(
        self,
        project_dir: Path,
        tokens: Tokens,
        poll_interval: float,
        on_secrets: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.tokens = tokens
        self.poll_interval = poll_interval
        self.on_secrets = on_secrets
        self.runs = Runs()

    @contextlib.contextmanager
    def service(self) -> Iterator[Shipyard]:
        svc = Shipyard(self.project_dir, on_secrets=self.on_secrets)
        try:
            yield svc
        finally:
            svc.close()

    def redactor_all(self) -> Redactor:
        """Every secret value of every environment, for an error's text; empty when the
        project cannot be read (then no value was read either). Only errors pay for it."""
        try:
            with self.service() as svc:
                return svc.redactor_all()
        except ShipyardError:
            return Redactor()


def create_app(
    project_dir: Path,
    *,
    tokens: Tokens | None = None,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
    recover_interval: float | None = 5.0,
    poll_interval: float = 0.2,
    allowed_hosts: Sequence[str] = (),
    on_secrets: Callable[[dict[str, str]], None] | None = None,
) -> FastAPI:
    """The API (under /api/v1, OpenAPI at /openapi.json), the dashboard (/), and `mounts`
    (e.g. `("/mcp", app)`), which get the same bearer authentication (read scope at least;
    the caller is in `scope["shipyard.caller"]`) and whose lifespans run inside the app's.

    `recover_interval`: seconds between the controller's passes (None: no controller).
    `allowed_hosts`: Host header values served besides loopback names (DNS rebinding;
    `"*"`: any). `on_secrets` is told every set of secret values a request, a deployment or
    the controller reads (the server's log redactor learns them).
    """
    settings = Settings(project_dir.resolve(), tokens or Tokens([]), poll_interval, on_secrets)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        controller = None
        if recover_interval is not None:
            controller = Controller(settings.project_dir, recover_interval, on_secrets)
            controller.start()
        app.state.controller = controller
        try:
            async with contextlib.AsyncExitStack() as mounted_apps:
                # Starlette runs no lifespan of a mounted app: the MCP app starts its
                # sessions in its own, so it runs inside this one.
                for _path, mounted in mounts:
                    router = getattr(mounted, "router", None)
                    if router is not None and hasattr(router, "lifespan_context"):
                        await mounted_apps.enter_async_context(router.lifespan_context(mounted))
                yield
        finally:
            if settings.runs.running():
                log.info("waiting for %d running deployment(s) to finish", settings.runs.running())
            await asyncio.to_thread(settings.runs.join)
            if controller is not None:
                await asyncio.to_thread(controller.stop)

    app = FastAPI(
        title="shipyard",
        version=__version__,
        description="Deployments of a shipyard project: what runs, what ran, what is deploying.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger page loads its code from a CDN: not served
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, *allowed_hosts])
    _errors(app, settings)
    _routes(app, settings)
    from shipyard.api.dashboard import add_dashboard

    add_dashboard(app, settings)
    for path, mounted in mounts:
        app.mount(path, Authenticated(mounted, settings.tokens))
    _problem_content_types(app)
    return app


# --- authentication ------------------------------------------------------------------------


def presented_token(authorization: str | None, cookie: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ProblemError(
                401, "the Authorization header must be `Bearer TOKEN`", hint=_TOKEN_HINT
            )
        return value.strip()
    return cookie or None


_TOKEN_HINT = (
    "send `Authorization: Bearer TOKEN` with a token from the server's tokens file or "
    "$SHIPYARD_API_TOKENS (see `shipyard serve --help`)"
)


def authenticate(tokens: Tokens, authorization: str | None, cookie: str | None) -> Caller:
    caller = tokens.check(presented_token(authorization, cookie))
    if caller is None:
        raise ProblemError(401, "the token is not valid", hint=_TOKEN_HINT)
    return caller


def require(scope: str, caller: Caller) -> Caller:
    if caller.allows(scope):
        return caller
    if caller.anonymous:
        raise ProblemError(401, f"this needs a token with the {scope} scope", hint=_TOKEN_HINT)
    raise ProblemError(
        403,
        f"token {caller.name!r} has the {caller.scope} scope; this needs {scope}",
        hint=f"use a token with the {scope} scope",
    )


class Authenticated:
    """An ASGI app behind the same bearer authentication (read scope at least)."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            caller = require("read", authenticate(self.tokens, headers.get("authorization"), None))
        except ProblemError as problem:
            await problems.response(problem, _challenge(problem))(scope, receive, send)
            return
        await self.app({**scope, "shipyard.caller": caller}, receive, send)


# --- errors ----------------------------------------------------------------------------------


def _challenge(problem: ProblemError) -> dict[str, str] | None:
    return {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None


def _errors(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(ProblemError)
    async def on_problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problems.response(exc, _challenge(exc))

    @app.exception_handler(ShipyardError)
    async def on_shipyard(request: Request, exc: ShipyardError) -> JSONResponse:
        # An error's text can quote what a command or a driver said: redacted like output.
        redact = await asyncio.to_thread(settings.redactor_all)
        return problems.response(problems.from_error(exc, redact))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        said = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        return problems.response(
            ProblemError(400, f"invalid request: {said}", hint="/openapi.json describes it")
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problems.response(ProblemError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug in shipyard: the client gets a problem, the server log the traceback.
        return problems.response(
            ProblemError(
                500,
                f"internal error: {type(exc).__name__} (the server log has the details)",
                type="InternalError",
                exit_code=70,  # the CLI exits 70 (EX_SOFTWARE) on a bug too
            )
        )


def _problem_content_types(app: FastAPI) -> None:
    """In the OpenAPI document, error answers are `application/problem+json`."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = make()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    for code, answer in operation.get("responses", {}).items():
                        content = answer.get("content", {})
                        if code.isdigit() and int(code) >= 400 and "application/json" in content:
                            content[problems.MEDIA_TYPE] = content.pop("application/json")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- routes ---------------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    return authenticate(_settings(request).tokens, authorization, request.cookies.get(COOKIE))


def _reader(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    return require("read", who)


def _deployer(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    return require("deploy", who)


def _admin(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    return require("admin", who)


Anyone = Annotated[Caller, Depends(_caller)]
Reader = Annotated[Caller, Depends(_reader)]
Deployer = Annotated[Caller, Depends(_deployer)]
Admin = Annotated[Caller, Depends(_admin)]


def _routes(app: FastAPI, settings: Settings) -> None:
    read_errors = problems.documented(400, 401, 403, 404, 422, 503)
    write_errors = problems.documented(400, 401, 403, 404, 409, 422, 428, 503)

    @app.get(f"{API}/whoami", tags=["auth"], responses=read_errors)
    def whoami(who: Anyone) -> dict[str, str | None]:
        """Who the presented token belongs to, and its scope (null: none)."""
        return {"name": who.name, "scope": who.scope}

    @app.get(f"{API}/graph", tags=["project"], responses=read_errors)
    def graph(who: Reader) -> GraphOut:
        """The dependency graph and its levels (one level deploys in parallel)."""
        with settings.service() as svc:
            return GraphOut.model_validate(svc.graph().to_dict())

    @app.get(f"{API}/environments", tags=["environments"], responses=read_errors)
    def environments(who: Reader) -> list[EnvironmentOut]:
        """Every environment: what is active, its commit, health, and since when."""
        with settings.service() as svc:
            return [environment_out(svc, name) for name in sorted(svc.config.environments)]

    @app.get(f"{API}/environments/{{name}}", tags=["environments"], responses=read_errors)
    def environment(name: str, who: Reader) -> EnvironmentOut:
        """One environment: what is active, its commit, health, and since when."""
        with settings.service() as svc:
            _known_environment(svc, name)
            return environment_out(svc, name)

    @app.get(f"{API}/environments/{{name}}/health", tags=["environments"], responses=read_errors)
    def health(name: str, who: Reader) -> HealthOut:
        """Run every component's health check now."""
        with settings.service() as svc:
            _known_environment(svc, name)
            redact = svc.redactor(name)
            try:
                results, ok = svc.health(name), True
            except UnhealthyReport as report:
                results, ok = report.results, False
            return HealthOut(ok=ok, components=[redact.data(r.to_dict()) for r in results])

    @app.get(f"{API}/environments/{{name}}/plan", tags=["plans"], responses=read_errors)
    def plan(
        name: str,
        who: Reader,
        selection: Literal["full", "changed", "only"] | None = None,
        only: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006 (FastAPI copies it)
        ref: Annotated[str, Query(pattern=REF_PATTERN)] = "HEAD",
        tests: Literal["none", "smoke", "e2e", "full"] = "none",
        migrate: bool = True,
    ) -> PlanOut:
        """What a deploy with this selection would do; `plan_hash` is what a protected
        environment's confirmation names."""
        with settings.service() as svc:
            _known_environment(svc, name)
            found = svc.plan(
                name,
                selection=selection or ("only" if only else None),
                only=tuple(only),
                ref=ref,
                tests=tests,
                migrate=migrate,
            )
            return plan_out(svc, found)

    @app.get(f"{API}/environments/{{name}}/rollback-plan", tags=["plans"], responses=read_errors)
    def rollback_plan(
        name: str, who: Reader, to: Annotated[str | None, Query(max_length=64)] = None
    ) -> PlanOut:
        """What a rollback (to the previous good deployment, or `to`) would do."""
        with settings.service() as svc:
            _known_environment(svc, name)
            return plan_out(svc, svc.rollback_plan(name, to=to))

    @app.get(f"{API}/environments/{{name}}/promote-plan", tags=["plans"], responses=read_errors)
    def promote_plan(
        name: str,
        who: Reader,
        source: Annotated[str, Query(pattern=NAME_PATTERN)],
        deployment: Annotated[str | None, Query(max_length=64)] = None,
    ) -> PlanOut:
        """What promoting a deployment of `source` (default: its last good one) to this
        environment would do: the same artifacts, nothing rebuilt."""
        with settings.service() as svc:
            _known_environment(svc, name)
            return plan_out(svc, svc.plan_promote(source, name, deployment))

    @app.get(f"{API}/environments/{{name}}/secrets", tags=["environments"], responses=read_errors)
    def secrets(name: str, who: Reader) -> SecretsOut:
        """Presence, rules and environment match of the environment's secrets (`ok: false` is
        still 200). Names, places and fingerprints only, never a value."""
        with settings.service() as svc:
            _known_environment(svc, name)
            report = svc.secrets_check(name).to_dict()
            return SecretsOut.model_validate(svc.redactor(name).data(report))

    @app.get(f"{API}/changes", tags=["plans"], responses=read_errors)
    def changes(
        who: Reader,
        environment: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        since: Annotated[str | None, Query(pattern=REF_PATTERN)] = None,
        ref: Annotated[str, Query(pattern=REF_PATTERN)] = "HEAD",
    ) -> ChangesOut:
        """Changed files → affected components with reasons, and breaking changes, from `since`
        (default: the environment's last good deployment) to `ref`."""
        with settings.service() as svc:
            if environment is not None:
                _known_environment(svc, environment)
            return ChangesOut.model_validate(svc.changes(since, ref, environment).to_dict())

    @app.post(f"{API}/environments/{{name}}/recover", tags=["environments"], responses=write_errors)
    def recover(name: str, who: Admin) -> Recovered:
        """Finish what a dead orchestrator left (the server also does this on its own)."""
        with settings.service() as svc:
            _known_environment(svc, name)
            views = svc.recover(name)
            redact = svc.redactor(name)
            return Recovered(
                recovered=[DeploymentOut.model_validate(redact.data(v.to_dict())) for v in views]
            )

    @app.get(f"{API}/deployments", tags=["deployments"], responses=read_errors)
    def deployments(
        who: Reader,
        environment: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> DeploymentPage:
        """Deployments, newest first, filtered by environment, status and kind; paged."""
        with settings.service() as svc:
            if environment is not None:
                _known_environment(svc, environment)
            views = svc.deployments(
                environment, status=status, kind=kind, limit=limit + 1, offset=offset
            )
            items = [deployment_out(svc, v.to_dict()) for v in views[:limit]]
            more = len(views) > limit
            return DeploymentPage(
                items=items,
                limit=limit,
                offset=offset,
                next_offset=offset + limit if more else None,
            )

    @app.get(f"{API}/deployments/{{deployment_id}}", tags=["deployments"], responses=read_errors)
    def deployment(deployment_id: str, who: Reader) -> DeploymentOut:
        """One deployment and its components."""
        with settings.service() as svc:
            return deployment_out(svc, _deployment(svc, deployment_id))

    @app.get(
        f"{API}/deployments/{{deployment_id}}/events", tags=["deployments"], responses=read_errors
    )
    def events(
        deployment_id: str,
        who: Reader,
        after: Annotated[int, Query(ge=0, description="only events with a larger seq")] = 0,
    ) -> list[EventOut]:
        """The deployment's journal, in order: every step start, finish and failure."""
        with settings.service() as svc:
            env = _deployment(svc, deployment_id)["environment"]
            redact = svc.redactor(env)
            return [
                EventOut.model_validate(redact.data(e.to_dict()))
                for e in svc.events(deployment_id, after)
            ]

    @app.get(
        f"{API}/deployments/{{deployment_id}}/stream",
        tags=["deployments"],
        responses={
            **read_errors,
            200: {
                "description": "server-sent events: `id` is the event's seq, `data` the event "
                "as JSON; a last `event: end` carries the final deployment",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
        response_class=StreamingResponse,
    )
    async def stream(
        deployment_id: str,
        request: Request,
        who: Reader,
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        """Every event of the deployment, in order, live until it finishes. Resumable:
        `Last-Event-ID` (or `after`) skips what was already received."""
        start = after
        if last_event_id and last_event_id.strip().isdigit():
            start = max(start, int(last_event_id.strip()))
        with settings.service() as svc:
            record = await asyncio.to_thread(_deployment, svc, deployment_id)
        return StreamingResponse(
            _sse(settings, str(record["id"]), str(record["environment"]), start, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.post(
        f"{API}/deployments",
        tags=["deployments"],
        status_code=202,
        response_model=Accepted,
        responses={
            **write_errors,
            200: {"model": NothingToDeploy, "description": "nothing to deploy: the plan says why"},
        },
    )
    def deploy(body: DeployRequest, who: Deployer) -> Accepted | JSONResponse:
        """Start a deploy in the server (same lock and journal as the CLI); answers 202 with
        its id at once. It keeps going when the client disconnects."""
        with settings.service() as svc:
            the_plan = svc.plan(
                body.environment,
                selection=body.selection or ("only" if body.only else None),
                only=tuple(body.only),
                ref=body.ref,
                tests=body.tests,
                migrate=body.migrate,
            )
            _confirmed(svc, the_plan, body.confirm)
            if not the_plan.components:
                nothing = NothingToDeploy(plan=plan_out(svc, the_plan))
                return JSONResponse(nothing.model_dump(mode="json"), status_code=200)

        def run(sink: ProgressSink) -> DeploymentView:
            with settings.service() as runner:
                runner.sink = sink
                return runner.deploy(
                    the_plan,
                    rollback=body.rollback,
                    allow_destructive=body.allow_destructive,
                    allow_irreversible=body.allow_irreversible,
                    wait_lock=body.wait_lock,
                    created_by=who.created_by,
                )

        return accepted(settings.runs.start(run, "deploy"))

    @app.post(f"{API}/rollbacks", tags=["deployments"], status_code=202, responses=write_errors)
    def rollback(body: RollbackRequest, who: Deployer) -> Accepted:
        """Start a rollback to the previous good deployment (or `to`); answers 202 + id."""
        with settings.service() as svc:
            the_plan = svc.rollback_plan(body.environment, to=body.to)
            _confirmed(svc, the_plan, body.confirm)

        def run(sink: ProgressSink) -> DeploymentView:
            with settings.service() as runner:
                runner.sink = sink
                return runner.rollback(
                    the_plan.environment,
                    to=the_plan.rollback_to,
                    wait_lock=body.wait_lock,
                    created_by=who.created_by,
                )

        return accepted(settings.runs.start(run, "rollback"))

    @app.post(f"{API}/promotions", tags=["deployments"], status_code=202, responses=write_errors)
    def promote(body: PromoteRequest, who: Deployer) -> Accepted:
        """Start a promotion: deploy to `target` exactly the artifacts of a deployment of
        `source` (default: its last good one); answers 202 + id."""
        with settings.service() as svc:
            the_plan = svc.plan_promote(body.source, body.target, body.deployment)
            _confirmed(svc, the_plan, body.confirm)

        def run(sink: ProgressSink) -> DeploymentView:
            with settings.service() as runner:
                runner.sink = sink
                return runner.promote(
                    body.source,
                    body.target,
                    the_plan.promoted_from,  # the deployment the plan was made from
                    created_by=who.created_by,
                    wait_lock=body.wait_lock,
                )

        return accepted(settings.runs.start(run, "promote"))


def accepted(deployment_id: str) -> Accepted:
    return Accepted(
        id=deployment_id,
        url=f"{API}/deployments/{deployment_id}",
        events=f"{API}/deployments/{deployment_id}/events",
        stream=f"{API}/deployments/{deployment_id}/stream",
        page=f"/deployments/{deployment_id}",
    )


def _confirmed(svc: Shipyard, plan: Plan, confirm: str | None) -> None:
    """A protected environment deploys only the plan the caller saw: `confirm` names its hash."""
    env = svc.environment(plan.environment)
    if not env.protected or confirm == plan.plan_hash:
        return
    said = "needs confirmation" if not confirm else f"was confirmed for plan {confirm}"
    raise ProblemError(
        428,
        f"environment {env.name!r} is protected: this {plan.kind} {said}; "
        f"the plan now is {plan.plan_hash}",
        hint="read the plan, then send it again with `confirm` set to its plan_hash",
        extra={"plan": plan_out(svc, plan).model_dump(mode="json")},
    )


def _known_environment(svc: Shipyard, name: str) -> None:
    if name not in svc.config.environments:
        known = ", ".join(sorted(svc.config.environments))
        raise ProblemError(404, f"unknown environment {name!r}", hint=f"environments: {known}")


def _deployment(svc: Shipyard, deployment_id: str) -> dict[str, Any]:
    try:
        return svc.deployment(deployment_id).to_dict()
    except UsageError as exc:
        raise ProblemError(404, exc.message, hint=exc.hint) from None


def deployment_out(svc: Shipyard, data: dict[str, Any]) -> DeploymentOut:
    return DeploymentOut.model_validate(svc.redactor(data["environment"]).data(data))


def plan_out(svc: Shipyard, plan: Plan) -> PlanOut:
    data = {**plan.to_dict(), "protected": svc.environment(plan.environment).protected}
    return PlanOut.model_validate(svc.redactor(plan.environment).data(data))


def environment_out(svc: Shipyard, name: str) -> EnvironmentOut:
    """An environment's status with, per component, since when its release is active."""
    env = svc.environment(name)
    base = {
        "environment": env.name,
        "tier": env.tier,
        "protected": env.protected,
        "target": env.target,
    }
    try:
        status = svc.environment_status(name)
    except ShipyardError as exc:  # e.g. a target this version cannot drive: said, not fatal
        return EnvironmentOut.model_validate(
            {
                **base,
                "last_good_deployment": None,
                "components": [],
                "error": svc.redactor(name)(exc.message),
            }
        )
    ended: dict[str, str | None] = {}
    for c in status["components"]:
        made_by = c.get("deployment_id")
        if made_by and made_by not in ended:
            ended[made_by] = svc.deployment(made_by).to_dict()["finished_at"]
        c["since"] = ended.get(made_by) if made_by else None
    return EnvironmentOut.model_validate(svc.redactor(name).data({**status, **base}))


async def _sse(
    settings: Settings, deployment_id: str, env: str, after: int, request: Request
) -> AsyncIterator[bytes]:
    """The journal as server-sent events: polled from the store, so it follows a deployment
    whoever runs it (this server, the CLI, another machine)."""
    seq = after
    quiet = 0.0
    with settings.service() as svc:
        redact = svc.redactor(env)

        def poll() -> tuple[list[EventRecord], str]:
            status = svc.deployment(deployment_id).record.status  # before the events: none lost
            return svc.events(deployment_id, seq), status

        ended_after_empty = False
        while True:
            events, status = await asyncio.to_thread(poll)
            for event in events:
                seq = event.seq
                data = json.dumps(redact.data(event.to_dict()))
                yield f"id: {event.seq}\ndata: {data}\n\n".encode()
            last_says_done = (
                bool(events)
                and events[-1].kind == "deployment"
                and (events[-1].status in FINISHED_STATUSES)
            )
            if status in FINISHED_STATUSES and (
                last_says_done or (not events and ended_after_empty)
            ):
                final = await asyncio.to_thread(_deployment, svc, deployment_id)
                yield f"event: end\ndata: {json.dumps(redact.data(final))}\n\n".encode()
                return
            ended_after_empty = status in FINISHED_STATUSES and not events
            if events:
                quiet = 0.0
                continue
            if await request.is_disconnected():
                return
            await asyncio.sleep(settings.poll_interval)
            quiet += settings.poll_interval
            if quiet >= 15:  # a comment line keeps proxies from closing an idle stream
                quiet = 0.0
                yield b": keep-alive\n\n"
