"""Errors as `application/problem+json` (RFC 9457), with the CLI's error types and hints.

`type` is the name the CLI prints under `{"error": {"type"}}` (UsageError, LockedError, …),
`exit_code` the code the CLI would exit with, so a script reads one vocabulary everywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

from shipyard.core.secrets import Redactor
from shipyard.errors import (
    ConfigError,
    DeploymentFailed,
    GitError,
    LockedError,
    PreflightError,
    RollbackFailed,
    ShipyardError,
    StoreError,
    UsageError,
)

MEDIA_TYPE = "application/problem+json"

# Most specific first: the first class an error is an instance of decides its HTTP status.
_STATUS: list[tuple[type[ShipyardError], int]] = [
    (LockedError, 409),
    (PreflightError, 422),
    (ConfigError, 422),
    (GitError, 422),
    (UsageError, 400),
    (StoreError, 503),
    (RollbackFailed, 500),
    (DeploymentFailed, 500),
]

TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Refused",
    428: "Confirmation required",
    500: "Server error",
    503: "State store unavailable",
}


class Problem(BaseModel):
    """An error: what is wrong (`detail`) and what to do next (`hint`)."""

    type: str
    title: str
    status: int
    detail: str
    hint: str | None = None
    exit_code: int


class ProblemError(Exception):
    """An error the API itself reports (authentication, scopes, not found, confirmation)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "UsageError",
        hint: str | None = None,
        exit_code: int = 2,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.hint = hint
        self.exit_code = exit_code
        self.extra = extra or {}


def status_of(error: ShipyardError) -> int:
    return next((code for cls, code in _STATUS if isinstance(error, cls)), 400)


def from_error(error: ShipyardError, redact: Redactor | None = None) -> ProblemError:
    clean = redact or Redactor()
    hint = None if error.hint is None else clean(error.hint)
    return ProblemError(
        status_of(error),
        clean(error.message),
        type=error.type,
        hint=hint,
        exit_code=error.exit_code,
    )


def response(problem: ProblemError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": problem.type,
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "hint": problem.hint,
        "exit_code": problem.exit_code,
        **problem.extra,
    }
    return JSONResponse(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=headers)


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each code answers a Problem (as problem+json)."""
    return {code: {"model": Problem, "description": TITLES.get(code, "Error")} for code in codes}
