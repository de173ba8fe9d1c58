"""`gc` never removes what a rollback needs: a property over random deployment histories.

Histories are written into a real SQLite state store: deployments of two environments
with random outcomes (succeeded, rolled back, failed, still running), each making new
releases of a random subset of components from a small pool of artifacts (so artifacts
are shared between releases and environments). The oracle is computed naively here,
from what a person would expect to roll back to; gc runs against real folders.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.effects.artifacts import ArtifactStore
from shipyard.engine.gc import collect_garbage
from shipyard.store import Store, new_id
from shipyard.store.records import ComponentRecord, DeploymentRecord, SnapshotEntry

COMPONENTS = ("api", "web", "worker")
ENVIRONMENTS = ("staging", "production")
ARTIFACTS = tuple(f"{n:064x}" for n in range(1, 7))
OUTCOMES = ("succeeded", "succeeded", "succeeded", "rolled_back", "failed", "running")

deployment = st.tuples(
    st.sampled_from(ENVIRONMENTS),
    st.sampled_from(OUTCOMES),
    st.dictionaries(st.sampled_from(COMPONENTS), st.sampled_from(ARTIFACTS), min_size=1),
)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="shipyard-gc-") as folder:
        opened = Store.open(f"sqlite:///{folder}/state.db")
        yield opened
        opened.close()


def write_history(
    store: Store, prefix: str, history: list[tuple[str, str, dict[str, str]]]
) -> dict[str, list[tuple[str, dict[str, str], dict[str, tuple[str, str]]]]]:
    """Record the history; per environment: (outcome, artifacts, active-after) in order."""
    active: dict[str, dict[str, tuple[str, str]]] = {e: {} for e in ENVIRONMENTS}
    seen: dict[str, list[tuple[str, dict[str, str], dict[str, tuple[str, str]]]]] = {
        e: [] for e in ENVIRONMENTS
    }
    for env, outcome, artifacts in history:
        deployment_id = new_id()
        store.create_deployment(
            DeploymentRecord(id=deployment_id, environment=prefix + env, kind="partial")
        )
        store.save_snapshot(
            deployment_id,
            [
                SnapshotEntry(component=c, host="local", release=r, artifact=a)
                for c, (r, a) in active[env].items()
            ],
        )
        for component, artifact in artifacts.items():
            store.set_component(
                ComponentRecord(
                    deployment_id=deployment_id,
                    component=component,
                    release=deployment_id,
                    artifact=artifact,
                    status="healthy",
                )
            )
        store.update_deployment(deployment_id, status=outcome)
        if outcome == "succeeded":
            active[env] = {**active[env], **{c: (deployment_id, a) for c, a in artifacts.items()}}
        seen[env].append((outcome, artifacts, dict(active[env])))
    return seen


def must_keep(
    seen: dict[str, list[tuple[str, dict[str, str], dict[str, tuple[str, str]]]]], keep: int
) -> set[tuple[str, str]]:
    """Naively: what runs now, what `rollback` goes back to, the last `keep` good states,
    and everything an unfinished or failed deployment touched or came from."""
    needed: set[tuple[str, str]] = set()
    for history in seen.values():
        states = [after for outcome, _, after in history if outcome == "succeeded"]
        for state in states[-max(keep, 1) :]:
            needed |= {(c, a) for c, (_, a) in state.items()}
        current = states[-1] if states else {}
        earlier = [s for s in states[:-1] if s != current]
        if earlier:  # a plain rollback goes to the newest good state that differs
            needed |= {(c, a) for c, (_, a) in earlier[-1].items()}
        before: dict[str, tuple[str, str]] = {}
        for outcome, artifacts, after in history:
            if outcome in ("failed", "running"):
                needed |= {(c, a) for c, a in artifacts.items()}
                needed |= {(c, a) for c, (_, a) in before.items()}
            before = after
    return needed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(deployment, min_size=1, max_size=12), keep=st.integers(1, 3))
def test_gc_never_removes_what_a_rollback_needs(
    store: Store, history: list[tuple[str, str, dict[str, str]]], keep: int
) -> None:
    prefix = new_id()[-8:] + "-"
    seen = write_history(store, prefix, history)
    # A still running deployment makes gc wait: checked, then it finishes as failed.
    running = [h for h in history if h[1] == "running"]
    with tempfile.TemporaryDirectory(prefix="shipyard-gc-") as folder:
        root = Path(folder)
        artifacts = ArtifactStore(root / "artifacts")
        for component in COMPONENTS:
            for digest in ARTIFACTS:
                (artifacts.path(component, digest) / "app").mkdir(parents=True)
                (artifacts.path(component, digest) / "app" / "main.py").write_text(digest)
                meta = artifacts.root / component / f"{digest}.json"
                meta.write_text(json.dumps({"pyenv": f"env-{digest[-1]}"}))
        for digest in ARTIFACTS:
            (root / "pyenvs" / f"env-{digest[-1]}" / "bin").mkdir(parents=True)
        roots = {prefix + e: root / e for e in ENVIRONMENTS}
        report = collect_garbage(store, artifacts, root / "pyenvs", roots, keep)
        if running:
            assert report.skipped and "running" in report.skipped
            assert report.artifacts == [] and report.pyenvs == []
            # Then they end as failed (what recovery does), and gc runs on that history.
            for env in ENVIRONMENTS:
                for record in store.unfinished_deployments(prefix + env):
                    store.update_deployment(record.id, status="failed")
            report = collect_garbage(store, artifacts, root / "pyenvs", roots, keep)
            assert not report.skipped
        kept = {(c, d) for c in COMPONENTS for d in ARTIFACTS if artifacts.has(c, d)}
        needed = must_keep(seen, keep)
        assert needed <= kept, f"removed {sorted(needed - kept)}"
        # Each kept artifact keeps its Python environment.
        for _component, digest in needed:
            assert (root / "pyenvs" / f"env-{digest[-1]}").is_dir()
        # And gc does remove: an artifact no deployment ever made is gone.
        made = {(c, a) for _, _, arts in history for c, a in arts.items()}
        assert not (kept - made)
