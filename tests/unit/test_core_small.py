"""Small pure pieces: globs, durations, health judgement, dotenv, redaction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.config import HealthCheck
from shipyard.core.durations import format_duration, parse_duration
from shipyard.core.health import HealthJudge
from shipyard.core.paths import matches
from shipyard.core.secrets import Fingerprinter, Redactor, missing_secrets, parse_dotenv


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("backend/app.py", "backend/**", True),
        ("backend/a/b/c.py", "backend/**", True),
        ("backendx/app.py", "backend/**", False),
        ("shipyard.toml", "shipyard.toml", True),
        ("libs/common/x.py", "libs/*/x.py", True),
        ("libs/a/b/x.py", "libs/*/x.py", False),
        ("a/b/openapi.json", "**/openapi.json", True),
        ("openapi.json", "**/openapi.json", True),
        ("x.py", "?.py", True),
    ],
)
def test_globs(path: str, pattern: str, expected: bool) -> None:
    assert matches(path, pattern) is expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("200ms", 0.2), ("2s", 2), ("1.5s", 1.5), ("5m", 300), ("1h", 3600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.integers(min_value=1, max_value=10_000))
def test_duration_format_roundtrip(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000, rel=1e-3)


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="200ms, 2s or 5m"):
        parse_duration("soon")


CHECK = HealthCheck(http="/health", stable_for=1.0, deadline=5.0)


def test_healthy_only_after_stable_window() -> None:
    judge = HealthJudge(CHECK, start=0.0)
    assert judge.observe(True, 0.1) == "waiting"
    assert judge.observe(True, 0.6) == "waiting"
    assert judge.observe(True, 1.1) == "healthy"


def test_flapping_restarts_the_window() -> None:
    judge = HealthJudge(CHECK, start=0.0)
    assert judge.observe(True, 0.1) == "waiting"
    assert judge.observe(False, 0.9) == "waiting"
    assert judge.observe(True, 1.0) == "waiting"
    assert judge.observe(True, 1.5) == "waiting"
    assert judge.observe(True, 2.0) == "healthy"


def test_deadline_fails() -> None:
    judge = HealthJudge(CHECK, start=0.0)
    assert judge.observe(False, 4.9) == "waiting"
    assert judge.observe(False, 5.0) == "failed"


@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_judge_never_healthy_without_a_stable_run(results: list[bool]) -> None:
    judge = HealthJudge(HealthCheck(stable_for=0.5, deadline=100), start=0.0)
    run = 0
    for i, ok in enumerate(results):
        run = run + 1 if ok else 0
        verdict = judge.observe(ok, i * 0.1)
        if verdict == "healthy":
            assert ok and (run - 1) * 0.1 >= 0.5 - 1e-9
            return


def test_dotenv() -> None:
    text = "A=1\n# c\nexport B=\"two words\"\nC='x'\nD=v # note\n\n"
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "x", "D": "v"}


def test_redactor_hides_values_longest_first() -> None:
    redact = Redactor({"TOKEN": "abcd1234", "LONG": "abcd1234xyz", "SHORT": "ab"})
    assert redact("x abcd1234xyz y abcd1234 ab") == ("x [redacted LONG] y [redacted TOKEN] ab")


def test_missing_secrets_never_show_values() -> None:
    findings = missing_secrets({"backend": ["JWT", "DB"]}, {"JWT": "s3cr3t-value"}, ".env")
    assert [f.name for f in findings] == ["DB"]
    assert "s3cr3t" not in str([f.to_dict() for f in findings])


def test_fingerprints_are_keyed() -> None:
    """The same value has the same fingerprint under one key, another under another key, and
    the fingerprint is not the bare hash anyone could compute from a guessed password."""
    import hashlib

    one, other = Fingerprinter(b"k" * 32), Fingerprinter(b"q" * 32)
    assert one("hunter2") == one("hunter2") != one("hunter3")
    assert one("hunter2") != other("hunter2")
    assert one("hunter2").removeprefix("hmac:") not in hashlib.sha256(b"hunter2").hexdigest()
