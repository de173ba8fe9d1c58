"""Usage errors honour --json: the same `{"error": …}` document as every error, exit 2.

Issue 9: unknown options, missing arguments, unknown commands and bad choices printed a
boxed message on stderr and nothing on stdout, even with --json.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunCli

CASES = {
    "unknown option": (["deploy", "--bogus"], "No such option: --bogus"),
    "missing argument": (["logs"], "Missing argument"),
    "unknown command": (["deplyo"], "No such command 'deplyo'"),
    "bad choice": (["graph", "--format", "xml"], "'xml' is not one of"),
    "bad number": (["history", "--limit", "many"], "--limit"),
    "group without command": (["lock"], "Missing command"),
    "global option after the command": (["validate", "--json"], "No such option: --json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_usage_error_with_json_is_one_error_document(run_cli: RunCli, case: str) -> None:
    args, expected = CASES[case]
    result = run_cli("--json", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "UsageError"
    assert expected in error["message"]
    assert error["hint"]
    assert result.stderr == ""


TEXT_CASES = set(CASES) - {"group without command", "global option after the command"}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_usage_error_in_text_is_an_error_line_with_a_hint(run_cli: RunCli, case: str) -> None:
    args, expected = CASES[case]
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    first, hint = result.stderr.splitlines()[:2]
    assert first.startswith("error: ") and expected in first
    assert hint.startswith("hint: ")
    assert "╭" not in result.stderr  # no box


def test_help_and_version_still_exit_0(run_cli: RunCli) -> None:
    assert run_cli("--version").returncode == 0
    shown = run_cli("deploy", "--help")
    assert shown.returncode == 0
    assert "--allow-dirty" in shown.stdout
    bare = run_cli()
    assert bare.returncode == 2
    assert "Usage" in bare.stdout + bare.stderr
