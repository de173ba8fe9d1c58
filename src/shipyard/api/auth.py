"""Bearer tokens with scopes (read < deploy < admin), from a file and the environment.

A token is `NAME SCOPE VALUE`: the name says who acted (deployments record `api:NAME`), the
scope what it may do. Values are compared in constant time against every configured token,
and never appear in output, logs or errors (only names do).
"""

from __future__ import annotations

import hmac
import stat
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.errors import UsageError

SCOPES = ("read", "deploy", "admin")  # each includes the ones before it
TOKENS_VARIABLE = "SHIPYARD_API_TOKENS"
TOKENS_FILE = Path(".shipyard") / "api-tokens"
COOKIE = "shipyard_token"


@dataclass(frozen=True)
class Token:
    name: str
    scope: str
    value: str = field(repr=False)

    def allows(self, needed: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a token's name and scope, or anonymous (read-only on loopback)."""

    name: str
    scope: str | None
    anonymous: bool = False

    def allows(self, needed: str) -> bool:
        return self.scope is not None and SCOPES.index(self.scope) >= SCOPES.index(needed)

    @property
    def created_by(self) -> str:
        return f"api:{self.name}"


class Tokens:
    """The configured tokens; `check` finds the caller a presented value belongs to."""

    def __init__(self, tokens: list[Token], anonymous_scope: str | None = None) -> None:
        self.tokens = tokens
        self.anonymous_scope = anonymous_scope

    def check(self, presented: str | None) -> Caller | None:
        """The caller for a presented value (anonymous when none was presented and that is
        allowed); None when the value matches no token."""
        if not presented:
            return Caller("anonymous", self.anonymous_scope, anonymous=True)
        found = None
        wanted = presented.encode()
        for token in self.tokens:  # every token is compared: the time says nothing about which
            if hmac.compare_digest(token.value.encode(), wanted):
                found = token
        return None if found is None else Caller(found.name, found.scope)


def parse_tokens(text: str, where: str) -> list[Token]:
    """Tokens from `NAME SCOPE VALUE` lines (file) or `NAME:SCOPE:VALUE` items separated by
    commas (environment variable); `where` names the source in errors (never the value)."""
    tokens = []
    separator = "," if where == TOKENS_VARIABLE else "\n"
    for number, raw in enumerate(text.split(separator), start=1):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        parts = item.split(":", 2) if where == TOKENS_VARIABLE else item.split(None, 2)
        place = f"{where}: item {number}" if where == TOKENS_VARIABLE else f"{where}:{number}"
        if len(parts) != 3 or not all(p.strip() for p in parts):
            shape = "NAME:SCOPE:VALUE" if where == TOKENS_VARIABLE else "NAME SCOPE VALUE"
            raise UsageError(
                f"{place}: a token is written {shape}", hint="see `shipyard serve --help`"
            )
        name, scope, value = (p.strip() for p in parts)
        if scope not in SCOPES:
            raise UsageError(
                f"{place}: token {name!r} has scope {scope!r}; scopes are {', '.join(SCOPES)}"
            )
        if len(value) < 16:
            raise UsageError(
                f"{place}: token {name!r} is shorter than 16 characters",
                hint="make one with `python3 -c 'import secrets; print(secrets.token_urlsafe())'`",
            )
        tokens.append(Token(name, scope, value))
    return tokens


def load_tokens(project_dir: Path, environ: dict[str, str], file: Path | None) -> list[Token]:
    """Tokens from the tokens file (default `.shipyard/api-tokens`, readable by its owner
    only) and from $SHIPYARD_API_TOKENS."""
    path = file if file is not None else project_dir / TOKENS_FILE
    tokens: list[Token] = []
    if path.exists() or file is not None:
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the tokens file {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(
                f"the tokens file {path} can be read by other users",
                hint=f"chmod 600 {path}",
            )
        tokens += parse_tokens(text, str(path))
    tokens += parse_tokens(environ.get(TOKENS_VARIABLE, ""), TOKENS_VARIABLE)
    names = [t.name for t in tokens]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"token names must be unique: {', '.join(twice)} appear twice")
    return tokens
