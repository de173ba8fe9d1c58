"""The checks of `shipyard secrets check` and of preflight, on values in memory (no I/O).

Every check yields findings that name the secret, its environment, where it is defined and
its keyed fingerprint, and never its value. Checks:

- presence: a secret a component needs is missing, empty or a placeholder (`changeme`,
  `${VAR}`, `<your key>`, a value ending in `EXAMPLE`);
- rules (`[secrets.rules]`): format, min_length, min_entropy, pattern, and the per-tier
  patterns (`production = "^sk_live_"`, `other = "^sk_test_"`);
- environment match: built-in knowledge of live and test credentials (a test key in
  production is an error, a live key elsewhere a warning), production URLs that point at
  this machine or turn TLS off;
- sharing: a value used by two environments (compared by fingerprint).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shipyard.config.models import SecretRule, Tier
from shipyard.core.secrets import Finding, shannon_entropy

Fingerprint = Callable[[str], str]


@dataclass(frozen=True)
class SecretSet:
    """One environment's secrets as read from its source."""

    environment: str
    tier: Tier
    values: dict[str, str]
    location: str  # printable: a file name, `environment variables SHOP_*`, a command
    lines: dict[str, int] = field(default_factory=dict)  # dotenv: the line of each name

    def where(self, name: str) -> str:
        line = self.lines.get(name)
        return f"{self.location}:{line}" if line else self.location


_PLACEHOLDER = re.compile(
    r"""(?ix)
    ^(?: change[-_ ]?me.* | todo | fixme | tbd | placeholder | replace[-_ ]?me.* | dummy
       | x{3,} | \*{3,} | \.{3,}
       | your[-_ ].*[-_ ]here | insert[-_ ].*
       | \$\{[^}]*\} | \$[A-Z_][A-Z0-9_]* | %\([^)]*\)s | \{\{.*\}\}
       | <[^<>]*> )$
    """
)


def placeholder(value: str) -> bool:
    """Whether a value is a stand-in left from a template rather than a real secret."""
    stripped = value.strip()
    return bool(_PLACEHOLDER.match(stripped)) or stripped.endswith("EXAMPLE")


# Live and test credentials told apart by their documented prefixes (or hosts, for the
# providers whose sandbox is a different host): (provider, live pattern, test pattern).
KEY_MODES: tuple[tuple[str, str | None, str], ...] = (
    ("Stripe", r"^(?:sk|rk|pk)_live_", r"^(?:sk|rk|pk)_test_"),
    ("Braintree", r"^access_token\$production\$", r"^access_token\$sandbox\$"),
    ("Razorpay", r"^rzp_live_", r"^rzp_test_"),
    ("Flutterwave", r"^FLW(?:SEC|PUB)K-", r"^FLW(?:SEC|PUB)K_TEST-"),
    ("Square", r"^sq0(?:atp|csp)-", r"^sandbox-sq0(?:atb|csb)-"),
    ("Checkout.com", None, r"^(?:sk|pk)_sbox_"),
    # Twilio's test credentials only accept its "magic" numbers, e.g. +15005550006.
    ("Twilio", None, r"^\+1500555\d{4}$"),
    ("PayPal", r"://api(?:-m)?\.paypal\.com", r"://api(?:-m)?\.sandbox\.paypal\.com"),
    ("Plaid", r"://production\.plaid\.com", r"://(?:sandbox|development)\.plaid\.com"),
    ("Braintree", r"://api\.braintreegateway\.com", r"://api\.sandbox\.braintreegateway\.com"),
    ("Authorize.net", r"://api2?\.authorize\.net", r"://apitest\.authorize\.net"),
)
_KEY_MODES = [
    (provider, re.compile(live) if live else None, re.compile(test))
    for provider, live, test in KEY_MODES
]

# A name that says it holds a secret: only such values are compared across environments
# (two environments may well share `LOG_LEVEL=info`).
_SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASS|PWD|DSN|URL|URI|CREDENTIAL|AUTH|PRIVATE|SALT|SIGNING|CERT",
    re.IGNORECASE,
)
_SHARED_MIN_LENGTH = 8
_BOOLS = {"true", "false", "1", "0", "yes", "no", "on", "off"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PEM = re.compile(r"^-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.+?)\r?\n-----END \1-----\s*$", re.DOTALL)
_INT = re.compile(r"^[+-]?\d+$")
_SSL_OFF = re.compile(r"(?:^|[?&\s;])sslmode=disable\b", re.IGNORECASE)
_DSN_HOST = re.compile(r"(?:^|\s)host=([^\s]+)", re.IGNORECASE)


def check_environment(
    secrets: SecretSet,
    *,
    required: Mapping[str, Iterable[str]],
    rules: Mapping[str, SecretRule],
    fingerprint: Fingerprint,
) -> list[Finding]:
    """Every finding for one environment's values (presence, rules, environment match)."""
    findings: list[Finding] = []
    needed_by: dict[str, list[str]] = {}
    for component, names in sorted(required.items()):
        for name in names:
            needed_by.setdefault(name, []).append(component)

    def finding(rule: str, name: str, severity: str, message: str) -> Finding:
        value = secrets.values.get(name)
        return Finding(
            rule=rule,
            name=name,
            severity=severity,
            location=secrets.where(name),
            message=message,
            environment=secrets.environment,
            fingerprint=fingerprint(value) if value else None,
        )

    env = secrets.environment
    for name in sorted(set(needed_by) | (set(rules) & set(secrets.values))):
        value = secrets.values.get(name, "")
        users = ", ".join(needed_by.get(name, [])) or "a rule in [secrets.rules]"
        if not value:
            findings.append(
                finding(
                    "presence",
                    name,
                    "error",
                    f"{name} is required by {users} but missing from {secrets.location} ({env})",
                )
            )
        elif placeholder(value):
            findings.append(
                finding(
                    "presence",
                    name,
                    "error",
                    f"{name} in {env} is a placeholder, not a value (changeme, ${{VAR}}, "
                    "<…>, …EXAMPLE count as missing)",
                )
            )
        elif name in rules:
            for rule, message in rule_problems(rules[name], value, secrets.tier):
                findings.append(finding(rule, name, "error", f"{name} in {env}: {message}"))
    for name, value in sorted(secrets.values.items()):
        if not value or placeholder(value):
            continue
        # What a rule of the same name said already is not said again.
        said = _said_by_rule(rules.get(name), value, secrets.tier)
        for kind, severity, message in environment_problems(value, secrets.tier):
            if kind not in said:
                findings.append(
                    finding("environment", name, severity, f"{name} in {env}: {message}")
                )
    return findings


def _said_by_rule(rule: SecretRule | None, value: str, tier: Tier) -> set[str]:
    """The kinds of environment problem a rule's own checks already reported."""
    if rule is None:
        return set()
    said = set()
    tier_pattern = rule.production if tier == "production" else rule.other
    if tier_pattern is not None and not re.search(tier_pattern, value):
        said.add("mode")
    forbidden = {h.lower() for h in rule.production_forbid_hosts}
    if tier == "production" and _host(value) in forbidden:
        said.add("host")
    return said


def rule_problems(rule: SecretRule, value: str, tier: Tier) -> list[tuple[str, str]]:
    """(rule, what is wrong) for each `[secrets.rules]` check the value fails."""
    problems: list[tuple[str, str]] = []
    if rule.format is not None:
        wrong = format_problem(rule, value)
        if wrong:
            problems.append(("format", wrong))
    if rule.min_length is not None and len(value) < rule.min_length:
        problems.append(
            ("min_length", f"is {len(value)} characters long, shorter than {rule.min_length}")
        )
    if rule.min_entropy is not None:
        bits = shannon_entropy(value)
        if bits < rule.min_entropy:
            problems.append(
                (
                    "min_entropy",
                    f"has {bits:.2f} bits of entropy per character, less than "
                    f"{rule.min_entropy:g} (too repetitive to be a random secret)",
                )
            )
    if rule.pattern is not None and not re.search(rule.pattern, value):
        problems.append(("pattern", f"does not match the pattern {rule.pattern!r}"))
    tier_pattern = rule.production if tier == "production" else rule.other
    if tier_pattern is not None and not re.search(tier_pattern, value):
        key = "production" if tier == "production" else "other"
        problems.append(
            (
                "environment",
                f"does not match the {tier} pattern {tier_pattern!r} "
                f"(secrets.rules.{rule.name}.{key})",
            )
        )
    if tier == "production" and rule.production_forbid_hosts:
        host = _host(value)
        if host is not None and host in {h.lower() for h in rule.production_forbid_hosts}:
            problems.append(
                (
                    "environment",
                    f"points at host {host!r}, forbidden in production "
                    f"(secrets.rules.{rule.name}.production_forbid_hosts)",
                )
            )
    return problems


def format_problem(rule: SecretRule, value: str) -> str | None:
    """Why the value is not of the rule's format (None when it is)."""
    fmt = rule.format
    if fmt == "url":
        parts = urlsplit(value)
        scheme = parts.scheme.lower()
        if not scheme or not (parts.netloc or parts.path):
            return "is not a URL (scheme://host/…)"
        allowed = {s.lower() for s in rule.schemes}
        if allowed and scheme not in allowed and scheme.split("+", 1)[0] not in allowed:
            return f"uses the scheme {scheme!r}; allowed: {', '.join(rule.schemes)}"
        return None
    if fmt == "port":
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            return "is not a port number (1 to 65535)"
        return None
    if fmt == "int":
        if not _INT.match(value):
            return "is not an integer"
        number = int(value)
        if rule.min is not None and number < rule.min:
            return f"is smaller than its minimum {rule.min}"
        if rule.max is not None and number > rule.max:
            return f"is larger than its maximum {rule.max}"
        return None
    if fmt == "bool":
        return None if value.lower() in _BOOLS else "is not a boolean (true/false, 1/0, yes/no)"
    if fmt == "email":
        return None if _EMAIL.match(value) else "is not an email address"
    if fmt == "json":
        try:
            json.loads(value)
        except ValueError as exc:
            return f"is not valid JSON ({type(exc).__name__} at character {_json_pos(exc)})"
        return None
    if fmt == "base64":
        return None if _is_base64(value) else "is not base64"
    if fmt == "pem":
        match = _PEM.match(value.strip() + "\n")
        if not match or not _is_base64(match.group(2)):
            return "is not a PEM block (-----BEGIN …----- base64 -----END …-----)"
        return None
    return None  # "regex": the pattern check says it


def environment_problems(value: str, tier: Tier) -> list[tuple[str, str, str]]:
    """(kind, severity, what is wrong) for a value that does not belong in a `tier`
    environment; kind is mode (live/test), host or tls."""
    problems: list[tuple[str, str, str]] = []
    for provider, live, test in _KEY_MODES:
        if tier == "production" and test.search(value):
            problems.append(
                ("mode", "error", f"is a {provider} test/sandbox credential in production")
            )
        elif tier != "production" and live is not None and live.search(value):
            problems.append(
                ("mode", "warning", f"is a {provider} live credential outside production ({tier})")
            )
    if tier == "production":
        host = _host(value)
        if host is not None and _local_host(host):
            problems.append(("host", "error", f"points at {host!r}, this machine, in production"))
        if _SSL_OFF.search(value):
            problems.append(("tls", "error", "turns TLS off (sslmode=disable) in production"))
    return problems


def check_shared(
    focus: SecretSet,
    others: Iterable[SecretSet],
    *,
    rules: Mapping[str, SecretRule],
    fingerprint: Fingerprint,
) -> list[Finding]:
    """A finding for each secret of `focus` whose value another environment also uses."""
    elsewhere: dict[str, list[tuple[str, str]]] = {}  # fingerprint → (environment, name)
    for other in others:
        if other.environment == focus.environment:
            continue
        for name, value in other.values.items():
            if _comparable(name, value, rules):
                elsewhere.setdefault(fingerprint(value), []).append((other.environment, name))
    findings = []
    for name, value in sorted(focus.values.items()):
        if not _comparable(name, value, rules):
            continue
        mark = fingerprint(value)
        for environment, other_name in elsewhere.get(mark, []):
            findings.append(
                Finding(
                    rule="shared",
                    name=name,
                    severity="error",
                    location=focus.where(name),
                    message=f"{name} in {focus.environment} has the same value as "
                    f"{other_name} in {environment} (fingerprint {mark}): each environment "
                    "needs its own credentials",
                    environment=focus.environment,
                    fingerprint=mark,
                )
            )
    return findings


def _comparable(name: str, value: str, rules: Mapping[str, SecretRule]) -> bool:
    rule = rules.get(name)
    if rule is not None and rule.format in ("bool", "int", "port"):
        return False
    return (
        len(value) >= _SHARED_MIN_LENGTH
        and (rule is not None or bool(_SECRET_NAME.search(name)))
        and not placeholder(value)
    )


def _host(value: str) -> str | None:
    """The host a URL or a libpq `host=` DSN points at, lower-cased (None if neither)."""
    if "://" in value:
        try:
            host = urlsplit(value.strip()).hostname
        except ValueError:
            return None
        return host.lower() if host else None
    dsn = _DSN_HOST.search(value)
    return dsn.group(1).lower() if dsn else None


def _local_host(host: str) -> bool:
    if host in ("localhost", "0.0.0.0") or host.endswith((".localhost", ".local")):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_base64(text: str) -> bool:
    compact = re.sub(r"\s+", "", text)
    if not compact:
        return False
    try:
        if "-" in compact or "_" in compact:
            base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
            return re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", compact) is not None
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _json_pos(exc: ValueError) -> int:
    return int(getattr(exc, "pos", 0))
