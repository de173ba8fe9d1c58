"""The one error type the agent and its client raise, and the codes it carries."""

from __future__ import annotations

from typing import Dict, Optional

__all__ = ["AgentRequestError"]


class AgentRequestError(Exception):
    """An operation the agent refused or could not do.

    `code` is a stable snake_case name (listed in `shipyard.agent.protocol`), `message` says what
    is wrong and where, `hint` says what to do next. The same shape travels over the wire as the
    `error` object of a response, so the client re-raises exactly what the agent raised.
    """

    def __init__(self, code: str, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def to_dict(self) -> Dict[str, Optional[str]]:
        """The wire form: `{"code", "message", "hint"}`."""
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        text = f"{self.message} [{self.code}]"
        return text if not self.hint else f"{text}\nhint: {self.hint}"

    def __repr__(self) -> str:
        return f"AgentRequestError({self.code!r}, {self.message!r}, {self.hint!r})"
