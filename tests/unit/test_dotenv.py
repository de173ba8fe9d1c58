"""Secrets files: what python-dotenv reads, and every line it cannot read named, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import SecretsSource
from shipyard.core.secrets import parse_dotenv
from shipyard.effects.secrets import load_secrets
from shipyard.errors import SecretsError

SECRET = "s3cr3t-Value-that-must-not-show"


def test_values_are_read_as_written() -> None:
    text = (
        "# comment\n"
        "A=1\n"
        'export B="two words"\n'
        "C='x' # note\n"
        'D="line1\\nline2"\n'  # escapes in double quotes
        "E=${HOME}\n"  # no interpolation: the value as written
        'PEM="-----BEGIN KEY-----\nAbC1==\n-----END KEY-----"\n'  # multi-line on purpose
        "F=\n"
    )
    assert parse_dotenv(text) == {
        "A": "1",
        "B": "two words",
        "C": "x",
        "D": "line1\nline2",
        "E": "${HOME}",
        "PEM": "-----BEGIN KEY-----\nAbC1==\n-----END KEY-----",
        "F": "",
    }


# (case id, file text, "line: reason" expected for each unreadable line, in order)
UNREADABLE = [
    (
        "unterminated double quote",
        f'A=1\nJWT_SECRET="{SECRET}\nB=2\n',
        ["2: the value of JWT_SECRET opens a quote that is not closed on its line"],
    ),
    (
        "unterminated single quote",
        f"JWT_SECRET='{SECRET}\n",
        ["1: the value of JWT_SECRET opens a quote that is not closed on its line"],
    ),
    (
        "quote closed only lines later, after other assignments",
        f'JWT_SECRET="{SECRET}\nB=2\nC="3"\n',
        ["1: the value of JWT_SECRET opens a quote that is not closed on its line"],
    ),
    (
        "a quote closed lines later by the quote of another value",
        f'JWT_SECRET="{SECRET}\nB=2\nC="\n',
        ["1: the value of JWT_SECRET opens a quote that is not closed on its line (it runs over"],
    ),
    ("a secret pasted on a line of its own", f"A=1\n{SECRET}\n", ["2: not a KEY=value line"]),
    ("a line without a key", f"={SECRET}\n", ["1: not a KEY=value line"]),
    (
        "text after the closing quote",
        f'A="{SECRET}" trailing\nB=1\nC\n',
        ["1: the value of A has text after its closing quote", "3: not a KEY=value line"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE]
)
def test_each_unreadable_line_is_named_and_never_shown(text: str, expected: list[str]) -> None:
    with pytest.raises(SecretsError) as info:
        parse_dotenv(text, ".env.local")
    error = info.value
    problems = error.message.splitlines()[1:]
    assert len(problems) == len(expected), error.message
    for problem, want in zip(problems, expected, strict=True):
        assert problem.strip().startswith(f".env.local:{want}"), error.message
    assert SECRET not in str(error)
    assert error.exit_code == 3


def test_the_dotenv_source_names_its_file(tmp_path: Path) -> None:
    (tmp_path / ".env.local").write_text(f'DATABASE_URL=sqlite:///x\nJWT_SECRET="{SECRET}\n')
    with pytest.raises(SecretsError) as info:
        load_secrets(SecretsSource(kind="dotenv", value=".env.local"), tmp_path)
    assert ".env.local:2: the value of JWT_SECRET opens a quote" in info.value.message
    assert SECRET not in str(info.value)


def test_a_non_utf8_secrets_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"A=1\nB=caf\xe9\n")
    with pytest.raises(SecretsError, match=r"\.env:2: not valid UTF-8"):
        load_secrets(SecretsSource(kind="dotenv", value=".env"), tmp_path)
