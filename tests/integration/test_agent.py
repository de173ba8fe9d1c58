"""The host agent as a real daemon: supervision, adoption, errors, protocol (design §5a)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from shipyard.agent import AgentClient, AgentRequestError, agent_status, stop_agent
from shipyard.agent.procinfo import is_same_process
from tests.agent_fixtures.agent_harness import (
    FIXTURES,
    AgentHarness,
    agent_root,
    app_argv,
    free_port,
    http_get,
    start_app,
    try_get,
    wait_for,
)
from tests.conftest import RunCli

pytest_plugins = ["tests.agent_fixtures.agent_plugin"]


def _alive(pid: int) -> bool:
    return is_same_process(pid, None)


def test_start_list_logs_stop(agent: AgentHarness) -> None:
    client = agent.client
    info = start_app(client, "web", "r1")
    assert info["state"] == "starting" and info["pid"] and info["port"]
    assert http_get(info["port"]) == (200, "r1")
    # PORT is the agent's choice, and the process leads its own process group.
    assert os.getpgid(info["pid"]) == info["pid"]
    wait_for(lambda: agent.release("web", "r1")["state"] == "running", 3.0)

    listing = client.list_releases()
    assert [(r["component"], r["release"]) for r in listing["releases"]] == [("web", "r1")]
    assert listing["routes"] == []
    assert "env" not in listing["releases"][0]  # secrets never leave the agent
    assert any("listening on" in line for line in client.logs("web", "r1"))
    state = agent.state()
    assert state["releases"][0]["pid"] == info["pid"]
    assert os.stat(agent.root / "agent" / "state.json").st_mode & 0o777 == 0o600
    assert os.stat(agent.root / "agent" / "agent.sock").st_mode & 0o777 == 0o600

    stopped = client.stop_release("web", "r1")
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    assert stopped["last_exit_code"] == 0  # the app exits cleanly on SIGTERM
    assert not _alive(info["pid"])
    assert agent.state()["releases"][0]["desired"] == "stopped"
    # A stopped release can be started again.
    again = start_app(client, "web", "r1")
    assert again["pid"] != info["pid"]


def test_shell_command_gets_port_and_env(agent: AgentHarness, tmp_path: Path) -> None:
    client = agent.client
    info = client.start_release(
        "web",
        "sh1",
        FIXTURES,
        command=f'exec {sys.executable} app.py --name "$GREETING"',
        env={"GREETING": "hello", "PORT": "1"},  # PORT from env is overridden
    )
    wait_for(lambda: client.probe(kind="tcp", port=info["port"], timeout=1.0)["ok"], 10.0)
    assert http_get(info["port"]) == (200, "hello")


def test_crash_restarts_with_backoff(agent: AgentHarness) -> None:
    client = agent.client
    info = start_app(client, "web", "crashy", "--crash-after", "0.3")
    first_pid = info["pid"]
    rel = wait_for(
        lambda: (r := agent.release("web", "crashy"))["restarts"] >= 2 and r["pid"] and r, 8.0
    )
    assert rel["pid"] != first_pid
    assert rel["last_exit_code"] == 3
    assert rel["port"] == info["port"]  # restarted on the same private port
    log = "\n".join(client.logs("web", "crashy", lines=200))
    # Exponential backoff, visible in the release log.
    assert "restart in 0.2s" in log and "restart in 0.4s" in log
    wait_for(lambda: try_get(info["port"]) == (200, "crashy"), 5.0)


def test_crash_loop_is_reported(agent: AgentHarness) -> None:
    client = agent.client
    # A shell that fails at once: a crash loop without a Python start-up per attempt.
    client.start_release("web", "broken", FIXTURES, command="echo 'cannot start'; exit 7")
    rel = wait_for(
        lambda: (r := agent.release("web", "broken"))["state"] == "crash-loop" and r, 10.0
    )
    assert rel["last_exit_code"] == 7
    assert rel["last_exit"] == "exit code 7"
    assert rel["consecutive_crashes"] >= 5
    lines = client.logs("web", "broken", lines=100)
    assert any("crash loop" in line for line in lines) and "cannot start" in lines
    stopped = client.stop_release("web", "broken")
    assert stopped["state"] == "stopped"


def test_adoption_after_agent_kill9(agent: AgentHarness) -> None:
    client = agent.client
    info = start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    assert http_get(public) == (200, "r1")

    old_agent = agent.kill9()
    assert _alive(info["pid"])  # the release outlives its agent
    state = agent.state()  # and the state file is intact
    assert state["releases"][0]["pid"] == info["pid"]
    assert state["routes"][0]["release"] == "r1"
    with pytest.raises(AgentRequestError) as err:
        client.ping()
    assert err.value.code == "agent_not_running"
    assert "shipyard agent start --root" in (err.value.hint or "")

    agent.start()
    assert agent.pid != old_agent
    rel = agent.release("web", "r1")
    assert rel["pid"] == info["pid"] and rel["state"] in ("starting", "running")
    assert http_get(public) == (200, "r1")  # public port bound again, same process behind it
    assert client.list_releases()["routes"][0]["release"] == "r1"

    # No longer its child, still supervised: kill it and the agent restarts it (by polling).
    os.kill(info["pid"], signal.SIGKILL)
    rel = wait_for(
        lambda: (r := agent.release("web", "r1"))["pid"] not in (None, info["pid"]) and r
    )
    assert rel["restarts"] == 1
    assert rel["last_exit_code"] is None  # unknown: it was not our child
    wait_for(lambda: try_get(public) == (200, "r1"), 10.0)


def test_restart_reconciles_releases_that_died_meanwhile(agent: AgentHarness) -> None:
    info = start_app(agent.client, "web", "r1")
    agent.kill9()
    os.killpg(info["pid"], signal.SIGKILL)
    wait_for(lambda: not _alive(info["pid"]))
    agent.start()
    rel = wait_for(lambda: (r := agent.release("web", "r1"))["pid"] and r)
    assert rel["pid"] != info["pid"]
    wait_for(lambda: try_get(rel["port"]) == (200, "r1"), 10.0)


def test_clear_errors(agent: AgentHarness, tmp_path: Path) -> None:
    client = agent.client

    def code_of(call: object, *args: object, **kwargs: object) -> AgentRequestError:
        with pytest.raises(AgentRequestError) as err:
            call(*args, **kwargs)  # type: ignore[operator]
        assert err.value.message and err.value.hint, err.value
        return err.value

    err = code_of(client.start_release, "web", "x", tmp_path / "nope", argv=["true"])
    assert err.code == "cwd_missing" and "nope" in err.message
    err = code_of(client.start_release, "web", "x", tmp_path, argv=["no-such-program-xyz"])
    assert err.code == "command_not_found" and "no-such-program-xyz" in err.message
    err = code_of(client.start_release, "web", "x", tmp_path, command="no-such-program-xyz --a")
    assert err.code == "command_not_found" and "not found" in err.message
    assert client.list_releases()["releases"] == []  # failed starts leave nothing behind

    start_app(client, "web", "r1")
    assert code_of(start_app, client, "web", "r1").code == "already_running"
    assert code_of(client.stop_release, "web", "r9").code == "unknown_release"
    assert code_of(client.logs, "api", "r1").code == "unknown_release"
    assert code_of(client.unroute, "web").code == "unknown_route"

    public = free_port()
    client.route("web", public, "r1")
    err = code_of(client.stop_release, "web", "r1")
    assert err.code == "release_routed" and "force" in (err.hint or "")

    # A port someone else holds: named, with its pid.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        start_app(client, "api", "a1")
        err = code_of(client.route, "api", taken, "a1")
        assert err.code == "port_in_use"
        assert f"pid {os.getpid()}" in err.message
    err = code_of(client.route, "api", public, "a1")
    assert err.code == "port_in_use" and "'web'" in err.message

    err = code_of(client.start_release, "bad/name", "x", tmp_path, argv=["true"])
    assert err.code == "bad_args"
    with pytest.raises(AgentRequestError) as raw:
        client.request("start", component="web", release="r2", cwd=str(tmp_path), argvv=["x"])
    assert raw.value.code == "bad_args" and "argvv" in raw.value.message
    with pytest.raises(AgentRequestError) as raw:
        client.request("frobnicate")
    assert raw.value.code == "unknown_op" and "ping" in (raw.value.hint or "")
    assert client.ping()["pid"] == agent.pid  # still alive after all that


def test_client_side_errors(tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    with pytest.raises(AgentRequestError) as err:
        AgentClient(root).ping()
    assert err.value.code == "agent_not_running"
    assert err.value.hint == f"shipyard agent start --root {root}"
    status = agent_status(root)
    assert status["running"] is False
    assert stop_agent(root)["was_running"] is False

    # A stale socket file (agent died without cleaning up).
    (root / "agent").mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(root / "agent" / "agent.sock"))
    stale.close()
    with pytest.raises(AgentRequestError) as err:
        AgentClient(root).ping()
    assert err.value.code == "agent_not_running" and "stale" in err.value.message


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the socket to another user")
def test_socket_owned_by_another_user(agent: AgentHarness) -> None:
    sock = agent.root / "agent" / "agent.sock"
    os.chown(sock, 12345, -1)
    try:
        with pytest.raises(AgentRequestError) as err:
            agent.client.ping()
        assert err.value.code == "socket_foreign_owner" and "12345" in err.value.message
    finally:
        os.chown(sock, 0, -1)


def test_protocol_many_requests_per_connection_and_garbage(agent: AgentHarness) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(agent.root / "agent" / "agent.sock"))
        sock.settimeout(5)
        sock.sendall(
            b'{"id": 1, "op": "ping"}\n'
            b"this is not json\n"
            b'{"id": "x", "op": "list", "component": 5}\n'
            b"[1, 2]\n"
            b'{"id": 4, "op": "ping"}\n'
        )
        buf = b""
        while buf.count(b"\n") < 5:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
    answers = [json.loads(line) for line in buf.splitlines()]
    assert [a["id"] for a in answers] == [1, None, "x", None, 4]
    assert [a["ok"] for a in answers] == [True, False, False, False, True]
    assert answers[1]["error"]["code"] == "bad_request"
    assert answers[2]["error"]["code"] == "bad_args"


def test_probes(agent: AgentHarness, tmp_path: Path) -> None:
    client = agent.client
    info = start_app(client, "web", "r1")
    ok = client.probe(kind="http", port=info["port"], path="/health")
    assert ok["ok"] and ok["status"] == 200 and ok["detail"] == "ok" and ok["latency_ms"] > 0
    by_release = client.probe(kind="http", component="web", release="r1", path="/")
    assert by_release["ok"] and by_release["detail"] == "r1"
    wrong = client.probe(kind="http", port=info["port"], expect_status=[201, 204])
    assert not wrong["ok"] and wrong["status"] == 200 and "expected" in wrong["detail"]
    refused = client.probe(kind="tcp", port=free_port(), timeout=1.0)
    assert not refused["ok"] and "refused" in refused["detail"]
    cmd = client.probe(kind="command", command="echo fine", cwd=str(tmp_path))
    assert cmd["ok"] and cmd["status"] == 0 and cmd["detail"] == "fine"
    failing = client.probe(kind="command", command="echo bad >&2; exit 4", timeout=5)
    assert not failing["ok"] and failing["status"] == 4 and "bad" in failing["detail"]
    slow = client.probe(kind="command", command="sleep 5", timeout=0.3)
    assert not slow["ok"] and "timed out" in slow["detail"]


def test_unroute_and_shutdown_stop_everything(agent: AgentHarness) -> None:
    client = agent.client
    a = start_app(client, "web", "r1")
    b = client.start_release(
        "worker", "w1", FIXTURES, argv=app_argv("--name", "w1"), stop_timeout=2.0
    )
    public = free_port()
    client.route("web", public, "r1")
    assert client.unroute("web") == {"component": "web", "public_port": public, "release": "r1"}
    with pytest.raises(ConnectionRefusedError):
        http_get(public)
    agent_pid = agent.pid
    result = stop_agent(agent.root, stop_processes=True)
    assert result["was_running"] and sorted(result["stopped"]) == ["web/r1", "worker/w1"]
    assert not _alive(a["pid"]) and not _alive(b["pid"]) and not _alive(agent_pid)
    assert not (agent.root / "agent" / "agent.sock").exists()


def test_stop_keep_processes_then_adopt(tmp_path: Path) -> None:
    with agent_root(tmp_path / "r") as agent:
        agent.start()
        info = start_app(agent.client, "web", "r1")
        proc = agent.cli("stop", "--keep-processes")
        assert proc.returncode == 0, proc.stderr
        assert _alive(info["pid"])
        proc = agent.cli("status")
        assert proc.returncode == 3 and "not running" in proc.stdout
        agent.start()
        assert agent.release("web", "r1")["pid"] == info["pid"]
        status = agent_status(agent.root)
        assert status["running"] and status["rss_bytes"] > 0
        assert status["releases"][0]["release"] == "r1"


def test_second_agent_for_same_root_is_refused(agent: AgentHarness) -> None:
    # `start` is idempotent; `run` on a root that has an agent is refused with a clear error.
    assert agent.cli("start").returncode == 0
    proc = agent.cli("run", timeout=10)
    assert proc.returncode == 1
    assert "already running" in proc.stderr and "hint:" in proc.stderr


def test_reexec_keeps_pid_children_and_public_port(agent: AgentHarness) -> None:
    client = agent.client
    info = start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    pid, keeper = agent.pid, agent.keeper_pid
    failures: list[tuple[float, OSError]] = []  # (seconds after the reexec call, error)
    started = time.monotonic()
    client.reexec()
    deadline = time.monotonic() + 1.5
    # New connections during the re-exec wait in the kept listen backlog: none is refused.
    while time.monotonic() < deadline:
        try:
            assert http_get(public) == (200, "r1")
        except OSError as exc:
            failures.append((round(time.monotonic() - started, 3), exc))
    assert failures == []

    def agent_pid() -> int | None:
        try:
            return int(client.ping()["pid"])
        except AgentRequestError:
            return None  # between the old image and the new one

    assert wait_for(agent_pid) == pid
    assert agent.keeper_pid == keeper  # the keeper stays; the worker re-executed in place
    rel = agent.release("web", "r1")
    assert rel["pid"] == info["pid"] and rel["restarts"] == 0
    # SIGHUP to the keeper does the same (it passes it on to its worker).
    os.kill(keeper, signal.SIGHUP)
    log = agent.root / "agent" / "agent.log"
    wait_for(lambda: log.read_text().count("re-executing") == 2, 10.0)
    assert wait_for(agent_pid) == pid and http_get(public) == (200, "r1")
    # Still its child after exec: a crash now reports a real exit code.
    os.kill(info["pid"], signal.SIGKILL)
    rel = wait_for(lambda: (r := agent.release("web", "r1"))["last_exit_code"] == -9 and r)
    assert rel["last_exit"] == "signal 9 (SIGKILL)"


def test_start_failures_are_explained(tmp_path: Path) -> None:
    # Root under a file: refused before anything forks.
    (tmp_path / "file").write_text("")
    with agent_root(tmp_path / "file" / "root") as agent:
        proc = agent.cli("start")
        assert proc.returncode == 1
        assert "cannot create the agent folder" in proc.stderr and "hint:" in proc.stderr
    # The daemon itself fails while starting: the error and the log to read are reported.
    with agent_root(tmp_path / "r") as agent:
        (agent.root / "agent" / "agent.sock" / "in-the-way").mkdir(parents=True)
        proc = agent.cli("start")
        assert proc.returncode == 1
        assert "did not start" in proc.stderr and "agent.log" in proc.stderr


def test_stop_while_start_is_still_watching_the_command(agent: AgentHarness) -> None:
    # `start` watches a shell command for 0.25 s (exit 127 = not found); a stop arriving then
    # (a rollback undoing that very start) must leave the release stopped, not "crashed".
    client = agent.client
    for attempt in range(5):
        name = f"r{attempt}"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            starting = pool.submit(
                client.start_release,
                "web",
                name,
                FIXTURES,
                command=f"exec {sys.executable} app.py",
                stop_timeout=2.0,
            )
            wait_for(
                lambda n=name: any(r["release"] == n for r in client.list_releases()["releases"]),
                5.0,
                0.002,
            )
            client.stop_release("web", name)
            starting.result(10)
        time.sleep(0.4)  # past the watch window and any restart backoff
        rel = agent.release("web", name)
        assert (rel["state"], rel["pid"]) == ("stopped", None), rel


def test_shipyard_agent_status_and_stop_without_an_agent(tmp_path: Path, run_cli: RunCli) -> None:
    root = tmp_path / "nothing-here"
    status = run_cli("agent", "status", "--root", str(root))
    assert status.returncode == 3, status.stdout + status.stderr
    assert '"running": false' in status.stdout
    stop = run_cli("agent", "stop", "--root", "/nonexistent/shipyard-root")
    assert stop.returncode == 0, stop.stderr
    assert "no agent was running for /nonexistent/shipyard-root" in stop.stdout
    assert "agent stopped" not in stop.stdout and "stopped;" not in stop.stdout


def test_shipyard_agent_status_json_has_worker_and_keeper(
    agent: AgentHarness, run_cli: RunCli
) -> None:
    status = run_cli("--json", "agent", "status", "--root", str(agent.root))
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["pid"] == agent.pid and data["keeper_pid"] == agent.keeper_pid
    assert data["pid"] != data["keeper_pid"]
    stop = run_cli("agent", "stop", "--root", str(agent.root))
    assert stop.returncode == 0 and f"agent (pid {data['pid']}) stopped" in stop.stdout
    assert not _alive(data["pid"]) and not _alive(data["keeper_pid"])


def test_agent_install_writes_a_user_unit(tmp_path: Path, run_cli: RunCli) -> None:
    # No systemd in this environment (and none is touched: PATH has no systemctl): the unit is
    # written, and the output says how to enable it where systemd runs.
    root = tmp_path / "root"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": str(tmp_path / "no-bin")}
    result = run_cli("--json", "agent", "install", "--user", "--root", str(root), env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["enabled"] is False and data["systemd"] is False
    unit = Path(data["path"])
    assert unit.parent == tmp_path / "config" / "systemd" / "user"
    text = unit.read_text()
    assert f"agent run --root {root}" in text and "KillMode=process" in text
    assert "Restart=always" in text and "WantedBy=default.target" in text
    assert f"systemctl --user enable --now {unit.name}" in data["how_to_enable"]
    plain = run_cli("agent", "install", "--user", "--root", str(root), env=env)
    words = " ".join(plain.stdout.split())  # the console wraps long lines
    assert "systemd does not run here" in words and f"enable --now {unit.name}" in words


def test_public_port_with_only_time_wait_connections_binds_again(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    for _ in range(5):  # the router closes first (Connection: close): TIME-WAIT on its side
        conn = socket.create_connection(("127.0.0.1", public))
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while conn.recv(65536):
            pass
        conn.close()
    client.unroute("web")
    client.route("web", public, "r1")  # only TIME-WAIT connections on the port: no listener
    assert http_get(public) == (200, "r1")
