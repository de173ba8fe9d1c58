"""The redactor of `shipyard serve`'s log, kept current while the server runs.

Built once at start, it would miss a secret added to a source afterwards. So it learns every
set of values the server reads (each deployment reads its environment's secrets when it
starts, through `Shipyard(on_secrets=…)`: no source is read for the log's sake), and when a
dotenv source or shipyard.toml changes on disk (mtime and size, checked per log line: a few
`stat` calls) it reads every source again. It only ever adds values: one removed from a
source may still sit in a log line being written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

from shipyard.config import CONFIG_FILE
from shipyard.core.secrets import Redactor
from shipyard.errors import ShipyardError


class LogRedactor:
    """A callable redactor for log lines: every environment's values, old and new."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self._names: dict[str, str] = {}  # value -> the name it was first read under
        self._redactor = Redactor()
        self._lock = threading.Lock()
        self._watched: list[Path] = [project_dir / CONFIG_FILE]
        self._seen: tuple[tuple[int, int], ...] = ()
        self.refresh()

    def __call__(self, text: str) -> str:
        if self._stats() != self._seen:
            self.refresh()
        return self._redactor(text)  # one reference read: another thread may swap it

    def learn(self, values: Mapping[str, str]) -> None:
        """Values the server has just read: redacted from the log from now on."""
        with self._lock:
            fresh = {v: n for n, v in values.items() if v not in self._names}
            if not fresh:
                return
            self._names.update(fresh)
            # A new Redactor, not `add` to the one in use: another thread may be redacting.
            redactor = Redactor()
            for value, name in self._names.items():
                redactor.add({name: value})
            self._redactor = redactor

    def refresh(self) -> None:
        """Read every environment's source again (at start, and when a file changed)."""
        from shipyard.service import Shipyard

        svc = Shipyard(self.project_dir, on_secrets=self.learn)
        try:
            environments = list(svc.config.environments.values())
            self._watched = [self.project_dir / CONFIG_FILE] + [
                self.project_dir / env.secrets.value
                for env in environments
                if env.secrets is not None and env.secrets.kind == "dotenv"
            ]
            seen = self._stats()
            for env in environments:
                try:
                    svc.read_secrets(env.secrets)
                except ShipyardError:
                    continue  # unreadable now: `secrets check` says why
        except ShipyardError:
            seen = self._stats()  # a broken shipyard.toml: the values known so far stay
        finally:
            svc.close()
        self._seen = seen

    def _stats(self) -> tuple[tuple[int, int], ...]:
        """(mtime, size) of shipyard.toml and of every dotenv source (-1s: none there)."""
        found = []
        for path in self._watched:
            try:
                st = os.stat(path)
            except OSError:
                found.append((-1, -1))
                continue
            found.append((st.st_mtime_ns, st.st_size))
        return tuple(found)
