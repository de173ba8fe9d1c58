"""Reading an environment's secrets from its source (a dotenv file, a prefix, a command) and
the per-project key of their fingerprints."""

from __future__ import annotations

import os
import secrets as random_bytes
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.config import SecretsSource
from shipyard.core.secrets import Finding, Fingerprinter, read_dotenv, unreadable_lines
from shipyard.errors import SecretsError

COMMAND_TIMEOUT = 60.0
KEY_FILE = Path(".shipyard") / "fingerprint.key"


@dataclass(frozen=True)
class LoadedSecrets:
    """An environment's values, where they came from, and the lines that could not be read."""

    values: dict[str, str]
    location: str
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)


def load_secrets(
    source: SecretsSource | None, project_dir: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """The values and a printable location; an unreadable line is an error naming it."""
    return readable(read_secrets(source, project_dir, environ))


def readable(loaded: LoadedSecrets) -> tuple[dict[str, str], str]:
    """The values of a source that was read, or SecretsError naming its unreadable lines."""
    if loaded.problems:
        raise unreadable_lines(loaded.location, loaded.problems)
    return loaded.values, loaded.location


def read_secrets(
    source: SecretsSource | None,
    project_dir: Path,
    environ: Mapping[str, str] | None = None,
    *,
    timeout: float = COMMAND_TIMEOUT,
) -> LoadedSecrets:
    """Read a source; raise SecretsError (never holding a value) when it cannot be read."""
    environ = os.environ if environ is None else environ
    if source is None:
        return LoadedSecrets({}, "(no secrets source)")
    if source.kind == "dotenv":
        file = project_dir / source.value
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretsError(
                f"secrets file {source.value} not found in {project_dir}",
                hint="create it (KEY=value lines) or change the environment's secrets source",
            ) from None
        except UnicodeDecodeError as exc:
            line = exc.object.count(b"\n", 0, exc.start) + 1
            raise SecretsError(
                f"{source.value}:{line}: not valid UTF-8",
                hint="save the secrets file as UTF-8",
            ) from None
        except OSError as exc:
            raise SecretsError(
                f"cannot read secrets file {source.value}: {exc.strerror or exc}"
            ) from None
        dotenv = read_dotenv(text, source.value)
        return LoadedSecrets(dotenv.values, source.value, dotenv.lines, dotenv.problems)
    if source.kind == "env_prefix":
        prefix = source.value
        values = {k[len(prefix) :]: v for k, v in environ.items() if k.startswith(prefix)}
        return LoadedSecrets(values, f"environment variables {prefix}*")
    location = f"command `{source.value}`"
    try:
        done = subprocess.run(
            source.value,
            shell=True,
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(environ),
        )
    except subprocess.TimeoutExpired:
        raise SecretsError(
            f"secrets {location} timed out after {timeout:g}s",
            hint="run it by hand to see why it hangs (a password prompt?)",
        ) from None
    except OSError as exc:
        raise SecretsError(f"secrets {location} could not run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        # Its output could echo a value, so none of it is shown.
        raise SecretsError(
            f"secrets {location} exited with code {done.returncode}",
            hint="run it by hand to see why (its output is not shown: it may hold secrets)",
        )
    dotenv = read_dotenv(done.stdout, f"the output of {location}")
    return LoadedSecrets(dotenv.values, location, dotenv.lines, dotenv.problems)


def fingerprinter(project_dir: Path) -> Fingerprinter:
    """Fingerprints under the project's key (`.shipyard/fingerprint.key`, mode 0600).

    The key is made on first use; fingerprints are comparable only within one project
    (and only while the key is kept), which is all they are for.
    """
    return Fingerprinter(_key(project_dir / KEY_FILE))


def _key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _new_key(path)
    except OSError as exc:
        raise SecretsError(
            f"cannot read the fingerprint key {path}: {exc.strerror or exc}",
            hint="it must be a regular file readable by you (mode 0600)",
        ) from None
    with os.fdopen(fd, "rb") as file:
        if os.fstat(file.fileno()).st_mode & 0o077:
            os.fchmod(file.fileno(), 0o600)  # private again: a copy may have widened it
        key = file.read()
    if len(key) < 16:
        raise SecretsError(
            f"the fingerprint key {path} is damaged ({len(key)} bytes)",
            hint="delete it: a new one is made (fingerprints printed before will change)",
        )
    return key


def _new_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = random_bytes.token_bytes(32)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key)
    try:
        os.link(staging, path)  # fails if another process made one first: use theirs
    except FileExistsError:
        return _key(path)
    finally:
        staging.unlink(missing_ok=True)
    return key
