"""The client the engine and the CLI use to talk to an agent (standard library only)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import AgentRequestError
from .paths import AgentPaths, unix_address

__all__ = ["AgentClient"]


class AgentClient:
    """Calls the agent of `root` over its unix socket; every error is an `AgentRequestError`.

    Thread-safe: each call uses its own connection (cheap on a unix socket), so calls from
    several threads never interleave on one stream.
    """

    def __init__(self, root: Path, timeout: float = 30.0) -> None:
        self.paths = AgentPaths(root)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()

    # ------------------------------------------------------------------ transport

    def _connect(self, timeout: float) -> socket.socket:
        path = self.paths.sock
        root = self.paths.root
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise AgentRequestError(
                "agent_not_running",
                f"no agent is running for {root} (no socket at {path})",
                f"shipyard agent start --root {root}",
            ) from None
        except PermissionError:
            raise AgentRequestError(
                "permission_denied",
                f"cannot reach the agent socket {path}: permission denied",
                "run as the user that owns the agent's root",
            ) from None
        if st.st_uid != os.getuid():
            raise AgentRequestError(
                "socket_foreign_owner",
                f"the agent socket {path} belongs to uid {st.st_uid}, not to you (uid"
                f" {os.getuid()})",
                "run shipyard as the user that started that agent, or use a root of your own",
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with unix_address(path) as address:
                sock.connect(address)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                raise AgentRequestError(
                    "agent_not_running",
                    f"no agent answers at {path} (a stale socket left by an agent that died?)",
                    f"shipyard agent start --root {root}",
                ) from None
            if exc.errno == errno.EACCES:
                raise AgentRequestError(
                    "permission_denied",
                    f"cannot connect to the agent socket {path}: permission denied",
                    "run as the user that owns the agent's root",
                ) from None
            raise AgentRequestError(
                "agent_not_running", f"cannot connect to {path}: {exc}", f"check {self.paths.log}"
            ) from None
        return sock

    def request(self, op: str, *, call_timeout: Optional[float] = None, **args: Any) -> Any:
        """Send one request; return its `result` or raise the agent's error."""
        with self._id_lock:
            request_id = next(self._ids)
        timeout = self.timeout if call_timeout is None else call_timeout
        message = {"id": request_id, "op": op}
        message.update({k: v for k, v in args.items() if v is not None})
        payload = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        sock = self._connect(timeout)
        try:
            sock.sendall(payload)
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            raise AgentRequestError(
                "agent_timeout",
                f"the agent did not answer {op!r} within {timeout:g}s",
                f"see {self.paths.log}",
            ) from None
        except OSError as exc:
            raise AgentRequestError(
                "agent_not_running",
                f"connection to the agent broke during {op!r}: {exc}",
                f"see {self.paths.log}",
            ) from None
        finally:
            sock.close()
        if not buf.endswith(b"\n"):
            raise AgentRequestError(
                "agent_not_running",
                f"the agent closed the connection without answering {op!r}",
                f"it may have exited or be restarting; see {self.paths.log}",
            )
        try:
            response = json.loads(bytes(buf))
            ok = response["ok"]
        except (ValueError, KeyError, TypeError):
            raise AgentRequestError(
                "bad_response", f"unreadable answer from the agent: {bytes(buf[:200])!r}"
            ) from None
        if response.get("id") != request_id:
            raise AgentRequestError(
                "bad_response", f"answer for request {response.get('id')!r}, not {request_id}"
            )
        if not ok:
            err = response.get("error") or {}
            raise AgentRequestError(
                str(err.get("code", "unknown")),
                str(err.get("message", "the agent refused the request")),
                err.get("hint"),
            )
        return response.get("result")

    # ------------------------------------------------------------------ ops

    def ping(self) -> Dict[str, Any]:
        """`{pid, keeper_pid, version, protocol, root, uptime_s, python, code, lease}`."""
        result: Dict[str, Any] = self.request("ping")
        return result

    def start_release(
        self,
        component: str,
        release: str,
        cwd: Union[str, Path],
        *,
        command: Optional[str] = None,
        argv: Optional[Sequence[str]] = None,
        env: Optional[Dict[str, str]] = None,
        env_file: Optional[str] = None,
        stop_timeout: float = 10.0,
    ) -> Dict[str, Any]:
        """Start a release; returns its release info (pid, port, state, log_path, ...).

        `env_file` (relative to cwd) is read at every spawn; only its path is kept by the agent.
        """
        extra: Dict[str, Any] = {} if env_file is None else {"env_file": env_file}
        result: Dict[str, Any] = self.request(
            "start",
            component=component,
            release=release,
            cwd=str(cwd),
            command=command,
            argv=list(argv) if argv is not None else None,
            env=dict(env or {}),
            stop_timeout=stop_timeout,
            **extra,
        )
        return result

    def stop_release(
        self,
        component: str,
        release: str,
        *,
        timeout: Optional[float] = None,
        force: bool = False,
    ) -> Dict[str, Any]:
        """SIGTERM, then SIGKILL after `timeout`; refused for the routed release unless force."""
        # Generous: the agent may first wait for a drain (up to its drain_timeout).
        wait = self.timeout + (timeout if timeout is not None else 10.0) + 60.0
        result: Dict[str, Any] = self.request(
            "stop",
            call_timeout=wait,
            component=component,
            release=release,
            timeout=timeout,
            force=force or None,
        )
        return result

    def list_releases(self, component: Optional[str] = None) -> Dict[str, Any]:
        """`{"releases": [...], "routes": [...]}`."""
        result: Dict[str, Any] = self.request("list", component=component)
        return result

    def route(
        self,
        component: str,
        public_port: int,
        release: str,
        *,
        mode: str = "http",
        drain_timeout: float = 30.0,
        host: str = "127.0.0.1",
        crash_wait: float = 10.0,
        router: str = "builtin",
    ) -> Dict[str, Any]:
        """Switch `component`'s public port to `release`; returns previous_release too.

        `crash_wait`: how long a request waits for the release while it restarts after a crash.
        `router`: "builtin" (the agent proxies) or "haproxy" (a HAProxy the agent steers).
        """
        extra: Dict[str, Any] = {}
        if router != "builtin":  # an agent older than the haproxy router refuses the argument
            extra["router"] = router
        result: Dict[str, Any] = self.request(
            "route",
            component=component,
            public_port=public_port,
            release=release,
            mode=mode,
            drain_timeout=drain_timeout,
            host=host,
            crash_wait=crash_wait,
            **extra,
        )
        return result

    def unroute(self, component: str, *, drain_timeout: Optional[float] = None) -> Dict[str, Any]:
        """Close `component`'s public port after draining."""
        wait = self.timeout + (drain_timeout if drain_timeout is not None else 30.0) + 5.0
        result: Dict[str, Any] = self.request(
            "unroute", call_timeout=wait, component=component, drain_timeout=drain_timeout
        )
        return result

    def logs(self, component: str, release: str, lines: int = 50) -> List[str]:
        """The last `lines` lines of the release's log."""
        result = self.request("logs", component=component, release=release, lines=lines)
        return [str(line) for line in result["lines"]]

    def probe(self, **kwargs: Any) -> Dict[str, Any]:
        """Run a probe on the agent's host (see the `probe` op for the arguments)."""
        timeout = float(kwargs.get("timeout") or 2.0)
        result: Dict[str, Any] = self.request(
            "probe", call_timeout=self.timeout + timeout, **kwargs
        )
        return result

    def shutdown(self, stop_processes: bool = True) -> Dict[str, Any]:
        """Stop the agent (and by default every release it runs)."""
        result: Dict[str, Any] = self.request(
            "shutdown", call_timeout=self.timeout + 120.0, stop_processes=stop_processes
        )
        return result

    def reexec(self) -> Dict[str, Any]:
        """Re-execute the agent in place, keeping its public listening sockets."""
        result: Dict[str, Any] = self.request("reexec")
        return result

    # ------------------------------------------------------------------ orchestration

    def lease(
        self,
        holder: str,
        ttl: float,
        *,
        revert: Sequence[Tuple[str, Optional[str]]] = (),
        discard: Sequence[Tuple[str, str]] = (),
    ) -> Dict[str, Any]:
        """Set or renew the orchestrator lease; `{holder, expires_in_s}`.

        If no renewal comes within `ttl` seconds, the agent routes each `(component, release)`
        of `revert` back to that release (None: unroute) and stops the `discard` releases.
        Raises `lease_held` (another holder's lease is live) or `lease_lapsed` (this holder's
        lease lapsed and was undone; the message lists what the agent did).
        """
        result: Dict[str, Any] = self.request(
            "lease",
            holder=holder,
            ttl=ttl,
            revert=[{"component": c, "release": r} for c, r in revert],
            discard=[{"component": c, "release": r} for c, r in discard],
        )
        return result

    def lease_end(self, holder: str) -> Dict[str, Any]:
        """End the lease (at the commit point, or once a rollback is done);
        `{holder, ended: bool, lapsed: {holder, at, actions} | None}`."""
        result: Dict[str, Any] = self.request("lease_end", holder=holder)
        return result

    def retire(self, items: Sequence[Tuple[str, str, float]]) -> Dict[str, Any]:
        """Stop `(component, release, after_seconds)` items later, in order; `{scheduled}`.

        An item is dropped if its release is routed, activated or started again meanwhile.
        """
        result: Dict[str, Any] = self.request(
            "retire",
            items=[{"component": c, "release": r, "after": after} for c, r, after in items],
        )
        return result

    def link(
        self,
        component: str,
        consumer: str,
        release: Optional[str] = None,
        *,
        mode: str = "http",
    ) -> Dict[str, Any]:
        """A stable loopback port reaching `component` for `consumer` ("<component>/<release>").

        Pinned to `release`, or (None) following the component's active release. Linking the
        same pair again re-points it and keeps the port. Returns the link info:
        `{component, consumer, port, mode, pinned, release, upstream_port, listening, error}`.
        """
        result: Dict[str, Any] = self.request(
            "link", component=component, consumer=consumer, release=release, mode=mode
        )
        return result

    def unlink(self, component: str, consumer: str) -> Dict[str, Any]:
        """Close the link; `{component, consumer, port}`."""
        result: Dict[str, Any] = self.request("unlink", component=component, consumer=consumer)
        return result

    def activate(self, component: str, release: Optional[str]) -> Dict[str, Any]:
        """Make `release` the active release of a component without a public port (following
        links re-point to it); None clears it. `{component, release, previous_release}`."""
        result: Dict[str, Any] = self.request("activate", component=component, release=release)
        return result
