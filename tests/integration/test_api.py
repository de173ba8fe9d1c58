"""The HTTP API through the real ASGI app (httpx, in process): tokens and scopes, errors as
problem+json with the CLI's types and hints, escaping and redaction in the dashboard."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.api.app import create_app
from shipyard.api.auth import Caller, Tokens, load_tokens, parse_tokens
from shipyard.errors import UsageError
from shipyard.service import Shipyard
from shipyard.store import DeploymentRecord, LockOwner, Store, new_id
from tests.api_fixtures import TOKENS, auth, tokens
from tests.conftest import RunCli, commit_all

PROBLEM = "application/problem+json"


def client(project: Path, anonymous: str | None = None) -> TestClient:
    app = create_app(
        project,
        tokens=Tokens(tokens().tokens, anonymous_scope=anonymous),
        recover_interval=None,
        allowed_hosts=("testserver",),
    )
    return TestClient(app)


def test_tokens_and_scopes(shop: Path) -> None:
    api = client(shop)
    seen = []

    def get(path: str, scope: str | None, status: int) -> dict[str, object]:
        answer = api.get(path, headers=auth(scope) if scope else {})
        seen.append(answer.text)
        assert answer.status_code == status, answer.text
        return dict(answer.json()) if isinstance(answer.json(), dict) else {"items": answer.json()}

    missing = api.get("/api/v1/environments")
    assert missing.status_code == 401 and missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["type"] == "UsageError" and "Bearer" in missing.json()["hint"]
    wrong = api.get("/api/v1/graph", headers={"Authorization": "Bearer " + "x" * 30})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "the token is not valid"
    basic = api.get("/api/v1/graph", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401

    envs = get("/api/v1/environments", "read", 200)["items"]
    assert [e["environment"] for e in envs] == ["local", "staging"]  # type: ignore[attr-defined]
    assert get("/api/v1/whoami", "deploy", 200) == {"name": "t-deploy", "scope": "deploy"}

    # read < deploy < admin
    for scope, status in (("read", 403), ("deploy", 200), ("admin", 200)):
        answer = api.post("/api/v1/deployments", json={"only": ["nope"]}, headers=auth(scope))
        seen.append(answer.text)
        # deploy and admin get past the scope check, to the unknown component
        assert answer.status_code == (403 if status == 403 else 400), answer.text
    forbidden = api.post("/api/v1/environments/local/recover", headers=auth("deploy"))
    assert forbidden.status_code == 403
    assert forbidden.json()["detail"] == "token 't-deploy' has the deploy scope; this needs admin"
    recovered = api.post("/api/v1/environments/local/recover", headers=auth("admin"))
    assert recovered.status_code == 200 and recovered.json() == {"recovered": []}
    seen += [forbidden.text, recovered.text]
    for text in seen:  # a token's value never comes back, only its name
        assert not any(value in text for value in TOKENS.values())

    # Another Host name is refused (a DNS-rebinding page cannot reach a loopback server).
    rebinding = api.get("/api/v1/graph", headers={**auth("read"), "Host": "evil.example"})
    assert rebinding.status_code == 400


def test_anonymous_reads_only(shop: Path) -> None:
    api = client(shop, anonymous="read")
    assert api.get("/api/v1/graph").status_code == 200
    assert api.get("/").status_code == 200
    refused = api.post("/api/v1/deployments", json={})
    assert refused.status_code == 401
    assert refused.json()["detail"] == "this needs a token with the deploy scope"


def test_errors_have_the_cli_types_and_hints(shop: Path, run_cli: RunCli) -> None:
    api = client(shop)
    read = auth("read")
    answer = api.get("/api/v1/environments/local/plan", params={"ref": "nope"}, headers=read)
    cli = run_cli("-C", str(shop), "--json", "plan", "--ref", "nope")
    assert cli.returncode == 2
    said = json.loads(cli.stdout)["error"]
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert (problem["type"], problem["detail"], problem["hint"]) == (
        said["type"],
        said["message"],
        said["hint"],
    )
    assert problem["exit_code"] == 2

    rollback = api.get("/api/v1/environments/local/rollback-plan", headers=read)
    cli = run_cli("-C", str(shop), "--json", "rollback", "--yes")
    said = json.loads(cli.stdout)["error"]
    assert rollback.status_code == 400
    assert (rollback.json()["type"], rollback.json()["hint"]) == (said["type"], said["hint"])

    missing = api.get("/api/v1/deployments/0000-nope", headers=read)
    assert missing.status_code == 404 and missing.json()["hint"]
    unknown_env = api.get("/api/v1/environments/prod", headers=read)
    assert unknown_env.status_code == 404 and "local, staging" in unknown_env.json()["hint"]
    bad_query = api.get("/api/v1/deployments", params={"limit": 0}, headers=read)
    assert bad_query.status_code == 400 and bad_query.json()["type"] == "UsageError"
    option_ref = api.get(
        "/api/v1/environments/local/plan", params={"ref": "--output=/tmp/x"}, headers=read
    )
    assert option_ref.status_code == 400
    no_route = api.get("/api/v1/nothing-here", headers=read)
    assert no_route.status_code == 404 and no_route.headers["content-type"] == PROBLEM


def test_dashboard_escapes_and_redacts(shop: Path) -> None:
    """Text from outside (an error, a journal message) is escaped; a secret value is not shown."""
    secret = next(
        line.split("=", 1)[1]
        for line in (shop / ".env.local").read_text().splitlines()
        if line.startswith("JWT_SECRET=")
    )
    hostile = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    deployment_id = new_id()
    with Store.open(f"sqlite:///{shop / '.shipyard' / 'state.db'}") as store:
        store.create_deployment(
            DeploymentRecord(
                id=deployment_id,
                environment="local",
                kind="full",
                status="failed",
                error=f"{hostile} token={secret}",
            )
        )
        store.append_event(
            deployment_id, "step", step="build:backend", message=f"{hostile} {secret}"
        )
    api = client(shop)
    pages = [
        api.get(f"/deployments/{deployment_id}", headers=auth("read")),
        api.get("/history", headers=auth("read")),
        api.get(f"/api/v1/deployments/{deployment_id}", headers=auth("read")),
        api.get(f"/api/v1/deployments/{deployment_id}/events", headers=auth("read")),
    ]
    for page in pages:
        assert page.status_code == 200
        assert secret not in page.text
    # An error quotes what it was given (here an environment named like a secret value): its
    # text is redacted like any output, on the dashboard and in problem+json.
    for asked in (
        f"/history?environment={secret}",
        f"/api/v1/environments/local/plan?ref={secret}",
    ):
        answer = api.get(asked, headers=auth("read"))
        assert answer.status_code in (400, 404, 422) and "JWT_SECRET" in answer.text, answer.text
        assert secret not in answer.text
    for page in pages[:2]:
        assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<img src=x" not in pages[0].text
    # The history's filters: "all" environments, then one, then a status that matches nothing.
    every = api.get("/history", params={"environment": "", "status": ""}, headers=auth("read"))
    assert every.status_code == 200 and deployment_id[:13] in every.text
    failed = api.get(
        "/history", params={"environment": "local", "status": "failed"}, headers=auth("read")
    )
    assert deployment_id[:13] in failed.text
    none = api.get("/history", params={"status": "succeeded"}, headers=auth("read"))
    assert deployment_id[:13] not in none.text and "no deployments" in none.text


def test_login_sets_a_cookie_that_works_like_the_token(shop: Path) -> None:
    api = client(shop)
    first = api.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/"
    bad = api.post("/login", data={"token": "not-a-token", "next": "/"})
    assert bad.status_code == 401 and "not a valid token" in bad.text
    good = api.post(
        "/login", data={"token": TOKENS["deploy"], "next": "//evil.example"}, follow_redirects=False
    )
    assert good.status_code == 303 and good.headers["location"] == "/"  # never off-site
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = api.get("/")
    assert page.status_code == 200 and "deploy…" in page.text and TOKENS["deploy"] not in page.text
    assert api.get("/api/v1/whoami").json() == {"name": "t-deploy", "scope": "deploy"}
    # A page elsewhere can post a form with the cookie, never a JSON body: refused.
    forged = api.post(
        "/api/v1/deployments",
        content='{"environment": "local"}',
        headers={"content-type": "text/plain"},
    )
    assert forged.status_code == 400 and forged.json()["type"] == "UsageError"


def test_token_sources(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# who scope value\nci deploy ci-value-0123456789abc\n")
    file.chmod(0o644)
    with pytest.raises(UsageError, match="can be read by other users"):
        load_tokens(tmp_path, {}, file)
    file.chmod(0o600)
    found = load_tokens(
        tmp_path, {"SHIPYARD_API_TOKENS": "ops:admin:ops-value-0123456789abc"}, file
    )
    assert [(t.name, t.scope) for t in found] == [("ci", "deploy"), ("ops", "admin")]
    with pytest.raises(UsageError, match="scopes are read, deploy, admin") as bad:
        parse_tokens("x root some-long-secret-value-123", "tokens")
    assert "some-long-secret" not in str(bad.value)
    with pytest.raises(UsageError, match="shorter than 16"):
        parse_tokens("a:read:short", "SHIPYARD_API_TOKENS")


def test_the_controller_recovers_only_what_no_live_process_holds(shop: Path) -> None:
    """`interrupted` (what the controller recovers): an unfinished deployment whose lock is
    free, expired, or held by a dead process here; never one a live process holds."""
    url = f"sqlite:///{shop / '.shipyard' / 'state.db'}"
    an_hour_ago = lambda: datetime.now(UTC) - timedelta(hours=1)  # noqa: E731
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = LockOwner.current()
    cases = {
        "free": None,
        "live": (me, Store.open(url)),
        "expired": (LockOwner("ci", "elsewhere", 1), Store.open(url, clock=an_hour_ago)),
        "dead pid": (dataclasses.replace(me, pid=dead.pid), Store.open(url)),
    }
    found = {}
    for case, holder in cases.items():
        deployment_id = new_id()
        with Store.open(url) as store:
            store.create_deployment(
                DeploymentRecord(
                    id=deployment_id, environment="staging", kind="full", status="running"
                )
            )
        if holder is not None:
            owner, store = holder
            store.acquire_lock("staging", deployment_id, owner, ttl_s=60)
            store.close()
        svc = Shipyard(shop)
        found[case] = [d.id for d in svc.interrupted("staging")] == [deployment_id]
        svc.close()
        with Store.open(url) as store:  # the next case starts from a free lock again
            store.force_release_lock("staging", by="test")
            store.update_deployment(deployment_id, status="failed")
    assert found == {"free": True, "live": False, "expired": True, "dead pid": True}


def test_mounted_apps_sit_behind_the_same_tokens(shop: Path) -> None:
    seen: list[object] = []

    async def mounted(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["shipyard.caller"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"mounted"})

    app = create_app(
        shop,
        tokens=tokens(),
        mounts=[("/mcp", mounted)],
        recover_interval=None,
        allowed_hosts=("testserver",),
    )
    api = TestClient(app)
    assert api.get("/mcp/").status_code == 401
    answer = api.get("/mcp/", headers=auth("deploy"))
    assert answer.text == "mounted" and seen == [Caller("t-deploy", "deploy")]


def test_serve_refuses_what_it_cannot_serve_safely(shop: Path, run_cli: RunCli) -> None:
    """Exit 2 before listening: no token on a non-loopback address; a token file others can
    read; a malformed token line (named by file and line, never by its value)."""
    exposed = run_cli("-C", str(shop), "--json", "serve", "--host", "0.0.0.0", "--port", "1")
    assert exposed.returncode == 2
    assert "needs at least one token" in json.loads(exposed.stdout)["error"]["message"]

    file = shop / "tokens"
    file.write_text("ci deploy a-long-enough-token-value\nbroken-line-secret-value-here\n")
    file.chmod(0o644)
    readable = run_cli("-C", str(shop), "serve", "--tokens-file", str(file), "--port", "1")
    assert readable.returncode == 2 and "chmod 600" in readable.stderr
    file.chmod(0o600)
    broken = run_cli("-C", str(shop), "serve", "--tokens-file", str(file), "--port", "1")
    assert broken.returncode == 2 and f"{file}:2" in broken.stderr
    assert "a-long-enough" not in broken.stderr + broken.stdout
    assert "broken-line-secret" not in broken.stderr + broken.stdout


def test_a_deploy_while_another_holds_the_lock_is_409(shop: Path) -> None:
    holder = new_id()
    with Store.open(f"sqlite:///{shop / '.shipyard' / 'state.db'}") as store:
        store.create_deployment(
            DeploymentRecord(id=holder, environment="local", kind="full", status="running")
        )
        store.acquire_lock("local", holder, LockOwner.current(), ttl_s=300)
        answer = client(shop).post("/api/v1/deployments", json={}, headers=auth("deploy"))
        store.force_release_lock("local", by="test")
        store.update_deployment(holder, status="failed")
    assert answer.status_code == 409 and answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert (problem["type"], problem["exit_code"]) == ("LockedError", 4)
    assert holder in problem["detail"]


def test_changes_and_secrets_checks_over_http(shop: Path, run_cli: RunCli) -> None:
    (shop / "marketing" / "NOTES.md").write_text("new\n")
    commit_all(shop, "marketing only")
    api = client(shop)
    changes = api.get(
        "/api/v1/changes", params={"environment": "local", "since": "HEAD~1"}, headers=auth("read")
    )
    assert changes.status_code == 200, changes.text
    assert changes.json()["changed_files"] == ["marketing/NOTES.md"]
    assert [a["name"] for a in changes.json()["affected"]] == ["marketing"]

    secrets = api.get("/api/v1/environments/local/secrets", headers=auth("read"))
    cli = run_cli("-C", str(shop), "--json", "secrets", "check", "--env", "local")
    assert secrets.status_code == 200
    assert secrets.json()["ok"] == json.loads(cli.stdout)["ok"]
    values = [
        line.split("=", 1)[1]
        for line in (shop / ".env.local").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ]
    assert not any(value in secrets.text for value in values)
