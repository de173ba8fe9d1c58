"""`secrets check` and the secrets part of preflight, through the console script.

A production deploy with a test-mode payment key, a database on localhost and a JWT secret
shared with staging is refused before anything starts (exit 3) with every finding listed,
and none of those values appears in anything shipyard prints or keeps. Fake credentials are
built by concatenation, so the repository itself trips no scanner.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from shipyard.config import SecretsSource
from shipyard.core.secrets import parse_dotenv
from shipyard.effects.secrets import fingerprinter, read_secrets
from shipyard.errors import SecretsError
from tests.conftest import RunCli, commit_all

STRIPE_TEST = "sk_" + "test_" + "Zq8Rf2Lp4Tn6Vb1Xc3Hj5Km7"
LOCAL_DB = "postgresql://shop:Pw-" + "9fK2mQ7x@localhost:5432/shop"


def add_production(project: Path, dotenv: str) -> None:
    config = project / "shipyard.toml"
    config.write_text(
        config.read_text()
        + '\n[environments.production]\ntarget = "local"\nroot = ".shipyard/production"\n'
        'secrets = { dotenv = ".env.production" }\n'
    )
    (project / ".env.production").write_text(dotenv)


def test_a_bad_production_deploy_is_refused_listing_everything_and_showing_nothing(
    shop: Path, run_cli: RunCli
) -> None:
    staging = parse_dotenv((shop / ".env.staging").read_text())
    shared = staging["JWT_SECRET"]
    add_production(
        shop,
        f"DATABASE_URL={LOCAL_DB}\nJWT_SECRET={shared}\nSTRIPE_SECRET_KEY={STRIPE_TEST}\n",
    )
    commit_all(shop, "a production environment with bad secrets")
    values = [STRIPE_TEST, LOCAL_DB, shared, "Pw-9fK2mQ7x"]

    deploy = run_cli("-C", str(shop), "deploy", "--env", "production", "--yes", timeout=120)
    assert deploy.returncode == 3, deploy.stdout + deploy.stderr
    said = deploy.stdout + deploy.stderr
    assert "DATABASE_URL in production: points at host 'localhost'" in said
    assert "STRIPE_SECRET_KEY in production: is a Stripe test/sandbox credential" in said
    assert "JWT_SECRET in production has the same value as JWT_SECRET in staging" in said
    # Refused before anything was touched: no release, no agent, no build.
    assert not (shop / ".shipyard" / "production").exists()
    assert not (shop / ".shipyard" / "artifacts").exists()

    check = run_cli("-C", str(shop), "--json", "secrets", "check", "--env", "production")
    assert check.returncode == 3, check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] is False
    found = {(f["rule"], f["name"]) for f in report["findings"]}
    assert {
        ("environment", "DATABASE_URL"),
        ("environment", "STRIPE_SECRET_KEY"),
        ("shared", "JWT_SECRET"),
    } <= found
    assert all(f["severity"] in ("error", "warning") for f in report["findings"])
    shared_finding = next(f for f in report["findings"] if f["rule"] == "shared")
    assert shared_finding["location"] == ".env.production:2"
    assert re.fullmatch(r"hmac:[0-9a-f]{16}", shared_finding["fingerprint"])

    history = run_cli("-C", str(shop), "--json", "history", "--env", "production")
    (failed,) = json.loads(history.stdout)
    assert failed["status"] == "failed"
    logs = run_cli("-C", str(shop), "logs", failed["id"])
    assert "[shared] JWT_SECRET" in logs.stdout  # the journal has every finding too
    text_check = run_cli("-C", str(shop), "secrets", "check")
    assert text_check.returncode == 3

    outputs = [deploy, check, history, logs, text_check]
    printed = "".join(o.stdout + o.stderr for o in outputs)
    kept = b"".join(
        f.read_bytes() for f in (shop / ".shipyard").rglob("*") if f.is_file()
    )  # the state database (and its WAL), journal included, and the key file
    for value in values:
        assert value not in printed
        assert value.encode() not in kept


def test_the_demo_secrets_pass(shop: Path, run_cli: RunCli) -> None:
    check = run_cli("-C", str(shop), "--json", "secrets", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout) == {"ok": True, "checked": ["local", "staging"], "findings": []}


def test_an_unreadable_line_is_a_finding_with_its_line(shop: Path, run_cli: RunCli) -> None:
    secret = "unterminated-" + "Value-42"
    add_production(shop, f'A=1\nJWT_SECRET="{secret}\nB=2\n')
    check = run_cli("-C", str(shop), "secrets", "check", "--env", "production")
    assert check.returncode == 3
    assert ".env.production:2: the value of JWT_SECRET opens a quote" in check.stdout
    assert secret not in check.stdout + check.stderr


def test_a_secrets_command_failure_is_reported_without_its_output(tmp_path: Path) -> None:
    leaked = "echoed-" + "Secret-Value-7"
    (tmp_path / "vault.txt").write_text(f"TOKEN={leaked}\n")
    source = SecretsSource("command", "cat vault.txt; cat vault.txt >&2; exit 4")
    try:
        read_secrets(source, tmp_path, {"PATH": "/usr/bin:/bin"})
    except SecretsError as exc:
        assert "exited with code 4" in exc.message
        assert leaked not in exc.message + (exc.hint or "")
    else:
        raise AssertionError("a failing command must be an error")


def test_a_secrets_command_that_hangs_times_out(tmp_path: Path) -> None:
    source = SecretsSource("command", "sleep 30")
    try:
        read_secrets(source, tmp_path, {"PATH": "/usr/bin:/bin"}, timeout=0.3)
    except SecretsError as exc:
        assert "timed out after 0.3s" in exc.message
    else:
        raise AssertionError("a hanging command must time out")


def test_sources_command_and_prefix(tmp_path: Path) -> None:
    got = read_secrets(
        SecretsSource("command", "printf 'export A=1\\nB=\"two words\"\\n'"),
        tmp_path,
        {"PATH": "/usr/bin:/bin"},
    )
    assert got.values == {"A": "1", "B": "two words"}
    got = read_secrets(SecretsSource("env_prefix", "SHOP_"), tmp_path, {"SHOP_A": "x", "B": "y"})
    assert got.values == {"A": "x"}


def test_the_fingerprint_key_is_private_and_stable(tmp_path: Path) -> None:
    first = fingerprinter(tmp_path)("value")
    key = tmp_path / ".shipyard" / "fingerprint.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    assert fingerprinter(tmp_path)("value") == first
    assert key.stat().st_mode & 0o777 == 0o600
    assert fingerprinter(tmp_path / "other")("value") != first
