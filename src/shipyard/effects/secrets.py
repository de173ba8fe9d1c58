"""Reading an environment's secrets from its source: a dotenv file, a prefix, a command."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from shipyard.config import SecretsSource
from shipyard.core.secrets import parse_dotenv
from shipyard.errors import SecretsError


def load_secrets(
    source: SecretsSource | None, project_dir: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """The values and a printable location; never puts a value in an error."""
    environ = os.environ if environ is None else environ
    if source is None:
        return {}, "(no secrets source)"
    if source.kind == "dotenv":
        file = project_dir / source.value
        try:
            return parse_dotenv(file.read_text(encoding="utf-8"), source.value), source.value
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
    if source.kind == "env_prefix":
        prefix = source.value
        values = {k[len(prefix) :]: v for k, v in environ.items() if k.startswith(prefix)}
        return values, f"environment variables {prefix}*"
    try:
        done = subprocess.run(
            source.value,
            shell=True,
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretsError(f"secrets command `{source.value}` timed out after 60s") from None
    if done.returncode != 0:
        # stderr could echo a value, so only its size is reported.
        raise SecretsError(
            f"secrets command `{source.value}` exited with code {done.returncode}",
            hint="run it by hand to see why (its output is not shown: it may hold secrets)",
        )
    location = f"command `{source.value}`"
    return parse_dotenv(done.stdout, f"the output of {location}"), location
