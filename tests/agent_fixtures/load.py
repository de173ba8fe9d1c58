"""A bounded load loop on 127.0.0.1: keep-alive HTTP clients in threads, counting outcomes.

The clients behave like browsers and common HTTP libraries (Go's net/http, urllib3 for
idempotent methods): a GET sent on a reused keep-alive connection that the server closed before
any byte of a response is sent once more on a new connection (counted in `client_retries`).
Anything else that is not a complete response is a failure: a refused connection (`refused`),
a reset or close on a new connection, a partial response, a timeout, or a status >= 500.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from typing import Any

_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class LoadLoop:
    """`clients` threads sending GET `path` to `port` until stopped (or `max_seconds` passed)."""

    def __init__(
        self, port: int, clients: int = 4, path: str = "/", max_seconds: float = 60.0
    ) -> None:
        self.port = port
        self.path = path
        self.max_seconds = max_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.refused = 0
        self.client_retries = 0
        self.failures: list[str] = []
        self.bodies: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> LoadLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)

    @property
    def failed(self) -> int:
        return len(self.failures) + self.refused

    def wait_for_ok(self, more: int, timeout: float = 30.0) -> None:
        """Block until `more` further requests succeeded (the load is really flowing)."""
        target = self.ok + more
        deadline = time.monotonic() + timeout
        while self.ok < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load: {self.ok}/{target} ok; failures {self.failures[:3]}")
            time.sleep(0.01)

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _run(self) -> None:
        conn = self._new()
        deadline = time.monotonic() + self.max_seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            reused = conn.sock is not None
            try:
                status, body = self._get(conn)
            except _RETRYABLE as exc:
                conn.close()
                conn = self._new()
                if not reused:
                    self._fail(f"new connection: {exc!r}")
                    continue
                with self.lock:
                    self.client_retries += 1
                try:
                    status, body = self._get(conn)
                except ConnectionRefusedError:
                    with self.lock:
                        self.refused += 1
                    conn.close()
                    conn = self._new()
                    continue
                except (OSError, http.client.HTTPException) as exc2:
                    self._fail(f"retry: {exc2!r}")
                    conn.close()
                    conn = self._new()
                    continue
            except ConnectionRefusedError:
                with self.lock:
                    self.refused += 1
                conn.close()
                conn = self._new()
                continue
            except (OSError, http.client.HTTPException) as exc:
                self._fail(repr(exc))
                conn.close()
                conn = self._new()
                continue
            if status >= 500:
                self._fail(f"{status}: {body[:200]}")
            else:
                with self.lock:
                    self.ok += 1
                    self.bodies[body] += 1
        conn.close()

    def _get(self, conn: http.client.HTTPConnection) -> tuple[int, str]:
        conn.request("GET", self.path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)
