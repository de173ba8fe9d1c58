"""The keeper: a tiny process that owns the agent's listening sockets and (re)starts its worker.

The worker is the agent proper (control socket, router, supervisor: `daemon.Agent`), forked by
the keeper. Each listening socket the worker binds (public ports, link ports) it also hands to
the keeper over a unix socketpair (SCM_RIGHTS); the keeper never accepts on them, it only keeps
them open. When the worker dies (kill -9, a bug), the sockets stay open in the keeper, so
connections arriving meanwhile wait in the listen backlog instead of being refused; the keeper
forks a new worker at once, which inherits those sockets, serves the backlog and adopts the
releases from state.json. The keeper's own code is small and does no I/O beyond this, so it
is not what crashes.

Messages worker -> keeper (SOCK_SEQPACKET, one JSON object each):

    {"op": "hold", "key": "host:port"} + one fd   keep this listening socket (replaces any)
    {"op": "drop", "key": "host:port"}            close it for good (unrouted, unlinked)
    {"op": "ready"}                                the worker serves its control socket
    {"op": "failed", "message", "hint"}            the worker cannot start (reported by `start`)
    {"op": "exit"}                                 the worker exits on purpose: so does the keeper

If the keeper dies, the worker sees its end of the pair close and exits too (releases keep
running): the agent is then down as a whole, and the next command (or systemd) starts it again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import time
from typing import Any, Callable, Dict, List, MutableMapping, Optional

from .errors import AgentRequestError
from .paths import AgentPaths, hold_pid_lock

__all__ = ["KEEPER_FD_ENV", "KEEPER_PID_ENV", "Keeper", "KeeperChannel"]

# Set for a worker that re-executes itself: its end of the socketpair, and the keeper's pid.
KEEPER_FD_ENV = "SHIPYARD_AGENT_KEEPER_FD"
KEEPER_PID_ENV = "SHIPYARD_AGENT_KEEPER_PID"
_MAX_MESSAGE = 65536
# Restart delays for a worker that keeps dying: the first restart is immediate.
_BACKOFF_MAX = 5.0
_STABLE_AFTER = 10.0


class KeeperChannel:
    """The worker's end of the socketpair to its keeper."""

    def __init__(
        self, sock: socket.socket, keeper_pid: int, logger: Optional[logging.Logger] = None
    ) -> None:
        self.sock = sock
        self.keeper_pid = keeper_pid
        self.log = logger or logging.getLogger("shipyard.agent")

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str]) -> Optional["KeeperChannel"]:
        """The channel a re-executed worker inherited (None when it runs without a keeper)."""
        try:
            fd = int(environ.pop(KEEPER_FD_ENV))
            pid = int(environ.pop(KEEPER_PID_ENV))
        except (KeyError, ValueError):
            return None
        sock = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
        return cls(sock, pid)

    def _send(self, message: Dict[str, Any], fds: Optional[List[int]] = None) -> None:
        data = json.dumps(message).encode()
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)
        except OSError as exc:
            # The keeper is gone: the worker notices its end closing and exits.
            self.log.warning("cannot tell the keeper %s: %s", message.get("op"), exc)

    def hold(self, key: str, sock: socket.socket) -> None:
        self._send({"op": "hold", "key": key}, [sock.fileno()])

    def drop(self, key: str) -> None:
        self._send({"op": "drop", "key": key})

    def ready(self) -> None:
        self._send({"op": "ready"})

    def failed(self, message: str, hint: Optional[str]) -> None:
        self._send({"op": "failed", "message": message, "hint": hint})

    def exiting(self) -> None:
        self._send({"op": "exit"})

    def watch(self, on_gone: Callable[[], None]) -> None:
        """Call `on_gone` (on the running loop) once the keeper's end closes."""
        import asyncio

        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)

        def readable() -> None:
            try:
                data = self.sock.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.sock.fileno())
                on_gone()

        loop.add_reader(self.sock.fileno(), readable)

    def unwatch(self) -> None:
        import asyncio

        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def for_exec(self, env: Dict[str, str]) -> None:
        """Let a re-executed worker inherit the channel."""
        os.set_inheritable(self.sock.fileno(), True)
        env[KEEPER_FD_ENV] = str(self.sock.fileno())
        env[KEEPER_PID_ENV] = str(self.keeper_pid)


WorkerMain = Callable[[Dict[str, int], KeeperChannel], int]


class Keeper:
    """Holds the listening sockets of one agent root and keeps a worker running."""

    def __init__(
        self,
        paths: AgentPaths,
        worker_main: WorkerMain,
        *,
        on_ready: Callable[[], None] = lambda: None,
        logger: Optional[logging.Logger] = None,
        held: Optional[Dict[str, int]] = None,
    ) -> None:
        self.paths = paths
        self.worker_main = worker_main
        self.on_ready = on_ready
        self.log = logger or logging.getLogger("shipyard.agent")
        # "host:port" -> listening socket fd (inherited ones: from an agent that re-executed
        # into this version, which had no keeper yet).
        self.held: Dict[str, int] = dict(held or {})
        self.worker: Optional[int] = None
        self.chan: Optional[socket.socket] = None
        self.ready_once = False
        self.worker_ready = False  # the current worker said it serves
        self.exit_requested = False  # the worker said it exits on purpose
        self.term = False  # SIGTERM/SIGINT to the keeper
        self.failure: Optional[AgentRequestError] = None
        self._lock_fd: Optional[int] = None
        self._wake_r = -1
        self._wake_w = -1

    # ------------------------------------------------------------------ process

    def _acquire_lock(self) -> None:
        self._lock_fd = hold_pid_lock(self.paths.dir / "keeper.lock", self.paths.root, "keeper pid")

    def run(self) -> None:
        """Keep a worker running until it exits on purpose (or the keeper is told to stop).

        Raises `AgentRequestError` when the first worker cannot start.
        """
        self._acquire_lock()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        handlers = {
            signal.SIGCHLD: lambda s, f: None,  # wakes the select through the wakeup fd
            signal.SIGTERM: self._on_term,
            signal.SIGINT: self._on_term,
            signal.SIGHUP: self._on_hup,
        }
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            for fd in [self._wake_r, self._wake_w, *self.held.values()]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.held.clear()
            if self.chan is not None:
                self.chan.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
        if self.failure is not None:
            raise self.failure

    def _on_term(self, signum: int, frame: object) -> None:
        self.term = True
        if self.worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker, signal.SIGTERM)

    def _on_hup(self, signum: int, frame: object) -> None:
        if self.worker is not None:  # re-execute the worker (it keeps its pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker, signal.SIGHUP)

    def _loop(self) -> None:
        failures = 0
        next_start = 0.0
        started_at = 0.0
        while True:
            if self.worker is None:
                if self.term or self.exit_requested or self.failure is not None:
                    return
                now = time.monotonic()
                if now >= next_start:
                    self._spawn()
                    started_at = now
            timeout = 1.0 if self.worker is not None else max(0.0, next_start - time.monotonic())
            readable = self._wait(timeout)
            if self.chan is not None and self.chan in readable:
                self._receive()
            if self.worker is not None and self._reap():
                self.worker = None
                if self.chan is not None:
                    self._receive()  # what it said just before exiting
                    self.chan.close()
                    self.chan = None
                if not self.ready_once and self.failure is None and not self.exit_requested:
                    self.failure = AgentRequestError(
                        "agent_start_failed",
                        "the agent's worker exited while starting",
                        f"see {self.paths.log}",
                    )
                if self.term or self.exit_requested or self.failure is not None:
                    return
                up = time.monotonic() - started_at
                # A worker that got to serve is restarted at once, however often it is killed;
                # one that dies before serving (a bug at startup) is retried with a backoff.
                failures = 0 if self.worker_ready or up >= _STABLE_AFTER else failures + 1
                delay = 0.0 if failures <= 1 else min(_BACKOFF_MAX, 0.1 * 2 ** (failures - 2))
                next_start = time.monotonic() + delay
                self.log.warning(
                    "keeper: the worker died after %.1fs; restarting it%s",
                    up,
                    f" in {delay:.1f}s" if delay else "",
                )

    def _wait(self, timeout: float) -> List[Any]:
        watched: List[Any] = [self._wake_r]
        if self.chan is not None:
            watched.append(self.chan)
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            return []
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return readable

    def _reap(self) -> bool:
        assert self.worker is not None
        try:
            pid, status = os.waitpid(self.worker, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self.log.info(
            "keeper: worker %d ended (%s)",
            self.worker,
            _describe(os.waitstatus_to_exitcode(status)),
        )
        return True

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 1
            try:
                parent_end.close()
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (self._wake_r, self._wake_w, self._lock_fd):
                    if fd is not None:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                keeper_pid = os.getppid()
                code = self.worker_main(
                    dict(self.held), KeeperChannel(child_end, keeper_pid, self.log)
                )
            except BaseException:
                self.log.exception("worker crashed")
            finally:
                os._exit(code)
        child_end.close()
        parent_end.setblocking(False)
        self.chan = parent_end
        self.worker = pid
        self.worker_ready = False
        self.log.info("keeper %d: worker %d started", os.getpid(), pid)

    def _receive(self) -> None:
        assert self.chan is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.chan, _MAX_MESSAGE, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno != errno.ECONNRESET:
                    self.log.warning("keeper: reading from the worker: %s", exc)
                return
            if not data:
                return
            try:
                message = json.loads(data)
                op = message["op"]
            except (ValueError, KeyError, TypeError):
                for fd in fds:
                    os.close(fd)
                continue
            if op == "hold" and len(fds) == 1:
                key = str(message.get("key"))
                old = self.held.pop(key, None)
                if old is not None:
                    os.close(old)
                self.held[key] = fds[0]
                continue
            for fd in fds:
                os.close(fd)
            if op == "drop":
                old = self.held.pop(str(message.get("key")), None)
                if old is not None:
                    os.close(old)
            elif op == "ready":
                self.worker_ready = True
                if not self.ready_once:
                    self.ready_once = True
                    self.on_ready()
            elif op == "failed":
                if not self.ready_once:
                    self.failure = AgentRequestError(
                        "agent_start_failed",
                        str(message.get("message")),
                        message.get("hint"),
                    )
            elif op == "exit":
                self.exit_requested = True


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
