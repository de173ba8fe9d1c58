"""Fake credentials of every kind the leak scanner knows, and look-alikes it must not flag.

Every value is generated at run time from a prefix and random characters (a GitHub token gets
its real CRC32 checksum), so no file of this repository holds a credential-shaped string that
would trip a scanner. Used by the leak tests and by `benchmarks/leak_scan.py`.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def pick(rng: random.Random, alphabet: str, size: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(size))


def mixed(rng: random.Random, size: int, alphabet: str = ALNUM) -> str:
    """Random, with upper and lower case letters (and a digit, if the alphabet has any)."""
    digits = any(c.isdigit() for c in alphabet)
    while True:
        text = pick(rng, alphabet, size)
        cases = any(c.isupper() for c in text) and any(c.islower() for c in text)
        if cases and (any(c.isdigit() for c in text) or not digits):
            return text


def b62(number: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = B62[rest] + digits
    return digits.rjust(6, "0")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def github_token(rng: random.Random, prefix: str = "ghp") -> str:
    body = mixed(rng, 30)
    return f"{prefix}_{body}{b62(zlib.crc32(body.encode()))}"


def jwt(rng: random.Random) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": str(rng.randrange(10**6)), "name": "Ada", "iat": 1700000000}
    return f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(rng.randbytes(32))}"


def pem(rng: random.Random, label: str) -> str:
    body = base64.b64encode(rng.randbytes(600)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"


# kind → a maker of one credential of that kind (the value a finding must point at).
MAKERS: dict[str, Callable[[random.Random], str]] = {
    "aws": lambda r: "AKIA" + pick(r, string.ascii_uppercase + "234567", 16),
    "gcp": lambda r: "AIza" + mixed(r, 35, URLSAFE),
    "azure": lambda r: pick(r, ALNUM, 3) + "8Q~" + mixed(r, 34),
    "github": github_token,
    "gitlab": lambda r: "glpat-" + mixed(r, 20),
    "slack": lambda r: (
        "xoxb-" + pick(r, string.digits, 12) + "-" + pick(r, string.digits, 13) + "-" + mixed(r, 24)
    ),
    "slack-webhook": lambda r: (
        "https://hooks.slack.com/services/T"
        + pick(r, "ABCDEFGH0123", 8)
        + "/B"
        + pick(r, "ABCDEFGH0123", 8)
        + "/"
        + mixed(r, 24)
    ),
    "discord": lambda r: (
        "https://discord.com/api/webhooks/"
        + pick(r, string.digits, 18)
        + "/"
        + mixed(r, 68, URLSAFE)
    ),
    "telegram": lambda r: pick(r, string.digits, 9) + ":AA" + mixed(r, 33, URLSAFE),
    "stripe": lambda r: "sk_" + "live_" + mixed(r, 32),
    "square": lambda r: "sq0atp-" + mixed(r, 22, URLSAFE),
    "braintree": lambda r: (
        "access_token$" + "production$" + pick(r, HEX + "xyz", 16) + "$" + pick(r, HEX, 32)
    ),
    "shopify": lambda r: "shpat_" + pick(r, HEX, 32),
    "openai": lambda r: "sk-proj-" + mixed(r, 40, URLSAFE) + "T3Blbk" + "FJ" + mixed(r, 40),
    "anthropic": lambda r: "sk-ant-" + "api03-" + mixed(r, 93, URLSAFE) + "AA",
    "huggingface": lambda r: "hf_" + mixed(r, 34, string.ascii_letters),
    "npm": lambda r: "npm_" + mixed(r, 36),
    "pypi": lambda r: "pypi-" + "AgEIcHlwaS5vcmc" + mixed(r, 70, URLSAFE),
    "docker": lambda r: "dckr_pat_" + mixed(r, 27, URLSAFE),
    "sendgrid": lambda r: "SG." + mixed(r, 22, URLSAFE) + "." + mixed(r, 43, URLSAFE),
    "private-key": lambda r: pem(r, "RSA PRIVATE KEY"),
    "openssh-key": lambda r: pem(r, "OPENSSH PRIVATE KEY"),
    "jwt": jwt,
    "url-credentials": lambda r: "postgresql://app:" + mixed(r, 18) + "@db.internal:5432/app",
    "generic": lambda r: mixed(r, 20, ALNUM + "#%!@^*"),
}

# The rule kind a finding of each maker reports.
KIND_OF = {
    "slack-webhook": "slack",
    "discord": "discord",
    "openssh-key": "private-key",
}


@dataclass(frozen=True)
class Planted:
    kind: str
    secret: str
    text: str  # a few lines of a file holding it


def contexts(kind: str, secret: str, rng: random.Random) -> str:
    """The credential in one of the ways it shows up in a repository."""
    if kind == "generic":
        name = rng.choice(["password", "DB_PASSWORD", "api_key", "client_secret", "authToken"])
        return rng.choice(
            [
                f'{name} = "{secret}"\n',
                f"{name}: '{secret}'\n",
                f"{name.upper()}={secret}\n",
                f'  "{name}": "{secret}",\n',
            ]
        )
    if "\n" in secret:  # a key: in a file of its own, or in JSON with escaped newlines
        if rng.random() < 0.5:
            return secret + "\n"
        return json.dumps({"type": "service_account", "private_key": secret + "\n"}) + "\n"
    return rng.choice(
        [
            f'TOKEN = "{secret}"\n',
            f"export SERVICE_KEY={secret}\n",
            f"  token: {secret}\n",
            f'const client = new Client({{ auth: "{secret}" }});\n',
            f"# temporary, remove before merging: {secret}\n",
            f'<meta name="x" content="{secret}">\n',
            f'  "credential": "{secret}",\n',
            f"curl -H 'Authorization: Bearer {secret}' https://api.internal/v1\n",
        ]
    )


def planted(rng: random.Random, kind: str) -> Planted:
    secret = MAKERS[kind](rng)
    return Planted(KIND_OF.get(kind, kind), secret, contexts(kind, secret, rng))


def lookalikes(rng: random.Random) -> list[str]:
    """Lines shaped like credentials that are not: each must give no finding."""
    hexsha = pick(rng, HEX, 40)
    b64 = base64.b64encode(rng.randbytes(64)).decode()
    bad_checksum = "ghp_" + mixed(rng, 36)  # a GitHub-shaped string whose CRC32 is wrong
    return [
        f'  "id": "{uuid.UUID(bytes=rng.randbytes(16))}",\n',
        f"token_id = {uuid.UUID(bytes=rng.randbytes(16))}\n",
        f"commit {hexsha}\n",
        f'    "resolved_commit": "{hexsha}",\n',
        f'      "integrity": "sha512-{b64}",\n',
        f'  resolved "https://registry.yarnpkg.com/x/-/x-1.0.0.tgz#{hexsha}"\n',
        f'<script src="app.js" integrity="sha384-{b64[:64]}" crossorigin="anonymous"></script>\n',
        f'<img src="data:image/png;base64,{base64.b64encode(rng.randbytes(900)).decode()}">\n',
        f'files = ["sha256:{pick(rng, HEX, 64)}"]\n',
        f"example.com/x v1.2.3 h1:{b64[:43]}=\n",
        "aws_access_key_id = AKIAIOSFODNN7" + "EXAMPLE\n",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY\n",
        'STRIPE_KEY = "sk_' + 'live_EXAMPLE0000000000000000"\n',
        f'password = "{"${"}DB_PASSWORD{"}"}"\n',
        "api_key: <your-api-key>\n",
        "token: changeme\n",
        'password: "Password"\n',
        "password = os.environ['DB_PASSWORD']\n",
        "secret_key = settings.SECRET_KEY\n",
        "token = request.headers.get('Authorization')\n",
        '  "password_reset_token": "password-reset-token",\n',
        f"const t=e.token,n=e.password||r.secretKey;function {pick(rng, 'abcdef', 6)}(e){{}}\n",
        "max_tokens = 4096\n",
        f"{bad_checksum}\n",
        "postgresql://user:password@localhost/db\n",
        "https://user:${PASSWORD}@example.com/repo.git\n",
        "-----BEGIN " + "RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----\n",
        "eyJhbGciOi" + "JIUzI1NiJ9 is how a header starts\n",
        f"session_id = {pick(rng, HEX, 32)}\n",
        f"cache_key = '{pick(rng, HEX, 40)}'\n",
    ]
