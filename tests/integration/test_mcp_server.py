"""The MCP server through the SDK's own in-process client, on both protocol revisions.

A tiny real project (one component: Python's http.server, in a git repository) is planned,
deployed, rolled back and inspected through every tool; a protected environment is confirmed
(or not) through elicitation. Deployments are real: a host agent runs, ports are free ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from shipyard.errors import UsageError
from shipyard.mcp import McpOptions, build_server
from tests.conftest import commit_all, git
from tests.integration.mcp_project import (
    MODES,
    SECRET,
    Answer,
    answering,
    client,
    error_text,
    ok,
    project,
    run,
    served,
)

__all__ = ["project"]  # the fixture, imported for pytest


@pytest.mark.parametrize("mode", MODES)
def test_every_tool_is_listed_with_annotations_and_an_output_schema(
    project: Path, mode: str
) -> None:
    async def body() -> None:
        async with client(build_server(project), mode) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            templates = (await c.list_resource_templates()).resource_templates
        assert set(tools) == {
            "plan",
            "deploy",
            "promote",
            "rollback",
            "status",
            "history",
            "health",
            "validate_secrets",
            "detect_changes",
        }
        for name, tool in tools.items():
            hints = tool.annotations
            assert hints is not None and hints.read_only_hint is not None, name
            assert tool.output_schema is not None, name
        assert tools["deploy"].annotations.destructive_hint is True  # type: ignore[union-attr]
        assert tools["rollback"].annotations.read_only_hint is False  # type: ignore[union-attr]
        assert tools["promote"].annotations.destructive_hint is True  # type: ignore[union-attr]
        assert tools["history"].annotations.read_only_hint is True  # type: ignore[union-attr]
        # The confirmation is asked of the person, never an argument the model could fill in.
        assert set(tools["deploy"].input_schema["properties"]) == {
            "plan_id",
            "allow_destructive",
            "allow_irreversible",
        }
        assert "plan_id" in tools["plan"].output_schema["properties"]  # type: ignore[index]
        assert [t.uri_template for t in templates] == ["shipyard://deployments/{deployment_id}/log"]

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_plan_deploy_then_follow_it_with_status_history_health_and_its_log(
    project: Path, mode: str
) -> None:
    progress: list[str] = []

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def body() -> None:
        async with client(build_server(project), mode) as c:
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            assert plan["deployable"] and plan["components"] == ["web"]
            assert plan["kind"] == "full" and not plan["protected"]
            assert "plan " + plan["plan_hash"] in plan["summary"]
            deployed = ok(
                await c.call_tool(
                    "deploy", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
                )
            )
            assert deployed["status"] == "succeeded"
            assert deployed["created_by"].startswith("mcp:test-client (")
            assert served(project, "local") == "v1\n"
            deployment_id = deployed["id"]
            # The client learns the id from the first notification, long before the end.
            assert progress[0].startswith(f"deployment {deployment_id}: ")
            assert any("step activate:web web succeeded" in m for m in progress)

            followed = ok(
                await c.call_tool(
                    "status", {"environment": "local", "deployment_id": deployment_id[:13]}
                )
            )
            assert followed["deployment"]["status"] == "succeeded"
            active = ok(await c.call_tool("status", {"environment": "local"}))["active"]
            assert active["last_good_deployment"] == deployment_id
            assert active["components"][0]["healthy"] is True
            listed = ok(await c.call_tool("history", {"environment": "local", "limit": 5}))
            assert [d["id"] for d in listed["deployments"]] == [deployment_id]
            health = ok(await c.call_tool("health", {"environment": "local"}))
            assert health["ok"] is True and health["components"][0]["name"] == "web"
            journal = await c.read_resource(f"shipyard://deployments/{deployment_id}/log")
            text = journal.contents[0].text  # type: ignore[union-attr]
            assert "step switch succeeded" in text and "deployment succeeded" in text

            elsewhere = await c.call_tool(
                "status", {"environment": "prod", "deployment_id": deployment_id}
            )
            assert "is in environment 'local', not 'prod'" in error_text(elsewhere)

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_deploy_refuses_a_plan_the_repository_moved_past(project: Path, mode: str) -> None:
    async def body() -> None:
        async with client(build_server(project), mode) as c:
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            (project / "web" / "index.html").write_text("v2\n")
            head = commit_all(project, "v2")
            refused = await c.call_tool("deploy", {"plan_id": plan["plan_id"]})
            text = error_text(refused)
            assert "PreflightError" in text and "no longer matches" in text
            assert f"HEAD moved from {plan['commit'][:12]} to {head[:12]}" in text
            assert "make a new plan" in text
            assert ok(await c.call_tool("history", {"environment": "local"}))["deployments"] == []
            unknown = await c.call_tool("deploy", {"plan_id": "no-such-plan"})
            assert "no saved plan 'no-such-plan'" in error_text(unknown)

    run(body)


def test_deploy_refuses_a_plan_the_environment_moved_past(project: Path) -> None:
    async def body() -> None:
        async with client(build_server(project), "legacy") as c:
            first = ok(await c.call_tool("plan", {"environment": "local"}))
            second = ok(await c.call_tool("plan", {"environment": "local"}))
            ok(await c.call_tool("deploy", {"plan_id": first["plan_id"]}))
            refused = await c.call_tool("deploy", {"plan_id": second["plan_id"]})
            assert "local changed: its last good deployment is now" in error_text(refused)

    run(body)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        (answering("decline"), "was declined by the user; nothing was changed"),
        (answering("cancel"), "was cancelled by the user; nothing was changed"),
        (answering("accept", confirm=False), "was not confirmed; nothing was changed"),
        (None, "cannot ask for it (no elicitation support); nothing was changed"),
    ],
    ids=["declined", "cancelled", "unchecked", "unsupported"],
)
def test_a_protected_environment_is_not_touched_without_a_yes(
    project: Path, mode: str, answer: Answer | None, refusal: str
) -> None:
    async def body() -> None:
        async with client(build_server(project), mode, answer) as c:
            plan = ok(await c.call_tool("plan", {"environment": "prod"}))
            assert plan["protected"] is True
            refused = await c.call_tool("deploy", {"plan_id": plan["plan_id"]})
            assert refusal in error_text(refused)
            rollback = await c.call_tool("rollback", {"environment": "prod"})
            assert "nothing was changed" in error_text(rollback)
            assert ok(await c.call_tool("history", {"environment": "prod"}))["deployments"] == []
        assert not (project / ".shipyard" / "prod" / "agent").exists()  # nothing started

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_a_protected_environment_is_deployed_and_rolled_back_once_the_person_says_yes(
    project: Path, mode: str
) -> None:
    asked: list[str] = []

    async def body() -> None:
        async with client(build_server(project), mode, answering("accept", asked=asked)) as c:
            first = ok(await c.call_tool("plan", {"environment": "prod"}))
            deployed = ok(await c.call_tool("deploy", {"plan_id": first["plan_id"]}))
            assert deployed["status"] == "succeeded"
            assert deployed["created_by"].endswith(", confirmed by the user")
            assert served(project, "prod") == "v1\n"
            idle = ok(await c.call_tool("plan", {"environment": "prod"}))
            assert idle["deployable"] is False
            nothing = await c.call_tool("deploy", {"plan_id": idle["plan_id"]})
            assert "UsageError: nothing to deploy: changed since" in error_text(nothing)
            assert len(asked) == 1  # nothing would have run: nobody was asked
            (project / "web" / "index.html").write_text("v2\n")
            commit_all(project, "v2")
            second = ok(await c.call_tool("plan", {"environment": "prod"}))
            ok(await c.call_tool("deploy", {"plan_id": second["plan_id"]}))
            assert served(project, "prod") == "v2\n"
            back = ok(await c.call_tool("rollback", {"environment": "prod"}))
            assert back["kind"] == "rollback" and back["status"] == "succeeded"
            assert back["created_by"].startswith("mcp:test-client (")
            assert served(project, "prod") == "v1\n"
        assert asked[0] == (
            f"Deploy commit {first['commit'][:12]} to the protected environment prod "
            f"(full: web; plan {first['plan_hash']})?"
        )
        assert asked[-1] == (
            "Roll the protected environment prod back to its previous good deployment?"
        )

    run(body)


def test_allow_unconfirmed_lets_a_client_without_elicitation_through_and_says_so(
    project: Path,
) -> None:
    async def body() -> None:
        server = build_server(project, McpOptions(allow_unconfirmed=True))
        async with client(server, "legacy") as c:
            plan = ok(await c.call_tool("plan", {"environment": "prod"}))
            deployed = ok(await c.call_tool("deploy", {"plan_id": plan["plan_id"]}))
        assert deployed["created_by"].endswith(
            "unconfirmed: the client cannot ask, --allow-unconfirmed"
        )

    run(body)


def test_read_only_mode_registers_no_write_tool(project: Path) -> None:
    async def body() -> None:
        async with client(build_server(project, McpOptions(read_only=True)), "legacy") as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == {
                "plan",
                "status",
                "history",
                "health",
                "validate_secrets",
                "detect_changes",
            }
            refused = await c.call_tool("deploy", {"plan_id": "x"})
            assert "Unknown tool: deploy" in error_text(refused)

    run(body)


def test_the_allow_list_registers_only_what_it_names_and_refuses_unknown_names(
    project: Path,
) -> None:
    async def body() -> None:
        server = build_server(project, McpOptions(tools=frozenset({"plan", "status"})))
        async with client(server, "2026-07-28") as c:
            assert {t.name for t in (await c.list_tools()).tools} == {"plan", "status"}

    run(body)
    with pytest.raises(UsageError, match=r"unknown MCP tool 'deplyo'") as unknown:
        build_server(project, McpOptions(tools=frozenset({"plan", "deplyo"})))
    assert "deploy" in (unknown.value.hint or "")
    with pytest.raises(UsageError, match=r"read-only mode offers no write tool.*deploy"):
        build_server(project, McpOptions(read_only=True, tools=frozenset({"deploy"})))


@pytest.mark.parametrize("mode", MODES)
def test_no_secret_value_in_any_result_error_progress_or_log(project: Path, mode: str) -> None:
    """A failing start prints the secret; the assistant typed it as a ref, too."""
    config = project / "shipyard.toml"
    config.write_text(
        config.read_text()
        .replace(
            'start = "python3 -m http.server $PORT --bind 127.0.0.1"',
            "start = \"sh -c 'echo token=$API_TOKEN; exit 3'\"",
        )
        .replace('deadline = "10s"', 'deadline = "1s"')
    )
    commit_all(project, "a start that fails and prints its secret")
    seen: list[str] = []

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async def body() -> None:
        async with client(build_server(project), mode) as c:
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            failed = await c.call_tool(
                "deploy", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
            )
            assert failed.is_error and failed.structured_content is not None
            doc = failed.structured_content
            assert doc["status"] == "rolled_back" and doc["failure"]["type"]
            typed = await c.call_tool("plan", {"environment": "local", "ref": SECRET})
            assert "[redacted API_TOKEN]" in error_text(typed)
            # The SDK's own complaint about a wrong type would quote the value it was sent.
            mistyped = await c.call_tool("plan", {"environment": "local", "full": SECRET})
            assert "full\n  Input should be a valid boolean" in error_text(mistyped)
            journal = await c.read_resource(f"shipyard://deployments/{doc['id']}/log")
            history = await c.call_tool("history", {"environment": "local"})
            seen.extend(
                json.dumps(x.model_dump(mode="json"))
                for x in (failed, typed, mistyped, journal, history)
            )
        assert seen and all(SECRET not in text for text in seen)

    run(body)


@pytest.mark.parametrize("hostile", ["\x00", "\ud800", "x" * 300], ids=["nul", "surrogate", "long"])
def test_a_hostile_text_argument_is_refused_by_name_not_crashed_on(
    project: Path, hostile: str
) -> None:
    async def body() -> None:
        async with client(build_server(project), "legacy") as c:
            for tool, arguments in (
                ("plan", {"environment": "local", "ref": hostile}),
                ("plan", {"environment": "local", "only": ["web", hostile]}),
                ("status", {"environment": hostile}),
                ("deploy", {"plan_id": hostile}),
            ):
                text = error_text(await c.call_tool(tool, arguments))
                assert "expected printable text of at most 256 characters" in text, text
                assert "internal error" not in text
            # (the SDK itself refuses a NUL in a resource URI)
            with pytest.raises(Exception, match=r"expected printable text|Unknown resource"):
                await c.read_resource(f"shipyard://deployments/{hostile}/log")

    run(body)


def test_the_log_of_an_unknown_deployment_says_so(project: Path) -> None:
    async def body() -> None:
        async with client(build_server(project), "2026-07-28") as c:
            with pytest.raises(Exception, match="no deployment 'nope'"):
                await c.read_resource("shipyard://deployments/nope/log")

    run(body)


def test_plan_arguments_mirror_the_cli_flags(project: Path) -> None:
    async def body() -> None:
        async with client(build_server(project), "2026-07-28") as c:
            only = ok(await c.call_tool("plan", {"environment": "local", "only": ["web"]}))
            assert only["components"] == ["web"] and only["tests"] == "none"
            full = ok(await c.call_tool("plan", {"environment": "local", "full": True}))
            assert full["kind"] == "full" and full["plan_id"] != only["plan_id"]
            both = await c.call_tool(
                "plan", {"environment": "local", "full": True, "only": ["web"]}
            )
            assert "choose one of full, only" in error_text(both)
            unknown = await c.call_tool("plan", {"environment": "local", "only": ["nope"]})
            assert "unknown component(s) in --only: nope" in error_text(unknown)
            stage = await c.call_tool("plan", {"environment": "local", "tests": "some"})
            assert "tests\n  Input should be 'none', 'smoke', 'e2e' or 'full'" in error_text(stage)
            nowhere = await c.call_tool("plan", {"environment": "staging"})
            assert "staging" in error_text(nowhere) and "UsageError" in error_text(nowhere)

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_a_running_deployment_can_be_polled_by_the_id_its_first_progress_names(
    project: Path, mode: str
) -> None:
    """The release only listens once the test creates `gate`: the deploy is surely still
    running when `status` and the journal are read."""
    gate = project.parent / "gate"
    config = project / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'start = "python3 -m http.server $PORT --bind 127.0.0.1"',
            f"start = \"sh -c 'while [ ! -e {gate} ]; do sleep 0.05; done; "
            "exec python3 -m http.server $PORT --bind 127.0.0.1'\"",
        )
    )
    commit_all(project, "starts when the gate opens")
    ids: list[str] = []
    named = anyio.Event()

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        if not ids:
            ids.append((message or "").split(":")[0].removeprefix("deployment "))
            named.set()

    async def body() -> None:
        async with client(build_server(project), mode) as c:
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            finished: list[dict[str, Any]] = []

            async def deploy() -> None:
                result = await c.call_tool(
                    "deploy", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
                )
                finished.append(ok(result))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(deploy)
                await named.wait()
                polled = ok(
                    await c.call_tool("status", {"environment": "local", "deployment_id": ids[0]})
                )
                journal = await c.read_resource(f"shipyard://deployments/{ids[0]}/log")
                gate.touch()
            assert polled["deployment"]["status"] in ("pending", "running")
            assert "deployment succeeded" not in journal.contents[0].text  # type: ignore[union-attr]
            assert finished[0]["id"] == ids[0] and finished[0]["status"] == "succeeded"

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_promote_deploys_what_local_runs_to_prod_once_the_person_says_yes(
    project: Path, mode: str
) -> None:
    asked: list[str] = []

    async def body() -> None:
        async with client(build_server(project), mode, answering("decline")) as c:
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            source = ok(await c.call_tool("deploy", {"plan_id": plan["plan_id"]}))
            refused = await c.call_tool("promote", {"source": "local", "target": "prod"})
            assert "promoting to prod was declined by the user" in error_text(refused)
        yes = answering("accept", asked=asked)
        async with client(build_server(project), mode, yes) as c:
            promoted = ok(await c.call_tool("promote", {"source": "local", "target": "prod"}))
        assert promoted["kind"] == "promote" and promoted["status"] == "succeeded"
        assert promoted["promoted_from"] == source["id"]
        assert promoted["created_by"].endswith(", confirmed by the user")
        assert asked == [
            f"Promote the last good deployment of local (commit {source['commit'][:12]}: web) "
            "to the protected environment prod?"
        ]
        assert served(project, "prod") == "v1\n"

    run(body)


def test_validate_secrets_and_detect_changes_answer_like_the_cli(project: Path) -> None:
    config = project / "shipyard.toml"
    config.write_text(config.read_text() + "\n[secrets.rules]\nAPI_TOKEN = { min_length = 64 }\n")
    commit_all(project, "a rule the token does not meet")

    async def body() -> None:
        async with client(build_server(project), "2026-07-28") as c:
            report = ok(await c.call_tool("validate_secrets", {"environment": "local"}))
            assert report["ok"] is False and report["checked"] == ["local"]
            assert {(f["name"], f["severity"]) for f in report["findings"]} >= {
                ("API_TOKEN", "error")
            }
            changes = ok(await c.call_tool("detect_changes", {"environment": "local"}))
            assert changes["full_deploy_required"] is True and changes["why_full"]
            first = git(project, "rev-parse", "HEAD")
            (project / "web" / "index.html").write_text("v2\n")
            commit_all(project, "v2")
            since = ok(
                await c.call_tool("detect_changes", {"environment": "local", "since": first})
            )
            assert since["changed_files"] == ["web/index.html"]
            assert [a["name"] for a in since["affected"]] == ["web"]
            assert SECRET not in json.dumps([report, changes, since])

    run(body)


def test_deploy_progress_follows_the_new_deployment_even_after_recovering_a_dead_one(
    project: Path,
) -> None:
    """Taking the lock first recovers what a dead orchestrator left (journaling it): the
    progress and the answer still name the deployment the call started."""
    from shipyard.store import DeploymentRecord, Store, new_id

    dead = new_id()
    with Store.open(f"sqlite:///{project / '.shipyard' / 'state.db'}") as store:
        store.create_deployment(
            DeploymentRecord(id=dead, environment="local", kind="full", status="running")
        )
    progress: list[str] = []

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def body() -> None:
        async with client(build_server(project), MODES[0]) as c:
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            deployed = ok(
                await c.call_tool(
                    "deploy", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
                )
            )
            assert deployed["status"] == "succeeded" and deployed["id"] != dead
            assert progress and all(
                m.startswith(f"deployment {deployed['id']}: ") for m in progress
            )
            recovered = ok(
                await c.call_tool("status", {"environment": "local", "deployment_id": dead})
            )
            assert recovered["deployment"]["status"] == "rolled_back"

    run(body)
