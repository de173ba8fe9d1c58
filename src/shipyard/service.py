"""The one façade every adapter (CLI, HTTP API, MCP) calls.

Adapters parse input and render output; everything else happens here or below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from shipyard.config import Config, load_config
from shipyard.core.graph import Graph


@dataclass(frozen=True)
class ValidationReport:
    """What `shipyard validate` found in a valid config."""

    file: str
    project: str
    components: list[str]
    environments: list[str]
    levels: list[list[str]]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "file": self.file,
            "project": self.project,
            "components": self.components,
            "environments": self.environments,
            "levels": self.levels,
        }


class Shipyard:
    """A project and everything that can be done with it."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir.resolve()

    @cached_property
    def config(self) -> Config:
        return load_config(self.project_dir)

    def graph(self) -> Graph:
        """The dependency graph of the project's components."""
        return Graph({c.name: c.depends_on for c in self.config.components.values()})

    def validate(self) -> ValidationReport:
        """Load and check the config (schema, graph, paths, ports); raise ConfigError if bad."""
        config = self.config
        return ValidationReport(
            file=str(config.file),
            project=config.project.name,
            components=sorted(config.components),
            environments=sorted(config.environments),
            levels=self.graph().levels(),
        )
