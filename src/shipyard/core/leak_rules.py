"""The leak scanner's rules: publicly documented credential formats, and how to tell a real
credential from something shaped like one. Pure: no I/O (the scanner is `effects/leaks.py`).

Each rule has keywords (lower-case literals, one of which is in every match: the scanner looks
for all keywords of all rules in one pass and runs a rule's pattern only on text holding one of
its keywords), an RE2 pattern whose group 1 is the credential, and checks a match must pass:
a checksum where the format has one (GitHub's CRC32), a structure that must decode (JWT,
PEM), entropy and character mix for free-form values, and placeholders that never count
(`${VAR}`, `<token>`, `changeme`, values with `EXAMPLE`, AWS's documented example keys).

Patterns are anchored on characters that cannot be part of the token (`_B`/`_E` below), so a
token-shaped run inside a longer base64 string (an inline image, an integrity hash, a source
map) is not a match.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from shipyard.core.secrets import shannon_entropy

# Before a token: start of line or a character that cannot be inside a base64/url-safe run
# (`=` can: only at its end).
_B = r"(?:^|[^A-Za-z0-9+/_.-])"
# After it: end of line or such a character.
_E = r"(?:[^A-Za-z0-9+/_=-]|$)"

Check = Callable[[str], bool]


@dataclass(frozen=True)
class Rule:
    """One credential format."""

    id: str
    kind: str  # the family a benchmark reports recall for: aws, github, stripe, generic, …
    description: str
    keywords: tuple[str, ...]
    pattern: str  # RE2 syntax; group 1 is the credential (group 2, if any, a name)
    checks: tuple[Check, ...] = ()
    severity: str = "error"
    test_mode: str | None = None  # a regex: a match is a test-mode key (a warning)
    flags: str = "(?m)"
    secret_groups: tuple[int, ...] = (1,)  # the first of these that matched is the credential
    name_group: int | None = None  # a group naming it (`DB_PASSWORD` in `DB_PASSWORD=…`)

    @property
    def regex(self) -> str:
        return self.flags + self.pattern


def entropy_at_least(bits: float) -> Check:
    def check(value: str) -> bool:
        return shannon_entropy(value) >= bits

    check.__name__ = f"entropy>={bits}"
    return check


def mixed(value: str) -> bool:
    """At least two of lower case, upper case and digits: random, not a word."""
    classes = (
        any(c.islower() for c in value),
        any(c.isupper() for c in value),
        any(c.isdigit() for c in value),
    )
    return sum(classes) >= 2


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return digits.rjust(width, "0")


def github_checksum(token: str) -> bool:
    """GitHub's token format: 30 random base62 characters, then their CRC32 in 6 base62."""
    body, check = token[4:34], token[34:40]
    return len(body) == 30 and base62(zlib.crc32(body.encode()), 6) == check


def _b64url_json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return None


def jwt_structure(token: str) -> bool:
    """A JWT: a JSON header naming its algorithm and a JSON payload, both base64url."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    header, payload = _b64url_json(parts[0]), _b64url_json(parts[1])
    return isinstance(header, dict) and "alg" in header and isinstance(payload, dict)


def pem_body(block: str) -> bool:
    """A private key block with a real body (not `...` in documentation)."""
    body = re.sub(r"-----[A-Z ]+-----|\\[nr]|\s|Proc-Type:.*|DEK-Info:.*", "", block)
    return len(body) >= 64 and re.fullmatch(r"[A-Za-z0-9+/=]+", body) is not None


# Documented example values (AWS's own docs, RFC samples) and placeholder shapes.
_PLACEHOLDER = re.compile(
    r"""(?ix)
    EXAMPLE | changeme | change[-_]me | placeholder | dummy | fake | sample | redacted
    | your[-_]?(?:api[-_]?)?(?:key|token|secret|password) | insert[-_] | replace[-_]?me
    | x{6,} | \*{4,} | \.\.\. | 0{10,} | 1234567890 | abcdef(?:ghij|0123)
    | ^\$\{ | ^\$[A-Z_] | ^\{\{ | ^<[^>]*>$ | ^%\( | ^%[A-Z_]+%$
    """
)


def not_placeholder(value: str) -> bool:
    return _PLACEHOLDER.search(value) is None


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HASH = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{128})$")
# Case-sensitive on purpose: with IGNORECASE, `(?:[A-Z][a-z]+)+` is ambiguous and backtracks
# exponentially (10 s on a 150-character JWT).
_CODE = re.compile(
    r"""^(?:[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*|\[[^\]]*\])+   # a.b.c, env["X"]
        | [a-z]+(?:[-_.][a-z]+)* | [A-Z][a-z]+(?:[-_.][a-z]+)*      # words: read-only, Password
        | [A-Z]+ | [A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+                   # a constant's name
        | _*[A-Za-z]+(?:[_.][A-Za-z]+)*                            # a name: HTTPPasswordMgr
        | \d+ | (?i:true|false|null|none|nil|undefined)
        | [A-Za-z]+://[^@\s]* | /[\w./-]*                          # a URL without creds, a path
        )$""",
    re.VERBOSE,
)


def secret_like(value: str) -> bool:
    """A free-form value (after `password =`) that is a credential, not code or a word."""
    if not 8 <= len(value) <= 200 or any(c in value for c in "()[]{}<>\\|"):
        return False
    if "${" in value or "%(" in value or value.startswith(("$", "%")):
        return False
    if _CODE.match(value) or _UUID.match(value) or _HASH.match(value):
        return False
    return mixed(value) and shannon_entropy(value) >= 3.0 and not_placeholder(value)


_DUMMY_PASSWORDS = {
    "password", "passwd", "pass", "secret", "user", "username", "admin", "root", "test",
    "changeme", "postgres", "mysql", "guest", "example", "pwd", "xxx", "foo", "bar",
    "p@ssw0rd", "passw0rd", "password1", "password123", "secret123", "s3cr3t", "pa55word",
}  # fmt: skip


def url_credentials(value: str) -> bool:
    """`scheme://user:password@host`: a real password, not a documentation stand-in."""
    match = re.match(r"[a-zA-Z][\w+.-]{0,20}://([^:/@\s]*):([^@\s]+)@([^/:?#\s]+)", value)
    if not match:
        return False
    user, password, host = match.groups()
    if len(user) > 64 or not 3 <= len(password) <= 128 or ":" in password:
        return False  # a second `:` is no password (URLs escape it): `host:1,h2:2@h3`
    host = host.lower()
    if password.lower() in _DUMMY_PASSWORDS or password == user:
        return False
    if re.fullmatch(r"[a-z]+|[A-Z]+|\d{1,6}", password):  # a word (scott:tiger), not a secret
        return False
    if host.endswith(("example.com", "example.org", "example.net")) or host in ("host", "hostname"):
        return False
    if set(password) <= {"*", "x", "X", "."}:
        return False
    return not_placeholder(password) and not password.startswith(("$", "%", "{", "<", ":"))


AWS_DOCUMENTED = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")

_TOKEN = r"[A-Za-z0-9]"
_URLSAFE = r"[A-Za-z0-9_-]"

RULES: tuple[Rule, ...] = (
    # --- cloud -------------------------------------------------------------------------
    Rule(
        "aws-access-key-id",
        "aws",
        "AWS access key ID",
        ("akia", "asia", "abia", "acca"),
        _B + r"((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})" + _E,
        (not_placeholder,),
    ),
    Rule(
        "aws-secret-access-key",
        "aws",
        "AWS secret access key",
        ("secret_access_key", "secretaccesskey", "aws_secret", "secret-access-key"),
        r"(?i)(?:aws)?[_-]?secret[_-]?access[_-]?key[\"']?[ \t]*(?::|=|=>)[ \t]*[\"']?"
        r"([A-Za-z0-9/+]{40})" + _E,
        (not_placeholder, entropy_at_least(4.0), mixed),
    ),
    Rule(
        "gcp-api-key",
        "gcp",
        "Google Cloud / Firebase / Gemini API key",
        ("aiza",),
        _B + r"(AIza[0-9A-Za-z_-]{35})" + _E,
        (not_placeholder,),
    ),
    Rule(
        "azure-storage-key",
        "azure",
        "Azure storage account key",
        ("accountkey=",),
        r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
        (not_placeholder,),
    ),
    Rule(
        "azure-ad-client-secret",
        "azure",
        "Microsoft Entra ID (Azure AD) client secret",
        ("q~",),
        _B + r"([A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34})" + _E,
        (not_placeholder, mixed),
    ),
    Rule(
        "digitalocean-token",
        "digitalocean",
        "DigitalOcean token",
        ("dop_v1_", "doo_v1_", "dor_v1_"),
        _B + r"(do[por]_v1_[a-f0-9]{64})" + _E,
    ),
    Rule(
        "alibaba-access-key-id",
        "alibaba",
        "Alibaba Cloud access key ID",
        ("ltai",),
        _B + r"(LTAI[A-Za-z0-9]{20})" + _E,
        (mixed,),
    ),
    # --- forges ------------------------------------------------------------------------
    Rule(
        "github-token",
        "github",
        "GitHub token (classic PAT, OAuth, app, refresh), CRC32 checked",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        _B + r"(gh[pousr]_[A-Za-z0-9]{36})" + _E,
        (github_checksum,),
    ),
    Rule(
        "github-fine-grained-pat",
        "github",
        "GitHub fine-grained personal access token",
        ("github_pat_",),
        _B + r"(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})" + _E,
    ),
    Rule(
        "gitlab-token",
        "gitlab",
        "GitLab token (personal, pipeline trigger, deploy, runner, OAuth, CI job)",
        ("glpat-", "glptt-", "gldt-", "glrt-", "gloas-", "glcbt-", "glsoat-", "glft-"),
        _B + r"(gl(?:pat|ptt|dt|rt|oas|cbt|soat|ft)-[A-Za-z0-9_.-]{20,})" + _E,
        (mixed, not_placeholder),
    ),
    # --- chat --------------------------------------------------------------------------
    Rule(
        "slack-token",
        "slack",
        "Slack bot, user, app or configuration token",
        ("xoxb-", "xoxp-", "xoxa-", "xoxo-", "xoxs-", "xoxr-", "xoxe", "xapp-"),
        _B + r"((?:xox[abposr]|xoxe\.xox[bp]|xoxe)-\d+-[A-Za-z0-9-]{20,}"
        r"|xapp-\d-[A-Z0-9]+-\d+-[a-f0-9]{32,})" + _E,
        (not_placeholder,),
    ),
    Rule(
        "slack-webhook",
        "slack",
        "Slack incoming webhook URL",
        ("hooks.slack.com",),
        r"(hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,12}/[A-Z0-9]{6,12}/"
        r"[A-Za-z0-9]{20,})",
        (not_placeholder,),
    ),
    Rule(
        "discord-webhook",
        "discord",
        "Discord webhook URL",
        ("discord.com/api/webhooks", "discordapp.com/api/webhooks"),
        r"(discord(?:app)?\.com/api/webhooks/\d{17,20}/[A-Za-z0-9_-]{60,72})",
        (not_placeholder,),
    ),
    Rule(
        "teams-webhook",
        "teams",
        "Microsoft Teams incoming webhook URL",
        ("webhook.office.com",),
        r"([a-z0-9-]+\.webhook\.office\.com/webhookb2/[a-f0-9-]{36}@[a-f0-9-]{36}/"
        r"IncomingWebhook/[a-f0-9]{32}/[a-f0-9-]{36})",
    ),
    Rule(
        "telegram-bot-token",
        "telegram",
        "Telegram bot token",
        (":aa",),
        r"(?:^|[^0-9A-Za-z])(\d{8,10}:AA[A-Za-z0-9_-]{33})" + _E,
    ),
    # --- payments ----------------------------------------------------------------------
    Rule(
        "stripe-secret-key",
        "stripe",
        "Stripe secret or restricted key",
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
        _B + r"([sr]k_(?:live|test)_[A-Za-z0-9]{20,247})" + _E,
        (not_placeholder, mixed),
        test_mode=r"^[sr]k_test_",
    ),
    Rule(
        "stripe-webhook-secret",
        "stripe",
        "Stripe webhook signing secret",
        ("whsec_",),
        _B + r"(whsec_[A-Za-z0-9+/]{32,})" + _E,
        (not_placeholder, mixed),
    ),
    Rule(
        "square-token",
        "square",
        "Square access token or application secret",
        ("sq0atp-", "sq0csp-"),
        _B + r"(sq0(?:atp-[0-9A-Za-z_-]{22}|csp-[0-9A-Za-z_-]{43}))" + _E,
    ),
    Rule(
        "braintree-access-token",
        "braintree",
        "Braintree access token",
        ("access_token$",),
        r"(access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32})",
        test_mode=r"\$sandbox\$",
    ),
    Rule(
        "shopify-token",
        "shopify",
        "Shopify access token or shared secret",
        ("shpat_", "shpca_", "shppa_", "shpss_"),
        _B + r"(shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})" + _E,
    ),
    # --- AI providers ------------------------------------------------------------------
    Rule(
        "openai-api-key",
        "openai",
        "OpenAI API key",
        ("t3blbkfj",),
        _B
        + r"(sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,160}T3BlbkFJ[A-Za-z0-9_-]{20,160})"
        + _E,
    ),
    Rule(
        "anthropic-api-key",
        "anthropic",
        "Anthropic API key",
        ("sk-ant-",),
        _B + r"(sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,100}AA)" + _E,
    ),
    Rule(
        "huggingface-token",
        "huggingface",
        "Hugging Face access token",
        ("hf_",),
        _B + r"(hf_[A-Za-z]{34})" + _E,
        (mixed, entropy_at_least(3.5)),
    ),
    Rule(
        "groq-api-key",
        "groq",
        "Groq API key",
        ("gsk_",),
        _B + r"(gsk_[A-Za-z0-9]{52})" + _E,
        (mixed,),
    ),
    Rule(
        "replicate-token",
        "replicate",
        "Replicate API token",
        ("r8_",),
        _B + r"(r8_[A-Za-z0-9]{37})" + _E,
        (mixed,),
    ),
    # --- package registries ------------------------------------------------------------
    Rule(
        "npm-token",
        "npm",
        "npm access token",
        ("npm_",),
        _B + r"(npm_[A-Za-z0-9]{36})" + _E,
        (mixed, entropy_at_least(4.0)),
    ),
    Rule(
        "pypi-token",
        "pypi",
        "PyPI upload token",
        ("pypi-ageichlwas5vcmc",),
        _B + r"(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})" + _E,
    ),
    Rule(
        "rubygems-token",
        "rubygems",
        "RubyGems API key",
        ("rubygems_",),
        _B + r"(rubygems_[a-f0-9]{48})" + _E,
    ),
    Rule(
        "docker-hub-token",
        "docker",
        "Docker Hub personal access token",
        ("dckr_pat_",),
        _B + r"(dckr_pat_[A-Za-z0-9_-]{27})" + _E,
        (mixed,),
    ),
    Rule(
        "nuget-api-key",
        "nuget",
        "NuGet API key",
        ("oy2",),
        _B + r"(oy2[a-z0-9]{43})" + _E,
        (entropy_at_least(4.0),),
    ),
    # --- other services ----------------------------------------------------------------
    Rule(
        "sendgrid-api-key",
        "sendgrid",
        "SendGrid API key",
        ("sg.",),
        _B + r"(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})" + _E,
    ),
    Rule(
        "twilio-api-key",
        "twilio",
        "Twilio API key SID (near the word twilio)",
        ("twilio",),
        r"(?i)twilio.{0,60}?(?:^|[^A-Za-z0-9])(SK[0-9a-fA-F]{32})" + _E,
        flags="",
    ),
    Rule(
        "mailgun-api-key",
        "mailgun",
        "Mailgun API key",
        ("key-",),
        _B + r"(key-[0-9a-f]{32})" + _E,
        (entropy_at_least(3.5),),
    ),
    Rule(
        "vault-token",
        "vault",
        "HashiCorp Vault token",
        ("hvs.", "hvb."),
        _B + r"(hv[sb]\.[A-Za-z0-9_-]{24,})" + _E,
        (mixed,),
    ),
    Rule(
        "age-secret-key",
        "age",
        "age encryption secret key",
        ("age-secret-key-1",),
        r"(AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})",
    ),
    Rule(
        "postman-api-key",
        "postman",
        "Postman API key",
        ("pmak-",),
        _B + r"(PMAK-[a-f0-9]{24}-[a-f0-9]{34})" + _E,
    ),
    Rule(
        "newrelic-user-key",
        "newrelic",
        "New Relic user API key",
        ("nrak-",),
        _B + r"(NRAK-[A-Z0-9]{27})" + _E,
    ),
    Rule(
        "doppler-token",
        "doppler",
        "Doppler token",
        ("dp.pt.", "dp.st.", "dp.sa."),
        _B + r"(dp\.(?:pt|st|sa)\.[A-Za-z0-9]{40,44})" + _E,
    ),
    Rule(
        "linear-api-key",
        "linear",
        "Linear API key",
        ("lin_api_",),
        _B + r"(lin_api_[A-Za-z0-9]{40})" + _E,
    ),
    Rule(
        "databricks-token",
        "databricks",
        "Databricks access token",
        ("dapi",),
        _B + r"(dapi[a-f0-9]{32}(?:-\d)?)" + _E,
        (entropy_at_least(3.3),),
    ),
    Rule(
        "grafana-token",
        "grafana",
        "Grafana Cloud or service account token",
        ("glc_", "glsa_"),
        _B + r"(glc_[A-Za-z0-9+/]{32,400}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})" + _E,
        (mixed,),
    ),
    # --- keys and structured tokens ------------------------------------------------------
    Rule(
        "private-key",
        "private-key",
        "Private key (PEM: RSA, DSA, EC, PKCS#8, encrypted; OpenSSH; PGP)",
        ("-----begin",),
        r"(-----BEGIN (?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP |)PRIVATE KEY(?: BLOCK)?-----"
        r"(?:\\[nr]|\s)+(?:[A-Za-z0-9+/=:, -]+(?:\\[nr]|\s)+){0,3}[A-Za-z0-9+/=]{40,}"
        r"(?:(?:\\[nr]|\s)+[A-Za-z0-9+/=]+)*)",
        (pem_body,),
    ),
    Rule(
        "jwt",
        "jwt",
        "JSON Web Token",
        ("eyj",),
        _B + r"(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})" + _E,
        (jwt_structure,),
    ),
    Rule(
        "url-credentials",
        "url-credentials",
        "Password inside a URL (scheme://user:password@host)",
        ("://",),
        # Unbounded repeats (lengths are checked after): bounded ones unroll into a DFA
        # too big for RE2's memory budget, which then falls back to a much slower engine.
        r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"'<>`]*:[^\s/@\"'<>`]+@[A-Za-z0-9.-]+)",
        (url_credentials,),
    ),
    # --- generic assignments -------------------------------------------------------------
    Rule(
        "generic-secret",
        "generic",
        "A password, secret, token or API key assigned a random-looking value",
        (
            "pass",
            "pwd",
            "secret",
            "api_key",
            "api-key",
            "apikey",
            "token",
            "credential",
            "private_key",
            "access_key",
        ),
        r"(?i)(?:^|[^A-Za-z0-9])([A-Za-z0-9_.-]*(?:passw(?:or)?d|\bpwd|secret|api[_-]?key"
        r"|token|credentials?|private[_-]?key|access[_-]?key)[A-Za-z0-9_.-]*)[\"']?[ \t]*"
        r"(?::=|=>|=|:|\|\|=)[ \t]*(?:[\"'`]([^\s\"'`]+)[\"'`]"
        r"|([^\s\"'`,;(){}<>\[\]]+)(?:[ \t]*(?:[,;#]|$)))",
        (secret_like,),
        secret_groups=(2, 3),
        name_group=1,
    ),
)


def rule_by_id(rule_id: str) -> Rule:
    return next(r for r in RULES if r.id == rule_id)
