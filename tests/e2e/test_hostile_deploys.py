"""Hostile text through real deploys: build output, start output, probe bodies, config keys.

A property test over the installed console script (issue 9): a release whose build prints
markup, ANSI escapes, control characters, invalid UTF-8, very long lines and the secret
values, and whose failing `/health` echoes its environment. In text and --json mode:
no traceback, the exit codes of the CLI contract, the text shown literally (control
characters escaped), and no secret value in stdout, stderr, the journal, the database or
shipyard's own files. Few examples: each one deploys for real.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shipyard.cli.safe import visible
from shipyard.core.secrets import Redactor
from tests.e2e.hostile import HostileProject, cli, new_project, remove_project

HOSTILE = [
    "[/data/in]",
    "[bold]",
    "[/]",
    ":warning:",
    "[redacted JWT_SECRET]",
    "\x1b[31m",
    "\x1b]0;t\x07",
    "\x1b[2J",
    "\r",
    "\x00",
    "\x7f",
    "\u202e",
    "é字🚀",
    "\t",
]
BAD_BYTES = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80abc"]

# Secret values with characters markup, URLs and JSON care about (a dotenv file must hold
# them as they are, so no quotes, backslashes, `#`, `$` or whitespace).
secret_tail = st.text(alphabet="abcXYZ0189[]/:@%&?=;<>{}|*!~^é字", min_size=6, max_size=20)
secrets_strategy = st.fixed_dictionaries(
    {
        "DATABASE_URL": secret_tail.map(lambda t: "postgresql://u:pw" + t + "@db/x"),
        "JWT_SECRET": secret_tail.map(lambda t: "jwt-" + t),
    }
)


@st.composite
def output_bytes(draw: st.DrawFn, secrets: dict[str, str]) -> bytes:
    """Lines of hostile text, bad bytes, a long line and the secret values, anywhere."""
    pieces = st.one_of(
        st.sampled_from(HOSTILE).map(str.encode),
        st.sampled_from(BAD_BYTES),
        st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from(sorted(secrets.values())).map(str.encode),
        st.integers(min_value=3000, max_value=120_000).map(lambda n: b"W" * n),
        st.just(b"\n"),
    )
    return b"".join(draw(st.lists(pieces, min_size=1, max_size=12))) + b"\n"


def squash(text: str) -> str:
    return "".join(text.split())


def shown_lines(output: bytes, redact: Redactor) -> list[str]:
    """What the tail of a failed command shows of each of its last lines (process.py)."""
    lines = [raw.decode("utf-8", "replace").rstrip("\r") for raw in output.split(b"\n")[:-1]]
    return [redact(line)[:2000] for line in lines[-20:]]


def assert_no_secret(texts: list[str], stored: bytes, secrets: dict[str, str]) -> None:
    for value in secrets.values():
        for text in texts:
            assert value not in text
        assert value.encode() not in stored


@pytest.fixture(scope="module")
def project() -> Iterator[HostileProject]:
    """One project for every example (each one commits its own change and secrets)."""
    made = new_project({})
    yield made
    remove_project(made)


# Text and --json mode are two cases of 5 examples each (10 deploys in all, as when the mode
# was drawn): xdist runs them on two workers at once.
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@settings(
    max_examples=5,
    deadline=None,
    # Each example deploys for real: a failure is reported as drawn, not shrunk for minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_hostile_deploys_show_text_literally_and_leak_nothing(
    project: HostileProject, as_json: bool, data: st.DataObject
) -> None:
    secrets = data.draw(secrets_strategy, "secrets")
    redact = Redactor(secrets)
    build_output = data.draw(output_bytes(secrets), "build output")
    build_fails = data.draw(st.booleans(), "build fails")
    body = "[/health] " + data.draw(
        st.lists(st.sampled_from([*HOSTILE, *secrets.values()]), max_size=5).map("".join),
        "health body",
    )
    start_output = data.draw(st.sampled_from([*HOSTILE, *secrets.values()]), "start output")
    project.secrets = secrets
    project.write(
        build_output=build_output,
        build_exit=1 if build_fails else 0,
        health_body=body,
        health_status=500,
        start_output=f"[start] {start_output}",
        deadline="1s",
    )
    root = str(project.root)
    mode = ("--json",) if as_json else ()
    deploy = cli("-C", root, *mode, "deploy", "--full")
    texts = [deploy.stdout, deploy.stderr]
    assert deploy.returncode == 1, texts  # its health always fails
    for text in texts:
        assert "Traceback" not in text and "internal error" not in text
    if as_json:
        document = json.loads(deploy.stdout)
        assert document["status"] == "rolled_back"
        shown, deployment = document["failure"]["message"], document["id"]
    else:
        assert "\x1b" not in deploy.stdout + deploy.stderr
        shown = squash(deploy.stdout + deploy.stderr)
        found = re.search(r"full deployment (\S+) of local: rolled_back", deploy.stdout)
        assert found, deploy.stdout
        deployment = found.group(1)
    if build_fails:
        for line in shown_lines(build_output, redact):
            assert (line if as_json else squash(visible(line))) in shown
    else:
        assert "[/health]" in shown
        assert "[start]" in shown
    texts += follow_up_outputs(root, mode, deployment)
    assert_no_secret(texts, shipyard_files(project), secrets)


def follow_up_outputs(root: str, mode: tuple[str, ...], deployment: str) -> list[str]:
    """history, status ID and logs ID (text or --json): each exits 0 without a traceback."""
    outputs = []
    for args in (("history",), ("status", deployment), ("logs", deployment)):
        result = cli("-C", root, *mode, *args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        outputs += [result.stdout, result.stderr]
    return outputs


def shipyard_files(project: HostileProject) -> bytes:
    """What shipyard wrote: state.db (+ WAL), the agent's own log and state.

    Left out: artifacts and release folders (the project's own files, and each release's
    .env, which holds its secrets by design) and the releases' own output logs (what
    the application printed, kept by the agent as the application wrote it).
    """
    out = b""
    for f in sorted((project.root / ".shipyard").rglob("*")):
        relative = f.relative_to(project.root / ".shipyard").as_posix()
        skip = relative.startswith("artifacts/") or "/releases/" in relative
        skip = skip or "/agent/logs/" in f"/{relative}"
        if f.is_file() and not f.is_symlink() and not skip and not f.is_socket():
            out += f.read_bytes()
    return out


@settings(
    max_examples=15,
    deadline=None,
)
@given(
    key=st.lists(st.sampled_from([*HOSTILE, "x", "]]", "[["]), min_size=1, max_size=4)
    .map("".join)
    .filter(lambda k: k.strip() and "\x00" not in k),
    as_json=st.booleans(),
)
def test_hostile_config_keys_give_a_clean_validate_error(key: str, as_json: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sy-key-"))
    try:
        (folder / "api").mkdir()
        (folder / "shipyard.toml").write_text(
            '[project]\nname = "demo"\n\n[environments.local]\ntarget = "local"\n\n'
            f'[components.api]\npath = "api"\nstart = "python app.py"\n{toml_string(key)} = 1\n'
        )
        mode = ("--json",) if as_json else ()
        result = cli("-C", str(folder), *mode, "validate")
        assert result.returncode == 2
        assert "Traceback" not in result.stdout + result.stderr
        if as_json:
            assert key in json.loads(result.stdout)["error"]["message"]
        else:
            assert "\x1b" not in result.stderr
            assert squash(visible(key)) in squash(result.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(
        f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ch in '"\\\x7f' else ch for ch in text
    )
    return f'"{escaped}"'
