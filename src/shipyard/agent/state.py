"""Durable agent state: a snapshot (`state.json`) and a log of changed records (`state.log`).

The state is a set of small records, one per release, route, link, retire item, active release
(and the lease, the lapse, the agent itself). A change appends the records it touched to the
log, one JSON line each (`{"k": kind, "id": id, "v": value}`, value null for a record gone),
fsynced before the op that made it answers: a step costs the size of what it changed, not of
the whole state. Once the log outgrows the snapshot it is folded in (snapshot rewritten: temp
file, fsync, rename; then the log emptied), so the log's total cost stays proportional to the
changes. A reader replays the log over the snapshot; a line torn by a crash is skipped.
Both files are mode 0600: release records hold their environment, secrets included.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ["STATE_VERSION", "StateFile", "atomic_write_json", "read_state"]

STATE_VERSION = 1

RecordKey = Tuple[str, Any]  # (kind, id); id a tuple, a string or None
# The log is folded into the snapshot once it is larger than this or than the snapshot.
_MIN_LOG = 256 * 1024


def atomic_write_json(path: Path, data: Dict[str, Any]) -> int:
    """Write `data` so that a reader (or a crash) sees either the old file or the new one.

    Temp file in the same folder, fsync, rename over the target, fsync the folder. Mode 0600.
    Returns the size written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Compact, so that json's C encoder writes it (the pretty form is the pure-Python one).
    payload = json.dumps(data, separators=(",", ":")).encode()
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(payload)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def log_path(state: Path) -> Path:
    return state.with_name("state.log")


# --------------------------------------------------------------------- records <-> snapshot


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def records_of(snapshot: Dict[str, Any]) -> Dict[RecordKey, Any]:
    """The records of a snapshot (the `state.json` form); unreadable ones kept under a
    position of their own, so the agent reports them when it restores."""
    records: Dict[RecordKey, Any] = {}

    def put(kind: str, fields: Tuple[str, ...], items: Iterable[Any]) -> None:
        for i, item in enumerate(items):
            try:
                key: Any = tuple(str(item[f]) for f in fields)
                key = key[0] if len(key) == 1 else key
            except (KeyError, TypeError, IndexError):
                key = ("?", i)
            records[(kind, key)] = item

    put("release", ("component", "release"), snapshot.get("releases") or [])
    put("route", ("component",), snapshot.get("routes") or [])
    put("link", ("component", "consumer"), snapshot.get("links") or [])
    retire = list(snapshot.get("retire") or [])
    for seq, item in enumerate(retire, 1):
        if isinstance(item, dict):
            item.setdefault("seq", seq)  # written before items carried their position
    put("retire", ("component", "release"), retire)
    for entry in snapshot.get("closed_link_ports") or []:
        try:
            component, consumer, port = entry
            records[("closed", (str(component), str(consumer)))] = port
        except (TypeError, ValueError):
            continue
    for component, release in dict(snapshot.get("active") or {}).items():
        records[("active", str(component))] = release
    for kind in ("agent", "lease", "lapse"):
        if snapshot.get(kind) is not None:
            records[(kind, None)] = snapshot[kind]
    return records


def snapshot_of(records: Dict[RecordKey, Any]) -> Dict[str, Any]:
    """The `state.json` form of a set of records."""
    state: Dict[str, Any] = {
        "version": STATE_VERSION,
        "releases": [],
        "routes": [],
        "links": [],
        "closed_link_ports": [],
        "active": {},
        "retire": [],
        "lease": None,
        "lapse": None,
    }
    lists = {"release": "releases", "route": "routes", "link": "links", "retire": "retire"}
    for (kind, key), value in records.items():
        if kind in lists:
            state[lists[kind]].append(value)
        elif kind == "closed":
            state["closed_link_ports"].append([key[0], key[1], value])
        elif kind == "active":
            state["active"][key] = value
        else:
            state[kind] = value
    state["retire"].sort(key=lambda item: int(item.get("seq", 0)))
    return state


def _replay(records: Dict[RecordKey, Any], raw: bytes) -> None:
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
            key = (str(entry["k"]), _hashable(entry["id"]))
            value = entry["v"]
        except (ValueError, KeyError, TypeError):
            continue  # torn by a crash while it was written: the change was not acknowledged
        records.pop(key, None)  # a record changed again moves to the end, like in memory
        if value is not None:
            records[key] = value


def _read(state: Path, quarantine: bool) -> Tuple[Dict[RecordKey, Any], bool]:
    corrupt = False
    try:
        data = json.loads(state.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("state is not a JSON object")
        records = records_of(data)
    except FileNotFoundError:
        records = {}
    except OSError:
        if quarantine:
            raise  # the agent must not start over an unreadable state as if it had none
        records = {}
    except ValueError:
        corrupt = True
        records = {}
        if quarantine:
            os.replace(state, state.with_name(state.name + ".corrupt"))
    with contextlib.suppress(FileNotFoundError if quarantine else OSError):
        _replay(records, log_path(state).read_bytes())
    return records, corrupt


def read_state(state: Path) -> Dict[str, Any]:
    """What the agent last saved (snapshot plus log) in the `state.json` form; empty if none.

    For readers other than the agent: nothing is changed on disk.
    """
    return snapshot_of(_read(state, quarantine=False)[0])


class StateFile:
    """The agent's side: load once, then append changed records and fold them in now and then.

    Not thread-safe: the agent calls it from its one writer thread.
    """

    def __init__(self, state: Path) -> None:
        self.path = state
        self.log = log_path(state)
        self.records: Dict[RecordKey, Any] = {}
        self._fd: Optional[int] = None
        self._log_size = 0
        self._snapshot_size = 0

    def load(self) -> Dict[str, Any]:
        """The saved state; a snapshot that is not valid JSON is moved aside (never silently
        overwritten) and the result has `corrupt` set."""
        records, corrupt = _read(self.path, quarantine=True)
        state = snapshot_of(records)
        if corrupt:
            state["corrupt"] = True
        return state

    def rewrite(self, snapshot: Dict[str, Any]) -> None:
        """Save the whole state as the new snapshot and start an empty log."""
        self.records = records_of(snapshot)
        self._fold()

    def append(self, changes: List[Tuple[str, Any, Any]]) -> None:
        """Make `(kind, id, value)` changes durable (value None: the record is gone)."""
        lines = []
        for kind, key, value in changes:
            rkey = (kind, _hashable(key))
            self.records.pop(rkey, None)
            if value is not None:
                self.records[rkey] = value
            lines.append(json.dumps({"k": kind, "id": key, "v": value}, separators=(",", ":")))
        if not lines:
            return
        if self._log_size > max(_MIN_LOG, self._snapshot_size):
            self._fold()
            return
        payload = ("\n".join(lines) + "\n").encode()
        fd = self._open_log()
        os.write(fd, payload)
        os.fsync(fd)
        self._log_size += len(payload)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open_log(self) -> int:
        if self._fd is None:
            self._fd = os.open(str(self.log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._log_size = os.fstat(self._fd).st_size
            _fsync_dir(self.path.parent)  # the log's name is durable before anything in it
        return self._fd

    def _fold(self) -> None:
        # Snapshot first: a crash before the log is emptied replays records the snapshot
        # already holds, in the same order, to the same result.
        self._snapshot_size = atomic_write_json(self.path, snapshot_of(self.records))
        fd = self._open_log()
        os.ftruncate(fd, 0)
        os.fsync(fd)
        self._log_size = 0
