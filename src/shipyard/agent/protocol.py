"""The agent's control protocol: JSON lines over `<root>/agent/agent.sock`.

Each request is one JSON object on one line; the agent answers each with one line, in order.
A connection may carry any number of requests. Unknown fields in a request are refused
(`bad_args`), so a typo never silently falls back to a default.

    request   {"id": 1, "op": "start", "component": "backend", ...args}
    success   {"id": 1, "ok": true, "result": {...}}
    failure   {"id": 1, "ok": false, "error": {"code": "unknown_release",
                                              "message": "...", "hint": "..." | null}}

`id` is echoed back unchanged (any JSON value; optional).

Release info (returned by start, stop and list) is an object:

    component, release     names ([A-Za-z0-9._-], at most 128 characters, no leading '.' or '-')
    pid                    main process id (also its process group id), null when not running
    port                   the private loopback port the agent chose; the process gets it as $PORT
    state                  starting | running | backing-off | crash-loop | crashed | stopped
                             starting     spawned less than 1 s ago
                             running      alive for at least 1 s
                             backing-off  exited; restart scheduled (next_restart_in_s)
                             crash-loop   5 consecutive crashes without staying up 10 s (or 5
                                          crashes within 60 s); still retried, every 10 s at most,
                                          and shown as crash-loop until it stays up 10 s
                             crashed      exited and cannot be restarted (cwd or program gone;
                                          see error)
                             stopped      stopped on request
    stop_at                when `retire` will stop it (ISO 8601 UTC; `list` only), else null
    desired                running | stopped (what the agent is trying to achieve)
    restarts               restarts done by the agent since the last `start`
    consecutive_crashes    crashes since the release last stayed up 10 s
    started_at, uptime_s   when the current process started (ISO 8601 UTC) and for how long
    last_exit_code         exit code of the last exit (negative: killed by that signal; null when
                           the process was adopted and not our child), last_exit in words
    next_restart_in_s      seconds until the next restart attempt, when one is scheduled
    error                  why it is `crashed`, else null
    log_path               the release's stdout+stderr log (rotated at 10 MB, 3 copies kept)
    cwd, command, argv     what runs (the environment is never returned: it holds secrets)

Ops
---

The agent is two processes: the keeper owns the listening sockets (public and link ports) and
forks the worker, which does everything below; when the worker dies the keeper forks a new one
at once, and connections wait in the listen backlog meanwhile (see `shipyard.agent.keeper`).

ping {}
    -> {pid (the worker), keeper_pid (the process owning the listening sockets; null when
        none), version, protocol, root, uptime_s, python, code (the folder or .pyz path the
        agent's code was loaded from), lease (see `lease`)}

start {component, release, cwd, command?: str, argv?: [str], env?: {str: str} = {},
       env_file?: str, stop_timeout?: float = 10}
    Exactly one of `command` (run by /bin/sh -c) and `argv` (exec'd directly; argv[0] looked up
    on the release PATH). `cwd` is resolved (symlinks followed); a relative cwd is taken under the
    agent root. The process runs in its own session/process group with stdin /dev/null and
    stdout+stderr appended to log_path. Its environment: PATH, HOME, USER, LOGNAME, SHELL, LANG,
    LANGUAGE, TZ, TMPDIR and LC_* from the agent, then the `env_file` (a path relative to cwd,
    read at every spawn, lines KEY=value where a value starting with '"' is a JSON string), then
    `env`, then PORT (always the agent's choice). Only the env_file's path is saved in the
    agent's state (state.json, state.log), so secrets kept in that file (mode 0600) are not
    copied anywhere. A stopped or crashed release may be started again (it gets a new port).
    -> release info
    errors: cwd_missing, env_file_unreadable, command_not_found (argv[0] missing or not
            executable, or the shell exited 126/127 within 0.25 s), already_running, bad_args

stop {component, release, timeout?: float (default: the release's stop_timeout), force?: bool}
    SIGTERM to the process group, SIGKILL after `timeout`. Refused while the release is the
    target of its component's route unless force. If the release is still draining requests
    from a route switch, the stop waits for that drain first (bounded by the switch's
    drain_timeout). Stopping a stopped release is a no-op that returns its info; a stop of a
    release already being stopped (by another request, its lease's lapse or its retirement)
    waits for that stop to end and answers the same.
    -> release info (state "stopped")
    errors: unknown_release, release_routed

list {component?: str}
    -> {releases: [release info...],
        routes: [{component, public_port, host, mode, router, release, upstream_port,
                  draining: [release], drain_timeout, crash_wait, listening: bool,
                  error: str|null, pid: int (haproxy routes: HAProxy's master),
                  stats: {connections, requests, retries, upstream_errors, crash_waits}
                  (counted by the builtin router; zeros for haproxy routes)}],
        links: [{component, consumer, port, mode, pinned: bool, release, upstream_port,
                 listening: bool, error: str|null}],
        active: {component: release},
        lease: (as in ping)}

route {component, public_port: int, release, mode?: "http"|"tcp" = "http",
       drain_timeout?: float = 30, host?: str = "127.0.0.1", crash_wait?: float = 10,
       router?: "builtin"|"haproxy" = "builtin"}
    Binds host:public_port on first use and keeps it bound across switches. The builtin router
    proxies in the agent; "haproxy" starts a HAProxy for the route (master-worker, outliving
    the agent's worker, stopped with the route) and switches it through its admin socket, with
    the same guarantees below (a restarting release: HAProxy retries its connection once a
    second for crash_wait seconds). Then, in one step,
    new requests (HTTP: the next request, even on an existing keep-alive connection; TCP: the
    next connection) go to the release's private port, while requests and connections already in
    flight on the previous release finish (for up to drain_timeout, then they are cut). Routing
    to the release already routed is a no-op. The release becomes the component's active
    release (following links move to it) and is dropped from the retire schedule.
    A request (or TCP connection) arriving while the routed release is down and restarting after
    a crash waits for it, up to crash_wait seconds, instead of failing. An idempotent request
    (GET, HEAD, OPTIONS, PUT, DELETE, TRACE; body up to 1 MB) whose release connection dies
    before any byte of the response went to the client is sent once more (waiting for the
    restart if the release crashed); a request cut by a drain timeout is not.
    -> {component, public_port, release, previous_release: str|null, upstream_port}
    errors: unknown_release, release_not_running (stopped or crashed), port_in_use (names the
            process or component holding it), route_conflict (the component is already routed on
            another port/host/mode/router: unroute first), router_unavailable (haproxy is not
            installed), router_failed (HAProxy refused a command), listen_failed, bad_args

unroute {component, drain_timeout?: float (default: the route's)}
    Stops accepting on the public port, lets in-flight requests finish (up to drain_timeout;
    a request arriving meanwhile on an open connection is still served, with
    `Connection: close`), then closes every client connection and the listener.
    -> {component, public_port, release}
    errors: unknown_route

logs {component, release, lines?: int = 50}
    -> {lines: [str]}  (the last lines of the release log, reaching into the rotated copy)
    errors: unknown_release

probe {kind: "http"|"tcp"|"command", port?: int, component?: str, release?: str,
       host?: str = "127.0.0.1", path?: str = "/", expect_status?: int | [int],
       timeout?: float = 2, command?: str, cwd?: str, env?: {str: str}}
    Runs on the agent's host. http/tcp need `port`, or `component` + `release` to probe that
    release's private port. http sends GET path and accepts 200-399 unless expect_status is
    given; command runs `command` with /bin/sh -c (cwd/env as for start, minus PORT) and passes
    on exit code 0 (status = exit code). A probe that fails is a result, not an error.
    -> {ok: bool, status: int|null, latency_ms: float, detail: str (≤ 200 chars: the error, or
        the start of the body/output)}
    errors: bad_args, unknown_release

shutdown {stop_processes?: bool = true, drain_timeout?: float = 5}  (also SIGTERM, without
         stop_processes)
    With stop_processes: unroutes everything (draining up to drain_timeout) and stops every
    release before answering. Without: answers at once; releases keep running and routes stay
    recorded, so the next agent adopts and re-binds them (public ports are closed meanwhile).
    The agent exits after the answer.
    -> {stopped: [ "component/release", ...]}

reexec {}
    Re-executes the worker in place (same pid), e.g. to load a new agent version: listening
    sockets are handed over (their file descriptors inherited, listed in
    $SHIPYARD_AGENT_LISTEN_FDS, and held by the keeper anyway), so connections arriving
    meanwhile wait in the listen backlog instead of being refused. In-flight requests get up to
    5 s to finish, responses from then on carry `Connection: close`, and idle keep-alive
    connections are closed (a client that sends on one at that very moment sees it closed).
    Children stay children. Also done on SIGHUP (to the worker or the keeper). The keeper's
    own code is loaded again only when the agent restarts. SIGTERM/SIGINT (to either) make the
    agent exit, leaving releases running (see shutdown without stop_processes).
    -> {pid}

lease {holder: str, ttl: float > 0, revert?: [{component, release: str|null}],
       discard?: [{component, release}]}
    Sets or renews the orchestrator's lease (same holder: renew; the lists replace the old
    ones). If no renewal arrives within ttl seconds, the agent on its own: for each revert entry
    routes the component's public port back to `release` if that release is running (null:
    unroutes it; a component without a public port gets it as active release instead), then
    stops every discard release that is not routed (after its drain; links of it are closed).
    It records what it did, `lapsed: {holder, at (ISO), actions: [str]}`. The lease and the
    lapse are saved in the agent's state: a restarted agent still enforces an unexpired lease.
    ping and list show `lease: null | {holder, ttl, expires_in_s (null when none is live),
    lapsed: null | {holder, at, actions}}`.
    -> {holder, expires_in_s}
    errors: lease_held (another holder's lease is live), lease_lapsed (this holder's lease
            lapsed and was undone, or is being undone; the message lists the actions; call
            lease_end, or use a new holder), bad_args

lease_end {holder}
    Removes the lease (at the commit point, or when the rollback is finished), and the holder's
    lapse record. Ending a lease that is not there is not an error.
    -> {holder, ended: bool, lapsed: null | {holder, at, actions}}
    errors: lease_held (the live lease is another holder's)

retire {items: [{component, release, after: float}]}
    Warm old releases: stops them later, each not before `after` seconds from now; due items
    are stopped together, except that an item waits until every item scheduled before it
    (in list order, after any items scheduled earlier) that is a consumer of its component
    (a link) has been stopped: dependents first. Each stop waits for the release's drain,
    then closes the links it used. An item is dropped
    when its release is routed, activated or started again (a rollback inside the warm window
    is then a pure route switch), or when it is still routed when its time comes. Scheduling a
    release again replaces its item. Saved in the agent's state; `list` shows `stop_at`.
    -> {scheduled: n}
    errors: unknown_release, bad_args

link {component: D, consumer: "<component>/<release>", release?: str|null,
      mode?: "http"|"tcp" = "http"}
    A loopback listener (127.0.0.1, a port the agent chooses) for that consumer release, which
    forwards to D: to `release` when given (pinned), else to D's active release (following:
    the release of D's public route, or the one set by `activate`). Linking the same
    (D, consumer) again re-points it in one step and keeps its port (a new mode rebinds it).
    Re-pointing drains like a route switch. Requests wait for a crashed release as on a route
    (10 s). A link's port stays the same across agent and worker restarts (saved in the
    agent's state; its socket is held by the keeper like the public ones). Links of a
    consumer release are removed when that release is stopped on request; linking that pair
    again later (the release is started again) gives the same port when it is still free.
    With nothing to reach, the port answers 502.
    -> {component, consumer, port, mode, pinned: bool, release (where it reaches now, or null),
        upstream_port, listening, error}
    errors: unknown_release (a pinned release the agent does not know), port_in_use, bad_args

unlink {component, consumer}
    Closes the link's listener (in-flight requests get up to 30 s).
    -> {component, consumer, port}
    errors: unknown_link

activate {component, release: str|null}
    Sets the active release of a component without a public port (what following links reach),
    re-points its following links, and drops the release from the retire schedule; null clears
    it. `route` does this implicitly for routed components.
    -> {component, release, previous_release}
    errors: unknown_release, release_not_running

Errors any op may return: bad_request (not a JSON object / line too long), unknown_op,
bad_args (missing, mistyped or unknown argument), shutting_down, internal (a bug: the message
names the exception and agent.log has the traceback).

Client-side codes (raised by `AgentClient`, never sent by the agent): agent_not_running,
socket_foreign_owner, permission_denied, agent_timeout, bad_response, agent_start_failed.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Set, Union

from .errors import AgentRequestError

__all__ = [
    "MAX_LINE",
    "OPS",
    "PROTOCOL_VERSION",
    "Args",
    "decode",
    "encode",
    "error_response",
    "ok_response",
]

PROTOCOL_VERSION = 1
# One request line at most (a release environment is the largest thing a request carries).
MAX_LINE = 16 * 1024 * 1024

OPS = (
    "ping",
    "start",
    "stop",
    "list",
    "route",
    "unroute",
    "logs",
    "probe",
    "shutdown",
    "reexec",
    "lease",
    "lease_end",
    "retire",
    "link",
    "unlink",
    "activate",
)


def encode(message: Dict[str, Any]) -> bytes:
    """One protocol line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Dict[str, Any]:
    """Parse one line into a JSON object, or raise `bad_request`."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise AgentRequestError("bad_request", f"not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise AgentRequestError("bad_request", "a request must be a JSON object")
    return message


def ok_response(request_id: Any, result: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_response(request_id: Any, error: AgentRequestError) -> Dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error.to_dict()}


class _Missing:
    pass


_MISSING = _Missing()


class Args:
    """Typed access to one request's arguments; `finish()` refuses the ones nobody read."""

    def __init__(self, op: str, data: Dict[str, Any]) -> None:
        self.op = op
        self._data = {k: v for k, v in data.items() if k not in ("id", "op")}
        self._seen: Set[str] = set()

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name, _MISSING)

    def _bad(self, name: str, expected: str, value: Any) -> AgentRequestError:
        return AgentRequestError(
            "bad_args",
            f"op {self.op!r}: argument {name!r} must be {expected}, not {value!r}",
            "see the op list in shipyard.agent.protocol",
        )

    def _missing(self, name: str) -> AgentRequestError:
        return AgentRequestError(
            "bad_args",
            f"op {self.op!r}: missing argument {name!r}",
            "see the op list in shipyard.agent.protocol",
        )

    def has(self, name: str) -> bool:
        return self._data.get(name) is not None

    def text(self, name: str, default: Union[str, _Missing, None] = _MISSING) -> str:
        value = self._get(name)
        if value is _MISSING or value is None:
            if isinstance(default, str):
                return default
            raise self._missing(name)
        if not isinstance(value, str) or not value:
            raise self._bad(name, "a non-empty string", value)
        return value

    def opt_text(self, name: str) -> Optional[str]:
        if self._data.get(name) is None:
            self._seen.add(name)
            return None
        return self.text(name)

    def integer(
        self, name: str, default: Optional[int] = None, *, low: int = 0, high: int = 65535
    ) -> int:
        value = self._get(name)
        if value is _MISSING or value is None:
            if default is not None:
                return default
            raise self._missing(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(name, f"an integer from {low} to {high}", value)
        return value

    def opt_integer(self, name: str, *, low: int = 0, high: int = 65535) -> Optional[int]:
        if self._data.get(name) is None:
            self._seen.add(name)
            return None
        return self.integer(name, low=low, high=high)

    def seconds(self, name: str, default: Optional[float] = None) -> float:
        value = self._get(name)
        if value is _MISSING or value is None:
            if default is not None:
                return default
            raise self._missing(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise self._bad(name, "a non-negative number of seconds", value)
        return float(min(value, 86400.0))

    def opt_seconds(self, name: str) -> Optional[float]:
        if self._data.get(name) is None:
            self._seen.add(name)
            return None
        return self.seconds(name)

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, "true or false", value)
        return value

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self._bad(name, " or ".join(repr(c) for c in choices), value)
        return value

    def opt_str_list(self, name: str) -> Optional[List[str]]:
        value = self._get(name)
        if value is _MISSING or value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) for v in value)
            or not value[0]
        ):
            raise self._bad(name, "a non-empty list of strings", value)
        return list(value)

    def str_dict(self, name: str) -> Dict[str, str]:
        value = self._get(name)
        if value is _MISSING or value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._bad(name, "an object of string to string", "<not shown>")
        if any("\0" in k or "=" in k or not k or "\0" in v for k, v in value.items()):
            raise AgentRequestError(
                "bad_args",
                f"op {self.op!r}: {name!r} has a name that is empty or contains '=' or NUL,"
                " or a value containing NUL",
            )
        return dict(value)

    def status_set(self, name: str) -> Optional[List[int]]:
        value = self._get(name)
        if value is _MISSING or value is None:
            return None
        values = value if isinstance(value, list) else [value]
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in values
        ):
            raise self._bad(name, "an HTTP status code or a list of them", value)
        return list(values)

    def records(self, name: str, fields: Dict[str, str]) -> List[Dict[str, Any]]:
        """A list of objects (default: empty) with exactly `fields`, each `name -> kind`:
        "text" (a non-empty string), "text?" (that or null: absent means null), "seconds"
        (a non-negative number).
        """
        value = self._get(name)
        if value is _MISSING or value is None:
            return []
        shape = "a list of objects with " + ", ".join(f"{k} ({v})" for k, v in fields.items())
        if not isinstance(value, list):
            raise self._bad(name, shape, value)
        out: List[Dict[str, Any]] = []
        for item in value:
            if not isinstance(item, dict) or set(item) - set(fields):
                raise self._bad(name, shape, item)
            record: Dict[str, Any] = {}
            for field, kind in fields.items():
                v = item.get(field)
                if kind == "text?" and v is None:
                    record[field] = None
                elif kind.startswith("text") and isinstance(v, str) and v:
                    record[field] = v
                elif (
                    kind == "seconds"
                    and isinstance(v, (int, float))
                    and not isinstance(v, bool)
                    and v >= 0
                ):
                    record[field] = float(min(v, 86400.0))
                else:
                    raise self._bad(f"{name}[].{field}", kind, v)
            out.append(record)
        return out

    def finish(self) -> None:
        """Refuse arguments the op does not take (a typo must not fall back to a default)."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise AgentRequestError(
                "bad_args",
                f"op {self.op!r} takes no argument {', '.join(repr(u) for u in unknown)}",
                f"arguments it takes: {', '.join(sorted(self._seen)) or 'none'}",
            )
