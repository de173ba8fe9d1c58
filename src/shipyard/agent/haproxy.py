"""HAProxy as the router of a route (`router = "haproxy"`): same route operation, C data path.

Each such route gets its own HAProxy, in master-worker mode, in `<agent dir>/haproxy/<component>`
(config, pid, admin socket): the frontend is the public port, the backend has a few
server slots. Exactly one slot is ready (the routed release); a switch points a free slot at
the new release (`set server … addr … port …`, `state ready`) and puts the previous slot in
maintenance in the same admin-socket command, so new requests go to the new release while the
previous slot's sessions finish (drain, watched through `show stat`, cut with `shutdown
sessions server` after drain_timeout). HAProxy picks a server per request on keep-alive
client connections, like the builtin router.

`retry-on conn-failure empty-response` with `option redispatch` resends a request whose
connection failed, or that got no byte of answer, to the ready slot; only idempotent methods
are retried that way (`disable-l7-retry` for the rest), as in the builtin router. A release
restarting after a crash refuses connections: HAProxy retries once a second, up to crash_wait.

HAProxy outlives the agent's worker: a restarted or re-executed worker adopts the running one
(its pid and start time are in `haproxy.json`) instead of starting another, so its public port
never stops listening. A stopped agent stops it. If HAProxy dies, the agent's watch loop
starts it again from the config, which is rewritten on every switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import procinfo
from .errors import AgentRequestError
from .paths import unix_address
from .proxy import Upstream
from .router import Route, port_in_use

__all__ = ["HaproxyRoute", "haproxy_binary"]

_SLOTS = 4
_POLL = 0.05  # how often a drain looks at the old slot's sessions
_COMMAND_TIMEOUT = 5.0
_START_TIMEOUT = 15.0
_IDEMPOTENT = "GET HEAD OPTIONS PUT DELETE TRACE"
# Lines HAProxy answers to a refused runtime command.
_REFUSED = ("no such", "unknown", "invalid", "require", "can't", "cannot", "expects", "usage")


def haproxy_binary() -> Optional[str]:
    return shutil.which("haproxy")


def _maxconn() -> int:
    """As many connections as the open-file limit allows (two descriptors each)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 100_000
    return max(256, min(100_000, (hard - 200) // 2))


def _threads() -> int:
    """Half the CPUs (at least one): the releases it routes to run on the same host.

    HAProxy's default, a thread per CPU, has its threads contend with the releases (and
    with each other) for cores: measured on 2 CPUs, 23 µs of CPU per proxied request with 2
    threads against 18 µs with 1, at the same rate (benchmarks/README.md).
    """
    return max(1, (os.cpu_count() or 1) // 2)


class HaproxyRoute(Route):
    """A route whose public port is served by a HAProxy this route starts and steers."""

    router_kind = "haproxy"

    def __init__(
        self,
        component: str,
        host: str,
        public_port: int,
        mode: str,
        drain_timeout: float,
        logger: logging.Logger,
        folder: Path,
        crash_wait: float,
    ) -> None:
        super().__init__(component, host, public_port, mode, drain_timeout, logger, crash_wait)
        self.folder = folder
        self.slots: List[Optional[Upstream]] = [None] * _SLOTS
        self.pid: Optional[int] = None
        self.ticks: Optional[int] = None
        self.handed_over = False  # a re-executed agent adopts this HAProxy: leave it running

    # ------------------------------------------------------------ files and process

    @property
    def admin(self) -> Path:
        return self.folder / "admin.sock"

    def serving(self) -> bool:
        return self.pid is not None and procinfo.is_same_process(self.pid, self.ticks)

    def _config(self) -> str:
        http = self.mode == "http"
        family = "ipv6@" if ":" in self.host else "ipv4@"
        # A refused connection is retried once a second: as many as crash_wait allows.
        retries = max(3, math.ceil(self.crash_wait))
        lines = [
            f"# Written by the shipyard agent for {self.component!r}; rewritten on every switch.",
            "global",
            "    master-worker",
            "    stats socket unix@admin.sock mode 600 level admin",
            f"    maxconn {_maxconn()}",
            f"    nbthread {_threads()}",
            "defaults",
            f"    mode {self.mode}",
            "    timeout connect 5s",
            "    timeout client 120s",
            "    timeout server 1h",
            "    timeout tunnel 1h",
            f"    retries {retries}",
            "    option redispatch 1",
        ]
        if http:
            lines += [
                "    timeout http-keep-alive 120s",
                "    option forwardfor",
                "    retry-on conn-failure empty-response",
            ]
        lines += [
            "frontend public",
            f"    bind {family}{self.host}:{self.public_port}",
            "    default_backend releases",
        ]
        if http:
            lines.append(
                "    http-request set-header X-Forwarded-Proto http"
                " unless { req.hdr(x-forwarded-proto) -m found }"
            )
        lines.append("backend releases")
        if http:
            lines.append(f"    http-request disable-l7-retry unless {{ method {_IDEMPOTENT} }}")
        for index, upstream in enumerate(self.slots):
            port = upstream.port if upstream is not None else 1
            ready = upstream is not None and upstream is self.current
            lines.append(f"    server s{index} 127.0.0.1:{port}" + ("" if ready else " disabled"))
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        path = self.folder / "haproxy.cfg"
        tmp = path.with_name(".haproxy.cfg.tmp")
        tmp.write_text(self._config())
        os.replace(tmp, path)

    def _record(self) -> Dict[str, Any]:
        try:
            data = json.loads((self.folder / "haproxy.json").read_text())
            return dict(data) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    async def listen(self, sock: Optional[socket.socket]) -> None:
        """Adopt the HAProxy a previous agent left running for this route, or start one."""
        if sock is not None:
            sock.close()  # HAProxy binds the port itself
        binary = haproxy_binary()
        if binary is None:
            raise AgentRequestError(
                "router_unavailable",
                f"component {self.component!r} is routed by haproxy, which is not installed"
                " on this host",
                'install it (Debian: apt-get install haproxy) or set router = "builtin"',
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        record = self._record()
        pid, ticks = record.get("pid"), record.get("ticks")
        if isinstance(pid, int) and procinfo.is_same_process(pid, ticks):
            self.pid, self.ticks = pid, ticks
            await self._adopt()
            self.log.info("%s: adopted haproxy (pid %d)", self.component, pid)
        else:
            await self._spawn(binary)
        self.error = None

    async def _spawn(self, binary: str) -> None:
        # Only the routed release gets a slot in a fresh HAProxy: what drained through the last
        # one (if it died) went with it.
        for upstream in list(self.draining):
            if upstream.drain_task is not None:
                upstream.drain_task.cancel()
            self._retire(upstream)
        self.slots = [self.current] + [None] * (_SLOTS - 1)
        self._write_config()
        with contextlib.suppress(FileNotFoundError):
            (self.folder / "haproxy.pid").unlink()
        argv = [binary, "-W", "-D", "-f", "haproxy.cfg", "-p", "haproxy.pid"]
        argv += ["-S", "unix@master.sock"]

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(
                argv,
                cwd=str(self.folder),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=_START_TIMEOUT,
                start_new_session=True,
            )

        try:
            done = await asyncio.get_running_loop().run_in_executor(None, run)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._failed(str(exc)) from exc
        if done.returncode != 0:
            alerts = [line for line in done.stderr.splitlines() if "ALERT" in line]
            text = (alerts[-1] if alerts else done.stderr.strip()[-300:]) or "no output"
            if "cannot bind" in text.lower() or "address already in use" in text.lower():
                raise port_in_use(self.host, self.public_port)
            raise self._failed(text)
        try:
            pid = int((self.folder / "haproxy.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise self._failed("it wrote no pid file") from exc
        self.pid, self.ticks = pid, procinfo.start_ticks(pid)
        (self.folder / "haproxy.json").write_text(json.dumps({"pid": pid, "ticks": self.ticks}))
        self.log.info(
            "%s: haproxy (pid %d) listening on %s:%d",
            self.component,
            pid,
            self.host,
            self.public_port,
        )

    def _failed(self, why: str) -> AgentRequestError:
        return AgentRequestError(
            "listen_failed",
            f"haproxy for {self.component!r} did not start: {why}",
            f"see {self.folder / 'haproxy.cfg'}; check the host address and port",
        )

    async def command(self, line: str) -> str:
        """One line for HAProxy's admin socket (`;` separates commands); its answer."""
        try:
            with unix_address(self.admin) as address:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(address), _COMMAND_TIMEOUT
                )
            try:
                writer.write(line.encode() + b"\n")
                answer = await asyncio.wait_for(reader.read(), _COMMAND_TIMEOUT)
            finally:
                writer.close()
        except (OSError, asyncio.TimeoutError) as exc:
            raise AgentRequestError(
                "router_failed",
                f"haproxy for {self.component!r} did not answer on {self.admin}: {exc}",
                "the agent starts it again within a second if it died; see agent.log",
            ) from exc
        text = answer.decode("utf-8", "replace")
        refused = [t for t in text.splitlines() if t.strip().lower().startswith(_REFUSED)]
        if refused:
            raise AgentRequestError(
                "router_failed",
                f"haproxy for {self.component!r} refused {line!r}: {refused[0]}",
                f"see {self.folder / 'haproxy.cfg'}",
            )
        return text

    async def _servers(self) -> Dict[str, Dict[str, str]]:
        """`show stat` of the backend's servers: name -> {column: value}."""
        text = await self.command("show stat -1 4 -1")
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        columns = lines[0][2:].split(",")
        out: Dict[str, Dict[str, str]] = {}
        for line in lines[1:]:
            values = line.split(",")
            row = {name: values[i] for i, name in enumerate(columns) if i < len(values)}
            if row.get("pxname") == "releases":
                out[row.get("svname", "")] = row
        return out

    async def _adopt(self) -> None:
        """Take over a running HAProxy: the routed release's slot ready, every other one off."""
        servers = await self._servers()
        wanted = self.current
        assert wanted is not None
        self.slots = [None] * _SLOTS
        match = None
        for index in range(_SLOTS):
            row = servers.get(f"s{index}", {})
            if row.get("addr") == f"127.0.0.1:{wanted.port}" and match is None:
                match = index
        match = 0 if match is None else match
        self.slots[match] = wanted
        commands = [f"set server releases/s{match} addr 127.0.0.1 port {wanted.port}"]
        commands.append(f"set server releases/s{match} state ready")
        commands += [f"set server releases/s{i} state maint" for i in range(_SLOTS) if i != match]
        await self.command("; ".join(commands))
        self._write_config()

    # ------------------------------------------------------------ switching

    async def apply(self, release: str, port: int) -> Optional[str]:
        """Send new requests to `release` (in one admin command); the previous slot drains."""
        previous = self.current
        if previous is not None and previous.release == release and previous.port == port:
            return previous.release
        if not self.serving():
            return self.switch(release, port)  # not started yet: the config will say it
        index = next(
            (
                i
                for i, u in enumerate(self.slots)
                if u is not None and (u.release, u.port) == (release, port)
            ),
            None,
        )
        commands: List[str] = []
        if index is not None:  # switching back before it finished draining: reuse it
            upstream = self.slots[index]
            assert upstream is not None
            if upstream in self.draining:
                self.draining.remove(upstream)
            if upstream.drain_task is not None:
                upstream.drain_task.cancel()
                upstream.drain_task = None
        else:
            index = next((i for i, u in enumerate(self.slots) if u is None), None)
            if index is None:  # every slot still drains: cut the oldest
                oldest = self.draining[0]
                index = self.slots.index(oldest)
                await self._cut(index, oldest, "cut: more switches than haproxy slots")
            upstream = Upstream(release, port)
            self.slots[index] = upstream
            commands.append(f"set server releases/s{index} addr 127.0.0.1 port {port}")
        commands.append(f"set server releases/s{index} state ready")
        if previous is not None and previous in self.slots:
            commands.append(f"set server releases/s{self.slots.index(previous)} state maint")
        await self.command("; ".join(commands))
        self.current = upstream
        self._write_config()
        if previous is None:
            return None
        self._start_drain(previous)
        return previous.release

    async def _cut(self, index: int, upstream: Upstream, reason: str) -> None:
        if upstream.drain_task is not None:
            upstream.drain_task.cancel()
            upstream.drain_task = None
        with contextlib.suppress(AgentRequestError):
            await self.command(
                f"set server releases/s{index} state maint; shutdown sessions server"
                f" releases/s{index}"
            )
        self.log.warning("%s: %s on %s", self.component, reason, upstream.release)
        self._retire(upstream)

    def _retire(self, upstream: Upstream) -> None:
        if upstream in self.draining:
            self.draining.remove(upstream)
        if upstream in self.slots:
            self.slots[self.slots.index(upstream)] = None
        upstream.drain_task = None
        upstream.retired.set()

    async def _drain(self, upstream: Upstream) -> None:
        """Until the old slot has no session left (or drain_timeout cuts them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        name = f"s{self.slots.index(upstream)}"
        try:
            while True:
                try:
                    sessions = int((await self._servers()).get(name, {}).get("scur") or 0)
                except (AgentRequestError, ValueError):
                    sessions = 0  # HAProxy is gone: nothing drains through it any more
                if not sessions:
                    break
                if loop.time() >= deadline:
                    await self._cut(
                        self.slots.index(upstream),
                        upstream,
                        f"{sessions} session(s) still open {self.drain_timeout:g}s after a"
                        " switch: cut",
                    )
                    return
                await asyncio.sleep(_POLL)
        except asyncio.CancelledError:
            return  # switched back to it
        self._retire(upstream)

    # ------------------------------------------------------------ lifecycle

    def detach_for_reexec(self) -> Optional[int]:
        self.handed_over = True
        self.closing = True
        return None

    async def close(self, drain_timeout: float) -> None:
        """Stop HAProxy: it stops listening, finishes what is in flight (bounded), then exits."""
        self.closing = True
        for upstream in list(self.draining):
            if upstream.drain_task is not None:
                upstream.drain_task.cancel()
        if not self.handed_over and self.pid is not None and self.serving():
            pid = self.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)  # soft stop
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain_timeout
            while self.serving() and loop.time() < deadline:
                await asyncio.sleep(_POLL)
            if self.serving():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = loop.time() + 5.0
                while self.serving() and loop.time() < deadline:
                    await asyncio.sleep(_POLL)
            with contextlib.suppress(FileNotFoundError):
                (self.folder / "haproxy.json").unlink()
        self.pid = None
        for gone in [self.current, *self.draining]:
            if gone is not None:
                gone.retired.set()
        self.current = None
        self.draining.clear()
        self.slots = [None] * _SLOTS

    def info(self) -> Dict[str, Any]:
        info = super().info()
        info["listening"] = self.serving() and self.error is None
        info["pid"] = self.pid
        return info
