"""A deploy of the demo that adds a migration costs no request (expand now, contract later).

A copy of the demo without its migration 0003 is deployed (v1, schema 0002) through the real
console script. Keep-alive clients then ask every public port in a loop (backend
`/api/products` and `/health`, the admin page, which reads the backend, and the marketing page)
while v2 adds 0003 back (an additive column that declares itself compatible with 0002): the
migration runs while v1 still serves, so the v1 backend must keep answering on the new schema.
Every answer that is not a 200 counts as a failure. The load loop is bounded in time and count.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import RunCli, commit_all, git

# (component, path) pairs each client asks in turn.
TARGETS = (
    ("backend", "/api/products"),
    ("backend", "/health"),
    ("admin", "/"),
    ("marketing", "/"),
)
MAX_SECONDS = 150.0
MAX_REQUESTS = 100_000


def ports(project: Path) -> dict[str, int]:
    config = tomllib.loads((project / "shipyard.toml").read_text())
    return {name: c["port"] for name, c in config["components"].items()}


@dataclass
class Load:
    """Keep-alive clients on every public port, until stopped, `MAX_SECONDS` or `MAX_REQUESTS`."""

    ports: dict[str, int]
    clients: int = 2
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    # (release, database revision, revision its code needs), from the backend's /health answers
    backend_states: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        deadline = time.monotonic() + MAX_SECONDS
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _client(self, index: int, deadline: float) -> None:
        conns: dict[str, http.client.HTTPConnection] = {}
        turn = index
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.requests >= MAX_REQUESTS:
                break
            component, path = TARGETS[turn % len(TARGETS)]
            turn += 1
            conn = conns.get(component) or http.client.HTTPConnection(
                "127.0.0.1", self.ports[component], timeout=10
            )
            failure = None
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    failure = f"{component} {path}: HTTP {response.status} {body[:200]!r}"
                elif path == "/health":
                    health = json.loads(body)
                    state = (health["release"], health["revision"], health["needs"])
                    with self._lock:
                        self.backend_states[state] += 1
                if response.will_close:
                    conn.close()
                    conns.pop(component, None)
                else:
                    conns[component] = conn
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                failure = f"{component} {path}: {type(exc).__name__}: {exc}"
                conn.close()
                conns.pop(component, None)
            with self._lock:
                self.requests += 1
                if failure:
                    self.failures.append(failure)
            self._stop.wait(0.003)
        for conn in conns.values():
            conn.close()

    def wait_for_requests(self, count: int) -> None:
        """Block until the clients have sent `count` more requests (the loop is running)."""
        target = self.requests + count
        deadline = time.monotonic() + 30
        while self.requests < target:
            assert time.monotonic() < deadline, "the load clients send nothing"
            time.sleep(0.01)


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def deploy(run_cli: RunCli, project: Path) -> tuple[int, dict[str, object]]:
    result = run_cli("-C", str(project), "--json", "deploy", timeout=180)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def migration_0003(project: Path) -> dict[Path, str]:
    """The demo's additive migration 0003, taken out of `project` and returned (path → text)."""
    files = {path: path.read_text() for path in project.glob("backend/migrations/0003_*.sql")}
    assert len(files) == 2, files  # up and down
    git(project, "rm", "-q", *(str(path) for path in files))
    return files


def backend_health(project: Path) -> dict[str, object]:
    status, body = get(ports(project)["backend"], "/health")
    assert status == 200, body
    answer: dict[str, object] = json.loads(body)
    return answer


@pytest.fixture
def shop_v1(shop: Path, run_cli: RunCli) -> tuple[Path, str, dict[Path, str]]:
    """The demo before 0003, deployed: (project, v1 deployment id, the files of 0003)."""
    files = migration_0003(shop)
    commit_all(shop, "v1: schema 0002")
    code, v1 = deploy(run_cli, shop)
    assert code == 0, v1
    health = backend_health(shop)
    assert (health["revision"], health["needs"]) == ("0002", "0002")
    return shop, str(v1["id"]), files


@pytest.mark.slow
def test_additive_migration_deploys_without_a_failed_request(
    shop_v1: tuple[Path, str, dict[Path, str]], run_cli: RunCli
) -> None:
    shop, v1_release, files = shop_v1
    p = ports(shop)
    for path, text in files.items():
        path.write_text(text)
    admin = shop / "admin" / "app.py"  # a visible change: the admin page's heading
    admin.write_text(admin.read_text().replace("<h1>shop admin</h1>", "<h1>shop admin v2</h1>"))
    v2_commit = commit_all(shop, "v2: products.stock (0003), admin heading")

    with Load(p) as load:
        load.wait_for_requests(50)
        code, v2 = deploy(run_cli, shop)
        load.wait_for_requests(50)
    assert code == 0, v2
    v2_release = str(v2["id"])

    assert load.failures == [], (len(load.failures), load.failures[:10])
    assert load.requests > 200
    # The interleaving this is about happened: v1's backend answered on v2's schema.
    assert load.backend_states[(v1_release, "0003", "0002")] > 0, load.backend_states

    # v2 is served, at the new revision.
    health = backend_health(shop)
    assert (health["release"], health["revision"], health["needs"]) == (v2_release, "0003", "0003")
    status, products = get(p["backend"], "/api/products")
    assert status == 200 and json.loads(products)[0]["stock"] == 40
    status, page = get(p["admin"], "/")
    assert status == 200 and "<h1>shop admin v2</h1>" in page and v2_release in page
    status, page = get(p["marketing"], "/")
    assert status == 200 and f'<code id="commit">{v2_commit}</code>' in page

    # v3 changes only the admin; redeployed in full, marketing reuses v2's artifact and names
    # the commit it runs from, not the one it was built from.
    admin.write_text(admin.read_text().replace("shop admin v2", "shop admin v3"))
    v3_commit = commit_all(shop, "v3: admin heading")
    result = run_cli("-C", str(shop), "--json", "deploy", "--full", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    v3_release = json.loads(result.stdout)["id"]
    events = run_cli("-C", str(shop), "--json", "logs", v3_release).stdout.splitlines()
    reused = {json.loads(e).get("component") for e in events if '"reused"' in e}
    assert "marketing" in reused
    status, page = get(p["marketing"], "/")
    assert status == 200 and f'<code id="commit">{v3_commit}</code>' in page
    assert v2_commit not in page


@pytest.mark.slow
def test_failed_deploy_undoes_the_migration_without_a_failed_request(
    shop_v1: tuple[Path, str, dict[Path, str]], run_cli: RunCli
) -> None:
    shop, v1_release, files = shop_v1
    p = ports(shop)
    for path, text in files.items():
        path.write_text(text)
    # v2's backend never becomes healthy, after its migration ran.
    app = shop / "backend" / "app.py"
    good = app.read_text()
    broken = re.sub(
        r"(        def health\(self\) -> None:\n)",
        r"\1            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {'ok': False})\n"
        r"            return\n",
        good,
        count=1,
    )
    assert broken != good
    app.write_text(broken)
    config = shop / "shipyard.toml"
    text = config.read_text()
    assert 'deadline = "20s"' in text
    config.write_text(text.replace('deadline = "20s"', 'deadline = "3s"', 1))
    commit_all(shop, "v2: 0003, and a backend that never becomes healthy")

    with Load(p) as load:
        load.wait_for_requests(50)
        code, v2 = deploy(run_cli, shop)
        load.wait_for_requests(50)
    assert code == 1, v2
    assert v2["status"] == "rolled_back" and "backend" in str(v2["error"])

    assert load.failures == [], (len(load.failures), load.failures[:10])
    assert load.requests > 200
    # v1 kept serving on the migrated schema, then on the schema rolled back to 0002.
    assert load.backend_states[(v1_release, "0003", "0002")] > 0, load.backend_states
    assert set(load.backend_states) <= {(v1_release, "0003", "0002"), (v1_release, "0002", "0002")}

    health = backend_health(shop)
    assert (health["release"], health["revision"], health["needs"]) == (v1_release, "0002", "0002")
    status, products = get(p["backend"], "/api/products")
    assert status == 200 and "stock" not in json.loads(products)[0]
    status, page = get(p["admin"], "/")
    assert status == 200 and v1_release in page


def test_a_rename_is_refused_with_the_hint_to_split_it(shop: Path, run_cli: RunCli) -> None:
    migrations = shop / "backend" / "migrations"
    (migrations / "0004_rename_stock.up.sql").write_text(
        "ALTER TABLE products RENAME COLUMN stock TO quantity;\n"
    )
    (migrations / "0004_rename_stock.down.sql").write_text(
        "ALTER TABLE products RENAME COLUMN quantity TO stock;\n"
    )
    commit_all(shop, "rename a column in place")
    result = run_cli("-C", str(shop), "deploy")
    assert result.returncode == 3, result.stdout + result.stderr
    message = " ".join(result.stderr.split())  # the hint may be wrapped
    assert "0004: ALTER TABLE products RENAME COLUMN stock TO quantity" in message
    assert "split it, expand now" in message and "contract (drop or rename) in a later" in message
    assert "--allow-destructive" in message
    assert get_or_none(ports(shop)["backend"]) is None  # nothing was deployed


def get_or_none(port: int) -> int | None:
    try:
        return get(port, "/health")[0]
    except OSError:
        return None
