"""`Shipyard.changes` on real git repositories: odd file names, moves, deletions, merges,
shipyard.toml read at both commits, submodules, diverged and shallow histories, bad refs,
and the breaking changes each of them reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shipyard.effects.changes import Base, detect_changes
from shipyard.errors import UsageError
from shipyard.service import Shipyard
from tests.conftest import commit_all, git

CONFIG = """\
[project]
name = "mono"
default_environment = "local"

[environments.local]
target = "local"

[components.api]
path = "api"
start = "python app.py"
contract = ["api/openapi.json"]
contract_mode = "semantic"
migrations = { tool = "sql", dir = "migrations" }
secrets = ["DATABASE_URL"]

[components.web]
path = "web"
depends_on = ["api"]
start = "python app.py"

[components.docs]
path = "docs"
start = "python app.py"
"""

OPENAPI = {
    "openapi": "3.0.0",
    "paths": {
        "/orders": {
            "get": {
                "responses": {
                    "200": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"id": {"type": "string"}, "total": {}},
                                }
                            }
                        }
                    }
                }
            }
        }
    },
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "mono"
    for folder in ("api", "web", "docs"):
        (root / folder).mkdir(parents=True)
        (root / folder / "app.py").write_text("print('hi')\n")
    (root / "api" / "migrations").mkdir()
    (root / "api" / "openapi.json").write_text(json.dumps(OPENAPI, indent=1))
    (root / "api" / "migrations" / "0001_init.up.sql").write_text("CREATE TABLE t (id int);\n")
    (root / "shipyard.toml").write_text(CONFIG)
    (root / "README.md").write_text("mono\n")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "first")
    return root


def changes(root: Path, since: str = "HEAD~1", ref: str = "HEAD") -> dict[str, Any]:
    return Shipyard(root).changes(since=since, ref=ref).to_dict()


def affected(report: dict[str, Any]) -> set[str]:
    return {a["name"] for a in report["affected"]}


def test_odd_file_names_are_matched_and_shown_exactly(repo: Path) -> None:
    names = [b"web/a b.txt", b'web/q"uote.txt', b"web/new\nline.txt", b"web/\xff\xfe.bin"]
    for name in names:
        Path(os.fsdecode(os.fsencode(repo) + b"/" + name)).write_text("x")
    commit_all(repo, "odd names")
    report = changes(repo)
    assert affected(report) == {"web"}
    assert sorted(report["changed_files"]) == sorted(
        ["web/a b.txt", 'web/q"uote.txt', "web/new\nline.txt", "web/\\xff\\xfe.bin"]
    )
    assert report["unmatched"] == []
    (reason,) = report["affected"][0]["reasons"]
    assert "\n" not in reason and "web/new\\x0aline.txt" in reason


def test_a_move_counts_on_both_sides_and_a_deletion_counts(repo: Path) -> None:
    (repo / "docs" / "guide.md").write_text("guide\n" * 50)
    commit_all(repo, "guide")
    git(repo, "mv", "docs/guide.md", "web/guide.md")
    commit_all(repo, "move")
    assert affected(changes(repo)) == {"docs", "web"}
    (repo / "api" / "app.py").unlink()
    commit_all(repo, "delete")
    report = changes(repo)
    assert affected(report) == {"api", "web"}
    assert report["affected"][1]["reasons"] == ["depends on api"]


def test_a_merge_commit_brings_the_other_side_changes(repo: Path) -> None:
    start = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "docs" / "a.md").write_text("a")
    commit_all(repo, "docs")
    git(repo, "checkout", "-q", "main")
    (repo / "web" / "b.txt").write_text("b")
    before_merge = commit_all(repo, "web")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge", "feature")
    assert affected(changes(repo, since=before_merge)) == {"docs"}
    assert affected(changes(repo, since=start)) == {"docs", "web"}


def test_unmatched_files_are_reported(repo: Path) -> None:
    (repo / "README.md").write_text("more\n")
    commit_all(repo, "readme")
    report = changes(repo)
    assert affected(report) == set() and report["unmatched"] == ["README.md"]


CONFIG_EDITS = [
    # (case, edit of shipyard.toml, affected, full deploy, breaking kinds)
    ("comment only", lambda t: "# hello\n" + t, set(), False, []),
    (
        "one component's setting",
        lambda t: t.replace('path = "docs"\n', 'path = "docs"\nport = 4100\n'),
        {"docs"},
        False,
        [],
    ),
    (
        "a dependency edge removed",
        lambda t: t.replace('depends_on = ["api"]\n', ""),
        {"api", "web", "docs"},
        True,
        ["graph"],
    ),
    (
        "a component removed",
        lambda t: t[: t.index("[components.docs]")],
        {"api", "web"},
        True,
        ["graph"],
    ),
    (
        "a component renamed",
        lambda t: t.replace("[components.docs]", "[components.manual]"),
        {"api", "web", "manual"},
        True,
        ["graph"],
    ),
    (
        "a secret newly required",
        lambda t: t.replace('secrets = ["DATABASE_URL"]', 'secrets = ["DATABASE_URL", "API_KEY"]'),
        {"api", "web"},
        False,
        ["secret"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected", "full", "kinds"),
    [c[1:] for c in CONFIG_EDITS],
    ids=[c[0] for c in CONFIG_EDITS],
)
def test_shipyard_toml_is_read_at_both_commits(
    repo: Path, edit: object, expected: set[str], full: bool, kinds: list[str]
) -> None:
    config = repo / "shipyard.toml"
    config.write_text(edit(config.read_text()))
    commit_all(repo, "config")
    report = changes(repo)
    assert affected(report) == expected
    assert report["full_deploy_required"] is full
    assert [b["kind"] for b in report["breaking"]] == kinds
    if "secret" in kinds:
        assert "API_KEY" in json.dumps(report["breaking"])


def test_new_and_destructive_migrations_are_breaking(repo: Path) -> None:
    folder = repo / "api" / "migrations"
    (folder / "0002_email.up.sql").write_text("ALTER TABLE t ADD COLUMN email text;\n")
    commit_all(repo, "expand")
    report = changes(repo)
    assert [(b["kind"], b["component"]) for b in report["breaking"]] == [("migration", "api")]
    (folder / "0003_drop.up.sql").write_text("DROP TABLE t;\n")
    commit_all(repo, "contract")
    report = changes(repo)
    kinds = [b["kind"] for b in report["breaking"]]
    assert kinds == ["migration", "destructive_migration"]
    assert "--allow-destructive" in json.dumps(report["breaking"])
    plan = Shipyard(repo).plan(since="HEAD~1")
    assert "migrate:api" in [s.id for s in plan.steps]
    assert "--allow-destructive" in plan.to_text()


def _edit_contract(repo: Path, change: object) -> None:
    doc = json.loads((repo / "api" / "openapi.json").read_text())
    change(doc)
    (repo / "api" / "openapi.json").write_text(json.dumps(doc, indent=1))
    commit_all(repo, "contract")


def test_semantic_contract_additive_change_does_not_force_dependents(repo: Path) -> None:
    _edit_contract(repo, lambda d: d["paths"].update({"/health": {"get": {"responses": {}}}}))
    report = changes(repo)
    # web still deploys, as a dependent of a changed api; but not for its contract.
    assert report["breaking"] == []
    assert all("API contract" not in r for r in report["affected"][1]["reasons"])


def test_semantic_contract_breaking_change_is_named(repo: Path) -> None:
    _edit_contract(
        repo,
        lambda d: d["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]["properties"].pop("total"),
    )
    report = changes(repo)
    detail = report["breaking"][0]["detail"]
    assert report["breaking"][0]["kind"] == "contract"
    assert "GET /orders: response 200 no longer has field total" in detail
    assert "API contract of api changed" in " ".join(report["affected"][1]["reasons"])


def test_a_submodule_pointer_change_affects_its_component(repo: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "x").write_text("1")
    git(lib, "init", "-q")
    commit_all(lib, "lib 1")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "-q", "add", str(lib), "web/lib")
    commit_all(repo, "add submodule")
    (lib / "x").write_text("2")
    commit_all(lib, "lib 2")
    git(repo / "web" / "lib", "-c", "protocol.file.allow=always", "pull", "-q")
    commit_all(repo, "bump submodule")
    report = changes(repo)
    assert affected(report) == {"web"}
    assert "submodule pointer changed: web/lib" in report["affected"][0]["reasons"]


def test_a_base_that_is_not_an_ancestor_is_compared_from_the_merge_base(repo: Path) -> None:
    fork = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "old")
    (repo / "docs" / "x.md").write_text("x")
    abandoned = commit_all(repo, "abandoned")
    git(repo, "checkout", "-q", "main")
    (repo / "web" / "y.txt").write_text("y")
    commit_all(repo, "main")
    report = changes(repo, since=abandoned)
    assert report["merge_base"] == fork
    assert affected(report) == {"web"}
    assert "not an ancestor" in report["notes"][0]
    # Deployed from the abandoned branch: what runs differs from head in docs too.
    service = Shipyard(repo)
    head = git(repo, "rev-parse", "HEAD")
    deployed = detect_changes(
        service.repo,
        "",
        head=head,
        base=Base(abandoned, deployed=True),
        config_at=service.config_at,
        env_name=None,
    ).to_dict()
    assert deployed["merge_base"] == fork
    assert affected(deployed) == {"docs", "web"}
    assert "compared with the deployed commit directly" in deployed["notes"][0]


def test_a_shallow_clone_without_the_base_plans_a_full_deploy(repo: Path, tmp_path: Path) -> None:
    old = git(repo, "rev-parse", "HEAD")
    (repo / "web" / "z.txt").write_text("z")
    commit_all(repo, "z")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    report = Shipyard(clone).changes(since=old)
    assert report.full_deploy_required and "shallow clone" in (report.why_full or "")
    assert report.names == {"api", "web", "docs"}


@pytest.mark.parametrize("ref", ["-x", "--output=/tmp/pwned", ""])
def test_refs_that_look_like_options_are_refused(repo: Path, ref: str) -> None:
    with pytest.raises(UsageError, match="invalid git ref"):
        Shipyard(repo).changes(since=ref)
    with pytest.raises(UsageError, match="invalid git ref"):
        Shipyard(repo).changes(since="HEAD", ref=ref)


def test_the_cli_refuses_a_bad_ref_with_exit_2(repo: Path) -> None:
    from tests.conftest import shipyard_executable

    done = subprocess.run(
        [shipyard_executable(), "-C", str(repo), "--json", "changes", "--since=-x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid git ref" in json.loads(done.stdout)["error"]["message"]


def test_each_commit_config_is_checked_against_its_own_tree(repo: Path) -> None:
    from shipyard.errors import ConfigError

    first = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "-r", "docs")
    head = commit_all(repo, "docs folder gone, config unchanged")
    service = Shipyard(repo)
    assert "docs" in service.config_at(first).components
    with pytest.raises(ConfigError, match="folder 'docs' does not exist"):
        service.config_at(head)


def test_the_readable_report_names_components_breaking_changes_and_strays(repo: Path) -> None:
    from tests.conftest import shipyard_executable

    (repo / "api" / "migrations" / "0002_drop.up.sql").write_text("DROP TABLE t;\n")
    (repo / "web" / "\x1b[31mred\nerror: fake.txt").write_text("x")
    (repo / "NOTES.md").write_text("x")
    commit_all(repo, "several things")
    done = subprocess.run(
        [shipyard_executable(), "-C", str(repo), "changes", "--since", "HEAD~1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b" not in out and "\\x1b[31mred\\x0aerror: fake.txt" in out
    assert not any(line.startswith("error:") for line in out.splitlines())
    assert "depends on api" in out
    assert "breaking (destructive_migration api): 0002_drop destroys data" in out
    assert "1 changed file(s) belong to no component: NOTES.md" in out


def test_never_deployed_means_a_full_deploy_said_why(repo: Path) -> None:
    service = Shipyard(repo)
    try:
        report = service.changes()
    finally:
        service.close()
    assert report.full_deploy_required and report.base is None
    assert report.why_full == "no previous good deployment of local"
    assert list(report.affected) == ["api", "docs", "web"]


def test_a_project_in_a_folder_of_a_bigger_repository_sees_only_its_own_files(
    tmp_path: Path,
) -> None:
    """The project lives in `apps/[shop]` (a name that is a glob if read as one); files of the
    rest of the repository are not the project's changes, not even as unmatched ones."""
    root = tmp_path / "big"
    project = root / "apps" / "[shop]"
    (project / "api").mkdir(parents=True)
    (project / "api" / "app.py").write_text("print('hi')\n")
    (project / "shipyard.toml").write_text(
        '[project]\nname = "shop"\ndefault_environment = "local"\n\n'
        '[environments.local]\ntarget = "local"\n\n'
        '[components.api]\npath = "api"\nstart = "python app.py"\n'
    )
    (root / "other").mkdir()
    (root / "other" / "x.txt").write_text("1\n")
    (root / "apps" / "s").mkdir()
    (root / "apps" / "s" / "y.txt").write_text("1\n")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "first")
    (root / "other" / "x.txt").write_text("2\n")
    (root / "apps" / "s" / "y.txt").write_text("2\n")
    (project / "api" / "app.py").write_text("print('hello')\n")
    commit_all(root, "second")
    report = changes(project)
    assert affected(report) == {"api"}
    assert "other/x.txt" not in json.dumps(report) and "y.txt" not in json.dumps(report)
