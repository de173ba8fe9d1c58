"""Secrets without their values: dotenv parsing, presence checks, fingerprints, redaction."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dotenv.parser import parse_stream

from shipyard.errors import SecretsError

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
# A line inside a multi-line quoted value that looks like the next KEY=value: the quote
# before it was not closed. `=` followed by `=` is base64 padding (PEM bodies), not that.
_SWALLOWED = re.compile(r"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=[^=\s]", re.MULTILINE)


def parse_dotenv(text: str, location: str = ".env") -> dict[str, str]:
    """KEY=value lines as python-dotenv reads them, values taken as written (no interpolation).

    Quotes, escapes in double quotes, multi-line quoted values, `export` and comments work.
    A line that is not KEY=value, or a quote that is never closed, is an error naming
    `location`:line for each such line; the line's text is never shown (it may hold a secret).
    """
    values: dict[str, str] = {}
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        where = f"{location}:{binding.original.line}"
        first_line = binding.original.string.split("\n", 1)[0]
        assigned = _ASSIGNMENT.match(first_line)
        if binding.error or (binding.key is not None and binding.value is None):
            problems.append(f"{where}: {_unreadable(first_line, assigned)}")
        elif binding.key is None:
            continue  # blank line or comment
        elif "\n" in (binding.value or "") and _SWALLOWED.search(binding.value or ""):
            problems.append(
                f"{where}: the value of {binding.key} opens a quote that is not closed on its "
                "line (it runs over the KEY=value lines after it)"
            )
        else:
            values[binding.key] = binding.value or ""
    if problems:
        raise SecretsError(
            f"{location}: {len(problems)} line(s) cannot be read:\n  " + "\n  ".join(problems),
            hint="fix those lines (KEY=value, quotes closed on the same line unless the value "
            "spans lines on purpose); their text is not shown, as it may hold a secret",
        )
    return values


def _unreadable(first_line: str, assigned: re.Match[str] | None) -> str:
    """Why a line cannot be read, in words that never quote its value."""
    if assigned is None:
        return "not a KEY=value line"
    value = first_line[assigned.end() :].strip()
    if value[:1] in ("'", '"') and value.find(value[0], 1) < 0:
        return f"the value of {assigned.group(1)} opens a quote that is not closed on its line"
    return f"the value of {assigned.group(1)} has text after its closing quote"


def fingerprint(value: str) -> str:
    """A short, stable, non-reversible name for a value (safe to print and store)."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Finding:
    """One problem with a secret; never holds its value."""

    rule: str
    name: str
    severity: str
    location: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "location": self.location,
            "message": self.message,
        }


def missing_secrets(
    required: Mapping[str, Iterable[str]], values: Mapping[str, str], location: str
) -> list[Finding]:
    """A finding for each secret a component needs that the source does not provide."""
    findings = []
    for component, names in sorted(required.items()):
        for name in names:
            if not values.get(name):
                findings.append(
                    Finding(
                        rule="presence",
                        name=name,
                        severity="error",
                        location=location,
                        message=f"{name} is required by component {component!r} "
                        f"but missing from {location}",
                    )
                )
    return findings


class Redactor:
    """Replaces every known secret value in text with `[redacted NAME]`."""

    MIN_LENGTH = 4  # shorter values would redact ordinary words

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._pairs: list[tuple[str, str]] = []
        if secrets:
            self.add(secrets)

    def add(self, secrets: Mapping[str, str]) -> None:
        for name, value in secrets.items():
            if len(value) >= self.MIN_LENGTH:
                self._pairs.append((value, f"[redacted {name}]"))
        # Longest first, so a value containing another is replaced whole.
        self._pairs.sort(key=lambda pair: len(pair[0]), reverse=True)

    def __call__(self, text: str) -> str:
        for value, label in self._pairs:
            if value in text:
                text = text.replace(value, label)
        return text
