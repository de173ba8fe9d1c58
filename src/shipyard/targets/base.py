"""The Target protocol: the small interface between the engine and a host.

A target answers questions about a host (what runs, what is routed, which release
is current) and performs single operations on it. Order, retries, deadlines and
rollback are the engine's business, never the target's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from shipyard.config import Migrations
from shipyard.effects.migrations.base import MigrationState


@dataclass(frozen=True)
class RunningRelease:
    """A release process as the host agent sees it."""

    component: str
    release: str
    pid: int | None
    port: int | None
    state: str  # starting, running, crashed, backing-off, crash-loop, stopped
    restarts: int = 0


@dataclass(frozen=True)
class ProbeSpec:
    """One health probe, run on the host."""

    kind: Literal["http", "tcp", "command"]
    port: int | None = None
    path: str = "/"
    status: tuple[int, ...] = ()
    timeout: float = 2.0
    command: str | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class Observation:
    """What one probe saw (stored with the deployment)."""

    ok: bool
    status: int | None
    latency_ms: float
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 2),
            "detail": self.detail,
        }


class Target(Protocol):
    """A host (or a group of hosts) that runs an environment's releases."""

    host: str

    def prepare(self) -> None:
        """Make sure the host is reachable and writable and its agent is running."""

    def has_release(self, component: str, release: str) -> bool: ...

    def release_dir(self, component: str, release: str) -> Path:
        """Where a release is unpacked (tests run there)."""

    def install(self, component: str, release: str, artifact: Path, env: Mapping[str, str]) -> None:
        """Unpack an artifact as `releases/<release>` with its `.env` (mode 0600)."""

    def write_release_document(
        self, component: str, release: str, document: Mapping[str, object]
    ) -> None:
        """Write `releases/<release>/release.json` (the release's spec; no secret values)."""

    def read_release_document(self, component: str, release: str) -> dict[str, Any] | None:
        """The release's `release.json`, or None when it has none (or it is unreadable)."""

    def start(
        self,
        component: str,
        release: str,
        command: str,
        env: Mapping[str, str],
        stop_timeout: float,
    ) -> RunningRelease:
        """Start a release on a fresh private port; returns at once (health is separate)."""

    def probe(self, spec: ProbeSpec) -> Observation: ...

    def route(
        self,
        component: str,
        public_port: int,
        release: str,
        *,
        http: bool,
        drain_timeout: float,
    ) -> None:
        """Send the public port's traffic to `release` in one step (old requests drain)."""

    def unroute(self, component: str) -> None: ...

    def routed_ports(self) -> dict[str, int]:
        """component → the public port the host routes for it."""

    def port_available(self, port: int) -> bool:
        """True when nothing listens on the public port (TIME-WAIT sockets do not count)."""

    def routes(self) -> dict[str, str]:
        """component → the release its public port currently serves."""

    def stop(self, component: str, release: str) -> None: ...

    def running(self, component: str | None = None) -> dict[tuple[str, str], RunningRelease]:
        """(component, release) → what the host runs: of one component, or of all."""

    def current(self, component: str) -> str | None:
        """The release `current` points at."""

    def set_current(self, component: str, release: str | None) -> None: ...

    def logs(self, component: str, release: str, lines: int = 20) -> list[str]: ...

    def migrate(
        self,
        component: str,
        release: str,
        spec: Migrations,
        env: Mapping[str, str],
        target: str | None,
        known: MigrationState | None = None,
    ) -> tuple[str | None, str | None]:
        """Migrate to `target` (None: latest) with the files of `release`; (before, after).

        `known`: the state just read with `migration_state` (not read again)."""

    def migration_revision(
        self, component: str, release: str, spec: Migrations, env: Mapping[str, str]
    ) -> str | None: ...

    def migration_state(
        self, component: str, release: str, spec: Migrations, env: Mapping[str, str]
    ) -> MigrationState:
        """Current revision, head and pending steps (reversible? destructive?), on the host."""

    def prune(self, component: str, keep: int, protect: set[str]) -> list[str]:
        """Delete old release folders beyond `keep`, never one in `protect`; return them."""

    def lease(
        self,
        holder: str,
        ttl: float,
        revert: list[tuple[str, str | None]],
        discard: list[tuple[str, str]],
    ) -> None:
        """Set or renew the orchestrator's lease: if it is not renewed within `ttl`, the host
        routes each `revert` component back to its release and stops the `discard` ones."""

    def lease_end(self, holder: str) -> None:
        """End the lease (at the commit point, or when a rollback is done)."""

    def retire(self, items: list[tuple[str, str, float]]) -> None:
        """Stop `(component, release, after_s)` items later, in order, each after its drain;
        an item is dropped if its release is routed or started again meanwhile."""

    def link(self, component: str, consumer: str, release: str | None) -> int:
        """A stable local port reaching `component`: pinned to `release`, or following its
        active release (None). `consumer` is "<component>/<release>" of the user."""

    def activate(self, component: str, release: str | None) -> None:
        """Make `release` the active release of a component without a public port."""

    def down(self, component: str | None = None) -> list[str]:
        """Stop every process (of one component) and close its public ports."""
