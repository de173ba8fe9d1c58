"""Hostile text through the pure output paths: the Redactor, `visible`, the CLI's renderers.

Invariants (issue 9): whatever the text, rendering never raises, markup is never
interpreted, no control sequence reaches the terminal, and no secret value survives.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.cli.output import CliState, make_console
from shipyard.cli.render import LiveProgress, deployment_summary
from shipyard.cli.safe import visible
from shipyard.core.secrets import Redactor
from shipyard.engine.runner import ProgressEvent

MARKUP = [
    "[/data/in]",
    "[bold]",
    "[/]",
    "[red]x[/red]",
    "[/bold]",
    ":warning:",
    "[link=http://example.com]here[/link]",
    "\\[escaped]",
    "[redacted JWT_SECRET]",
    "tables need )",
    "[",
    "]",
]
ANSI = ["\x1b[31m", "\x1b[0m", "\x1b]0;title\x07", "\x1b[2J", "\x1bc", "\x9b31m", "\r", "\x08"]
ODD = ["\udcff", "\ud800", "\u202e", "\u2066", "\x00", "\x7f", "\ufeff", "é", "字", "🚀"]

fragments = st.one_of(
    st.sampled_from(MARKUP + ANSI + ODD),
    st.text(max_size=30),
    st.characters(max_codepoint=0x9F).map(str),
    st.integers(min_value=200, max_value=5000).map(lambda n: "L" * n),
)
# Secret values: printable, at least MIN_LENGTH long, with the characters markup, JSON,
# URLs and shells treat specially; never a NUL (the tests use it as a separator).
secret_values = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_characters="\x00",
        exclude_categories=("Cs", "Cc", "Zl", "Zp"),
    ),
    min_size=Redactor.MIN_LENGTH,
    max_size=40,
)
secret_maps = st.dictionaries(
    st.sampled_from(["DATABASE_URL", "JWT_SECRET", "API_TOKEN"]), secret_values, min_size=1
)

LABEL = re.compile(r"\[redacted[^\]]*\]")


def encodings(value: str) -> list[str]:
    """The forms a value travels in, each of which the Redactor must catch."""
    forms = [
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        quote(value, safe=""),
        quote_plus(value),
    ]
    return [f for f in forms if len(f) >= Redactor.MIN_LENGTH]


def leaks(output: str, secrets: dict[str, str]) -> list[str]:
    """Secret values (in any encoding) found in `output` outside redaction labels."""
    outside = LABEL.sub("\x00", output)
    return [f for v in secrets.values() for f in encodings(v) if f in outside]


@st.composite
def text_with_secrets(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    secrets = draw(secret_maps)
    values = [f for v in secrets.values() for f in encodings(v)]
    parts = draw(st.lists(st.one_of(fragments, st.sampled_from(values)), max_size=12))
    return "".join(parts), secrets


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(text_with_secrets())
def test_redactor_leaves_no_value_in_any_position_or_encoding(
    case: tuple[str, dict[str, str]],
) -> None:
    text, secrets = case
    assert leaks(Redactor(secrets)(text), secrets) == []


@settings(max_examples=200)
@given(secret_values.filter(lambda v: len(v) > Redactor.CUT_LENGTH), st.data())
def test_redactor_catches_a_value_cut_off_at_either_end(value: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=Redactor.CUT_LENGTH, max_value=len(value) - 1))
    redact = Redactor({"TOKEN": value})
    assert value[:cut] not in LABEL.sub("\x00", redact("body: " + value[:cut]))
    assert value[-cut:] not in LABEL.sub("\x00", redact(value[-cut:] + " rest"))


def test_redactor_examples() -> None:
    redact = Redactor({"A": "secretA1", "B": "A1-tailB", "JWT_SECRET": 'p@ss w/rd"x'})
    # Overlapping values are replaced as one, never leaving a piece of either.
    assert redact("x secretA1-tailB y") == "x [redacted A+B] y"
    assert redact("secretA1secretA1") == "[redacted A][redacted A]"
    assert redact("p%40ss%20w%2Frd%22x") == "[redacted JWT_SECRET]"
    assert redact('{"v": "p@ss w/rd\\"x"}') == '{"v": "[redacted JWT_SECRET]"}'
    assert redact("nothing here") == "nothing here"
    assert Redactor({"ABCD": "ABCD"})("ABCD") == "[redacted]"  # a name spelling its value
    assert redact.data({"k": ["secretA1", 1, None]}) == {"k": ["[redacted A]", 1, None]}
    multi = Redactor({"KEY": "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"})
    assert "MIIBOgIBAAJBAK" not in multi("line: MIIBOgIBAAJBAK")
    assert not Redactor({"SHORT": "abc"})


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(codec=None)))
def test_visible_leaves_no_control_character_and_always_encodes(text: str) -> None:
    shown = visible(text)
    shown.encode("utf-8")  # lone surrogates were escaped
    for ch in shown:
        code = ord(ch)
        assert ch in "\n\t" or not (code < 0x20 or 0x7F <= code <= 0x9F)
        assert not (0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069)


def test_visible_keeps_ordinary_text() -> None:
    plain = "copy [/data/in] :warning: é 字 tab\there\nnext"
    assert visible(plain) == plain
    assert visible("\x1b[31mred\r") == "\\x1b[31mred\\x0d"


def squash(text: str) -> str:
    return "".join(text.split())


def cli_for(secrets: dict[str, str]) -> tuple[CliState, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    cli = CliState(
        out=make_console(stderr=False, file=out),
        err=make_console(stderr=True, file=err),
        redact=Redactor(secrets),
    )
    cli.out.width = cli.err.width = 1_000_000  # no wrapping: outputs are searched whole
    return cli, out, err


hostile = st.lists(fragments, min_size=1, max_size=6).map("".join)
# Rendered output has words of its own ("deployment", "\\x1b" escapes): a value searched for
# there starts with a character none of them has, and holds no backslash.
rendered_secrets = st.dictionaries(
    st.sampled_from(["DATABASE_URL", "JWT_SECRET", "API_TOKEN"]),
    secret_values.filter(lambda v: "\\" not in v).map(lambda v: "§" + v),
    min_size=1,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered_secrets, hostile, hostile, hostile, st.data())
def test_renderers_show_hostile_text_literally_and_never_a_secret(
    secrets: dict[str, str], name: str, message: str, hint: str, data: st.DataObject
) -> None:
    value = data.draw(st.sampled_from(sorted(secrets.values())))
    message = data.draw(st.sampled_from([message, message + value, value + message]))
    cli, out, err = cli_for(secrets)
    progress = LiveProgress(cli.out, [name], cli.shown)
    for kind, status, text in (
        ("deployment", "running", None),
        ("step", "running", None),
        ("build", None, message),
        ("step", "failed", message),
        ("deployment", "failed", f"step build:{name} failed: {message}"),
        ("deployment", "rolled_back", f"step build:{name} failed: {message}"),
    ):
        progress(ProgressEvent("d1", kind, f"build:{name}", name, status, text, 0.0))
    summary: dict[str, Any] = {
        "id": "d1",
        "kind": "full",
        "environment": name,
        "status": "rolled_back",
        "commit": message,
        "duration_s": 1.5,
        "error": f"step build:{name} failed: {message}",
        "components": [
            {"name": name, "status": "rolled_back", "release": message, "previous_release": None}
        ],
    }
    deployment_summary(cli.out, summary, cli.shown)
    final = f"deployment d1 failed and was rolled back: step build:{name} failed: {message}"
    cli.error(final, hint)
    shown = out.getvalue() + err.getvalue()
    assert "\x1b" not in shown and "\x9b" not in shown
    assert leaks(shown, secrets) == []
    for text in (name, message, hint):
        assert squash(cli.text(text)) in squash(shown)


@settings(max_examples=100, deadline=None)
@given(secret_maps, st.recursive(hostile, lambda kids: st.lists(kids, max_size=3), max_leaves=6))
def test_json_output_is_valid_and_redacted(secrets: dict[str, str], payload: Any) -> None:
    value = sorted(secrets.values())[0]
    cli, _, _ = cli_for(secrets)
    document = {"message": value + " in " + json.dumps(payload), "data": payload, value: 1}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cli.emit_json({"error": document})
    text = buffer.getvalue()
    text.encode("ascii")  # every non-ASCII character, control or surrogate is escaped
    parsed = json.loads(text)
    assert set(parsed) == {"error"}
    assert [s for s in strings(parsed) if leaks(s, secrets)] == []


def strings(value: Any) -> list[str]:
    """Every string (keys included) in parsed JSON: JSON's own escapes are not searched."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_a_long_reason_is_printed_once_and_pointed_at_afterwards() -> None:
    cli, out, err = cli_for({})
    reason = "app did not become healthy within 2s: status 500\n  | last log line"
    progress = LiveProgress(cli.out, ["app"], cli.shown)
    for kind, status, text in (
        ("step", "failed", reason),
        ("deployment", "failed", f"step activate:app failed: {reason}"),
        ("deployment", "rolling_back", f"step activate:app failed: {reason}"),
        ("deployment", "rolled_back", f"step activate:app failed: {reason}"),
    ):
        progress(ProgressEvent("d1", kind, "activate:app", "app", status, text, 0.0))
    summary = {"id": "d1", "kind": "full", "environment": "local", "status": "rolled_back"}
    deployment_summary(
        cli.out, {**summary, "error": f"step activate:app failed: {reason}"}, cli.shown
    )
    cli.error(f"deployment d1 failed and was rolled back: step activate:app failed: {reason}", None)
    shown = out.getvalue() + err.getvalue()
    assert out.getvalue().count("did not become healthy") == 1
    assert shown.count("last log line") == 1
    assert err.getvalue().startswith(
        "error: deployment d1 failed and was rolled back: step activate:app failed: "
        "app did not become healthy within 2s: status 500 (details above)\n"
    )
    assert "deployment failed: step activate:app failed (see above)" in shown
    assert "deployment rolled_back\n" in shown


def test_a_short_reason_is_simply_repeated() -> None:
    cli, _, err = cli_for({})
    progress = LiveProgress(cli.out, ["app"], cli.shown)
    progress(ProgressEvent("d1", "step", "build:app", "app", "failed", "no space", 0.0))
    cli.error("deployment d1 failed: step build:app failed: no space", None)
    assert "error: deployment d1 failed: step build:app failed: no space" in err.getvalue()


def test_a_deployment_reason_without_a_failed_step_is_also_printed_once() -> None:
    cli, out, err = cli_for({})
    reason = "the lease could not be renewed on host local\n  | agent said: busy"
    progress = LiveProgress(cli.out, ["app"], cli.shown)
    for status in ("failed", "rolling_back", "rolled_back"):
        progress(ProgressEvent("d1", "deployment", None, None, status, reason, 0.0))
    summary = {"id": "d1", "kind": "full", "environment": "local", "status": "rolled_back"}
    deployment_summary(cli.out, {**summary, "error": reason}, cli.shown)
    cli.error(f"deployment d1 failed and was rolled back: {reason}", None)
    shown = out.getvalue() + err.getvalue()
    assert shown.count("agent said: busy") == 1
    assert "reason: the lease could not be renewed on host local (details above)" in shown


def test_progress_follows_the_deployment_it_started_not_one_it_recovered_first() -> None:
    """Taking the lock may first finish a dead deployment's rollback: its events come first,
    but the deployment the command reports is the one that then starts (pending)."""
    cli, _out, _err = cli_for({})
    progress = LiveProgress(cli.out, ["app"], cli.shown)
    for deployment, kind, status in (
        ("dead", "deployment", "rolling_back"),
        ("dead", "step", "running"),
        ("dead", "deployment", "rolled_back"),
        ("ours", "deployment", "pending"),
        ("ours", "deployment", "running"),
    ):
        progress(ProgressEvent(deployment, kind, "activate:app", "app", status, None, 0.0))
    assert progress.deployment == "ours"


def test_the_servers_log_lines_and_tracebacks_never_carry_a_secret() -> None:
    """`shipyard serve` logs through one formatter: a bug whose exception text holds a
    secret value (a database URL, say) is logged with its traceback, the value redacted."""
    import logging
    import sys

    from shipyard.cli.serve import RedactingFormatter

    value = "postgresql://app:Pw-" + "9fK2mQ7xLs@db/app"
    formatter = RedactingFormatter(Redactor({"DATABASE_URL": value}), "%(name)s %(message)s")
    try:
        raise RuntimeError(f"cannot connect to {value}")
    except RuntimeError:
        record = logging.LogRecord(
            "shipyard.api", logging.ERROR, __file__, 1, "run failed: %s", (value,), sys.exc_info()
        )
    line = formatter.format(record)
    assert "Traceback" in line and "RuntimeError: cannot connect to" in line
    assert value not in line and "9fK2mQ7xLs" not in line
    assert "[redacted DATABASE_URL]" in line
