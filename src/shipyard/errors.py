"""Every error shipyard reports, and the exit code each one maps to.

Foreign exceptions (OSError, subprocess, SQLAlchemy, the agent's protocol errors)
are translated into one of these at the boundary where they happen, so adapters
only ever see this tree. Each error carries a message (what is wrong and where)
and a hint (what to do next); neither ever contains a secret value.

    ShipyardError                      base; exit 2 unless a subclass says otherwise
    ├── UsageError              (2)    bad flags or arguments; nothing was started
    ├── ConfigError             (2)    shipyard.toml is wrong: file, line and key path
    ├── GitError                (2)    a ref does not resolve, the repository is unusable
    ├── StoreError              (2)    the state store is unreachable or at a wrong schema
    ├── PreflightError          (3)    a check refused the deployment before anything changed
    │   ├── SecretsError        (3)    missing, malformed or leaked secrets
    │   └── HealthCheckError    (3)    `shipyard health` found an unhealthy component
    ├── LockedError             (4)    another deployment holds the environment's lock
    ├── DeploymentFailed        (1)    a step failed; the deployment was rolled back or left failed
    │   ├── CommandFailed       (1)    a build/test/migrate command exited non-zero
    │   └── AgentError          (1)    the host agent refused or could not do an operation
    └── RollbackFailed          (5)    undoing a deployment failed: says what is left to do
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AgentError",
    "CommandFailed",
    "ConfigError",
    "DeploymentFailed",
    "GitError",
    "HealthCheckError",
    "LockedError",
    "PreflightError",
    "RollbackFailed",
    "SecretsError",
    "ShipyardError",
    "StoreError",
    "UsageError",
]


class ShipyardError(Exception):
    """Base of every error shipyard reports to a person or a script."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def type(self) -> str:
        """The stable name scripts see in `{"error": {"type": ...}}`."""
        return type(self).__name__

    def to_dict(self) -> dict[str, str | None]:
        return {"type": self.type, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class UsageError(ShipyardError):
    """The command line asks for something that cannot be done."""


class ConfigError(ShipyardError):
    """shipyard.toml is invalid; the message names the file, line and key path."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = file or ""
        if file and line:
            where = f"{file}:{line}"
        full = f"{where}: {message}" if where else message
        super().__init__(full, hint=hint)
        self.file = file
        self.line = line
        self.key = key
        self.errors: list[ConfigError] = [self]

    @classmethod
    def several(cls, errors: Sequence[ConfigError], hint: str) -> ConfigError:
        """One error reporting all of `errors` (in the order given); it points at the first."""
        lines = []
        for error in errors:
            lines.append(f"  {error.message}")
            if error.hint:
                lines.append(f"    hint: {error.hint}")
        combined = cls(f"{len(errors)} errors:\n" + "\n".join(lines), hint=hint)
        combined.file, combined.line, combined.key = errors[0].file, errors[0].line, errors[0].key
        combined.errors = list(errors)
        return combined

    def to_dict(self) -> dict[str, Any]:
        """The error, and under `errors` each error it reports, with its file, line and key."""
        located = [
            {**ShipyardError.to_dict(e), "file": e.file, "line": e.line, "key": e.key}
            for e in self.errors
        ]
        return {**super().to_dict(), "errors": located}


class GitError(ShipyardError):
    """A git operation failed (unknown ref, not a repository, missing base)."""


class StoreError(ShipyardError):
    """The state store cannot be used."""


class PreflightError(ShipyardError):
    """A preflight check refused the deployment; nothing was changed."""

    exit_code = 3


class SecretsError(PreflightError):
    """Secrets are missing, malformed, mismatched or leaked (values never shown)."""


class HealthCheckError(PreflightError):
    """A health check run on demand found an unhealthy component."""


class LockedError(ShipyardError):
    """Another deployment holds the environment's lock."""

    exit_code = 4


class DeploymentFailed(ShipyardError):
    """A deployment failed; it was rolled back unless rollback was disabled."""

    exit_code = 1


class CommandFailed(DeploymentFailed):
    """A command exited non-zero or timed out; shows the command, code and output tail."""

    def __init__(
        self,
        command: str,
        *,
        exit_code: int | None,
        output_tail: Sequence[str] = (),
        where: str = "",
        hint: str | None = None,
    ) -> None:
        status = "timed out" if exit_code is None else f"exited with code {exit_code}"
        prefix = f"{where}: " if where else ""
        message = f"{prefix}`{command}` {status}"
        if output_tail:
            message += "\n" + "\n".join(f"  | {line}" for line in output_tail)
        super().__init__(message, hint=hint)
        self.command = command
        self.returncode = exit_code
        self.output_tail = list(output_tail)


class AgentError(DeploymentFailed):
    """The host agent refused an operation or could not be reached."""

    def __init__(self, message: str, *, code: str = "agent_error", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code


class RollbackFailed(ShipyardError):
    """Undoing a deployment failed; the message lists exactly what is left to do."""

    exit_code = 5
