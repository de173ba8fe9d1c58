"""A release's spec: the component's resolved settings as written at the release's commit.

A release is immutable and self-describing: everything that starts, probes, migrates,
stops or restores it reads its spec, never today's shipyard.toml. The spec is the
`Component` as resolved for the release's environment, kept as plain JSON (in the store
and in `releases/<id>/release.json`). Pure: no I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shipyard.config import Component, HealthCheck, Migrations, PythonEnv

SPEC_FORMAT = 1


def spec_to_dict(comp: Component) -> dict[str, Any]:
    """A component's settings as JSON-ready data (tuples become lists)."""
    data = dataclasses.asdict(comp)
    return _lists(data)  # type: ignore[no-any-return]


def spec_from_dict(data: Mapping[str, Any]) -> Component:
    """The component saved by `spec_to_dict` (unknown keys from a newer shipyard are ignored)."""
    fields = {f.name for f in dataclasses.fields(Component)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in fields}
    health = dict(values.get("health") or {})
    health_fields = {f.name for f in dataclasses.fields(HealthCheck)}
    health = {k: v for k, v in health.items() if k in health_fields}
    if "status" in health:
        health["status"] = tuple(health["status"])
    values["health"] = HealthCheck(**health)
    if values.get("migrations"):
        migration_fields = {f.name for f in dataclasses.fields(Migrations)}
        values["migrations"] = Migrations(
            **{k: v for k, v in values["migrations"].items() if k in migration_fields}
        )
    if values.get("python"):
        python_fields = {f.name for f in dataclasses.fields(PythonEnv)}
        values["python"] = PythonEnv(
            **{k: v for k, v in values["python"].items() if k in python_fields}
        )
    for key in ("inputs", "depends_on", "secrets", "contract"):
        if key in values:
            values[key] = tuple(values[key])
    for key in ("tests", "env"):
        if key in values:
            values[key] = dict(values[key])
    return Component(**values)


def release_document(
    comp: Component, *, environment: str, release: str, commit: str
) -> dict[str, Any]:
    """The content of `releases/<id>/release.json` (no secret values: only their names)."""
    return {
        "format": SPEC_FORMAT,
        "component": comp.name,
        "environment": environment,
        "release": release,
        "commit": commit,
        "spec": spec_to_dict(comp),
    }


def spec_differences(old: Component, new: Component) -> list[str]:
    """The settings that differ between two specs of one component (for plans and logs)."""
    a, b = spec_to_dict(old), spec_to_dict(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value
