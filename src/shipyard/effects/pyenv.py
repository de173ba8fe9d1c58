"""Python environments of components: relocatable, built once per lock, shared by hard links.

A component with `python = {…}` gets an environment built from its requirements file (or
its uv project's lock) by **uv** (`uv venv --relocatable`, then `uv pip install` or
`uv sync --frozen`), or by pip when uv cannot run here. Environments live in
`<project>/.shipyard/pyenvs/<digest>/`, where the digest covers the lock's content, the
interpreter's version and platform and the tool: an unchanged lock never reinstalls, and
components or releases with the same lock share one environment, hard-linked into their
artifacts (`.venv`). Wheels are cached in `.shipyard/cache/` (or where UV_CACHE_DIR or
PIP_CACHE_DIR say), so a rebuild is offline-fast.

uv is given the package index settings pip has on this machine (pip's configuration
files and `PIP_*` variables), so it installs from the same places.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shipyard.config import PythonEnv
from shipyard.effects.artifacts import build_path_references
from shipyard.effects.process import child_environment, child_path, run_command
from shipyard.errors import DeploymentFailed

ENV_FORMAT = 1
VENV = ".venv"  # where an artifact (and so each release) holds its environment
Tool = Literal["uv", "pip"]

_PROBE = (
    "import json, platform, sys, sysconfig; print(json.dumps([sys.executable, "
    "'%d.%d.%d' % sys.version_info[:3], sys.implementation.name, sysconfig.get_platform(), "
    "'-'.join(platform.libc_ver())]))"
)
# Lines of a requirements file that make the environment depend on more than its content.
_INCLUDES = re.compile(r"^\s*(-r|-c|-e|--requirement|--constraint|--editable)\b")
# The launcher uv writes into a relocatable environment's scripts: the interpreter next to
# the script, wherever the environment is.
RELOCATABLE_SHEBANG = (
    "#!/bin/sh\n"
    '\'\'\'exec\' "$(dirname -- "$(realpath -- "$0")")"/\'python\' "$0" "$@"\n'
    "' '''\n"
)


@dataclass(frozen=True)
class Interpreter:
    """A Python found on this machine (never shipyard's own)."""

    executable: str
    version: str  # 3.11.7
    platform: str  # cpython-linux-x86_64-glibc-2.36


def find_interpreter(version: str | None, uv: str | None = None) -> Interpreter | None:
    """The system's `python3` (or `python3.X` for `version`), on PATH without shipyard's venv;
    else one uv knows of (it never downloads one). None when there is none."""
    path = child_path()
    wanted = version.split(".") if version else []
    names = [f"python{'.'.join(wanted[:2])}"] if len(wanted) >= 2 else []
    names.append("python3")
    candidates = [found for name in names if (found := shutil.which(name, path=path))]
    if uv is not None and version:
        done = _run([uv, "python", "find", "--no-project", version])
        if done is not None:
            candidates.append(done.strip())
    for executable in candidates:
        described = _describe(executable)
        if described is not None and described.version.split(".")[: len(wanted)] == wanted:
            return described
    return None


def _describe(executable: str) -> Interpreter | None:
    out = _run([executable, "-I", "-c", _PROBE])
    if out is None:
        return None
    try:
        real, version, implementation, platform, libc = json.loads(out)
    except ValueError:
        return None
    return Interpreter(str(real), str(version), f"{implementation}-{platform}-{libc}")


def _run(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=60,
            env=child_environment(),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def find_uv() -> str | None:
    """The uv executable installed with shipyard (PyPI package `uv`), or one on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv", path=child_path())


def env_digest(spec: PythonEnv, lock_id: str, interpreter: Interpreter, tool: Tool) -> str:
    """What an environment is a function of: the lock's content (its git blob id), the
    kind of lock, the interpreter's version and platform, and the tool that installs it."""
    payload = {
        "format": ENV_FORMAT,
        "kind": "requirements" if spec.requirements is not None else "uv-project",
        "lock": lock_id,
        "python": interpreter.version,
        "platform": interpreter.platform,
        "tool": tool,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def git_blob_id(data: bytes) -> str:
    """The id git gives a file with this content (so a dirty build digests like a commit)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# --- pip's index settings, for uv ----------------------------------------------------------


@dataclass(frozen=True)
class IndexSettings:
    """Where pip on this machine installs from (its config files and PIP_* variables)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    constraints: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None

    def uv_args(self, *, constraints: bool = True) -> list[str]:
        """The settings that are not index URLs as uv options (see `uv_environment`)."""
        args: list[str] = []
        for link in self.find_links:
            args += ["--find-links", link]
        if self.no_index:
            args.append("--no-index")
        if self.extra_index_urls or self.find_links:
            # pip takes the best version from every index; uv's default stops at the first
            # index that has the package at all.
            args += ["--index-strategy", "unsafe-best-match"]
        for host in self.trusted_hosts:
            args += ["--allow-insecure-host", host]
        if constraints:
            for file in self.constraints:
                args += ["--constraint", file]
        return args

    def uv_environment(self) -> dict[str, str]:
        """The index URLs (and the CA file) as uv's variables. An index URL often carries a
        token (`https://user:token@…`): on the command line it would be in `ps` and in the
        error that shows a failed command."""
        env = {"SSL_CERT_FILE": self.cert} if self.cert else {}
        if self.index_url:
            env["UV_INDEX_URL"] = self.index_url
        if self.extra_index_urls:
            env["UV_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)  # uv: space-separated
        return env


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in the order pip reads them (a later one wins)."""
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(":") if d]
    files.append(Path("/etc/pip.conf"))
    home = Path(environ.get("HOME") or Path.home())
    files.append(home / ".pip" / "pip.conf")
    files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return files


def pip_index_settings(
    environ: Mapping[str, str] | None = None, files: Sequence[Path] | None = None
) -> IndexSettings:
    """What pip would use: [global] then [install] of each config file, then PIP_* variables."""
    environ = os.environ if environ is None else environ
    if environ.get("PIP_CONFIG_FILE") == os.devnull:
        files = []
    values: dict[str, str] = {}
    for file in pip_config_files(environ) if files is None else files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(file, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue  # pip refuses such a file loudly; here it just gives no settings
        for section in ("global", "install"):
            if parser.has_section(section):
                values.update({k.replace("_", "-"): v for k, v in parser.items(section)})
    for key, value in environ.items():
        if key.startswith("PIP_"):
            values[key[4:].lower().replace("_", "-")] = value

    def many(key: str) -> tuple[str, ...]:
        return tuple(values.get(key, "").split())

    return IndexSettings(
        index_url=values.get("index-url") or None,
        extra_index_urls=many("extra-index-url"),
        find_links=many("find-links"),
        no_index=values.get("no-index", "").lower() in ("1", "true", "yes", "on"),
        constraints=many("constraint"),
        trusted_hosts=many("trusted-host"),
        cert=values.get("cert") or None,
    )


# --- the store of environments -------------------------------------------------------------

_Run = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Built:
    """How an environment came to be: the tool that installed it, its size, the time taken."""

    tool: Tool
    seconds: float
    packages: int


class EnvStore:
    """Built environments on this machine, one folder per digest, under `.shipyard/pyenvs`."""

    def __init__(self, root: Path, cache: Path, uv: str | None, index: IndexSettings) -> None:
        self.root = root
        self.cache = cache
        self.uv = uv
        self.index = index

    @property
    def tool(self) -> Tool:
        return "uv" if self.uv else "pip"

    def path(self, digest: str) -> Path:
        return self.root / digest

    def has(self, digest: str) -> bool:
        return (self.path(digest) / "pyvenv.cfg").is_file()

    async def build(
        self,
        digest: str,
        spec: PythonEnv,
        folder: Path,
        interpreter: Interpreter,
        *,
        where: str,
        redact: Callable[[str], str],
        timeout: float,
    ) -> Built:
        """Build the environment of `spec` (paths relative to the component `folder`) under
        its digest, in a staging folder renamed into place (a half-built one never exists)."""
        started = time.monotonic()
        if spec.project is not None and self.uv is None:
            raise DeploymentFailed(
                f"{where}: a uv project (python.project) needs uv, which cannot run here",
                hint="install shipyard with its dependencies (`pip install shipyard` brings uv), "
                "or use python.requirements with a pinned requirements file",
            )
        if spec.requirements is not None:
            _refuse_includes(folder / spec.requirements, where)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=self.root))
        try:
            env = child_environment()
            env.update(self.index.uv_environment())
            # uv's cache of the user's choice (UV_CACHE_DIR), else one in .shipyard/: uv
            # hard-links from it, so it should be on the same file system as the project.
            env.setdefault("UV_CACHE_DIR", str(self.cache / "uv"))
            env["UV_PYTHON_DOWNLOADS"] = "never"
            env.setdefault("PIP_CACHE_DIR", str(self.cache / "pip"))

            async def run(command: str, cwd: Path, extra: Mapping[str, str] = {}) -> None:
                await run_command(
                    command,
                    cwd=cwd,
                    env={**env, **extra},
                    timeout=timeout,
                    where=where,
                    redact=redact,
                )

            if self.uv is not None:
                await self._build_with_uv(run, spec, folder, staging, interpreter.executable)
            else:
                await self._build_with_pip(run, spec, folder, staging, interpreter.executable)
            stuck = build_path_references(staging, staging)
            if stuck:
                raise DeploymentFailed(
                    f"{where}: the environment is not relocatable: {'; '.join(stuck[:5])}",
                    hint="a package writes absolute paths at install time; "
                    "report it with this message",
                )
            packages = sum(1 for _ in staging.glob("lib/python*/site-packages/*.dist-info"))
            try:
                os.rename(staging, self.path(digest))
            except OSError:  # built meanwhile by another deployment: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Built(self.tool, time.monotonic() - started, packages)

    async def _build_with_uv(
        self, run: _Run, spec: PythonEnv, folder: Path, staging: Path, python: str
    ) -> None:
        assert self.uv is not None
        uv = _quote(self.uv)
        await run(
            f"{uv} venv --quiet --relocatable --python {_quote(python)} {_quote(staging)}", folder
        )
        if spec.requirements is not None:
            options = " ".join(_quote(a) for a in self.index.uv_args())
            await run(
                f"{uv} pip install --python {_quote(staging / 'bin' / 'python')} "
                f"--compile-bytecode {options} -r {_quote(spec.requirements)}",
                folder,
            )
            return
        options = " ".join(_quote(a) for a in self.index.uv_args(constraints=False))
        # The project's own code is the artifact; only its locked dependencies are installed
        # (an editable install of it would point into the build folder).
        await run(
            f"{uv} sync --frozen --no-install-project --compile-bytecode "
            f"--python {_quote(staging / 'bin' / 'python')} {options}",
            folder / (spec.project or "."),
            {"UV_PROJECT_ENVIRONMENT": str(staging)},
        )

    async def _build_with_pip(
        self, run: _Run, spec: PythonEnv, folder: Path, staging: Path, python: str
    ) -> None:
        assert spec.requirements is not None
        # The interpreter's own pip installs into the venv (no pip copied into each one).
        # pip reads its own configuration: the machine's index settings apply as they are.
        await run(f"{_quote(python)} -m venv --without-pip {_quote(staging)}", folder)
        await run(
            f"{_quote(python)} -m pip --python {_quote(staging / 'bin' / 'python')} install "
            f"--quiet --no-input --disable-pip-version-check --compile "
            f"-r {_quote(spec.requirements)}",
            folder,
        )
        make_relocatable(staging)


def make_relocatable(venv: Path) -> None:
    """Make a venv made by `python -m venv` movable, as `uv venv --relocatable` does: scripts
    run the interpreter next to them, pyvenv.cfg names no path of the venv, and the
    activation scripts (which hard-code it; releases never activate) are removed."""
    bin_dir = venv / "bin"
    own = str(venv).encode()
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        if script.name.startswith("activate") or script.name == "Activate.ps1":
            script.unlink()
            continue
        data = script.read_bytes()
        first, _, rest = data.partition(b"\n")
        if first.startswith(b"#!") and own in first:
            tmp = script.with_name(f".{script.name}.tmp")
            tmp.write_bytes(RELOCATABLE_SHEBANG.encode() + rest)
            tmp.chmod(script.stat().st_mode)
            os.replace(tmp, script)
    config = venv / "pyvenv.cfg"
    lines = config.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.startswith("command")]
    config.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _refuse_includes(requirements: Path, where: str) -> None:
    try:
        lines = requirements.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentFailed(
            f"{where}: cannot read {requirements.name}: {exc}",
            hint="commit the requirements file named by python.requirements",
        ) from None
    for number, line in enumerate(lines, start=1):
        if match := _INCLUDES.match(line):
            # The option only: its argument may be a URL with a token in it.
            raise DeploymentFailed(
                f"{where}: {requirements.name}:{number}: `{match.group(1)} …` makes the "
                "environment depend on another file or folder",
                hint="the environment is cached by this file's content alone: list every "
                "package pinned in it (`uv pip compile` or `pip freeze` writes one); the "
                "component's own code is its artifact, not an editable install",
            )


def _quote(value: object) -> str:
    return shlex.quote(str(value))
