"""The dashboard: server-rendered pages (Jinja2, every value escaped), a little JavaScript
and CSS served from this package (no CDN), a strict Content-Security-Policy.

Pages read through the same functions as the JSON API; buttons call the JSON API (the
browser sends the session cookie set at /login, a token with a scope, like a bearer).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from shipyard.api import problems
from shipyard.api.auth import COOKIE, Caller
from shipyard.api.problems import ProblemError
from shipyard.errors import ShipyardError
from shipyard.service import Shipyard

if TYPE_CHECKING:
    from shipyard.api.app import Settings

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NODE_W, NODE_H, GAP_X, GAP_Y = 170, 52, 70, 22


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("shipyard.api", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["short"] = lambda v, n=12: "-" if not v else str(v)[:n]
    env.filters["when"] = _when
    env.filters["seconds"] = lambda v: "-" if v is None else f"{float(v):.1f}s"
    return env


def _when(value: str | None) -> str:
    return "-" if not value else value[:19].replace("T", " ")


@dataclass(frozen=True)
class Node:
    name: str
    x: int
    y: int


def graph_layout(graph: dict[str, Any]) -> dict[str, Any]:
    """Where each component sits in the SVG: one column per level, edges dependency → user."""
    nodes: dict[str, Node] = {}
    for column, level in enumerate(graph["levels"]):
        for row, name in enumerate(level):
            nodes[name] = Node(name, 10 + column * (NODE_W + GAP_X), 10 + row * (NODE_H + GAP_Y))
    edges = [
        (nodes[dep], nodes[name])
        for name, node in graph["components"].items()
        for dep in node["depends_on"]
        if dep in nodes and name in nodes
    ]
    width = max((n.x for n in nodes.values()), default=0) + NODE_W + 10
    height = max((n.y for n in nodes.values()), default=0) + NODE_H + 10
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "width": width,
        "height": height,
        "w": NODE_W,
        "h": NODE_H,
    }


def timeline(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Each step's start and duration from the journal, scaled for an SVG of bars."""
    started: dict[str, datetime] = {}
    bars = []
    first: datetime | None = None
    for e in events:
        if e["kind"] != "step" or not e["step"] or not e["at"]:
            continue
        at = datetime.fromisoformat(e["at"])
        first = first or at
        if e["status"] == "running":
            started[e["step"]] = at
        elif e["step"] in started:
            begin = started.pop(e["step"])
            bars.append(
                {
                    "step": e["step"],
                    "status": e["status"],
                    "start": (begin - first).total_seconds(),
                    "duration": (at - begin).total_seconds(),
                }
            )
    total = max((b["start"] + b["duration"] for b in bars), default=0.0) or 1.0
    scale = 600 / total
    for i, bar in enumerate(bars):
        bar["x"] = 230 + round(bar["start"] * scale, 1)
        bar["width"] = max(2.0, round(bar["duration"] * scale, 1))
        bar["y"] = 8 + i * 22
    return {"bars": bars, "height": 16 + 22 * len(bars), "total": total}


def _viewer(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller | None:
    """The caller of a page, or None when it must log in first."""
    from shipyard.api.app import authenticate, require

    tokens = request.app.state.settings.tokens
    try:
        return require("read", authenticate(tokens, authorization, request.cookies.get(COOKIE)))
    except ProblemError:
        return None


Viewer = Annotated[Caller | None, Depends(_viewer)]


def add_dashboard(app: FastAPI, settings: Settings) -> None:
    from shipyard.api.app import _deployment, deployment_out, environment_out

    templates = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = templates.get_template(name).render(**values)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def to_login(request: Request) -> RedirectResponse:
        back = urllib.parse.quote(request.url.path)
        return RedirectResponse(f"/login?next={back}", status_code=303)

    def failed(who: Caller, exc: ShipyardError) -> HTMLResponse:
        shown = problems.from_error(exc, settings.redactor_all())
        return page("error.html", status=500 if exc.exit_code == 1 else 400, who=who, error=shown)

    @app.get("/", include_in_schema=False, response_model=None)
    def overview(request: Request, who: Viewer) -> Response:
        if who is None:
            return to_login(request)
        with settings.service() as svc:
            try:
                envs = [
                    environment_out(svc, n).model_dump() for n in sorted(svc.config.environments)
                ]
                graph = graph_layout(svc.graph().to_dict())
                project = svc.config.project.name
            except ShipyardError as exc:
                return failed(who, exc)
        return page("overview.html", who=who, envs=envs, graph=graph, project=project)

    @app.get("/history", include_in_schema=False, response_model=None)
    def history(
        request: Request,
        who: Viewer,
        environment: Annotated[str | None, Query(max_length=100)] = None,  # "": every one
        status: Annotated[str | None, Query(max_length=32)] = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        if who is None:
            return to_login(request)
        limit = 25
        with settings.service() as svc:
            try:
                views = svc.deployments(
                    environment or None,
                    status=status or None,
                    kind=kind or None,
                    limit=limit + 1,
                    offset=offset,
                )
                rows = [deployment_out(svc, v.to_dict()).model_dump() for v in views[:limit]]
                names = sorted(svc.config.environments)
            except ShipyardError as exc:
                return failed(who, exc)
        query = {"environment": environment or "", "status": status or "", "kind": kind or ""}
        more = urllib.parse.urlencode({**query, "offset": offset + limit})
        return page(
            "history.html",
            who=who,
            rows=rows,
            environments=names,
            query=query,
            next_page=f"/history?{more}" if len(views) > limit else None,
        )

    @app.get("/deployments/{deployment_id}", include_in_schema=False, response_model=None)
    def deployment(request: Request, deployment_id: str, who: Viewer) -> Response:
        if who is None:
            return to_login(request)
        with settings.service() as svc:
            try:
                data = deployment_out(svc, _deployment(svc, deployment_id)).model_dump()
            except ProblemError as problem:
                return page("error.html", status=404, who=who, error=problem)
            redact = svc.redactor(data["environment"])
            events = [redact.data(e.to_dict()) for e in svc.events(data["id"])]
            graph = graph_layout(_graph_of(svc, data))
        steps = _current_steps(events)
        return page(
            "deployment.html",
            who=who,
            d=data,
            events=events,
            health=[e for e in events if e["kind"] == "health"],
            graph=graph,
            steps=steps,
            timeline=timeline(events),
            live=data["status"] in ("pending", "running", "rolling_back"),
        )

    @app.get("/login", include_in_schema=False)
    def login_page(next: str = "/") -> HTMLResponse:
        return page("login.html", who=None, next=_local(next), error=None)

    @app.post("/login", include_in_schema=False, response_model=None)
    async def login(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
        token = (form.get("token") or [""])[0].strip()
        back = _local((form.get("next") or ["/"])[0])
        if not token or settings.tokens.check(token) is None:
            return page("login.html", status=401, who=None, next=back, error="not a valid token")
        answer = RedirectResponse(back, status_code=303)
        answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return answer

    @app.post("/logout", include_in_schema=False)
    def logout() -> RedirectResponse:
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/")
        return answer


def _local(path: str) -> str:
    """Only a path on this server is a place to go back to (no open redirect)."""
    local = path.startswith("/") and not path.startswith(("//", "/\\")) and "\\" not in path
    return path if local else "/"


def _graph_of(svc: Shipyard, data: dict[str, Any]) -> dict[str, Any]:
    """The project graph, restricted to the deployment's components when it names them."""
    full: dict[str, Any] = svc.graph().to_dict()
    names = {c["name"] for c in data["components"]} or set(full["components"])
    components = {
        n: {"depends_on": [d for d in node["depends_on"] if d in names]}
        for n, node in full["components"].items()
        if n in names
    }
    levels = [[n for n in level if n in names] for level in full["levels"]]
    return {"components": components, "levels": [lv for lv in levels if lv]}


def _current_steps(events: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each component's latest step and its status, as the live view shows it (app.js
    does the same with the events that arrive later)."""
    steps: dict[str, dict[str, str]] = {}
    for e in events:
        if e["component"] and e["kind"] in ("step", "health"):
            what = (e["step"] or e["kind"]).split(":")[0]
            status = e["status"] or ""
            steps[e["component"]] = {"text": f"{what} {status}".strip(), "status": status}
    return steps
