"""Unit tests for the agent's small parts: protocol arguments, backoff, logs, state, headers."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.agent import AgentRequestError, procinfo
from shipyard.agent.http1 import RequestHead, ResponseHead, request_headers
from shipyard.agent.logfiles import LogPolicy, rotate_if_needed, tail
from shipyard.agent.paths import check_name, unix_address
from shipyard.agent.protocol import Args, decode
from shipyard.agent.state import StateFile, atomic_write_json, read_state
from shipyard.agent.supervisor import RestartPolicy, base_environment, describe_exit


def _code(fn: object, *args: object) -> str:
    with pytest.raises(AgentRequestError) as err:
        fn(*args)  # type: ignore[operator]
    return err.value.code


def test_args_are_typed_and_unknown_ones_refused() -> None:
    args = Args("route", {"id": 1, "op": "route", "component": "web", "public_port": 80})
    assert args.text("component") == "web"
    assert args.integer("public_port", low=1) == 80
    assert args.seconds("drain_timeout", 30.0) == 30.0
    assert args.choice("mode", ("http", "tcp"), "http") == "http"
    args.finish()
    assert _code(Args("route", {"public_port": True}).integer, "public_port") == "bad_args"
    assert _code(Args("route", {"public_port": 70000}).integer, "public_port") == "bad_args"
    assert _code(Args("route", {}).text, "component") == "bad_args"
    assert _code(Args("stop", {"timeout": -1}).seconds, "timeout") == "bad_args"
    assert _code(Args("probe", {"expect_status": [200, "x"]}).status_set, "expect_status")
    assert Args("probe", {"expect_status": 204}).status_set("expect_status") == [204]
    typo = Args("start", {"component": "web", "comand": "x"})
    typo.text("component")
    with pytest.raises(AgentRequestError) as err:
        typo.finish()
    assert "'comand'" in err.value.message
    assert _code(Args("start", {"env": {"A=B": "x"}}).str_dict, "env") == "bad_args"
    assert _code(decode, b"[1]") == "bad_request"
    assert _code(decode, b"{") == "bad_request"


def test_names_are_safe_path_segments() -> None:
    assert check_name("release", "2024-01-01T10.00_abc") == "2024-01-01T10.00_abc"
    for bad in ("", "../x", "a/b", ".hidden", "-x", "x" * 129):
        assert _code(check_name, "release", bad) == "bad_args"


def test_backoff_doubles_and_is_capped() -> None:
    policy = RestartPolicy()
    assert [policy.backoff(n) for n in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert policy.backoff(10_000) == 10.0


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert "not a child" in describe_exit(None)


def test_release_environment_starts_small() -> None:
    env = base_environment({"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "SECRET_KEY": "x"})
    assert env == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C"}


def test_log_rotation_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "r1.log"
    policy = LogPolicy(max_bytes=100, backups=2)
    with open(log, "a") as f:
        for i in range(30):
            f.write(f"line {i}\n")
    assert rotate_if_needed(log, policy)
    assert log.stat().st_size == 0 and (tmp_path / "r1.log.1").exists()
    with open(log, "a") as f:
        f.write("fresh\n")
    assert tail(log, 3) == ["line 28", "line 29", "fresh"]  # reaches into the rotated copy
    for _ in range(3):
        log.write_text("x" * 200)
        rotate_if_needed(log, policy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.log", "r1.log.1", "r1.log.2"]
    assert tail(tmp_path / "missing.log", 5) == []


def test_state_is_written_atomically_and_corruption_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read_state(path)["releases"] == []
    atomic_write_json(path, {"version": 1, "releases": [{"a": 1}], "routes": []})
    assert json.loads(path.read_text())["releases"] == [{"a": 1}]
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left
    path.write_text("{not json")
    assert read_state(path)["releases"] == []  # a reader changes nothing on disk
    assert path.read_text() == "{not json"
    assert StateFile(path).load().get("corrupt") is True  # the agent moves it aside
    assert (tmp_path / "state.json.corrupt").read_text() == "{not json"


def _release(name: str, **fields: object) -> dict[str, object]:
    return {"component": "web", "release": name, **fields}


def test_state_changes_are_appended_then_folded_into_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(path)
    state.rewrite({"releases": [_release("r1", pid=1)], "active": {"web": "r1"}})
    state.append([("release", ["web", "r2"], _release("r2", pid=2))])
    state.append([("release", ["web", "r1"], None), ("active", "web", "r2")])
    state.append([("retire", ["web", "r2"], {"component": "web", "release": "r2", "seq": 1})])
    log = tmp_path / "state.log"
    assert log.stat().st_mode & 0o777 == 0o600
    assert len(log.read_text().splitlines()) == 4  # one small line per changed record
    assert json.loads(path.read_text())["releases"] == [_release("r1", pid=1)]  # untouched
    saved = read_state(path)
    assert saved["releases"] == [_release("r2", pid=2)]
    assert saved["active"] == {"web": "r2"}
    assert [i["release"] for i in saved["retire"]] == ["r2"]
    # A crash in the middle of an append leaves a torn line: that change was not acknowledged.
    with log.open("a") as handle:
        handle.write('{"k":"release","id":["web","r3"],"v":{"comp')
    assert read_state(path)["releases"] == [_release("r2", pid=2)]
    again = StateFile(path)
    assert again.load()["releases"] == [_release("r2", pid=2)]
    again.rewrite(again.load())  # what the agent does at start
    assert log.read_text() == ""
    assert json.loads(path.read_text())["releases"] == [_release("r2", pid=2)]
    # The log is folded into the snapshot once it outgrows it: its size stays bounded.
    for i in range(3000):
        again.append([("release", ["web", f"x{i}"], _release(f"x{i}", env={"K": "v" * 100}))])
        assert log.stat().st_size < 300 * 1024
    assert len(read_state(path)["releases"]) == 3001
    assert len(json.loads(path.read_text())["releases"]) > 1000  # folded at least once
    state.close()
    again.close()


def test_deep_socket_paths_work(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 20] * 6)
    deep.mkdir(parents=True)
    path = deep / "agent.sock"
    assert len(str(path)) > 108
    server = socket.socket(socket.AF_UNIX)
    with unix_address(path) as address:
        server.bind(address)
    server.listen()
    client = socket.socket(socket.AF_UNIX)
    with unix_address(path) as address:
        client.connect(address)
    assert path.exists()
    client.close()
    server.close()


def test_proc_helpers_know_this_process(tmp_path: Path) -> None:
    me = os.getpid()
    ticks = procinfo.start_ticks(me)
    assert ticks is not None and procinfo.is_same_process(me, ticks)
    assert not procinfo.is_same_process(me, ticks + 1)
    assert not procinfo.has_exited(me, ticks)
    assert (procinfo.rss_bytes(me) or 0) > 0
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        owner = procinfo.find_port_owner(listener.getsockname()[1])
    assert owner is not None and owner[0] == me


def test_forwarded_request_headers() -> None:
    request = RequestHead(
        b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nX-Forwarded-For: 10.0.0.1\r\nExpect: 100-continue\r\n"
        b"Accept: */*"
    )
    headers = dict(request_headers(request, "127.0.0.2"))
    assert headers == {
        b"host": b"example.com",
        b"accept": b"*/*",
        b"x-forwarded-for": b"10.0.0.1, 127.0.0.2",
        b"x-forwarded-proto": b"http",
    }
    upgrade = RequestHead(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket"
    )
    assert upgrade.upgrade
    kept = dict(request_headers(upgrade, "127.0.0.1", upgrade=True))
    assert kept[b"upgrade"] == b"websocket" and kept[b"connection"] == b"Upgrade"
    response = ResponseHead(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nServer: app", b"GET"
    )
    assert [name for name, _ in response.lines] == [b"content-length", b"server"]
    assert not response.keep_alive and response.length == 2


def test_records_are_checked_field_by_field() -> None:
    fields = {"component": "text", "release": "text?", "after": "seconds"}
    args = Args("retire", {"items": [{"component": "web", "after": 2}]})
    assert args.records("items", fields) == [{"component": "web", "release": None, "after": 2.0}]
    for bad in (
        [{"component": "web", "after": -1}],
        [{"component": "", "after": 1}],
        [{"component": "web", "after": 1, "typo": 1}],
        ["web"],
        {"component": "web"},
    ):
        assert _code(Args("retire", {"items": bad}).records, "items", fields) == "bad_args"
    assert Args("retire", {}).records("items", fields) == []


def test_systemd_unit_quotes_what_systemd_would_split() -> None:
    from shipyard.agent.systemd import unit_name, unit_text

    root = Path("/srv/my shop")
    text = unit_text(root, ["/usr/bin/python3", "-I", "/srv/a b/agent.pyz"], True, {"A": "1 2"})
    assert 'ExecStart=/usr/bin/python3 -I "/srv/a b/agent.pyz" run --root "/srv/my shop"' in text
    assert 'Environment="A=1 2"' in text
    assert unit_name(root).startswith("shipyard-agent-my-shop-")
    assert unit_name(root) != unit_name(Path("/srv/my-shop"))


_OPS = st.lists(
    st.tuples(st.sampled_from(["add", "cancel"]), st.sampled_from(["a", "b", "c", "d"])),
    max_size=30,
)


@given(ops=_OPS, now=st.floats(min_value=0, max_value=100))
def test_retire_schedule_keeps_list_order_and_one_item_per_release(
    ops: list[tuple[str, str]], now: float
) -> None:
    from shipyard.agent.retire import RetireItem, RetireSchedule

    schedule = RetireSchedule()
    model: list[str] = []  # release names in stop order
    for i, (op, name) in enumerate(ops):
        if op == "add":
            schedule.add(RetireItem("web", name, float(i)))
            model = [n for n in model if n != name] + [name]
        else:
            assert schedule.cancel("web", name) == (name in model)
            model = [n for n in model if n != name]
    assert [i.release for i in schedule.items.values()] == model
    due = schedule.due(now, lambda component: [], set())
    # Releases nothing links to are stopped together once due, in the schedule's order.
    assert due == [i for i in schedule.items.values() if i.stop_at <= now]
    restored = RetireSchedule()
    restored.restore(schedule.to_state())
    assert restored.to_state() == schedule.to_state()


def test_retire_schedule_stops_a_dependency_after_its_earlier_consumers() -> None:
    from shipyard.agent.retire import RetireItem, RetireSchedule

    schedule = RetireSchedule()
    for component, release in (("web", "w1"), ("api", "a1"), ("db", "d1"), ("cache", "c1")):
        schedule.add(RetireItem(component, release, 0.0))
    # web/w1 uses api and db; api/a1 uses db; nothing uses cache.
    links = {"api": ["web/w1"], "db": ["web/w1", "api/a1"]}

    def consumers(component: str) -> list[str]:
        return links.get(component, [])

    def due(busy: set[tuple[str, str]]) -> list[str]:
        return [i.component for i in schedule.due(1.0, consumers, busy)]

    assert due(set()) == ["web", "cache"]
    schedule.cancel("web", "w1")  # its stop began (a stop drops its item) ...
    assert due({("web", "w1"), ("cache", "c1")}) == []  # ... and is not over yet
    assert due({("cache", "c1")}) == ["api"]
    schedule.cancel("api", "a1")
    assert due({("cache", "c1")}) == ["db"]


def _held(port: int) -> socket.socket:
    """A listener on `port`, as the keeper's copy of an unrouted route's socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_port_just_let_go_is_bound_once_the_keeper_closes_its_copy() -> None:
    """Unroute tells the keeper to drop its copy of the socket and does not wait: routing the
    same port again at once waits for that close instead of calling the port taken."""
    import asyncio
    import types

    from shipyard.agent.router import Router
    from tests.conftest import free_ports

    (port,) = free_ports(1)
    route = types.SimpleNamespace(key=f"127.0.0.1:{port}", host="127.0.0.1", public_port=port)
    router = Router()

    async def keeper_closes_later() -> socket.socket:
        keeper_copy = _held(port)
        router._let_go(route.key)  # what unroute does
        asyncio.get_running_loop().call_later(0.2, keeper_copy.close)
        return await router._bind(route)  # type: ignore[arg-type]

    bound = asyncio.run(keeper_closes_later())
    bound.close()

    async def someone_elses() -> None:
        other = _held(port)
        try:
            with pytest.raises(OSError):  # never let go here: refused at once, no waiting
                await router._bind(
                    types.SimpleNamespace(  # type: ignore[arg-type]
                        key="127.0.0.1:1", host="127.0.0.1", public_port=port
                    )
                )
        finally:
            other.close()

    asyncio.run(someone_elses())
