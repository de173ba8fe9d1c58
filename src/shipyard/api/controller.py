"""While the server runs it is the environments' controller: a deployment whose
orchestrator died (its lease expired or its process is gone, its journal unfinished) is
recovered without anyone having to run `shipyard recover`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from shipyard.errors import LockedError, ShipyardError
from shipyard.service import Shipyard

log = logging.getLogger("shipyard.api")


def recover_interrupted(
    project_dir: Path, on_secrets: Callable[[dict[str, str]], None] | None = None
) -> list[str]:
    """One pass over every environment this version can drive: recover what died. Returns
    the ids recovered; an environment that cannot be read now is skipped (and logged)."""
    svc = Shipyard(project_dir, on_secrets=on_secrets)
    done: list[str] = []
    try:
        for env in svc.config.environments.values():
            if env.target != "local":
                continue
            try:
                dead = svc.interrupted(env.name)
                if not dead:
                    continue
                log.info(
                    "environment %s: the orchestrator of %s died; recovering",
                    env.name,
                    ", ".join(d.id for d in dead),
                )
                views = svc.recover(env.name)
            except LockedError:
                continue  # someone alive took the lock in between: it recovers them itself
            except ShipyardError as exc:
                log.warning("environment %s: recovery failed: %s", env.name, exc.message)
                continue
            for view in views:
                log.info("deployment %s is now %s", view.record.id, view.record.status)
                done.append(view.record.id)
    finally:
        svc.close()
    return done


class Controller:
    """Runs `recover_interrupted` now and then every `interval` seconds, in a thread."""

    def __init__(
        self,
        project_dir: Path,
        interval: float,
        on_secrets: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.interval = interval
        self.on_secrets = on_secrets
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shipyard-controller")
        self.passes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                recover_interrupted(self.project_dir, self.on_secrets)
            except ShipyardError as exc:  # a broken config: said once per pass, never fatal
                log.warning("controller: %s", exc.message)
            except Exception:
                log.exception("controller: unexpected error")
            self.passes += 1
            self._stop.wait(self.interval)
