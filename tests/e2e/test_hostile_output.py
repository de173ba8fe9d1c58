"""Text from outside is shown as it is, never read as markup, and never leaks a secret.

Issue 9: a build printing `[/data/in]` crashed the deploy with a MarkupError and broke
`history`; hints lost their `[brackets]`; `[redacted JWT_SECRET]` vanished; a config key
named `[/bold]` crashed `validate`; the final `error:` line and `--json` outputs showed
secret values a failing health body echoed; a failed deploy printed its reason four times.
"""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunCli, shipyard_executable
from tests.e2e.hostile import HostileProject, new_project, remove_project

SECRETS = {
    "DATABASE_URL": "postgresql://shop:pw-Sup3r-S3cret-Db@db.internal/shop",
    "JWT_SECRET": "jwt-9f8e7d6c5b4a39281706-Qx",
}


@pytest.fixture
def project(run_cli: RunCli) -> Iterator[HostileProject]:
    made = new_project(SECRETS)
    yield made
    remove_project(made, run_cli)


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text
        assert "MarkupError" not in text
        assert "internal error" not in text


def test_build_output_with_markup_fails_cleanly_and_history_still_works(
    project: HostileProject, run_cli: RunCli
) -> None:
    project.write(build_output=b"copy [/data/in] to [bold]out[/bold] :warning:\n", build_exit=1)
    deploy = run_cli("-C", str(project.root), "deploy")
    assert deploy.returncode == 1, deploy.stderr
    no_traceback(deploy.stdout, deploy.stderr)
    assert "| copy [/data/in] to [bold]out[/bold] :warning:" in deploy.stdout

    history = run_cli("-C", str(project.root), "history")
    assert history.returncode == 0, history.stderr
    no_traceback(history.stdout, history.stderr)
    assert "rolled_back" in history.stdout
    status = run_cli("-C", str(project.root), "--json", "history")
    deployment = json.loads(status.stdout)[0]["id"]
    shown = run_cli("-C", str(project.root), "status", deployment)
    assert shown.returncode == 0
    assert "copy [/data/in] to [bold]out[/bold] :warning:" in shown.stdout


def test_failed_deploy_shows_its_reason_once_redacted_and_literally(
    project: HostileProject, run_cli: RunCli
) -> None:
    project.write(health_body="[red]down[/red]", health_status=500, deadline="1s")
    deploy = run_cli("-C", str(project.root), "deploy")
    assert deploy.returncode == 1
    both = deploy.stdout + deploy.stderr
    no_traceback(both)
    for value in SECRETS.values():
        assert value not in both
    # The redaction label is text, not markup: it is shown, so `jwt=` is not taken as empty.
    assert "jwt=[redacted JWT_SECRET]" in both
    assert "[red]down[/red]" in both
    # The reason with its log tail appears once, on the failed step's line; the status lines
    # and the summary point at it; the final error line says it in one line and points too.
    assert deploy.stdout.count("did not become healthy") == 1, both
    assert both.count("last lines of its log") == 1, both
    error_lines = [line for line in deploy.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "failed and was rolled back" in error_lines[0]
    assert "did not become healthy" in error_lines[0]
    assert error_lines[0].endswith("(details above)")


def test_json_outputs_carry_no_secret_value(project: HostileProject, run_cli: RunCli) -> None:
    project.write(health_body="oops", health_status=500, deadline="1s")
    root = str(project.root)
    deploy = run_cli("-C", root, "--json", "deploy")
    assert deploy.returncode == 1
    document = json.loads(deploy.stdout)
    assert document["status"] == "rolled_back"
    assert "[redacted JWT_SECRET]" in document["failure"]["message"]
    outputs = [deploy.stdout, deploy.stderr]
    history = run_cli("-C", root, "--json", "history")
    outputs.append(history.stdout)
    deployment = json.loads(history.stdout)[0]["id"]
    for args in (("status", deployment), ("logs", deployment)):
        for mode in ((), ("--json",)):
            result = run_cli("-C", root, *mode, *args)
            assert result.returncode == 0, result.stderr
            outputs += [result.stdout, result.stderr]
    for value in SECRETS.values():
        for text in outputs:
            assert value not in text


def test_state_database_is_private_and_an_open_one_is_tightened(
    project: HostileProject, run_cli: RunCli
) -> None:
    project.write()
    db = project.root / ".shipyard" / "state.db"
    db.parent.mkdir(parents=True)
    db.touch(mode=0o644)
    db.chmod(0o644)
    result = run_cli("-C", str(project.root), "history")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for extra in (".shipyard/state.db-wal", ".shipyard/state.db-shm"):
        path = project.root / extra
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_fresh_state_database_is_created_owner_only(run_cli: RunCli) -> None:
    project = new_project(SECRETS)
    try:
        project.write()
        result = run_cli("-C", str(project.root), "history")
        assert result.returncode == 0, result.stderr
        db = project.root / ".shipyard" / "state.db"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
    finally:
        remove_project(project, run_cli)


def test_hint_with_brackets_is_shown_whole(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "shipyard.toml").write_text("[project\nname = 1\n")
    result = run_cli("-C", str(tmp_path), "validate")
    assert result.returncode == 2
    no_traceback(result.stdout, result.stderr)
    assert "strings need quotes, tables need [brackets])" in result.stderr


@pytest.mark.parametrize("key", ["[/bold]", "[red]x", "\x1b[2Jclear", ":warning:"])
def test_config_key_that_looks_like_markup_gives_a_clean_error(
    tmp_path: Path, run_cli: RunCli, key: str
) -> None:
    (tmp_path / "api").mkdir()
    toml_key = json.dumps(key)  # a TOML basic string is a JSON string here
    (tmp_path / "shipyard.toml").write_text(
        '[project]\nname = "demo"\n\n[environments.local]\ntarget = "local"\n\n'
        f'[components.api]\npath = "api"\nstart = "python app.py"\n{toml_key} = 1\n'
    )
    result = run_cli("-C", str(tmp_path), "validate")
    assert result.returncode == 2
    no_traceback(result.stdout, result.stderr)
    assert "\x1b" not in result.stderr  # a control character is shown escaped, not sent
    shown = key.replace("\x1b", "\\x1b")
    assert f"unknown key `{shown}`" in result.stderr
    as_json = run_cli("-C", str(tmp_path), "--json", "validate")
    assert as_json.returncode == 2
    assert f"unknown key `{key}`" in json.loads(as_json.stdout)["error"]["message"]


def run_in_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run the console script on a pseudo-terminal (live progress, colours) and read it all."""
    master, slave = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [shipyard_executable(), *args], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        code = process.wait(timeout=timeout)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_hostile_output_is_shown_escaped_and_the_deploy_fails_cleanly(
    project: HostileProject,
) -> None:
    project.write(build_output=b"copy [/data/in] \x1b[2J\x1b]0;pwned\x07 done\n", build_exit=1)
    code, shown = run_in_terminal("-C", str(project.root), "deploy")
    assert code == 1, shown
    no_traceback(shown)
    assert "copy [/data/in] \\x1b[2J\\x1b]0;pwned\\x07 done" in shown
    assert "\x1b[2J" not in shown and "\x1b]0;pwned" not in shown  # never sent to the terminal
