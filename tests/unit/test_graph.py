"""The dependency graph: order, levels, closures and cycles, on random DAGs."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from shipyard.core.graph import Graph

SHOP = Graph({"backend": [], "admin": ["backend"], "marketing": ["backend"]})


def test_shop_levels_and_order() -> None:
    assert SHOP.levels() == [["backend"], ["admin", "marketing"]]
    assert SHOP.order() == ["backend", "admin", "marketing"]
    assert SHOP.dependents("backend") == ("admin", "marketing")
    assert SHOP.descendants(["backend"]) == {"admin", "marketing"}
    assert SHOP.ancestors(["admin"]) == {"backend"}


def test_renderings() -> None:
    assert "backend --> admin" in SHOP.to_mermaid()
    assert '"backend" -> "marketing";' in SHOP.to_dot()
    assert json.loads(SHOP.to_json())["levels"] == [["backend"], ["admin", "marketing"]]
    assert "admin  (after backend)" in SHOP.to_text()


def test_subgraph_keeps_only_inner_edges() -> None:
    sub = SHOP.subgraph(["admin", "marketing"])
    assert sub.levels() == [["admin", "marketing"]]


def test_three_cycle_reads_as_depends_on_chain() -> None:
    g = Graph({"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    cycle = g.find_cycle()
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 4
    for x, y in itertools.pairwise(cycle):
        assert y in g.dependencies(x), f"{x} should depend on {y}"


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """Random DAGs: a node may only depend on nodes with a smaller index."""
    n = draw(st.integers(min_value=1, max_value=12))
    names = [f"c{i}" for i in range(n)]
    return {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }


@given(dags())
def test_every_edge_respects_the_order(deps: dict[str, list[str]]) -> None:
    g = Graph(deps)
    position = {name: i for i, name in enumerate(g.order())}
    for name, ds in deps.items():
        for d in ds:
            assert position[d] < position[name]


@given(dags())
def test_levels_partition_nodes_and_only_depend_on_earlier_levels(
    deps: dict[str, list[str]],
) -> None:
    levels = Graph(deps).levels()
    flat = [n for level in levels for n in level]
    assert sorted(flat) == sorted(deps)
    assert len(flat) == len(set(flat))
    level_of = {n: i for i, level in enumerate(levels) for n in level}
    for name, ds in deps.items():
        for d in ds:
            assert level_of[d] < level_of[name]
        if ds:  # as early as possible: right after its latest dependency
            assert level_of[name] == max(level_of[d] for d in ds) + 1


@given(dags())
def test_closures_match_naive_reachability(deps: dict[str, list[str]]) -> None:
    g = Graph(deps)
    for name in deps:
        reach: set[str] = set()
        frontier = list(deps[name])
        while frontier:
            d = frontier.pop()
            if d not in reach:
                reach.add(d)
                frontier.extend(deps[d])
        assert g.ancestors([name]) == reach
        assert {n for n in deps if name in g.ancestors([n])} == g.descendants([name])


@given(dags(), st.data())
def test_a_back_edge_is_always_reported_as_a_real_cycle(
    deps: dict[str, list[str]], data: st.DataObject
) -> None:
    names = sorted(deps, key=lambda n: int(n[1:]))
    if len(names) < 2:
        names.append("extra")
        deps["extra"] = [names[0]]
    # Add an edge from an early node to a later one that (transitively) depends on it.
    late = data.draw(st.sampled_from(names[1:]))
    ancestors = Graph(deps).ancestors([late]) | {late}
    early = data.draw(st.sampled_from(sorted(ancestors)))
    cyclic = {k: list(v) for k, v in deps.items()}
    cyclic[early] = [*cyclic[early], late]
    cycle = Graph(cyclic).find_cycle()
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    for x, y in itertools.pairwise(cycle):
        assert y in cyclic[x], f"{x} → {y} is not an edge"


@given(dags())
def test_acyclic_graphs_report_no_cycle(deps: dict[str, list[str]]) -> None:
    assert Graph(deps).find_cycle() is None
