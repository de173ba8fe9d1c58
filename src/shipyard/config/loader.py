"""Load `shipyard.toml` into a `Config`, or fail with an error that names file, line and key.

tomllib gives values but no positions, so `_LineIndex` scans the text once and
remembers on which line each table header and key is written; every error then
points at the line of the closest key it knows about.

Validation reports every error it can find, in file order: a bad value is recorded and
reading goes on with the default; an error that leaves a part (a component, an
environment, a rule) unusable skips that part, and later checks ignore what was skipped
instead of reporting follow-on errors about it.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from shipyard.config.models import (
    MIGRATION_TOOLS,
    OVERRIDABLE,
    ROUTER_KINDS,
    TARGETS,
    TEST_STAGES,
    TIERS,
    Component,
    Config,
    ContractMode,
    Environment,
    HealthCheck,
    Migrations,
    Project,
    PythonEnv,
    Rolling,
    RouterKind,
    SecretRule,
    SecretsSource,
    TestStage,
    Tier,
    with_overrides,
)
from shipyard.core.durations import parse_duration
from shipyard.core.graph import Graph
from shipyard.errors import ConfigError

CONFIG_FILE = "shipyard.toml"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
T = TypeVar("T")


class _LineIndex:
    """Maps dotted key paths (`components.admin.port`) to the line that writes them."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")
    _INLINE_KEY = re.compile(r"([A-Za-z0-9_\-]+)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = self._clean(header.group(1))
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if not key:
                continue
            path = f"{table}.{self._clean(key.group(1))}" if table else self._clean(key.group(1))
            self.lines.setdefault(path, number)
            rest = line[key.end() :]
            if "{" in rest:  # inline table: its keys are on this line too
                for inner in self._INLINE_KEY.finditer(rest):
                    self.lines.setdefault(f"{path}.{inner.group(1)}", number)

    @staticmethod
    def _clean(dotted: str) -> str:
        return ".".join(part.strip().strip("\"'") for part in dotted.split("."))

    def line_of(self, key: str) -> int | None:
        """The line of `key`, or of its closest written parent."""
        parts = key.split(".")
        while parts:
            found = self.lines.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return None


class _Skip(Exception):
    """Abandons the part being read; its error is already recorded."""


class _Reader:
    """Reads typed values out of the parsed TOML, recording located ConfigErrors."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.index = _LineIndex(text)
        self.errors: list[ConfigError] = []
        # Parts skipped because of an error: references to them are not errors again.
        self.skipped_components: set[str] = set()
        self.skipped_environments: set[str] = set()

    def report(self, key: str, message: str, hint: str | None = None) -> None:
        self.errors.append(self.error(key, message, hint))

    @contextmanager
    def part(self) -> Iterator[None]:
        """Read one part; an error inside it is recorded and the rest of it skipped."""
        try:
            yield
        except ConfigError as exc:
            self.errors.append(exc)
        except _Skip:
            pass

    def attempt(self, read: Callable[[], T], fallback: T) -> T:
        """`read()`, or `fallback` when it failed (its error is recorded)."""
        with self.part():
            return read()
        return fallback

    def raise_errors(self) -> None:
        """Raise what was found, in file order: one error as is, several as one."""
        found = list({e.message: e for e in self.errors}.values())
        if not found:
            return
        found.sort(key=lambda e: (e.line is None, e.line or 0))
        if len(found) == 1:
            raise found[0]
        raise ConfigError.several(found, hint="fix each of them, then run `shipyard validate`")

    def error(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            f"{key}: {message}" if key else message,
            file=str(self.file),
            line=self.index.line_of(key),
            key=key,
            hint=hint,
        )

    def table(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(_join(path, key), f"expected a table, got {_show(value)}")
        return value

    def optional_table(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        """Like `table`, but a value that is not a table is recorded and read as empty."""
        return self.attempt(lambda: self.table(data, key, path), {})

    def check_keys(
        self, data: Mapping[str, Any], allowed: set[str] | frozenset[str], path: str
    ) -> None:
        # Typo'd keys are the most common config error: name the key and the closest valid one.
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                hint = f"did you mean `{close[0]}`?" if close else None
                valid = ", ".join(sorted(allowed))
                self.report(
                    _join(path, key),
                    f"unknown key `{key}`",
                    hint=hint or f"valid keys here: {valid}",
                )

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        convert: Callable[[Any], T],
        default: T,
    ) -> T:
        if key not in data:
            return default
        try:
            return convert(data[key])
        except ValueError as exc:
            self.report(_join(path, key), str(exc))
            return default

    def required(
        self, data: Mapping[str, Any], key: str, path: str, convert: Callable[[Any], T]
    ) -> T:
        """The value, or skip the part being read: nothing sensible stands in for it."""
        if key not in data:
            self.report(_join(path, key), "is required", hint=f"add `{key} = ...`")
            raise _Skip
        try:
            return convert(data[key])
        except ValueError as exc:
            self.report(_join(path, key), str(exc))
            raise _Skip from None


# Converters: each raises ValueError with a message that says what was expected.


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {_show(value)}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected an integer from 1 to 65535, got {_show(value)}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {_show(value)}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_show(value)}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected a non-negative number, got {_show(value)}")
    return float(value)


def _lock_ttl(value: Any) -> float:
    seconds = _duration(value)
    if seconds < 3.0:
        # The lock is renewed every third of it: under 1 s between renewals, a busy machine
        # could let a live deploy's lease lapse and the agent would undo it.
        raise ValueError("must be at least 3s")
    return seconds


def _duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)  # a bare number means seconds
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 200ms, 2s or 5m, got {_show(value)}")
    return parse_duration(value)


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of strings, got {_show(value)}")
    return tuple(value)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"expected a table of strings, got {_show(value)}")
    return dict(value)


def _statuses(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in items):
        raise ValueError(f"expected an HTTP status or a list of them, got {_show(value)}")
    return tuple(items)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {_show(value)}")
        return cast(str, value)

    return convert


# Sections.

_PROJECT_KEYS = {
    "name",
    "default_environment",
    "state",
    "keep_releases",
    "global_inputs",
    "max_parallel",
    "lock_ttl",
}
_ENV_KEYS = {
    "target",
    "router",
    "root",
    "hosts",
    "tier",
    "protected",
    "secrets",
    "rolling",
    "components",
    "tests",
}
_COMPONENT_KEYS = {
    "path",
    "inputs",
    "depends_on",
    "build",
    "artifact",
    "start",
    "port",
    "secrets",
    "health",
    "migrations",
    "tests",
    "contract",
    "contract_mode",
    "env",
    "stop_timeout",
    "warm_for",
    "drain_timeout",
    "python",
}
_HEALTH_KEYS = {"http", "tcp", "command", "status", "interval", "timeout", "deadline", "stable_for"}
_MIGRATION_KEYS = {"tool", "dir", "config", "manage", "up", "down", "current"}
_PYTHON_KEYS = {"requirements", "project", "version"}
_PYTHON_VERSION = re.compile(r"^3(\.[0-9]+){0,2}$")
_RULE_KEYS = {
    "format",
    "schemes",
    "production_forbid_hosts",
    "min_length",
    "min_entropy",
    "pattern",
    "production",
    "other",
    "min",
    "max",
}
_SECRET_FORMATS = ("url", "port", "int", "bool", "email", "json", "base64", "pem", "regex")


def load_config(project_dir: Path) -> Config:
    """Read `<project_dir>/shipyard.toml` and return the validated config."""
    file = project_dir / CONFIG_FILE
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no {CONFIG_FILE} in {project_dir}",
            file=str(file),
            hint="run shipyard from the project folder or pass -C DIR",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", file=str(file)) from None
    return parse_config(decode_config(raw, file), file=file, root=project_dir)


def decode_config(raw: bytes, file: Path) -> str:
    """The text of a shipyard.toml, or an error naming the line of its first non-UTF-8 byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {column}",
            file=str(file),
            line=line,
            hint="TOML files are UTF-8: save it as UTF-8 in your editor, or convert it with "
            "`iconv -f latin1 -t utf-8` (if it was Latin-1)",
        ) from None


def parse_config(
    text: str,
    *,
    file: Path,
    root: Path,
    folder_exists: Callable[[str], bool] | None = None,
    file_exists: Callable[[str], bool] | None = None,
) -> Config:
    """Validate TOML text as a shipyard.toml; `root` is where component paths resolve.

    `folder_exists` and `file_exists` answer whether a path relative to `root` is there
    (default: on disk; for a commit, in its tree)."""
    exists = folder_exists or (lambda folder: (root / folder).is_dir())
    is_file = file_exists or (lambda name: (root / name).is_file())
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"at line (\d+)", message)
        raise ConfigError(
            f"invalid TOML: {message}",
            file=str(file),
            line=int(match.group(1)) if match else None,
            hint="fix the syntax at that line (strings need quotes, tables need [brackets])",
        ) from None

    r = _Reader(file, text)
    r.check_keys(data, {"project", "environments", "components", "secrets"}, "")
    no_components: dict[str, Component] = {}
    components = r.attempt(
        lambda: _components(r, r.table(data, "components", ""), root, exists, is_file),
        no_components,
    )
    unreadable: dict[str, Environment] | None = None
    read_environments = r.attempt(
        lambda: _environments(r, r.table(data, "environments", ""), components), unreadable
    )
    environments = read_environments or {}
    no_project: Project | None = None
    project = r.attempt(
        lambda: _project(r, r.table(data, "project", ""), read_environments), no_project
    )
    no_rules: dict[str, SecretRule] = {}
    rules = r.attempt(lambda: _secret_rules(r, r.table(data, "secrets", "")), no_rules)
    with r.part():
        _check_graph(r, components)
    for env in environments.values():
        with r.part():
            _check_ports(r, env, components)
    r.raise_errors()
    assert project is not None, "a project that failed to read recorded an error"
    return Config(
        root=root,
        file=file,
        project=project,
        environments=environments,
        components=components,
        secret_rules=rules,
    )


def _project(r: _Reader, data: dict[str, Any], envs: dict[str, Environment] | None) -> Project:
    """The [project] table; `envs` is None when [environments] itself could not be read."""
    r.check_keys(data, _PROJECT_KEYS, "project")
    names = sorted({*(envs or {}), *r.skipped_environments})
    if envs is not None and not names:
        raise r.error(
            "environments",
            "at least one environment is required",
            hint='add [environments.local] with target = "local"',
        )
    default_env = r.get(data, "default_environment", "project", _str, (names or [""])[0])
    if envs is not None and default_env not in names:
        r.report(
            "project.default_environment",
            f"unknown environment {default_env!r}",
            hint=f"defined environments: {', '.join(names)}",
        )
    return Project(
        name=r.required(data, "name", "project", _str),
        default_environment=default_env,
        state=r.get(data, "state", "project", _str, Project.state),
        keep_releases=r.get(data, "keep_releases", "project", _positive_int, 5),
        global_inputs=r.get(data, "global_inputs", "project", _str_list, ("shipyard.toml",)),
        max_parallel=r.get(data, "max_parallel", "project", _positive_int, 4),
        lock_ttl=r.get(data, "lock_ttl", "project", _lock_ttl, Project.lock_ttl),
    )


def _components(
    r: _Reader,
    data: dict[str, Any],
    root: Path,
    exists: Callable[[str], bool],
    is_file: Callable[[str], bool],
) -> dict[str, Component]:
    if not data:
        raise r.error(
            "components",
            "at least one component is required",
            hint="add a [components.NAME] table with path and start",
        )
    result: dict[str, Component] = {}
    for name, table in data.items():
        path = f"components.{name}"
        with r.part():
            if not _NAME.match(name):
                r.report(
                    path,
                    f"invalid component name {name!r}",
                    hint="use lowercase letters, digits, - and _, starting with a letter",
                )
            if not isinstance(table, dict):
                raise r.error(path, f"expected a table, got {_show(table)}")
            result[name] = _component(r, name, table, root, exists, is_file)
        if name not in result:
            r.skipped_components.add(name)
    return result


def _component(
    r: _Reader,
    name: str,
    t: dict[str, Any],
    root: Path,
    exists: Callable[[str], bool],
    is_file: Callable[[str], bool],
) -> Component:
    path = f"components.{name}"
    r.check_keys(t, _COMPONENT_KEYS, path)
    folder = r.attempt(lambda: r.required(t, "path", path, _str), None)
    if folder is not None and not exists(folder):
        r.report(
            f"{path}.path",
            f"folder {folder!r} does not exist in {root}",
            hint="create it or fix the path (it is relative to the project folder)",
        )
    start = r.attempt(lambda: r.required(t, "start", path, _str), None)
    migrations = None
    if "migrations" in t:
        migrations = r.attempt(
            lambda: _migrations(r, r.table(t, "migrations", path), f"{path}.migrations"), None
        )
    health = r.attempt(lambda: _health(r, t, path), HealthCheck(tcp="port" in t))
    python = None
    if "python" in t:
        python = r.attempt(
            lambda: _python(
                r,
                r.table(t, "python", path),
                f"{path}.python",
                root,
                folder or "",
                # Its files are looked up only when the folder is there (else: one error).
                is_file if folder is not None and exists(folder) else None,
            ),
            None,
        )
    component = Component(
        name=name,
        path=folder or "",
        start=start or "",
        inputs=r.get(t, "inputs", path, _str_list, (f"{(folder or '').rstrip('/')}/**",)),
        depends_on=r.get(t, "depends_on", path, _str_list, ()),
        build=r.get(t, "build", path, _str, cast(str | None, None)),
        artifact=r.get(t, "artifact", path, _str, "."),
        port=r.get(t, "port", path, _port, cast(int | None, None)),
        secrets=r.get(t, "secrets", path, _str_list, ()),
        health=health,
        migrations=migrations,
        tests=r.get(t, "tests", path, _str_map, {}),
        contract=r.get(t, "contract", path, _str_list, ()),
        contract_mode=cast(
            ContractMode,
            r.get(t, "contract_mode", path, _one_of("strict", "semantic"), "strict"),
        ),
        env=r.get(t, "env", path, _str_map, {}),
        stop_timeout=r.get(t, "stop_timeout", path, _duration, 10.0),
        warm_for=r.get(t, "warm_for", path, _duration, 30.0),
        drain_timeout=r.get(t, "drain_timeout", path, _duration, 30.0),
        python=python,
    )
    if folder is None or start is None:
        raise _Skip  # read to the end for its other errors, but unusable
    return component


def _health(r: _Reader, t: dict[str, Any], path: str) -> HealthCheck:
    if "health" not in t:
        # A component with a port is at least expected to accept connections on it.
        return HealthCheck(tcp="port" in t)
    h = r.table(t, "health", path)
    hp = f"{path}.health"
    r.check_keys(h, _HEALTH_KEYS, hp)
    kinds = [k for k in ("http", "tcp", "command") if k in h]
    if len(kinds) > 1:
        r.report(hp, f"choose one probe, not {' and '.join(kinds)}")
    http = r.get(h, "http", hp, _str, cast(str | None, None))
    if http is not None and not http.startswith("/"):
        r.report(f"{hp}.http", f'expected a path starting with "/", got "{http}"')
    check = HealthCheck(
        http=http,
        tcp=r.get(h, "tcp", hp, _bool, False),
        command=r.get(h, "command", hp, _str, cast(str | None, None)),
        status=r.get(h, "status", hp, _statuses, ()),
        interval=r.get(h, "interval", hp, _duration, 0.2),
        timeout=r.get(h, "timeout", hp, _duration, 2.0),
        deadline=r.get(h, "deadline", hp, _duration, 30.0),
        stable_for=r.get(h, "stable_for", hp, _duration, 1.0),
    )
    if check.kind in ("http", "tcp") and "port" not in t:
        r.report(hp, f"a {check.kind} health check needs the component's `port`")
    return check


def _python(
    r: _Reader,
    p: dict[str, Any],
    path: str,
    root: Path,
    relative: str,
    is_file: Callable[[str], bool] | None,
) -> PythonEnv:
    """The `python` table; the files it names are looked up where the folder is (on disk,
    or in a commit's tree)."""
    folder = root / relative

    def there(*parts: str) -> bool:
        if is_file is None:
            return True
        return is_file("/".join(x.strip("/") for x in (relative, *parts) if x not in ("", ".")))

    r.check_keys(p, _PYTHON_KEYS, path)
    kinds = [k for k in ("requirements", "project") if k in p]
    if len(kinds) != 1:
        raise r.error(
            path,
            "choose one of `requirements` and `project`"
            if kinds
            else "needs `requirements` or `project`",
            hint='python = { requirements = "requirements.txt" } (a pinned requirements file) '
            'or python = { project = "." } (a folder with pyproject.toml and uv.lock)',
        )
    env = PythonEnv(
        requirements=r.get(p, "requirements", path, _str, cast(str | None, None)),
        project=r.get(p, "project", path, _str, cast(str | None, None)),
        version=r.get(p, "version", path, _str, cast(str | None, None)),
    )
    if env.version is not None and not _PYTHON_VERSION.match(env.version):
        r.report(
            f"{path}.version",
            f'expected a Python version such as "3.12", got {_show(env.version)}',
        )
    named = env.requirements if env.requirements is not None else env.project
    if named is not None and (named.startswith("/") or ".." in Path(named).parts):
        r.report(
            f"{path}.{kinds[0]}",
            f"{named!r} is outside the component's folder",
            hint="give a path relative to the component's folder, inside it",
        )
    elif env.requirements is not None:
        if not there(env.requirements):
            r.report(
                f"{path}.requirements",
                f"file {env.requirements!r} does not exist in {folder}",
                hint="create it (`pip freeze > requirements.txt` pins what you run) "
                "or fix the path (relative to the component's folder)",
            )
    elif env.project is not None:
        for needed, how in (("pyproject.toml", "`uv init`"), ("uv.lock", "`uv lock`")):
            if not there(env.project, needed):
                r.report(
                    f"{path}.project",
                    f"{needed} is missing in {folder / env.project}",
                    hint=f"create it ({how} in that folder) and commit it",
                )
    return env


def _migrations(r: _Reader, m: dict[str, Any], path: str) -> Migrations:
    r.check_keys(m, _MIGRATION_KEYS, path)
    tool = r.required(m, "tool", path, _one_of(*MIGRATION_TOOLS))
    result = Migrations(
        tool=cast(Any, tool),
        dir=r.get(m, "dir", path, _str, cast(str | None, None)),
        config=r.get(m, "config", path, _str, cast(str | None, None)),
        manage=r.get(m, "manage", path, _str, cast(str | None, None)),
        up=r.get(m, "up", path, _str, cast(str | None, None)),
        down=r.get(m, "down", path, _str, cast(str | None, None)),
        current=r.get(m, "current", path, _str, cast(str | None, None)),
    )
    needed = {
        "sql": ("dir",),
        "alembic": ("config",),
        "django": (),
        "command": ("up", "current"),
    }[tool]
    for key in needed:
        if getattr(result, key) is None:
            r.report(f"{path}.{key}", f"is required when tool = {tool!r}")
    return result


def _environments(
    r: _Reader, data: dict[str, Any], components: dict[str, Component]
) -> dict[str, Environment]:
    result: dict[str, Environment] = {}
    for name, table in data.items():
        path = f"environments.{name}"
        with r.part():
            if not _NAME.match(name):
                r.report(
                    path,
                    f"invalid environment name {name!r}",
                    hint="use lowercase letters, digits, - and _, starting with a letter",
                )
            if not isinstance(table, dict):
                raise r.error(path, f"expected a table, got {_show(table)}")
            result[name] = _environment(r, name, table, components)
        if name not in result:
            r.skipped_environments.add(name)
    return result


def _infer_tier(name: str) -> Tier:
    if "prod" in name:
        return "production"
    if "stag" in name:
        return "staging"
    return "development"


def _environment(
    r: _Reader, name: str, t: dict[str, Any], components: dict[str, Component]
) -> Environment:
    path = f"environments.{name}"
    r.check_keys(t, _ENV_KEYS, path)
    target = r.required(t, "target", path, _str)
    if target not in TARGETS:
        close = difflib.get_close_matches(target, TARGETS, n=1)
        r.report(
            f"{path}.target",
            f"unknown target {target!r}",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"targets: {', '.join(TARGETS)}",
        )
    hosts: tuple[str, ...] = r.get(t, "hosts", path, _str_list, ())
    if target == "ssh" and not hosts:
        r.report(f"{path}.hosts", 'the ssh target needs hosts = ["user@host:22", ...]')
    return Environment(
        name=name,
        target=cast(Any, target),
        root=r.get(t, "root", path, _str, f".shipyard/{name}"),
        tier=r.get(
            t, "tier", path, cast(Callable[[Any], Tier], _one_of(*TIERS)), _infer_tier(name)
        ),
        hosts=hosts,
        protected=r.get(t, "protected", path, _bool, False),
        secrets=r.attempt(lambda: _secrets_source(r, t, path), None),
        rolling=r.attempt(lambda: _rolling(r, t, path), Rolling()),
        tests=r.get(
            t, "tests", path, cast(Callable[[Any], TestStage], _one_of(*TEST_STAGES)), "none"
        ),
        overrides=_overrides(r, r.optional_table(t, "components", path), components, path),
        router=r.get(
            t,
            "router",
            path,
            cast(Callable[[Any], RouterKind], _one_of(*ROUTER_KINDS)),
            "builtin",
        ),
    )


def _secrets_source(r: _Reader, t: dict[str, Any], path: str) -> SecretsSource | None:
    if "secrets" not in t:
        return None
    s = r.table(t, "secrets", path)
    sp = f"{path}.secrets"
    r.check_keys(s, {"dotenv", "env_prefix", "command"}, sp)
    if len(s) != 1:
        raise r.error(
            sp,
            "expected exactly one of dotenv, env_prefix or command",
            hint='for example secrets = { dotenv = ".env.local" }',
        )
    kind = next(iter(s))
    return SecretsSource(kind=cast(Any, kind), value=r.get(s, kind, sp, _str, ""))


def _rolling(r: _Reader, t: dict[str, Any], path: str) -> Rolling:
    if "rolling" not in t:
        return Rolling()
    roll = r.table(t, "rolling", path)
    rp = f"{path}.rolling"
    r.check_keys(roll, {"batch", "max_fail"}, rp)

    def batch(value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return str(value)
        if isinstance(value, str) and re.fullmatch(r"(100|[1-9]\d?)%", value):
            return value
        raise ValueError(f'expected a host count or a percentage like "50%", got {_show(value)}')

    return Rolling(
        batch=r.get(roll, "batch", rp, batch, "100%"),
        max_fail=r.get(roll, "max_fail", rp, lambda v: _positive_int(v + 1) - 1, 0),
    )


def _overrides(
    r: _Reader, data: dict[str, Any], components: dict[str, Component], env_path: str
) -> dict[str, Component]:
    result: dict[str, Component] = {}
    for name, table in data.items():
        with r.part():
            result[name] = _override(r, name, table, components, env_path)
    return result


def _override(
    r: _Reader, name: str, table: Any, components: dict[str, Component], env_path: str
) -> Component:
    path = f"{env_path}.components.{name}"
    if name not in components:
        if name in r.skipped_components:
            raise _Skip
        close = difflib.get_close_matches(name, sorted(components), n=1)
        raise r.error(
            path,
            f"unknown component {name!r}",
            hint=f"did you mean {close[0]!r}?" if close else None,
        )
    if not isinstance(table, dict):
        raise r.error(path, f"expected a table, got {_show(table)}")
    r.check_keys(table, OVERRIDABLE, path)
    base = components[name]
    changes: dict[str, object] = {}
    if "port" in table:
        changes["port"] = r.get(table, "port", path, _port, base.port)
    if "start" in table:
        changes["start"] = r.get(table, "start", path, _str, base.start)
    if "env" in table:
        changes["env"] = {**base.env, **r.get(table, "env", path, _str_map, {})}
    for key in ("stop_timeout", "warm_for", "drain_timeout"):
        if key in table:
            changes[key] = r.get(table, key, path, _duration, getattr(base, key))
    if "health" in table:
        changes["health"] = r.attempt(
            lambda: _health(r, {**table, "port": base.port}, path), base.health
        )
    return with_overrides(base, **changes)


def _secret_rules(r: _Reader, data: dict[str, Any]) -> dict[str, SecretRule]:
    r.check_keys(data, {"rules"}, "secrets")
    rules = r.table(data, "rules", "secrets")
    result: dict[str, SecretRule] = {}
    for name, table in rules.items():
        with r.part():
            result[name] = _secret_rule(r, name, table)
    return result


def _secret_rule(r: _Reader, name: str, table: Any) -> SecretRule:
    path = f"secrets.rules.{name}"
    if not isinstance(table, dict):
        raise r.error(path, f"expected a table, got {_show(table)}")
    r.check_keys(table, _RULE_KEYS, path)
    for key in ("pattern", "production", "other"):
        if key in table:
            try:
                re.compile(r.get(table, key, path, _str, ""))
            except re.error as exc:
                r.report(f"{path}.{key}", f"invalid regular expression: {exc}")
    if table.get("format") == "regex" and "pattern" not in table:
        r.report(f"{path}.format", 'format "regex" needs a pattern = "^…$" to match')
    return SecretRule(
        name=name,
        format=r.get(table, "format", path, _one_of(*_SECRET_FORMATS), cast(str | None, None)),
        schemes=r.get(table, "schemes", path, _str_list, ()),
        production_forbid_hosts=r.get(table, "production_forbid_hosts", path, _str_list, ()),
        min_length=r.get(table, "min_length", path, _positive_int, cast(int | None, None)),
        min_entropy=r.get(table, "min_entropy", path, _number, cast(float | None, None)),
        pattern=r.get(table, "pattern", path, _str, cast(str | None, None)),
        production=r.get(table, "production", path, _str, cast(str | None, None)),
        other=r.get(table, "other", path, _str, cast(str | None, None)),
        min=r.get(table, "min", path, _integer, cast(int | None, None)),
        max=r.get(table, "max", path, _integer, cast(int | None, None)),
    )


def _check_graph(r: _Reader, components: dict[str, Component]) -> None:
    edges: dict[str, tuple[str, ...]] = {}
    for comp in components.values():
        for dep in comp.depends_on:
            if dep not in components and dep not in r.skipped_components:
                close = difflib.get_close_matches(dep, sorted(components), n=1)
                r.report(
                    f"components.{comp.name}.depends_on",
                    f"component {comp.name!r} depends on unknown component {dep!r}",
                    hint=f"did you mean {close[0]!r}?"
                    if close
                    else f"components: {', '.join(sorted(components))}",
                )
        edges[comp.name] = tuple(dep for dep in comp.depends_on if dep in components)
    cycle = Graph(edges).find_cycle()
    if cycle:
        r.report(
            f"components.{cycle[0]}.depends_on",
            f"dependency cycle: {' → '.join(cycle)}",
            hint="remove one of these depends_on entries",
        )


def _check_ports(r: _Reader, env: Environment, components: dict[str, Component]) -> None:
    seen: dict[int, str] = {}
    for name in components:  # file order: the later of two clashing components is reported
        port = env.overrides.get(name, components[name]).port
        if port is None:
            continue
        if port in seen:
            first = seen[port]
            # Point at the environment's override when there is one: that is what clashes.
            culprit = first if first in env.overrides and name not in env.overrides else name
            where = (
                f"environments.{env.name}.components.{culprit}.port"
                if culprit in env.overrides
                else f"components.{culprit}.port"
            )
            r.report(
                where,
                f"components {' and '.join(repr(n) for n in sorted((first, name)))} "
                f"both use port {port} "
                f"in environment {env.name!r}",
                hint=f"give one of them another port (override it under "
                f"[environments.{env.name}.components.{culprit}])",
            )
            continue
        seen[port] = name
