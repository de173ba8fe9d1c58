"""Secrets without their values: dotenv parsing, presence checks, fingerprints, redaction."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=value lines; `#` comments; single or double quotes; `export` allowed."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = _LINE.match(raw)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


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
