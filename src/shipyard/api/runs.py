"""Deployments the server runs on behalf of a client, in threads of their own.

A deployment started through the API belongs to the server, not to the request: it takes
the environment's lock and writes the same journal as one started by the CLI, keeps going
when the client disconnects, and, should the server die, is recovered from that journal by
the next server (or any command) that touches the environment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from shipyard.engine.runner import ProgressEvent, ProgressSink
from shipyard.errors import ShipyardError
from shipyard.service import DeploymentView

log = logging.getLogger("shipyard.api")

Run = Callable[[ProgressSink], DeploymentView]


@dataclass
class _Start:
    """What the request waits for: the new deployment's id, or why none was made."""

    ready: threading.Event = field(default_factory=threading.Event)
    deployment_id: str | None = None
    error: ShipyardError | None = None


class Runs:
    """The deployments running in this server, and a way to wait for them at shutdown."""

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, run: Run, what: str) -> str:
        """Start `run` in its own thread; return the id of the deployment it created, or
        raise the error that stopped it first (refused, locked). Blocks: call it in a
        worker thread."""
        start = _Start()

        def sink(event: ProgressEvent) -> None:
            if event.starts_deployment and start.deployment_id is None:
                start.deployment_id = event.deployment_id
                start.ready.set()

        def work() -> None:
            try:
                view = run(sink)
                log.info("%s: deployment %s %s", what, view.record.id, view.record.status)
            except ShipyardError as exc:
                if start.deployment_id is None:
                    start.error = exc
                else:  # the deployment records its own failure; the client reads it there
                    log.info("%s: deployment %s: %s", what, start.deployment_id, exc.message)
            except Exception:  # a bug: the journal says what it can; the log has the rest
                log.exception("%s: unexpected error", what)
            finally:
                start.ready.set()
                with self._lock:
                    self._threads.pop(threading.current_thread().name, None)

        thread = threading.Thread(target=work, name=f"shipyard-{what}-{id(start)}")
        with self._lock:
            self._threads[thread.name] = thread
        thread.start()
        start.ready.wait()
        if start.deployment_id is not None:
            return start.deployment_id
        if start.error is not None:
            raise start.error
        raise ShipyardError(f"{what} stopped before it created a deployment (see the server log)")

    def running(self) -> int:
        with self._lock:
            return len(self._threads)

    def join(self) -> None:
        """Wait for every running deployment (server shutdown: none is left half done)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join()
