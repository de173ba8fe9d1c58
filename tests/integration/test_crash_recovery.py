"""kill -9 the orchestrator at journal boundaries, then recover: the environment is whole.

The deploy runs as a real `shipyard` process; the test watches the journal in the
SQLite state store and kills the process once the deployment has written N events.
No failpoint exists in src/: the crash is a real SIGKILL at a real point.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.service import Shipyard
from tests.conftest import RunCli, commit_all, shipyard_executable
from tests.integration.engine_fixtures import (
    ENV,
    behaviour,
    get_json,
    make_project,
    wait_no_processes_under,
)

# Journal lengths at which the demo's deploy (with a new migration) is killed: before it runs,
# around build and migrate, during activation, after the switch. Every single event is covered
# by `test_kill_at_every_journal_boundary_under_load_then_recover` on a smaller project.
BOUNDARIES = [1, 9, 22, 30, 40]


_NEWEST_EVENTS = (
    "SELECT COUNT(*) FROM events WHERE deployment_id = "
    "(SELECT id FROM deployments WHERE id > ? ORDER BY id DESC LIMIT 1)"
)


class JournalWatch:
    """Reads the newest deployment's events through one read-only connection, kept open:
    polled every 2 ms, opening the database each time took CPU from the deploy under test."""

    def __init__(self, db: Path, after_id: str) -> None:
        self.db = db
        self.after_id = after_id
        self.conn: sqlite3.Connection | None = None

    def _query(self, sql: str, *params: str) -> list[tuple[object, ...]]:
        try:
            if self.conn is None:
                if not self.db.exists():
                    return []
                self.conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)
            # No transaction is held between queries: each one sees every commit so far.
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []

    def length(self) -> int:
        rows = self._query(_NEWEST_EVENTS, self.after_id)
        return int(str(rows[0][0])) if rows else 0

    def kinds(self) -> list[str]:
        sql = _NEWEST_EVENTS.replace("COUNT(*)", "kind")
        return [str(k) for (k,) in self._query(sql, self.after_id)]

    def step_running(self, step: str) -> bool:
        """True once the deployment runs `step` while holding the lock."""
        locked = self._query("SELECT COUNT(*) FROM locks")
        running = self._query(
            _NEWEST_EVENTS.replace("WHERE", "WHERE step = ? AND status = 'running' AND", 1),
            step,
            self.after_id,
        )
        return bool(locked and locked[0][0] and running and running[0][0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def served_releases(project: Path) -> dict[str, str]:
    import tomllib

    config = tomllib.loads((project / "shipyard.toml").read_text())
    result = {}
    for name, comp in config["components"].items():
        path = "/api/version" if name == "backend" else "/version"
        with urllib.request.urlopen(f"http://127.0.0.1:{comp['port']}{path}", timeout=5) as r:
            result[name] = json.loads(r.read())["release"]
    return result


def deploy_killed_at(
    project: Path, boundary: int, after_id: str, env: dict[str, str] | None = None
) -> bool:
    """Start a deploy and SIGKILL it once its journal has `boundary` events.

    Returns False if the deploy finished before reaching the boundary.
    """
    process = subprocess.Popen(
        [shipyard_executable(), "-C", str(project), "deploy", "--full"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    watch = JournalWatch(project / ".shipyard" / "state.db", after_id)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if watch.length() >= boundary:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.002)
        raise AssertionError("the deploy neither finished nor reached the boundary in 120 s")
    finally:
        watch.close()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_kill_at_a_boundary_then_recover(shop: Path, run_cli: RunCli, boundary: int) -> None:
    """The demo's deploy of a backend change with a new migration, SIGKILLed once its journal
    has `boundary` events; `recover` leaves every port on one healthy version. (One case per
    boundary, so parallel workers share them.)"""
    first = run_cli("-C", str(shop), "--json", "deploy", timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    good = json.loads(first.stdout)["id"]
    migrations = shop / "backend" / "migrations"
    (migrations / "0004_audit.up.sql").write_text("CREATE TABLE audit (id INTEGER);\n")
    (migrations / "0004_audit.down.sql").write_text("DROP TABLE audit;\n")
    app = shop / "backend" / "app.py"
    app.write_text(app.read_text() + f"\n# crash test {boundary}\n")
    commit_all(shop, f"change {boundary}")
    service = Shipyard(shop)  # in-process reads: fewer interpreter start-ups
    try:
        killed = deploy_killed_at(shop, boundary, good)
        newest = service.history(limit=1)[0].record
        if not killed:  # it finished before reaching the boundary: also a fine end
            assert newest.status == "succeeded"
            assert set(served_releases(shop).values()) == {newest.id}
            return
        result = run_cli("-C", str(shop), "--json", "recover", timeout=120)
        assert result.returncode == 0, (result.stdout, result.stderr)
        after = service.deployment(newest.id).record
        if after.status == "succeeded":  # killed after its commit point: finished forward
            good = after.id
        else:
            # Killed before it started running: nothing to undo, so it is just `failed`.
            assert after.status in ("rolled_back", "failed"), after
            assert after.error and "orchestrator died" in after.error, after
            # The old backend cannot serve the new migration (0004 declares no compatibility):
            # recovery takes the schema down first instead of waiting out health deadlines
            # for releases that served before the deploy (it once took 51 s here).
            failing = [
                e
                for e in service.events(newest.id)
                if e.kind == "health" and e.step == "rollback" and e.status == "failing"
            ]
            assert failing == [], failing
        # Whole on one version: every public port serves the last good deployment.
        assert set(served_releases(shop).values()) == {good}
        assert service.lock_status() is None
        status_now = service.environment_status()
        assert all(c["healthy"] for c in status_now["components"]), status_now
        unfinished = [
            v
            for v in service.history(limit=50)
            if v.record.status in ("pending", "running", "rolling_back")
        ]
        assert unfinished == []
    finally:
        service.close()


def test_next_deploy_recovers_a_killed_one_first(shop: Path, run_cli: RunCli) -> None:
    first = run_cli("-C", str(shop), "--json", "deploy", timeout=120)
    assert first.returncode == 0
    good = json.loads(first.stdout)["id"]
    app = shop / "admin" / "app.py"
    app.write_text(app.read_text() + "\n# v2\n")
    commit_all(shop, "v2")
    assert deploy_killed_at(shop, 12, good)
    result = run_cli("-C", str(shop), "--json", "deploy", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    new = json.loads(result.stdout)["id"]
    history = json.loads(run_cli("-C", str(shop), "--json", "history").stdout)
    assert [d["status"] for d in history] == ["succeeded", "rolled_back", "succeeded"]
    assert "orchestrator died" in history[1]["error"]
    assert set(served_releases(shop).values()) <= {good, new}
    assert served_releases(shop)["admin"] == new


def gate_backend(project: Path, key: str) -> Path:
    """Make the backend's `key` command (build or start) wait until the returned file exists.

    Commits that config. A deploy then stays in that step (holding the environment's lock)
    for as long as the test wants: concurrency tests open the gate once the other side is
    where they need it, instead of racing it.
    """
    gate = project.parent / "gate"
    wait = f"i=0; while [ ! -e {gate} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; "
    config = project / "shipyard.toml"
    text = config.read_text()
    section = text.index("[components.backend]")
    line = text.index(f'{key} = "', section)
    opening = line + len(f'{key} = "')
    config.write_text(text[:opening] + wait + text[opening:])
    commit_all(project, f"the backend's {key} waits for the test's gate")
    return gate


def start_gated_deploy(
    project: Path, key: str, step: str, *, after_id: str = "", args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], Path]:
    """Start a deploy whose backend `key` waits at a gate; return once it runs `step`."""
    gate = gate_backend(project, key)
    process = subprocess.Popen(
        [shipyard_executable(), "-C", str(project), "deploy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = JournalWatch(project / ".shipyard" / "state.db", after_id)
    deadline = time.monotonic() + 60
    try:
        while not watch.step_running(step):
            if process.poll() is not None or time.monotonic() > deadline:
                gate.touch()
                out, err = process.communicate(timeout=120)
                raise AssertionError(f"the deploy never reached {step}: {out}{err}")
            time.sleep(0.01)
    finally:
        watch.close()
    return process, gate


def test_two_concurrent_deploys_one_runs_the_other_exits_4(shop: Path) -> None:
    first, gate = start_gated_deploy(shop, "build", "build:backend", args=("--full",))
    try:
        second = subprocess.run(
            [shipyard_executable(), "-C", str(shop), "deploy", "--full"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        gate.touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert second.returncode == 4, second.stdout + second.stderr
    assert "locked" in second.stderr
    assert "--wait-lock" in second.stderr


def test_wait_lock_waits_for_the_other_deploy(shop: Path, run_cli: RunCli) -> None:
    first, gate = start_gated_deploy(shop, "build", "build:backend", args=("--full",))
    try:
        second = subprocess.Popen(
            [shipyard_executable(), "-C", str(shop), "deploy", "--full", "--wait-lock", "60s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert second.stdout is not None
        seen = ""
        while not seen.startswith("plan "):  # planned while the first holds the lock
            seen = second.stdout.readline()
            assert seen or second.poll() is None, "the second deploy ended before planning"
    finally:
        gate.touch()
        first_out, first_err = first.communicate(timeout=120)
    second_out, _ = second.communicate(timeout=120)
    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 0, second_out
    history = json.loads(run_cli("-C", str(shop), "--json", "history").stdout)
    assert [d["status"] for d in history] == ["succeeded", "succeeded"]
    # The second waited: it started only once the first had finished.
    assert history[0]["started_at"] >= history[1]["finished_at"]


def test_ctrl_c_rolls_back_and_exits_1(shop: Path, run_cli: RunCli) -> None:
    first = run_cli("-C", str(shop), "--json", "deploy", timeout=120)
    assert first.returncode == 0
    good = json.loads(first.stdout)["id"]
    app = shop / "backend" / "app.py"
    app.write_text(app.read_text() + "\n# v2\n")
    commit_all(shop, "v2")
    process = subprocess.Popen(
        [shipyard_executable(), "-C", str(shop), "deploy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = JournalWatch(shop / ".shipyard" / "state.db", good)
    deadline = time.monotonic() + 60
    while watch.length() < 15 and time.monotonic() < deadline:
        time.sleep(0.005)
    watch.close()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    assert "interrupted" in err
    assert "Traceback" not in err and "never retrieved" not in err, err
    history = json.loads(run_cli("-C", str(shop), "--json", "history").stdout)
    assert history[0]["status"] == "rolled_back"
    assert set(served_releases(shop).values()) == {good}


class LoadLoop:
    """GET / on every public port in turn from a thread, counting failures per window.

    Inside `flat_out()` (where the test asserts no request fails) the requests go back to
    back; elsewhere the loop pauses `PAUSE` s after each one: load still, but it no longer
    takes the CPU the deploy under test needs.
    """

    PAUSE = 0.02

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.failures: list[tuple[float, int, str]] = []
        self.requests = 0
        self._stop = threading.Event()
        self._busy = threading.Event()  # set while flat out, or to wake the loop to stop
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._busy.set()
        self._thread.join(timeout=30)

    @contextlib.contextmanager
    def flat_out(self) -> Iterator[None]:
        """Requests back to back while inside."""
        self._busy.set()
        try:
            yield
        finally:
            self._busy.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            for port in self.ports:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                        r.read()
                except (OSError, urllib.error.HTTPError) as exc:
                    self.failures.append((time.monotonic(), port, repr(exc)))
                self.requests += 1
                self._busy.wait(self.PAUSE)

    def failed_between(self, start: float, end: float) -> list[tuple[float, int, str]]:
        return [f for f in self.failures if start <= f[0] <= end]


def _events_of(db: Path, deployment_id: str) -> list[tuple[str, str | None, str | None]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute(
            "SELECT kind, step, status FROM events WHERE deployment_id = ? ORDER BY seq",
            (deployment_id,),
        ).fetchall()
    return [(str(k), s, st) for k, s, st in rows]


# The boundaries are dealt round-robin to this many cases, so xdist workers share them;
# together the cases kill the deploy after every one of its events.
BOUNDARY_SHARDS = 4


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(BOUNDARY_SHARDS))
def test_kill_at_every_journal_boundary_under_load_then_recover(shard: int) -> None:
    """SIGKILL the deploy after each of its journal events (this case: every
    BOUNDARY_SHARDS-th, from `shard` + 1), finish included, while a load loop runs; earlier
    killed deploys fill `keep_releases`. After `recover`: one version serves on every port
    (the new one once the deployment passed its commit point), and `recover` itself failed
    no request."""
    project = make_project({"a": (), "b": ("a",)}, keep_releases=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    service = Shipyard(project.folder, environ=env)
    db = project.folder / ".shipyard" / "state.db"
    ports = list(project.ports.values())
    try:
        first = service.deploy(service.plan(ENV, selection="full")).record
        assert first.status == "succeeded"
        total = len(_events_of(db, first.id))
        good = first.id
        version = 1
        with LoadLoop(ports) as load:
            for boundary in range(1 + shard, total, BOUNDARY_SHARDS):
                version += 1
                for name in project.ports:
                    project.write_behaviour(name, behaviour(name, f"v{version}"))
                project.commit(f"v{version}")
                before = service.history(ENV, limit=1)[0].record.id
                killed = deploy_killed_at(project.folder, boundary, before, env=env)
                newest = service.history(ENV, limit=1)[0].record
                assert newest.id != before, boundary
                where = (boundary, _events_of(db, newest.id)[-1:])
                with load.flat_out():
                    started = time.monotonic()
                    views = service.recover(ENV)
                    ended = time.monotonic()
                assert load.failed_between(started, ended) == [], where
                after = service.deployment(newest.id).record
                assert after.status in ("succeeded", "rolled_back", "failed"), (where, after)
                if killed and any(k == "committed" for k, _, _ in _events_of(db, newest.id)):
                    assert after.status == "succeeded", where  # finished forward
                if after.status == "succeeded":
                    good = after.id
                assert not killed or [v.record.id for v in views] in ([newest.id], []), where
                served = {get_json(p, "/")[1]["release"] for p in ports}
                assert served == {good}, (where, served)
                assert all(get_json(p, "/health")[0] == 200 for p in ports), where
        assert load.requests > 0
    finally:
        service.down(ENV)
        service.close()
        wait_no_processes_under(project.scratch)
        project.remove()


def _deploy_killed_after(
    project: Path, env: dict[str, str], db: Path, before: str, when: str
) -> int:
    """`shipyard deploy --full`, SIGKILLed right after its journal holds an event of kind
    `when`; returns the number of events it had written."""
    process = subprocess.Popen(
        [shipyard_executable(), "-C", str(project), "deploy", "--full"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    watch = JournalWatch(db, before)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the deploy ended before a {when!r} event"
            kinds = watch.kinds()
            if when in kinds:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return len(kinds)
            time.sleep(0.002)
        raise AssertionError(f"no {when!r} event in 120 s")
    finally:
        watch.close()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_killed_orchestrator_is_undone_by_the_agent_without_any_command() -> None:
    """kill -9 of `deploy` before the commit point (while it starts releases, and after it
    switched the ports) and no command afterwards: within the lease's ttl + 1 s every port
    serves the old version again; killed after the commit point, the new one stays. The
    project's lock_ttl is 4 s (the default, 15 s, would only make the test wait longer)."""
    lock_ttl = 4.0
    project = make_project({"a": (), "b": ("a",)}, lock_ttl=f"{lock_ttl:g}s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    service = Shipyard(project.folder, environ=env)
    db = project.folder / ".shipyard" / "state.db"
    ports = list(project.ports.values())
    try:
        good = service.deploy(service.plan(ENV, selection="full")).record.id
        for index, (when, keeps_new) in enumerate(
            [("health", False), ("routed", False), ("committed", True)]
        ):
            for name in project.ports:
                project.write_behaviour(name, behaviour(name, f"v{index + 2}"))
            project.commit(f"v{index + 2}")
            before = service.history(ENV, limit=1)[0].record.id
            _deploy_killed_after(project.folder, env, db, before, when)
            killed_at = time.monotonic()
            new = service.history(ENV, limit=1)[0].record.id
            expected = new if keeps_new else good
            deadline = killed_at + lock_ttl + 1.0
            served: set[str] = set()
            while time.monotonic() < deadline:
                served = {get_json(p, "/")[1]["release"] for p in ports}
                if served == {expected} and not keeps_new:
                    break
                time.sleep(0.1)
            assert served == {expected}, (when, served, expected)
            service.recover(ENV)  # the records, and what the agent left to do
            assert {get_json(p, "/")[1]["release"] for p in ports} == {expected}
            good = expected
    finally:
        service.down(ENV)
        service.close()
        wait_no_processes_under(project.scratch)
        project.remove()
