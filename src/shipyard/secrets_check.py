"""`secrets check`, `secrets scan` and the secrets part of preflight: read every
environment's source, run the pure checks of `core.secret_rules`, turn sources that cannot be
read and leaks the scanner found into findings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from shipyard.config import Component, Config, Environment, SecretsSource
from shipyard.core.secret_rules import SecretSet, check_environment, check_shared
from shipyard.core.secrets import Finding, Fingerprinter
from shipyard.effects.leaks import Leak
from shipyard.effects.secrets import LoadedSecrets
from shipyard.errors import SecretsError

Read = Callable[[SecretsSource | None], LoadedSecrets]
"""Reads a source (raising SecretsError): the service's, which reads each source once."""


def secret_findings(
    config: Config,
    focus: Iterable[Environment],
    *,
    read: Read,
    fingerprint: Fingerprinter,
    components: Mapping[str, Mapping[str, Component]] | None = None,
) -> list[Finding]:
    """Every finding for the `focus` environments, each compared with every environment.

    `components` maps an environment to the components whose secrets it must have (default:
    all of them, as they run there); preflight passes only the deployed ones.
    """
    loaded: dict[str, SecretSet] = {}
    unreadable: dict[str, Finding] = {}
    problems: dict[str, list[Finding]] = {}
    for env in config.environments.values():
        try:
            got = read(env.secrets)
        except SecretsError as exc:
            unreadable[env.name] = Finding(
                rule="source",
                name="",
                severity="error",
                location=_source_name(env),
                message=f"{env.name}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
                environment=env.name,
            )
            continue
        loaded[env.name] = SecretSet(env.name, env.tier, got.values, got.location, got.lines)
        problems[env.name] = [
            Finding(
                rule=p.rule,
                name=p.name,
                severity=p.severity,
                location=p.location,
                message=f"{env.name}: {p.message}",
                environment=env.name,
            )
            for p in got.problems
        ]
    findings: list[Finding] = []
    for env in focus:
        if env.name in unreadable:
            findings.append(unreadable[env.name])
            continue
        secrets = loaded[env.name]
        findings += problems[env.name]
        chosen = (components or {}).get(env.name) or config.components_for(env)
        findings += check_environment(
            secrets,
            required={name: comp.secrets for name, comp in chosen.items()},
            rules=config.secret_rules,
            fingerprint=fingerprint,
        )
        findings += check_shared(
            secrets,
            [s for name, s in loaded.items() if name != env.name],
            rules=config.secret_rules,
            fingerprint=fingerprint,
        )
        for other in sorted(set(unreadable) - {env.name}):
            findings.append(
                Finding(
                    rule="shared",
                    name="",
                    severity="warning",
                    location=_source_name(config.environments[other]),
                    message=f"{env.name} could not be compared with {other}: its secrets "
                    "cannot be read",
                    environment=env.name,
                )
            )
    return findings


def _source_name(env: Environment) -> str:
    source = env.secrets
    if source is None:
        return "(no secrets source)"
    if source.kind == "dotenv":
        return source.value
    if source.kind == "env_prefix":
        return f"environment variables {source.value}*"
    return f"command `{source.value}`"


def environment_values(config: Config, read: Read) -> dict[str, tuple[str, str]]:
    """Every secret value of every environment → (environment, name), for the leak scan.

    Only what would be a leak: of a URL its password (`sqlite:///shared/shop.db` is no
    secret), of anything else a value of 8 characters or more that is not a placeholder nor
    a plain word (entropy of at least 3 bits per character).
    """
    from urllib.parse import urlsplit

    from shipyard.core.secret_rules import placeholder
    from shipyard.core.secrets import shannon_entropy

    values: dict[str, tuple[str, str]] = {}
    for env in config.environments.values():
        try:
            loaded = read(env.secrets)
        except SecretsError:
            continue  # `secrets check` reports an unreadable source
        for name, value in loaded.values.items():
            if "://" in value:
                try:
                    password = urlsplit(value).password
                except ValueError:
                    password = None
                if not password or len(password) < 6 or placeholder(password):
                    continue
                values.setdefault(value, (env.name, name))
                value = password
            if len(value) >= 8 and not placeholder(value) and shannon_entropy(value) >= 3.0:
                values.setdefault(value, (env.name, name))
    return values


def leak_findings(leaks: Iterable[Leak], config: Config | None) -> list[Finding]:
    """Findings for leaks; an environment's own dotenv source found in the tree is one
    finding (an error for a production environment, a warning for the others)."""
    sources: dict[str, Environment] = {}
    if config is not None:
        for env in config.environments.values():
            if env.secrets is not None and env.secrets.kind == "dotenv":
                sources[Path(env.secrets.value).as_posix().removeprefix("./")] = env
    findings: list[Finding] = []
    reported: set[tuple[str, str | None]] = set()
    for leak in leaks:
        source = sources.get(leak.path)
        if source is not None:
            if (leak.path, leak.commit) in reported:
                continue
            reported.add((leak.path, leak.commit))
            where = f"{leak.path}@{leak.commit[:12]}" if leak.commit else leak.path
            findings.append(
                Finding(
                    rule="secrets-file",
                    name=leak.path,
                    severity="error" if source.tier == "production" else "warning",
                    location=where,
                    message=f"{where}: the secrets file of {source.name} ({source.tier}) is in "
                    "the repository (ignore it in .gitignore and keep it out of commits)",
                    environment=source.name,
                    kind="secrets-file",
                )
            )
            continue
        what = f"{leak.name} = " if leak.name and leak.rule == "generic-secret" else ""
        mode = " (test mode)" if leak.severity == "warning" else ""
        findings.append(
            Finding(
                rule=leak.rule,
                name=leak.name or leak.kind,
                severity=leak.severity,
                location=leak.location,
                message=f"{leak.location}: {what}{leak.description}{mode}",
                environment=leak.environment,
                fingerprint=leak.fingerprint,
                kind=leak.kind,
            )
        )
    return findings
