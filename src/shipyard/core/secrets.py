"""Secrets without their values: dotenv parsing, presence checks, fingerprints, redaction."""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from dotenv.parser import parse_stream

from shipyard.errors import SecretsError

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
# A line inside a multi-line quoted value that looks like the next KEY=value: the quote
# before it was not closed. `=` followed by `=` is base64 padding (PEM bodies), not that.
_SWALLOWED = re.compile(r"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=[^=\s]", re.MULTILINE)


def shannon_entropy(value: str) -> float:
    """Bits of information per character (0 for "xxxx", about 6 for random base64)."""
    if not value:
        return 0.0
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in Counter(value).values())


def unreadable_lines(location: str, problems: Iterable[Finding]) -> SecretsError:
    """The error for a secrets source with lines that cannot be read (never their text)."""
    said = [f.message for f in problems]
    return SecretsError(
        f"{location}: {len(said)} line(s) cannot be read:\n  " + "\n  ".join(said),
        hint="fix those lines (KEY=value, quotes closed on the same line unless the value "
        "spans lines on purpose); their text is not shown, as it may hold a secret",
    )


def parse_dotenv(text: str, location: str = ".env") -> dict[str, str]:
    """KEY=value lines as python-dotenv reads them, values taken as written (no interpolation).

    Quotes, escapes in double quotes, multi-line quoted values, `export` and comments work.
    A line that is not KEY=value, or a quote that is never closed, is an error naming
    `location`:line for each such line; the line's text is never shown (it may hold a secret).
    """
    dotenv = read_dotenv(text, location)
    if dotenv.problems:
        raise unreadable_lines(location, dotenv.problems)
    return dotenv.values


@dataclass(frozen=True)
class Dotenv:
    """What a dotenv text holds: values, the line each is on, and the lines it cannot read."""

    values: dict[str, str]
    lines: dict[str, int]
    problems: list[Finding]


def read_dotenv(text: str, location: str = ".env") -> Dotenv:
    """Like `parse_dotenv`, but each unreadable line is a finding (`location:line`)."""
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    problems: list[Finding] = []
    for binding in parse_stream(io.StringIO(text)):
        where = f"{location}:{binding.original.line}"
        first_line = binding.original.string.split("\n", 1)[0]
        assigned = _ASSIGNMENT.match(first_line)
        why = None
        if binding.error or (binding.key is not None and binding.value is None):
            why = _unreadable(first_line, assigned)
        elif binding.key is None:
            continue  # blank line or comment
        elif "\n" in (binding.value or "") and _SWALLOWED.search(binding.value or ""):
            why = (
                f"the value of {binding.key} opens a quote that is not closed on its "
                "line (it runs over the KEY=value lines after it)"
            )
        else:
            values[binding.key] = binding.value or ""
            lines[binding.key] = binding.original.line
            continue
        name = assigned.group(1) if assigned else ""
        problems.append(Finding("unreadable", name, "error", where, f"{where}: {why}"))
    return Dotenv(values, lines, problems)


def _unreadable(first_line: str, assigned: re.Match[str] | None) -> str:
    """Why a line cannot be read, in words that never quote its value."""
    if assigned is None:
        return "not a KEY=value line"
    value = first_line[assigned.end() :].strip()
    if value[:1] in ("'", '"') and value.find(value[0], 1) < 0:
        return f"the value of {assigned.group(1)} opens a quote that is not closed on its line"
    return f"the value of {assigned.group(1)} has text after its closing quote"


class Fingerprinter:
    """A short, stable name for a value that is safe to print and store.

    An HMAC (SHA-256) under a per-project key: a bare hash of a short password can be
    reversed by trying candidates, a keyed one only by whoever holds the key. Two values
    are the same exactly when their fingerprints are (up to 64 bits of collision odds).
    """

    PREFIX = "hmac:"

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a fingerprint key needs at least 16 bytes")
        self._key = key

    def __call__(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return self.PREFIX + digest.hexdigest()[:16]


@dataclass(frozen=True)
class Finding:
    """One problem with a secret; never holds its value."""

    rule: str
    name: str
    severity: str
    location: str
    message: str

    environment: str | None = None
    fingerprint: str | None = None  # of the value concerned (keyed: see Fingerprinter)
    kind: str | None = None  # leak scan: what the token is (aws, github, stripe, …)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "location": self.location,
            "message": self.message,
            "environment": self.environment,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class SecretsReport:
    """Every finding of a secrets check or a leak scan (`ok` when none is an error)."""

    findings: list[Finding]
    checked: list[str] = field(default_factory=list)  # environments, or scanned paths

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": list(self.checked),
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_text(self) -> str:
        """One line per finding, errors first (names, places and fingerprints only)."""
        ordered = sorted(self.findings, key=lambda f: f.severity != "error")
        return "\n".join(f"{f.severity}: [{f.rule}] {f.message}" for f in ordered)


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
    """Replaces every known secret value in text with `[redacted NAME]`.

    A value is found wherever it is: at any position, next to itself, overlapping another
    value (the union of overlapping matches is replaced as one), and in the encoded forms
    text commonly carries it in: JSON and Python string escapes, URL (percent) encoding,
    HTML escapes, and each line of a multi-line value (output is often redacted line by
    line). Text is often cut to a length (a probe body, a log tail): a value cut off at the
    end or the start of the text is redacted too when at least CUT_LENGTH of it is left.
    Values shorter than MIN_LENGTH are left alone: they would redact ordinary words.
    """

    MIN_LENGTH = 4
    CUT_LENGTH = 8

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._forms: dict[str, str] = {}  # a form a value can take -> the value's name
        self._keys: frozenset[str] = frozenset()  # in every match (whole or cut): a quick test
        if secrets:
            self.add(secrets)

    def add(self, secrets: Mapping[str, str]) -> None:
        for name, value in secrets.items():
            for form in _forms_of(value):
                if len(form) >= self.MIN_LENGTH:
                    self._forms.setdefault(form, name)
        cut = self.CUT_LENGTH
        self._keys = frozenset(
            key
            for form in self._forms
            for key in ((form[:cut], form[-cut:]) if len(form) >= cut else (form,))
        )

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        if not any(key in text for key in self._keys):  # most lines hold no secret at all
            return text
        spans: list[tuple[int, int, str]] = []
        for form, name in self._forms.items():
            start = text.find(form)
            while start != -1:
                spans.append((start, start + len(form), name))
                start = text.find(form, start + 1)
            spans += _cut_off(text, form, name, self.CUT_LENGTH)
        if not spans:
            return text
        spans.sort(key=lambda span: (span[0], -span[1]))  # the longest first at a position
        out: list[str] = []
        done = 0
        begin, end, names = spans[0][0], spans[0][1], [spans[0][2]]
        for start, stop, name in spans[1:]:
            if start < end:  # overlapping: one replacement covers both
                if stop > end and name not in names:  # not just a value inside another
                    names.append(name)
                end = max(end, stop)
                continue
            out += [text[done:begin], self._label(names, text[begin:end])]
            done, begin, end, names = end, start, stop, [name]
        out += [text[done:begin], self._label(names, text[begin:end]), text[end:]]
        return "".join(out)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like data (dicts, lists, strings) with every string redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    @staticmethod
    def _label(names: list[str], replaced: str) -> str:
        label = f"[redacted {'+'.join(names)}]"
        # A name that spells its own value must not print it back.
        return label if replaced not in label else "[redacted]"


def _forms_of(value: str) -> set[str]:
    """The value, and the escaped forms it takes in JSON, Python reprs, URLs and HTML."""
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
    }
    for quoted in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms.add(quoted)
        forms.add(_PERCENT.sub(lambda m: m.group().lower(), quoted))
    lines = value.splitlines()
    if len(lines) > 1:
        forms.update(line for line in lines if line.strip())
    return forms


def _cut_off(text: str, form: str, name: str, least: int) -> list[tuple[int, int, str]]:
    """Spans of `form` cut off by the end of `text` (a prefix) or its start (a suffix)."""
    spans = []
    size = len(text)
    i = text.find(form[0], max(size - len(form) + 1, 0))
    while i != -1:  # only where the value's first character is: cheap on every line
        if size - i >= least and form.startswith(text[i:]):
            spans.append((i, size, name))
            break
        i = text.find(form[0], i + 1)
    if text:
        j = form.find(text[0], 1)
        while j != -1:
            if len(form) - j >= least and text.startswith(form[j:]):
                spans.append((0, len(form) - j, name))
                break
            j = form.find(text[0], j + 1)
    return spans


_PERCENT = re.compile("%[0-9A-F]{2}")
