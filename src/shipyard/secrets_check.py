"""`secrets check` and the secrets part of preflight: read every environment's source, run
the pure checks of `core.secret_rules`, and turn sources that cannot be read into findings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from shipyard.config import Component, Config, Environment
from shipyard.core.secret_rules import SecretSet, check_environment, check_shared
from shipyard.core.secrets import Finding, Fingerprinter
from shipyard.effects.secrets import read_secrets
from shipyard.errors import SecretsError


def secret_findings(
    config: Config,
    focus: Iterable[Environment],
    *,
    project_dir: Path,
    environ: Mapping[str, str],
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
            got = read_secrets(env.secrets, project_dir, environ)
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
