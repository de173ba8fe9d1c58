"""Change detection's pure rules: the glob index, shipyard.toml compared at two commits,
contracts, migrations and secrets (tables of cases, no I/O)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.config import Config, parse_config
from shipyard.core.changes import FileChange, InputIndex, analyse, printable_path, shown_path
from shipyard.core.openapi import diff_contract
from shipyard.core.paths import matches_any

# --- the glob index equals the one-glob-at-a-time reference ----------------------------------

PATTERNS = {
    "backend": ["backend/**", "libs/common/**"],
    "admin": ["admin/**", "libs/*/api.yaml"],
    "protos": ["**/*.proto"],
    "root": ["Makefile", "*.md"],
    "deep": ["a/b/c/**", "a/?/d/*.txt"],
}
PATHS = [
    "backend/app.py",
    "backend",
    "libs/common/x/y.py",
    "libs/auth/api.yaml",
    "libs/auth/deep/api.yaml",
    "x/y/z.proto",
    "z.proto",
    "Makefile",
    "docs/Makefile",
    "README.md",
    "docs/README.md",
    "a/b/c/d",
    "a/x/d/n.txt",
    "a/xy/d/n.txt",
    "with space/a b.md",
    'q"uote/backend/x',
    "\udcff\udcfe/backend/x",
]


@pytest.mark.parametrize("path", PATHS)
def test_index_matches_like_the_globs(path: str) -> None:
    index = InputIndex(PATTERNS)
    expected = {name for name, globs in PATTERNS.items() if matches_any(path, globs)}
    assert index.owners(path) == expected


_SEGMENT = st.sampled_from(["a", "b", "ab", "x.py", "*", "**", "?", "*.py", "a*"])
_NAME = st.sampled_from(["a", "b", "ab", "x.py", "a.py", "ba"])


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.dictionaries(
        st.sampled_from(["c1", "c2", "c3", "c4"]),
        st.lists(st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join), max_size=3),
        max_size=4,
    ),
    paths=st.lists(st.lists(_NAME, min_size=1, max_size=5).map("/".join), max_size=20),
)
def test_index_equals_the_reference_on_random_globs(
    patterns: dict[str, list[str]], paths: list[str]
) -> None:
    index = InputIndex(patterns)
    for path in paths:
        assert index.owners(path) == {n for n, g in patterns.items() if matches_any(path, g)}


def test_a_submodule_folder_belongs_to_every_component_that_may_own_a_file_below() -> None:
    index = InputIndex({"web": ["web/**"], "lib": ["web/lib/src/**"], "other": ["other/**"]})
    assert index.folder_owners("web/lib") == {"web", "lib"}
    assert index.folder_owners("vendor") == set()


def test_undecodable_bytes_are_shown_escaped() -> None:
    assert printable_path("web/\udcff.bin") == "web/\\xff.bin"


def test_a_file_name_cannot_fake_a_line_of_output() -> None:
    assert shown_path("web/a\nerror: b\u202e\udcff") == "web/a\\x0aerror: b\\u202e\\xff"


# --- shipyard.toml at two commits ----------------------------------------------------------

BASE = """\
[project]
name = "p"
default_environment = "local"
global_inputs = ["shipyard.toml", "requirements.lock"]

[environments.local]
target = "local"

[environments.staging]
target = "local"

[components.api]
path = "api"
start = "run"
secrets = ["DB"]
contract = ["api/openapi.json"]
migrations = { tool = "sql", dir = "migrations" }

[components.web]
path = "web"
depends_on = ["api"]
start = "run"

[components.docs]
path = "docs"
start = "run"
"""


def load(tmp: Path, text: str) -> Config:
    for folder in ("api", "web", "docs", "new"):
        (tmp / folder).mkdir(exist_ok=True)
    return parse_config(text, file=tmp / "shipyard.toml", root=tmp)


class Texts:
    """File contents at both commits, from dicts; SQL is destructive when it says DROP."""

    def __init__(self, old: dict[str, str] | None = None, new: dict[str, str] | None = None):
        self.old, self.new = old or {}, new or {}

    def old_text(self, path: str) -> str | None:
        return self.old.get(path)

    def new_text(self, path: str) -> str | None:
        return self.new.get(path)

    def destructive(self, sql: str) -> list[str]:
        return ["DROP TABLE t"] if "DROP" in sql else []


def report(
    tmp: Path, new_text: str, files: list[FileChange] | None = None, texts: Texts | None = None
) -> Any:
    old, new = load(tmp, BASE), load(tmp, new_text)
    changes = [FileChange("shipyard.toml"), *(files or [])]
    return analyse(
        old, new, changes, texts or Texts(), head="h" * 40, base="b" * 40, merge_base="b" * 40
    ).to_dict()


def names(data: Any) -> set[str]:
    return {a["name"] for a in data["affected"]}


CONFIG_CASES = [
    # (case, edit, affected, full, breaking kinds)
    ("whitespace", lambda t: t + "\n\n", set(), False, []),
    (
        "one setting",
        lambda t: t.replace('path = "docs"', 'path = "docs"\nport = 9'),
        {"docs"},
        False,
        [],
    ),
    (
        "a dependency's setting reaches its dependents",
        lambda t: t.replace('path = "api"', 'path = "api"\nport = 9'),
        {"api", "web"},
        False,
        [],
    ),
    (
        "edge removed",
        lambda t: t.replace('depends_on = ["api"]\n', ""),
        {"api", "web", "docs"},
        True,
        ["graph"],
    ),
    (
        "edge added",
        lambda t: t.replace('path = "docs"', 'path = "docs"\ndepends_on = ["web"]'),
        {"api", "web", "docs"},
        True,
        ["graph"],
    ),
    (
        "component added",
        lambda t: t + '[components.new]\npath = "new"\nstart = "run"\n',
        {"api", "web", "docs", "new"},
        True,
        ["graph"],
    ),
    (
        "project setting",
        lambda t: t.replace('name = "p"', 'name = "p"\nkeep_releases = 9'),
        {"api", "web", "docs"},
        True,
        ["config"],
    ),
    (
        "this environment",
        lambda t: t.replace(
            '[environments.local]\ntarget = "local"',
            '[environments.local]\ntarget = "local"\nprotected = true',
        ),
        {"api", "web", "docs"},
        True,
        ["config"],
    ),
    (
        "another environment",
        lambda t: t.replace(
            '[environments.staging]\ntarget = "local"',
            '[environments.staging]\ntarget = "local"\nprotected = true',
        ),
        set(),
        False,
        [],
    ),
    (
        "an override here",
        lambda t: t + "[environments.local.components.docs]\nport = 7\n",
        {"docs"},
        False,
        [],
    ),
    (
        "new secret",
        lambda t: t.replace('secrets = ["DB"]', 'secrets = ["DB", "KEY"]'),
        {"api", "web"},
        False,
        ["secret"],
    ),
    (
        "secret rule",
        lambda t: t + "[secrets.rules]\nDB = { min_length = 9 }\n",
        {"api", "web"},
        False,
        [],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected", "full", "kinds"),
    [c[1:] for c in CONFIG_CASES],
    ids=[c[0] for c in CONFIG_CASES],
)
def test_config_changes(
    tmp_path: Path, edit: Any, expected: set[str], full: bool, kinds: list[str]
) -> None:
    data = report(tmp_path, edit(BASE))
    assert names(data) == expected
    assert data["full_deploy_required"] is full
    assert [b["kind"] for b in data["breaking"]] == kinds


def test_a_config_that_did_not_load_at_the_base_means_a_full_deploy(tmp_path: Path) -> None:
    new = load(tmp_path, BASE)
    data = analyse(
        None,
        new,
        [],
        Texts(),
        head="h",
        base="b",
        merge_base="b",
        old_config_error="the config at b cannot be read (bad key)",
    ).to_dict()
    assert data["full_deploy_required"] and "bad key" in data["why_full"]


def test_a_global_input_means_a_full_deploy(tmp_path: Path) -> None:
    data = report(tmp_path, BASE, [FileChange("requirements.lock")])
    assert data["full_deploy_required"] and "requirements.lock" in data["why_full"]
    assert "requirements.lock" not in data["unmatched"]


def test_many_files_are_summarised_in_a_reason(tmp_path: Path) -> None:
    files = [FileChange(f"docs/{i}.md") for i in range(10)]
    data = report(tmp_path, BASE, files)
    assert data["affected"][0]["reasons"] == ["changed: docs/0.md, docs/1.md, docs/2.md and 7 more"]


# --- migrations ---------------------------------------------------------------------------


MIGRATION_CASES = [
    # (case, change, sql, breaking kinds)
    (
        "new migration",
        FileChange("api/migrations/0002_x.up.sql", "A"),
        "ALTER TABLE t ADD c int",
        ["migration"],
    ),
    (
        "destructive",
        FileChange("api/migrations/0002_x.up.sql", "A"),
        "DROP TABLE t",
        ["migration", "destructive_migration"],
    ),
    (
        "a down file is not a new step",
        FileChange("api/migrations/0002_x.down.sql", "A"),
        "DROP",
        [],
    ),
    ("an edited one is not new", FileChange("api/migrations/0001_x.up.sql", "M"), "x", []),
    ("another folder", FileChange("api/other/0002_x.up.sql", "A"), "x", []),
]


@pytest.mark.parametrize(
    ("change", "sql", "kinds"),
    [c[1:] for c in MIGRATION_CASES],
    ids=[c[0] for c in MIGRATION_CASES],
)
def test_migrations(tmp_path: Path, change: FileChange, sql: str, kinds: list[str]) -> None:
    data = report(tmp_path, BASE, [change], Texts(new={change.path: sql}))
    assert [b["kind"] for b in data["breaking"]] == kinds
    assert "api" in names(data)


# --- contracts ----------------------------------------------------------------------------


def doc(paths: dict[str, Any]) -> str:
    return json.dumps(
        {
            "openapi": "3.1.0",
            "paths": paths,
            "components": {
                "schemas": {
                    "Order": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {"id": {"type": "string"}, "total": {"type": "number"}},
                    }
                }
            },
        }
    )


def op(
    response: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "responses": {
            "200": {
                "content": {
                    "application/json": {
                        "schema": response or {"$ref": "#/components/schemas/Order"}
                    }
                }
            }
        }
    }
    if body is not None:
        result["requestBody"] = {"content": {"application/json": {"schema": body}}}
    if params is not None:
        result["parameters"] = params
    return result


ORDER = {
    "/orders": {
        "get": op(),
        "post": op(body={"type": "object", "properties": {"note": {"type": "string"}}}),
    }
}

CONTRACT_CASES = [
    # (case, new paths, breaking details (substrings); [] = additive only)
    ("path removed", {}, ["removed path /orders"]),
    ("operation removed", {"/orders": {"get": op()}}, ["removed operation POST /orders"]),
    (
        "response field removed",
        {
            "/orders": {
                **ORDER["/orders"],
                "get": op({"type": "object", "properties": {"id": {"type": "string"}}}),
            }
        },
        ["GET /orders: response 200 no longer has field total"],
    ),
    (
        "request field newly required",
        {
            "/orders": {
                **ORDER["/orders"],
                "post": op(
                    body={
                        "type": "object",
                        "required": ["note"],
                        "properties": {"note": {"type": "string"}},
                    }
                ),
            }
        },
        ["POST /orders: request field note is now required"],
    ),
    (
        "parameter newly required",
        {
            "/orders": {
                **ORDER["/orders"],
                "get": op(params=[{"in": "query", "name": "q", "required": True}]),
            }
        },
        ["GET /orders: parameter q (query) is now required"],
    ),
    ("path added", {**ORDER, "/health": {"get": op()}}, []),
    (
        "optional parameter added",
        {"/orders": {**ORDER["/orders"], "get": op(params=[{"in": "query", "name": "q"}])}},
        [],
    ),
]


@pytest.mark.parametrize(
    ("paths", "expected"), [c[1:] for c in CONTRACT_CASES], ids=[c[0] for c in CONTRACT_CASES]
)
def test_openapi_differences(paths: dict[str, Any], expected: list[str]) -> None:
    diff = diff_contract(doc(ORDER), doc(paths))
    assert diff.openapi
    assert len(diff.breaking) == len(expected), diff.breaking
    for want, got in zip(expected, diff.breaking, strict=True):
        assert want in got
    assert diff.additive_only is (not expected)


def test_a_schema_whose_items_refer_to_itself_is_compared_not_recursed_forever() -> None:
    def tree_doc(fields: dict[str, Any]) -> str:
        nested = {"type": "array", "items": {"$ref": "#/components/schemas/Nested"}}
        return json.dumps(
            {
                "openapi": "3.1.0",
                "paths": {"/tree": {"get": op({"$ref": "#/components/schemas/Node"})}},
                "components": {
                    "schemas": {
                        "Nested": nested,  # an array of itself: valid, and endless
                        "Node": {
                            "type": "object",
                            "properties": {
                                **fields,
                                "tree": {"$ref": "#/components/schemas/Nested"},
                            },
                        },
                    }
                },
            }
        )

    diff = diff_contract(tree_doc({"name": {"type": "string"}}), tree_doc({}))
    assert diff.openapi and len(diff.breaking) == 1
    assert "GET /tree: response 200 no longer has field name" in diff.breaking[0]


def test_a_non_openapi_contract_is_never_guessed_harmless() -> None:
    diff = diff_contract("syntax = 'proto3';", "syntax = 'proto3'; // x")
    assert not diff.openapi and not diff.additive_only and diff.summary() == "changed"


@pytest.mark.parametrize(("mode", "forced"), [("strict", True), ("semantic", False)])
def test_contract_mode_decides_for_an_additive_change(
    tmp_path: Path, mode: str, forced: bool
) -> None:
    text = BASE.replace(
        'contract = ["api/openapi.json"]',
        f'contract = ["api/openapi.json"]\ncontract_mode = "{mode}"',
    )
    old = load(tmp_path, text)
    texts = Texts(
        {"api/openapi.json": doc(ORDER)},
        {"api/openapi.json": doc({**ORDER, "/health": {"get": op()}})},
    )
    data = analyse(
        old, old, [FileChange("api/openapi.json")], texts, head="h", base="b", merge_base="b"
    ).to_dict()
    web = next(a for a in data["affected"] if a["name"] == "web")
    assert any("API contract of api" in r for r in web["reasons"]) is forced
    assert bool(data["breaking"]) is forced


YAML_V1 = """\
openapi: 3.0.0
paths:
  /orders:
    get:
      responses:
        200:
          content:
            application/json:
              schema: {type: object, properties: {id: {type: string}, total: {type: number}}}
        default: {description: error}
"""


def test_a_yaml_openapi_document_is_compared_too() -> None:
    diff = diff_contract(YAML_V1, YAML_V1.replace(", total: {type: number}", ""))
    assert diff.openapi
    assert diff.breaking == ["GET /orders: response 200 no longer has field total"]
    assert diff_contract(YAML_V1, YAML_V1 + "  /health: {get: {responses: {}}}\n").additive_only
