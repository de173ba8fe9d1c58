"""`shipyard promote`: what was tested in staging goes to production as it was built.

Two local environments with their own roots and ports: deploy to staging, then promote to
production. Production runs the very artifacts staging built (same digests, no build in its
journal, no new artifact on disk), with its own secrets and ports, and the record names the
staging deployment it came from.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunCli, commit_all, free_ports


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def with_production(shop: Path, run_cli: RunCli) -> Iterator[tuple[Path, list[int]]]:
    """The demo with a protected production environment on ports of its own."""
    ports = free_ports(3)
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text()
        + '\n[environments.production]\ntarget = "local"\nroot = ".shipyard/production"\n'
        'protected = true\nsecrets = { dotenv = ".env.production" }\n'
        + "".join(
            f"\n[environments.production.components.{name}]\nport = {port}\n"
            for name, port in zip(("backend", "admin", "marketing"), ports, strict=True)
        )
    )
    # Its own values, none shared with another environment; the database is a file.
    (shop / ".env.production").write_text(
        "DATABASE_URL=sqlite:///shared/production.db\n"
        f"JWT_SECRET={secrets.token_urlsafe(32)}\n"
        f"STRIPE_SECRET_KEY=sk_{'live'}_{secrets.token_hex(16)}\n"
    )
    (shop / ".gitignore").write_text((shop / ".gitignore").read_text() + "\n.env.production\n")
    commit_all(shop, "a production environment")
    yield shop, ports
    if (shop / ".shipyard" / "production" / "agent").exists():
        run_cli("-C", str(shop), "down", "--env", "production")


def test_promote_releases_the_staging_artifacts_without_building(
    with_production: tuple[Path, list[int]], run_cli: RunCli
) -> None:
    shop, (backend_port, admin_port, _marketing) = with_production
    staged = run_cli("-C", str(shop), "--json", "deploy", "--env", "staging", timeout=180)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    staging = json.loads(staged.stdout)
    artifacts_before = sorted(p for p in (shop / ".shipyard" / "artifacts").glob("*/*"))

    # Protected: without a terminal, --yes is needed, and nothing happens without it.
    refused = run_cli("-C", str(shop), "promote", "--from", "staging", "--to", "production")
    assert refused.returncode == 2
    assert "protected" in refused.stderr and "--yes" in refused.stderr
    assert not (shop / ".shipyard" / "production").exists()

    promoted = run_cli(
        "-C",
        str(shop),
        "--json",
        "promote",
        "--from",
        "staging",
        "--to",
        "production",
        "--yes",
        timeout=180,
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    production = json.loads(promoted.stdout)
    assert production["kind"] == "promote"
    assert production["promoted_from"] == staging["id"]
    assert production["commit"] == staging["commit"]
    digests = {c["name"]: c["artifact"] for c in production["components"]}
    assert digests == {c["name"]: c["artifact"] for c in staging["components"]}

    # Nothing was built: no build step in its journal, no new artifact on disk.
    logs = run_cli("-C", str(shop), "--json", "logs", production["id"])
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    steps = {e["step"] for e in events if e.get("step")}
    assert not any(s.startswith("build:") for s in steps)
    assert {"release:backend", "activate:backend", "verify"} <= steps
    assert sorted(p for p in (shop / ".shipyard" / "artifacts").glob("*/*")) == artifacts_before

    # Production's own ports serve the promoted release of the same commit, with its own
    # environment; staging still serves its own.
    version = get(backend_port, "/api/version")
    assert version == {
        "component": "backend",
        "release": production["id"],
        "commit": staging["commit"],
        "env": "production",
    }
    assert get(backend_port, "/health")["ok"] is True
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/", timeout=10) as page:
        assert production["id"] in page.read().decode()
    status = run_cli("-C", str(shop), "--json", "status", "--env", "staging")
    assert {c["deployment_id"] for c in json.loads(status.stdout)["components"]} == {staging["id"]}


def test_promote_needs_a_good_source_deployment(
    with_production: tuple[Path, list[int]], run_cli: RunCli
) -> None:
    shop, _ports = with_production
    done = run_cli("-C", str(shop), "--json", "promote", "--from", "staging", "--to", "production")
    assert done.returncode == 2
    assert "no good deployment to promote" in json.loads(done.stdout)["error"]["message"]
