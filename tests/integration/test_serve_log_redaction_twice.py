"""`shipyard serve`'s log redactor keeps up with the secrets while the server runs.

A secret added to a `command` source after the server started is redacted from the log once
a deployment has read it (the deployment's own read teaches the log: the command does not
run again for the log's sake); one added to a dotenv source is redacted from the next log
line (the file changed).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import httpx

from shipyard.api.app import create_app
from shipyard.api.auth import Token, Tokens
from shipyard.api.log_redactor import LogRedactor
from shipyard.cli.serve import RedactingFormatter
from tests.api_fixtures import wait_finished
from tests.e2e.test_secrets_once_twice import LOCAL_TOKEN, _runs, counted
from tests.integration.mcp_project import serving

__all__ = ["counted"]  # the fixture, imported for pytest

NEW_SECRET = "tok-" + "Wn4pQz8Lr2Xv6Kb9"
DEPLOY_TOKEN = "deploy-token-value-0123456789"


def logged(formatter: logging.Formatter, message: str) -> str:
    record = logging.LogRecord("shipyard.api", logging.ERROR, __file__, 1, message, (), None)
    return formatter.format(record)


def test_a_secret_added_to_a_command_source_is_redacted_once_a_deployment_read_it(
    counted: tuple[Path, Path],
) -> None:
    root, runs = counted
    redact = LogRedactor(root)
    formatter = RedactingFormatter(redact, "%(message)s")
    assert logged(formatter, f"connect {LOCAL_TOKEN}") == "connect [redacted API_TOKEN]"
    (runs / "local.env").write_text(f"API_TOKEN={LOCAL_TOKEN}\nNEW_KEY={NEW_SECRET}\n")
    tokens = Tokens([Token("ci", "deploy", DEPLOY_TOKEN)])
    app = create_app(root, tokens=tokens, recover_interval=None, on_secrets=redact.learn)
    with serving(app) as url:
        headers = {"Authorization": f"Bearer {DEPLOY_TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            started = client.post("/api/v1/deployments", json={})
            assert started.status_code == 202, started.text
            assert wait_finished(client, started.json()["id"])["status"] == "succeeded"
    read = _runs(runs)["local"]
    for _ in range(3):
        line = logged(formatter, f"deploy failed: key {NEW_SECRET} refused")
        assert NEW_SECRET not in line and "[redacted NEW_KEY]" in line
    assert _runs(runs)["local"] == read  # a log line never runs the command


def test_a_secret_added_to_a_dotenv_source_is_redacted_from_the_next_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "shipyard.toml").write_text(
        '[project]\nname = "p"\n\n[environments.local]\ntarget = "local"\n'
        'secrets = { dotenv = ".env.local" }\n\n[components.web]\npath = "."\nstart = "true"\n'
    )
    (tmp_path / ".env.local").write_text(f"API_TOKEN={LOCAL_TOKEN}\n")
    formatter = RedactingFormatter(LogRedactor(tmp_path), "%(message)s")
    assert NEW_SECRET in logged(formatter, f"a {NEW_SECRET}")  # not a secret yet
    with (tmp_path / ".env.local").open("a") as file:
        file.write(f"NEW_KEY={NEW_SECRET}\n")
    assert logged(formatter, f"a {NEW_SECRET}") == "a [redacted NEW_KEY]"
    assert logged(formatter, f"b {LOCAL_TOKEN}") == "b [redacted API_TOKEN]"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("shipyard.test-twice")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"cannot use {NEW_SECRET}")
        except RuntimeError:
            log.exception("run failed")
    finally:
        log.removeHandler(handler)
    assert "RuntimeError: cannot use [redacted NEW_KEY]" in stream.getvalue()
    assert NEW_SECRET not in stream.getvalue()
