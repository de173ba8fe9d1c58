"""shipyard.toml loading: a valid file becomes typed models; each bad input names what and where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.config import load_config, parse_config
from shipyard.errors import ConfigError, UsageError

VALID = """\
[project]
name = "shop"
default_environment = "local"
keep_releases = 3

[environments.local]
target = "local"
root = ".shipyard/local"
secrets = { dotenv = ".env.local" }

[environments.production]
target = "ssh"
hosts = ["deploy@10.0.0.5:22"]
root = "/srv/shop"
protected = true
rolling = { batch = "50%", max_fail = 0 }

[environments.production.components.admin]
port = 5001

[components.backend]
path = "backend"
build = "python -m compileall -q ."
start = "python app.py --port $PORT"
port = 4000
secrets = ["DATABASE_URL", "JWT_SECRET"]
health = { http = "/health", interval = "200ms", timeout = "2s", deadline = "30s", \
stable_for = "1s" }
migrations = { tool = "sql", dir = "migrations" }
tests = { full = "python -m pytest -q" }

[components.admin]
path = "admin"
depends_on = ["backend"]
start = "python app.py --port $PORT"
port = 4001
health = { http = "/health" }

[components.marketing]
path = "marketing"
depends_on = ["backend"]
build = "python build.py"
artifact = "site"
start = "python -m http.server $PORT"
port = 4003

[secrets.rules]
JWT_SECRET = { min_length = 32, min_entropy = 3.5 }
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("backend", "admin", "marketing"):
        (tmp_path / name).mkdir()
    return tmp_path


def parse(project: Path, text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, file=project / "shipyard.toml", root=project)


def error_for(project: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(project, text)
    return info.value


def test_valid_config_becomes_typed_models(project: Path) -> None:
    config = parse(project, VALID)
    backend = config.components["backend"]
    assert backend.port == 4000
    assert backend.health.http == "/health"
    assert backend.health.interval == pytest.approx(0.2)
    assert backend.health.stable_for == pytest.approx(1.0)
    assert backend.inputs == ("backend/**",)  # default: path/**
    assert backend.migrations is not None and backend.migrations.dir == "migrations"
    assert config.components["marketing"].artifact == "site"
    assert config.components["marketing"].health.kind == "tcp"  # a port and no health: tcp
    assert config.project.keep_releases == 3
    assert config.project.lock_ttl == 15.0  # the default
    assert config.environments["production"].tier == "production"  # inferred from the name
    assert config.environments["local"].tier == "development"
    assert config.environments["local"].router == "builtin"  # the default: nothing to install
    routed = parse(
        project, VALID.replace("protected = true", 'protected = true\nrouter = "haproxy"')
    )
    assert routed.environments["production"].router == "haproxy"
    assert config.environments["local"].secrets is not None
    assert config.environments["local"].secrets.kind == "dotenv"
    assert config.secret_rules["JWT_SECRET"].min_length == 32


def test_environment_overrides_apply_only_there(project: Path) -> None:
    config = parse(project, VALID)
    prod = config.components_for(config.environments["production"])
    local = config.components_for(config.environments["local"])
    assert prod["admin"].port == 5001
    assert local["admin"].port == 4001
    assert prod["admin"].depends_on == ("backend",)


def test_unknown_environment_is_a_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="unknown environment 'qa'"):
        parse(project, VALID).environment("qa")


def replace(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


# (case id, config text, fragments the message must contain, text ending on the line it names)
BAD_INPUTS = [
    (
        "toml syntax",
        replace("keep_releases = 3", "keep_releases = = 3"),
        ["invalid TOML"],
        "keep_releases = = 3",
    ),
    (
        "lock_ttl too short to renew",
        replace("keep_releases = 3", 'keep_releases = 3\nlock_ttl = "1s"'),
        ["project.lock_ttl: must be at least 3s"],
        'lock_ttl = "1s"',
    ),
    (
        "wrong port type",
        replace("port = 4001", 'port = "40o1"'),
        ['components.admin.port: expected an integer from 1 to 65535, got "40o1"'],
        'port = "40o1"',
    ),
    (
        "port out of range",
        replace("port = 4003", "port = 70000"),
        ["components.marketing.port", "1 to 65535", "70000"],
        "port = 70000",
    ),
    (
        "unknown key with suggestion",
        replace('artifact = "site"', 'artifcat = "site"'),
        ["components.marketing.artifcat", "unknown key `artifcat`"],
        "artifcat",
    ),
    (
        "unknown health key",
        replace('health = { http = "/health" }', 'health = { http = "/health", intervall = "1s" }'),
        ["components.admin.health.intervall"],
        "intervall",
    ),
    (
        "bad duration",
        replace('interval = "200ms"', 'interval = "fast"'),
        ["components.backend.health.interval", "200ms, 2s or 5m", "fast"],
        "fast",
    ),
    (
        "unknown dependency",
        replace('depends_on = ["backend"]\nstart', 'depends_on = ["backnd"]\nstart'),
        ["'admin' depends on unknown component 'backnd'"],
        "backnd",
    ),
    (
        "cycle",
        replace(
            'secrets = ["DATABASE_URL", "JWT_SECRET"]',
            'secrets = ["DATABASE_URL", "JWT_SECRET"]\ndepends_on = ["admin"]',
        ),
        ["dependency cycle", "backend → admin → backend"],
        None,
    ),
    (
        "missing path",
        replace('path = "marketing"', 'path = "web"'),
        ["components.marketing.path", "'web' does not exist"],
        'path = "web"',
    ),
    (
        "duplicate port",
        replace("port = 4003", "port = 4001"),
        ["'admin' and 'marketing' both use port 4001", "'local'"],
        'http.server $PORT"\nport = 4001',
    ),
    (
        "duplicate port through an override",
        replace(
            "[environments.production.components.admin]\nport = 5001",
            "[environments.production.components.admin]\nport = 4000",
        ),
        ["'admin' and 'backend' both use port 4000", "'production'"],
        "components.admin]\nport = 4000",
    ),
    (
        "unknown target",
        replace('target = "ssh"', 'target = "kubernetes"'),
        ["environments.production.target", "unknown target 'kubernetes'"],
        "kubernetes",
    ),
    (
        "unknown router",
        replace("protected = true", 'protected = true\nrouter = "nginx"'),
        ["environments.production.router", "expected one of builtin, haproxy", 'got "nginx"'],
        "nginx",
    ),
    (
        "ssh without hosts",
        replace('hosts = ["deploy@10.0.0.5:22"]\n', ""),
        ["environments.production.hosts"],
        None,
    ),
    (
        "unknown default environment",
        replace('default_environment = "local"', 'default_environment = "dev"'),
        ["project.default_environment", "unknown environment 'dev'"],
        '"dev"',
    ),
    (
        "missing start",
        replace('start = "python -m http.server $PORT"\n', ""),
        ["components.marketing.start: is required"],
        None,
    ),
    (
        "two secret sources",
        replace('secrets = { dotenv = ".env.local" }', 'secrets = { dotenv = "a", command = "b" }'),
        ["environments.local.secrets", "exactly one"],
        'command = "b"',
    ),
    (
        "bad regex",
        replace("JWT_SECRET = { min_length = 32", 'JWT_SECRET = { pattern = "([", min_length = 32'),
        ["secrets.rules.JWT_SECRET.pattern", "invalid regular expression"],
        None,
    ),
    (
        "override of an unknown component",
        replace(
            "[environments.production.components.admin]",
            "[environments.production.components.admni]",
        ),
        ["environments.production.components.admni", "unknown component 'admni'"],
        "admni",
    ),
]


@pytest.mark.parametrize(
    ("text", "fragments", "at"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_names_problem_and_place(
    project: Path, text: str, fragments: list[str], at: str | None
) -> None:
    error = error_for(project, text)
    assert str(project / "shipyard.toml") in error.message
    for fragment in fragments:
        assert fragment in error.message
    if at is not None:  # the error points at the line where `at` is written
        line = text[: text.index(at) + len(at)].count("\n") + 1
        assert error.line == line, error.message
        assert f"shipyard.toml:{line}:" in error.message
    assert error.exit_code == 2


def test_unknown_key_suggests_closest(project: Path) -> None:
    error = error_for(project, replace('artifact = "site"', 'artifcat = "site"'))
    assert error.hint == "did you mean `artifact`?"


def test_missing_file_says_how_to_point_at_the_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "no shipyard.toml" in info.value.message
    assert info.value.hint is not None and "-C" in info.value.hint


def line_of(text: str, at: str) -> int:
    return text[: text.index(at) + len(at)].count("\n") + 1


def edit(text: str, *changes: tuple[str, str]) -> str:
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


# (case id, edits to VALID, [(key path, text ending on the line the error names)] in file order)
SEVERAL_ERRORS = [
    (
        "three independent errors, found out of order, reported in file order",
        [
            ('artifact = "site"', 'artifcat = "site"'),  # last in the file
            ("port = 4001", 'port = "40o1"'),
            ('default_environment = "local"', 'default_environment = "dev"'),  # first
        ],
        [
            ("project.default_environment", '"dev"'),
            ("components.admin.port", '"40o1"'),
            ("components.marketing.artifcat", "artifcat"),
        ],
    ),
    (
        "two bad values in one component, and one in its health table",
        [
            ('interval = "200ms"', 'interval = "fast"'),
            ("port = 4000", "port = 0"),
            ('start = "python app.py --port $PORT"\nport = 4001', 'start = ""\nport = 4001'),
        ],
        [
            ("components.backend.port", "port = 0"),
            ("components.backend.health.interval", '"fast"'),
            ("components.admin.start", 'start = ""'),
        ],
    ),
    (
        "errors in an environment, a rule and the graph",
        [
            ('target = "ssh"', 'target = "kubernetes"'),
            ("JWT_SECRET = { min_length = 32", 'JWT_SECRET = { pattern = "([", min_length = 32'),
            ('depends_on = ["backend"]\nbuild', 'depends_on = ["backnd"]\nbuild'),
        ],
        [
            ("environments.production.target", "kubernetes"),
            ("components.marketing.depends_on", '["backnd"]'),
            ("secrets.rules.JWT_SECRET.pattern", '"(["'),
        ],
    ),
    (
        "a component that cannot be read is one error, not one per reference to it",
        [('start = "python -m http.server $PORT"\n', "")],  # marketing: no start
        [("components.marketing.start", "[components.marketing]")],
    ),
    (
        "three components on one port: each clash, in each environment",
        [("port = 4001", "port = 4000"), ("port = 4003", "port = 4000")],
        [
            (
                "components.admin.port",
                '["backend"]\nstart = "python app.py --port $PORT"\nport = 4000',
            ),
            ("components.marketing.port", 'http.server $PORT"\nport = 4000'),  # local
            ("components.marketing.port", 'http.server $PORT"\nport = 4000'),  # production
        ],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [case[1:] for case in SEVERAL_ERRORS],
    ids=[case[0] for case in SEVERAL_ERRORS],
)
def test_every_error_is_reported_in_file_order(
    project: Path, changes: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    text = edit(VALID, *changes)
    error = error_for(project, text)
    found = [(e.key, e.line) for e in error.errors]
    assert found == [(key, line_of(text, at)) for key, at in expected], error.message
    assert error.line == found[0][1]  # the combined error points at the first one
    for key, line in found:  # each one is in the message with file:line and key path
        assert f"shipyard.toml:{line}: {key}:" in error.message
    if len(expected) > 1:
        assert error.message.startswith(f"{len(expected)} errors:")
        located = error.to_dict()["errors"]
        assert [(e["key"], e["line"]) for e in located] == found
    assert error.exit_code == 2


def test_each_reported_error_keeps_its_hint(project: Path) -> None:
    text = edit(VALID, ('artifact = "site"', 'artifcat = "site"'), ("port = 4001", "port = -1"))
    error = error_for(project, text)
    assert "    hint: did you mean `artifact`?" in error.message
    assert error.hint is not None and "shipyard validate" in error.hint


def test_non_utf8_file_names_the_line_and_says_what_to_do(project: Path) -> None:
    text = VALID.replace('name = "shop"', 'name = "caf\N{LATIN SMALL LETTER E WITH ACUTE}"')
    (project / "shipyard.toml").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(project)
    error = info.value
    assert error.line == 2
    assert error.message.startswith(f"{project / 'shipyard.toml'}:2: not valid UTF-8")
    assert "byte 0xe9 at column 12" in error.message
    assert error.hint is not None and "UTF-8" in error.hint


# Values a careless or hostile edit may put anywhere: every type TOML has, and out-of-range ones.
ODD_VALUES = [
    "0",
    "-1",
    "70000",
    "1.5",
    "true",
    '""',
    '"x"',
    '"[/bold]"',
    '"fast"',
    "[]",
    "[1, 2]",
    '["backend", "nope"]',
    "{}",
    "{ a = 1 }",
    '{ http = "x", tcp = true }',
]
ASSIGNMENTS = [i for i, line in enumerate(VALID.splitlines()) if re.match(r"^[a-z_]+ = ", line)]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.dictionaries(
        st.sampled_from(ASSIGNMENTS), st.sampled_from(ODD_VALUES), min_size=1, max_size=6
    )
)
def test_any_edit_gives_a_config_or_located_errors_never_a_crash(
    project: Path, edits: dict[int, str]
) -> None:
    lines = VALID.splitlines()
    for index, value in edits.items():
        key = lines[index].split(" = ", 1)[0]
        lines[index] = f"{key} = {value}"
    text = "\n".join(lines) + "\n"
    try:
        parse(project, text)
    except ConfigError as error:
        assert error.errors, error.message
        for one in error.errors:  # each names its line and key, in file order
            assert one.line is not None and one.key, one.message
        assert [e.line for e in error.errors] == sorted(e.line or 0 for e in error.errors)
