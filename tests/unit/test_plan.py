"""The planner: config + changes + state in, a Plan out (tables of cases, no I/O)."""

from __future__ import annotations

import pytest

from shipyard.config import Config, parse_config
from shipyard.core.changes import ChangeReport, FileChange, analyse
from shipyard.core.plan import plan_deploy, plan_rollback
from shipyard.errors import UsageError

CONFIG = """\
[project]
name = "shop"
global_inputs = ["shipyard.toml", "requirements.lock"]

[environments.local]
target = "local"

[components.backend]
path = "backend"
inputs = ["backend/**", "libs/common/**"]
start = "python app.py"
port = 4000
contract = ["backend/openapi.json"]
migrations = { tool = "sql", dir = "migrations" }
tests = { full = "pytest", smoke = "pytest smoke" }

[components.admin]
path = "admin"
depends_on = ["backend"]
start = "python app.py"
port = 4001

[components.marketing]
path = "marketing"
depends_on = ["backend"]
start = "python -m http.server $PORT"
port = 4003

[components.docs]
path = "docs"
start = "python -m http.server $PORT"
port = 4004
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("project")
    for name in ("backend", "admin", "marketing", "docs"):
        (root / name).mkdir()
    return parse_config(CONFIG, file=root / "shipyard.toml", root=root)


COMMIT = "c" * 40
BASE = "b" * 40

# (case, changed files, expected affected set, expected why_full is set)
CHANGES = [
    (
        "backend file affects its dependents",
        ["backend/app.py"],
        {"backend", "admin", "marketing"},
        False,
    ),
    ("leaf change stays local", ["admin/app.py"], {"admin"}, False),
    (
        "shared lib through inputs",
        ["libs/common/util.py"],
        {"backend", "admin", "marketing"},
        False,
    ),
    (
        "global input means everything",
        ["requirements.lock"],
        {"backend", "admin", "marketing", "docs"},
        True,
    ),
    (
        "config text change without a settings change affects nothing",
        ["shipyard.toml"],
        set(),
        False,
    ),
    ("unowned file affects nothing", ["README.md"], set(), False),
    ("two leaves", ["admin/x", "docs/y"], {"admin", "docs"}, False),
    ("nothing changed", [], set(), False),
]


class NoSources:
    """No file content: contracts are "changed" (not compared), migrations not destructive."""

    def old_text(self, path: str) -> str | None:
        return None

    def new_text(self, path: str) -> str | None:
        return None

    def destructive(self, sql: str) -> list[str]:
        return []


def affected_components(config: Config, files: list[str]) -> ChangeReport:
    """The report of `files` changing while shipyard.toml stays as it is."""
    changes = [FileChange(f) for f in files]
    return analyse(config, config, changes, NoSources(), head=COMMIT, base=BASE, merge_base=BASE)


@pytest.mark.parametrize(
    ("files", "expected", "full"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_affected_components(
    config: Config, files: list[str], expected: set[str], full: bool
) -> None:
    affected = affected_components(config, files)
    assert affected.names == expected
    assert (affected.why_full is not None) == full


def test_unmatched_files_are_reported(config: Config) -> None:
    assert affected_components(config, ["README.md", "admin/a"]).unmatched == ["README.md"]


def test_dependents_get_a_reason(config: Config) -> None:
    reasons = affected_components(config, ["backend/app.py"]).affected
    assert reasons["admin"] == ["depends on backend"]
    assert reasons["backend"] == ["changed: backend/app.py"]


def test_contract_change_names_the_contract(config: Config) -> None:
    reasons = affected_components(config, ["backend/openapi.json"]).affected
    assert any("API contract of backend" in r for r in reasons["admin"])


def plan(config: Config, **kwargs: object):  # type: ignore[no-untyped-def]
    defaults: dict[str, object] = {
        "commit": COMMIT,
        "base_commit": BASE,
        "changes": affected_components(config, []),
        "selection": None,
    }
    defaults.update(kwargs)
    return plan_deploy(config, "local", **defaults)  # type: ignore[arg-type]


def test_auto_selection_is_full_without_a_base(config: Config) -> None:
    p = plan(config, base_commit=None, changes=None, base_note="no previous good deployment")
    assert p.kind == "full"
    assert p.components == ("backend", "docs", "admin", "marketing")
    assert p.levels == (("backend", "docs"), ("admin", "marketing"))
    assert "no previous good deployment" in p.why


def test_auto_selection_is_changed_with_a_base(config: Config) -> None:
    p = plan(config, changes=affected_components(config, ["admin/app.py"]))
    assert p.kind == "partial" and p.components == ("admin",)


def test_changed_without_base_is_a_usage_error(config: Config) -> None:
    with pytest.raises(UsageError, match="--changed needs a base commit"):
        plan(config, selection="changed", changes=None, base_commit=None)


def test_only_rejects_unknown_components(config: Config) -> None:
    with pytest.raises(UsageError, match="unknown component"):
        plan(config, selection="only", only=("admn",))


def test_steps_respect_dependencies(config: Config) -> None:
    p = plan(config, selection="full", tests="full")
    ids = [s.id for s in p.steps]
    assert ids[:2] == ["preflight", "snapshot"]
    assert ids[-3:] == ["switch", "verify", "finish"]
    activate_admin = p.step("activate:admin")
    assert "activate:backend" in activate_admin.after
    assert p.step("migrate:backend").after == ("test:backend",)  # full tests before migrating
    assert p.step("activate:backend").after == ("migrate:backend",)
    assert set(p.step("switch").after) == {f"activate:{n}" for n in p.components}
    position = {s.id: i for i, s in enumerate(p.steps)}
    for s in p.steps:  # listed in an order that can be executed as written
        assert all(position[a] < position[s.id] for a in s.after)


def test_no_migrate_drops_migration_steps(config: Config) -> None:
    p = plan(config, selection="full", migrate=False)
    assert not [s for s in p.steps if s.kind == "migrate"]


def test_smoke_tests_run_before_switch(config: Config) -> None:
    p = plan(config, selection="full", tests="smoke")
    assert p.step("switch").after == ("test:backend",)
    assert set(p.step("test:backend").after) == {f"activate:{n}" for n in p.components}


def test_plan_hash_is_stable_and_sensitive(config: Config) -> None:
    a = plan(config, selection="full")
    b = plan(config, selection="full")
    c = plan(config, selection="full", commit="d" * 40)
    assert a.plan_hash == b.plan_hash
    assert a.plan_hash != c.plan_hash
    assert a.to_dict()["plan_hash"] == a.plan_hash
    assert "plan " + a.plan_hash in a.to_text()


def test_rollback_plan_has_no_build(config: Config) -> None:
    p = plan_rollback(
        config,
        "local",
        commit=COMMIT,
        releases={"backend": "r1", "admin": "r1"},
        rollback_to="d1",
        current_commit=BASE,
    )
    kinds = {s.kind for s in p.steps}
    assert "build" not in kinds and "release" not in kinds
    assert p.kind == "rollback" and p.components == ("backend", "admin")
    assert p.step("migrate:backend").after == ("snapshot",)
    assert p.step("activate:backend").after == ("migrate:backend",)
    assert p.step("activate:admin").after == ("snapshot", "activate:backend")
    assert p.releases == {"admin": "r1", "backend": "r1"}


def test_no_migrate_says_a_new_migration_will_not_run(config: Config) -> None:
    changes = [FileChange("backend/migrations/0002_x.up.sql", "A")]
    report = analyse(config, config, changes, NoSources(), head=COMMIT, base=BASE, merge_base=BASE)
    p = plan(config, changes=report, migrate=False)
    assert not any(s.kind == "migrate" for s in p.steps)
    assert any("--no-migrate" in n and "0002_x" in n for n in p.notes)
