"""Deploys through the HTTP API of a real server (uvicorn on a loopback port) on a copy of
the demo: 202 + id, the live event stream, what the public ports serve afterwards."""

from __future__ import annotations

import contextlib
import json
import tomllib
import urllib.request
from pathlib import Path

from shipyard.store import DeploymentRecord, Store, new_id
from tests.api_fixtures import Server, serve, sse_events, wait_finished
from tests.conftest import commit_all
from tests.e2e.test_deploy_shop import ports


def served_release(project: Path, component: str = "backend") -> str:
    port = ports(project)[component]
    path = "/api/version" if component == "backend" else "/version"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(json.loads(answer.read())["release"])


def stream(server: Server, deployment_id: str, **headers: str) -> list[dict[str, object]]:
    with (
        server.client() as client,
        client.stream(
            "GET", f"/api/v1/deployments/{deployment_id}/stream", headers=headers
        ) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(answer.iter_lines()))


def test_deploy_stream_rollback_and_protected_confirmation(shop: Path) -> None:
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            "[environments.staging]\n", "[environments.staging]\nprotected = true\n"
        )
    )
    commit_all(shop, "staging is protected")
    # A deployment whose orchestrator died: taking the lock recovers it first (journaling
    # that), and the 202 still names the deployment the request started.
    dead = new_id()
    with Store.open(f"sqlite:///{shop / '.shipyard' / 'state.db'}") as store:
        store.create_deployment(
            DeploymentRecord(id=dead, environment="local", kind="full", status="running")
        )
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(contextlib.contextmanager(serve)(shop, recover_interval=None))
        client = stack.enter_context(server.client("deploy"))

        started = client.post("/api/v1/deployments", json={})
        assert started.status_code == 202, started.text
        v1 = started.json()["id"]
        assert v1 != dead
        assert started.json()["stream"] == f"/api/v1/deployments/{v1}/stream"

        # A client that reads one event and hangs up does not stop the deployment.
        with (
            server.client() as reader,
            reader.stream("GET", f"/api/v1/deployments/{v1}/stream") as answer,
        ):
            first = next(sse_events(answer.iter_lines()))
        assert first["id"] == "1"

        events = stream(server, v1)
        *journal_events, end = events
        assert end["event"] == "end" and end["data"]["status"] == "succeeded"
        journal = client.get(f"/api/v1/deployments/{v1}/events").json()
        # Every event, in order, exactly as the journal has it.
        assert [e["data"] for e in journal_events] == journal
        assert [int(e["id"]) for e in journal_events] == list(range(1, len(journal) + 1))
        assert journal[-1]["kind"] == "deployment" and journal[-1]["status"] == "succeeded"

        # Resuming after event 10 sends 11… only.
        resumed = stream(server, v1, **{"Last-Event-ID": "10"})
        assert [e["data"]["seq"] for e in resumed[:-1]] == list(range(11, len(journal) + 1))

        recovered = client.get(f"/api/v1/deployments/{dead}").json()
        assert recovered["status"] == "rolled_back" and "orchestrator died" in recovered["error"]
        record = client.get(f"/api/v1/deployments/{v1}").json()
        assert record["status"] == "succeeded" and record["created_by"] == "api:t-deploy"
        assert {c["release"] for c in record["components"]} == {v1}
        assert served_release(shop) == v1 and served_release(shop, "admin") == v1

        # v2, then a rollback through the API: the ports serve v1 again.
        (shop / "backend" / "NOTES.md").write_text("v2\n")
        commit_all(shop, "v2")
        v2 = client.post("/api/v1/deployments", json={"environment": "local"}).json()["id"]
        assert wait_finished(client, v2)["status"] == "succeeded"
        assert served_release(shop) == v2
        plan = client.get("/api/v1/environments/local/rollback-plan").json()
        assert plan["kind"] == "rollback" and plan["rollback_to"] == v1
        back = client.post("/api/v1/rollbacks", json={"environment": "local"})
        assert back.status_code == 202, back.text
        assert wait_finished(client, back.json()["id"])["status"] == "succeeded"
        assert served_release(shop) == v1

        page = client.get("/api/v1/deployments", params={"environment": "local", "limit": 2})
        assert [d["id"] for d in page.json()["items"]] == [back.json()["id"], v2]
        assert page.json()["next_offset"] == 2
        only_rollbacks = client.get("/api/v1/deployments", params={"kind": "rollback"}).json()
        assert [d["id"] for d in only_rollbacks["items"]] == [back.json()["id"]]

        # A protected environment deploys only the plan the caller confirmed, by its hash.
        refused = client.post("/api/v1/deployments", json={"environment": "staging"})
        assert refused.status_code == 428
        assert refused.headers["content-type"] == "application/problem+json"
        shown = refused.json()["plan"]
        wrong = client.post(
            "/api/v1/deployments", json={"environment": "staging", "confirm": "0" * 16}
        )
        assert wrong.status_code == 428 and shown["plan_hash"] in wrong.json()["detail"]
        plan = client.get("/api/v1/environments/staging/plan").json()
        assert plan["plan_hash"] == shown["plan_hash"] and plan["protected"] is True
        reader_try = server.client("read").post(
            "/api/v1/deployments",
            json={"environment": "staging", "confirm": plan["plan_hash"]},
        )
        assert reader_try.status_code == 403

        # Promote local's last good deployment (the rollback) to protected staging: the same
        # artifacts, after confirming the promotion's own plan.
        promotion = {"source": "local", "target": "staging"}
        unconfirmed = client.post("/api/v1/promotions", json=promotion)
        assert unconfirmed.status_code == 428
        plan = client.get(
            "/api/v1/environments/staging/promote-plan", params={"source": "local"}
        ).json()
        assert plan["kind"] == "promote" and plan["promoted_from"] == back.json()["id"]
        assert plan["plan_hash"] == unconfirmed.json()["plan"]["plan_hash"]
        confirmed = client.post(
            "/api/v1/promotions", json={**promotion, "confirm": plan["plan_hash"]}
        )
        assert confirmed.status_code == 202, confirmed.text
        promoted = wait_finished(client, confirmed.json()["id"])
        assert promoted["status"] == "succeeded" and promoted["kind"] == "promote"
        assert promoted["created_by"] == "api:t-deploy"
        local_artifacts = {c["name"]: c["artifact"] for c in record["components"]}
        assert {c["name"]: c["artifact"] for c in promoted["components"]} == local_artifacts
        staging_port = tomllib.loads((shop / "shipyard.toml").read_text())["environments"][
            "staging"
        ]["components"]["backend"]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{staging_port}/api/version") as answer:
            assert json.loads(answer.read())["release"] == promoted["id"]
