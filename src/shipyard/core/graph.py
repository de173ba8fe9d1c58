"""The component dependency graph: order, parallel levels, closures, renderings.

Edges point from a component to what it depends on. Everything here is
deterministic (names sorted inside a level) so plans and their hashes are stable.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Callable, Iterable, Mapping


class Graph:
    """A DAG of component names built on graphlib."""

    def __init__(self, depends_on: Mapping[str, Iterable[str]]) -> None:
        self._deps: dict[str, tuple[str, ...]] = {
            name: tuple(sorted(set(deps))) for name, deps in depends_on.items()
        }
        self._dependents: dict[str, set[str]] = {name: set() for name in self._deps}
        for name, deps in self._deps.items():
            for dep in deps:
                self._dependents.setdefault(dep, set()).add(name)
                self._deps.setdefault(dep, ())

    @property
    def nodes(self) -> list[str]:
        return sorted(self._deps)

    def dependencies(self, name: str) -> tuple[str, ...]:
        """What `name` depends on directly."""
        return self._deps[name]

    def dependents(self, name: str) -> tuple[str, ...]:
        """What depends on `name` directly."""
        return tuple(sorted(self._dependents.get(name, ())))

    def find_cycle(self) -> list[str] | None:
        """A dependency cycle as `[a, b, …, a]` (a depends on b …), or None."""
        try:
            graphlib.TopologicalSorter(self._deps).prepare()
        except graphlib.CycleError as exc:
            # graphlib reports the cycle in dependency-first order; reverse it so
            # it reads "a depends on b depends on … a".
            cycle: list[str] = list(exc.args[1])
            return list(reversed(cycle))
        return None

    def levels(self) -> list[list[str]]:
        """Groups that can run in parallel: each depends only on earlier groups."""
        sorter = graphlib.TopologicalSorter(self._deps)
        sorter.prepare()  # raises graphlib.CycleError; config validation rejects cycles first
        result: list[list[str]] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            result.append(ready)
            sorter.done(*ready)
        return result

    def order(self) -> list[str]:
        """A topological order: dependencies before dependents."""
        return [name for level in self.levels() for name in level]

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """Everything `names` depend on, transitively (not including `names`)."""
        return self._closure(names, lambda n: self._deps[n])

    def descendants(self, names: Iterable[str]) -> set[str]:
        """Everything that depends on `names`, transitively (not including `names`)."""
        return self._closure(names, lambda n: tuple(self._dependents.get(n, ())))

    def _closure(self, names: Iterable[str], step: Callable[[str], Iterable[str]]) -> set[str]:
        start = set(names)
        seen: set[str] = set()
        stack = list(start)
        while stack:
            for nxt in step(stack.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen - start

    def subgraph(self, names: Iterable[str]) -> Graph:
        """The graph restricted to `names`, keeping only edges inside the selection."""
        keep = set(names)
        return Graph({n: [d for d in self._deps[n] if d in keep] for n in keep})

    # Renderings (pure strings; the CLI and the dashboard print them).

    def to_text(self) -> str:
        lines = []
        for index, level in enumerate(self.levels(), start=1):
            lines.append(f"level {index}:")
            for name in level:
                deps = self._deps[name]
                after = f"  (after {', '.join(deps)})" if deps else ""
                lines.append(f"  {name}{after}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        lines = ["graph TD"]
        for name in self.order():
            if not self._deps[name] and not self._dependents.get(name):
                lines.append(f"  {name}")
            for dep in self._deps[name]:
                lines.append(f"  {dep} --> {name}")
        return "\n".join(lines)

    def to_dot(self) -> str:
        lines = ["digraph shipyard {", "  rankdir=LR;"]
        for name in self.order():
            lines.append(f'  "{name}";')
            for dep in self._deps[name]:
                lines.append(f'  "{dep}" -> "{name}";')
        lines.append("}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "components": {n: {"depends_on": list(self._deps[n])} for n in self.nodes},
            "levels": self.levels(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
