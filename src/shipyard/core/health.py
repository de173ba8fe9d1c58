"""Judging health from a series of probe results: deadline and stable window, no I/O."""

from __future__ import annotations

from typing import Literal

from shipyard.config import HealthCheck

Verdict = Literal["waiting", "healthy", "failed"]


class HealthJudge:
    """Healthy once probes pass without a break for `stable_for`; failed at `deadline`.

    A probe that fails after passing (flapping) restarts the stable window, so a
    release that answers once and then crashes never counts as healthy.
    """

    def __init__(self, check: HealthCheck, *, start: float) -> None:
        self.check = check
        self.start = start
        self.passing_since: float | None = None

    def observe(self, ok: bool, now: float) -> Verdict:
        if ok:
            if self.passing_since is None:
                self.passing_since = now
            if now - self.passing_since >= self.check.stable_for:
                return "healthy"
        else:
            self.passing_since = None
        if now - self.start >= self.check.deadline:
            return "failed"
        return "waiting"
