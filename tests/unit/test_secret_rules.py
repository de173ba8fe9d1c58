"""The checks of `secrets check` and preflight: each rule with values that pass and fail.

Fake credentials are built by concatenation, so this file holds no string a leak scanner
would flag.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.config.models import SecretRule, Tier
from shipyard.core.secret_rules import (
    SecretSet,
    check_environment,
    check_shared,
    environment_problems,
    placeholder,
    rule_problems,
)
from shipyard.core.secrets import Fingerprinter, shannon_entropy

FP = Fingerprinter(b"test-key-" * 4)
STRIPE_TEST = "sk_" + "test_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_LIVE = "sk_" + "live_" + "51HqLyjWDarjtT1zdp7dcXY"
RANDOM_32 = "q7Vx2LmR9pTz4KwN8bYc3HfJ6sDg1AeU"

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\n"
    "-----END PRIVATE KEY-----"
)

# (rule, a value that passes, a value that fails, the rule key that fails)
CASES = [
    (SecretRule("U", format="url"), "https://api.example.com/v1", "not a url", "format"),
    (
        SecretRule("U", format="url", schemes=("postgresql", "sqlite")),
        "postgresql+psycopg://db.internal/shop",
        "mysql://db.internal/shop",
        "format",
    ),
    (SecretRule("P", format="port"), "5432", "70000", "format"),
    (SecretRule("P", format="port"), "1", "http", "format"),
    (SecretRule("I", format="int", min=1, max=8), "4", "12", "format"),
    (SecretRule("I", format="int", min=1, max=8), "1", "0", "format"),
    (SecretRule("I", format="int"), "-3", "3.5", "format"),
    (SecretRule("B", format="bool"), "true", "maybe", "format"),
    (SecretRule("E", format="email"), "ops@example.com", "ops-at-example", "format"),
    (SecretRule("J", format="json"), '{"a": [1, 2]}', "{a: 1}", "format"),
    (SecretRule("B64", format="base64"), "aGVsbG8gd29ybGQ=", "hello world!", "format"),
    (SecretRule("B64", format="base64"), "aGVsbG8_d29ybGQ-", "aGVsbG8=====", "format"),
    (SecretRule("K", format="pem"), PEM, PEM.replace("END PRIVATE", "END PUBLIC"), "format"),
    (
        SecretRule("R", format="regex", pattern="^[a-z]{3}-\\d+$"),
        "abc-12",
        "ABC-12",
        "pattern",
    ),
    (SecretRule("L", min_length=32), RANDOM_32, RANDOM_32[:31], "min_length"),
    (SecretRule("H", min_entropy=3.5), RANDOM_32, "x" * 40, "min_entropy"),
    (SecretRule("H", min_entropy=3.5), RANDOM_32, "abababababababababab", "min_entropy"),
]


@pytest.mark.parametrize(("rule", "good", "bad", "key"), CASES)
def test_each_rule_passes_and_fails(rule: SecretRule, good: str, bad: str, key: str) -> None:
    assert rule_problems(rule, good, "development") == []
    problems = rule_problems(rule, bad, "development")
    assert [k for k, _ in problems] == [key]
    assert bad not in problems[0][1]  # the message never quotes the value


def test_tier_patterns_apply_by_tier() -> None:
    rule = SecretRule("STRIPE", production="^sk_live_", other="^sk_test_")
    assert rule_problems(rule, STRIPE_LIVE, "production") == []
    assert rule_problems(rule, STRIPE_TEST, "staging") == []
    assert [k for k, _ in rule_problems(rule, STRIPE_TEST, "production")] == ["environment"]
    assert [k for k, _ in rule_problems(rule, STRIPE_LIVE, "development")] == ["environment"]


def test_production_forbid_hosts() -> None:
    rule = SecretRule("DB", production_forbid_hosts=("db.staging.internal",))
    assert rule_problems(rule, "postgresql://db.staging.internal/x", "staging") == []
    assert rule_problems(rule, "postgresql://db.staging.internal/x", "production")


@pytest.mark.parametrize(
    "value",
    [
        "changeme",
        "CHANGE_ME_PLEASE",
        "${API_KEY}",
        "$API_KEY",
        "<your api key>",
        "xxxxxxxx",
        "AKIAIOSFODNN7" + "EXAMPLE",
        "your-token-here",
        "{{ vault_token }}",
        "TODO",
    ],
)
def test_placeholders(value: str) -> None:
    assert placeholder(value)


@pytest.mark.parametrize("value", [RANDOM_32, STRIPE_TEST, "postgresql://db/x", "example.com"])
def test_real_values_are_not_placeholders(value: str) -> None:
    assert not placeholder(value)


def _set(tier: Tier, values: dict[str, str], env: str = "production") -> SecretSet:
    return SecretSet(env, tier, values, ".env." + env, {n: i + 1 for i, n in enumerate(values)})


def test_presence_placeholder_counts_as_missing_and_every_finding_is_listed() -> None:
    secrets = _set("production", {"JWT_SECRET": "changeme", "DB": ""})
    findings = check_environment(
        secrets,
        required={"backend": ["JWT_SECRET", "DB", "MISSING"]},
        rules={},
        fingerprint=FP,
    )
    assert sorted(f.name for f in findings if f.rule == "presence") == [
        "DB",
        "JWT_SECRET",
        "MISSING",
    ]
    by_name = {f.name: f for f in findings}
    assert by_name["JWT_SECRET"].location == ".env.production:1"
    assert "placeholder" in by_name["JWT_SECRET"].message


@pytest.mark.parametrize(
    ("value", "provider"),
    [
        (STRIPE_TEST, "Stripe"),
        ("rk_" + "test_" + "abcdefghijklmnop", "Stripe"),
        ("access_token$" + "sandbox$" + "abc123$def456", "Braintree"),
        ("rzp_" + "test_" + "1DP5mmOlF5G5ag", "Razorpay"),
        ("FLWSECK_" + "TEST-" + "abcdef0123456789-X", "Flutterwave"),
        ("+1500" + "5550006", "Twilio"),
        ("https://api-m." + "sandbox.paypal.com/v1", "PayPal"),
        ("https://sandbox." + "plaid.com", "Plaid"),
    ],
)
def test_test_credentials_are_refused_in_production(value: str, provider: str) -> None:
    problems = environment_problems(value, "production")
    assert [(k, s) for k, s, _ in problems] == [("mode", "error")]
    assert provider in problems[0][2]
    assert environment_problems(value, "staging") == []


def test_live_credentials_outside_production_are_a_warning() -> None:
    assert [s for _, s, _ in environment_problems(STRIPE_LIVE, "staging")] == ["warning"]
    assert environment_problems(STRIPE_LIVE, "production") == []


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://u:p@localhost:5432/shop",
        "postgresql://u:p@127.0.0.2/shop",
        "redis://[::1]:6379/0",
        "http://printer.local/api",
        "http://0.0.0.0:8080",
        "postgresql://u:p@db.prod.internal/shop?sslmode=disable",
        "host=localhost dbname=shop",
        "host=db.prod.internal sslmode=disable",
    ],
)
def test_production_urls_must_not_point_here_or_drop_tls(value: str) -> None:
    assert [s for _, s, _ in environment_problems(value, "production")] == ["error"]
    assert environment_problems(value, "development") == []


def test_a_good_production_url_passes() -> None:
    good = "postgresql://u:p@db.prod.internal/shop?sslmode=verify-full"
    assert environment_problems(good, "production") == []


def test_a_value_shared_by_two_environments_is_found_by_fingerprint() -> None:
    prod = _set("production", {"JWT_SECRET": RANDOM_32, "LOG_LEVEL": "info", "DEBUG": "false"})
    staging = _set(
        "staging", {"OLD_SECRET": RANDOM_32, "LOG_LEVEL": "info", "DEBUG": "false"}, "staging"
    )
    findings = check_shared(prod, [staging], rules={}, fingerprint=FP)
    assert [(f.rule, f.name, f.severity) for f in findings] == [("shared", "JWT_SECRET", "error")]
    assert FP(RANDOM_32) in findings[0].message and RANDOM_32 not in findings[0].message
    assert "OLD_SECRET in staging" in findings[0].message


def test_entropy() -> None:
    assert shannon_entropy("") == 0 == shannon_entropy("x" * 40)
    assert shannon_entropy(RANDOM_32) > 4.5


@given(st.text(min_size=3, max_size=60).map(lambda v: "§" + v))
def test_no_finding_ever_holds_the_value(value: str) -> None:
    """Whatever the value, no finding's text holds it (messages never contain `§`)."""
    rules = {
        "A": SecretRule(
            "A",
            format="url",
            schemes=("https",),
            min_length=80,
            min_entropy=6.0,
            pattern="^zz",
            production="^live",
        )
    }
    secrets = _set("production", {"A": value})
    findings = check_environment(secrets, required={"c": ["A"]}, rules=rules, fingerprint=FP)
    others = [_set("staging", {"A": value}, "staging")]
    findings += check_shared(secrets, others, rules=rules, fingerprint=FP)
    assert findings
    for f in findings:
        assert value.strip() not in str(f.to_dict())
