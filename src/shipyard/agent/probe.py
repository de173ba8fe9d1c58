"""Health probes the agent runs on its host for the engine: HTTP, TCP and command."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["command_probe", "http_probe", "tcp_probe"]

_DETAIL = 200


def _result(ok: bool, status: Optional[int], started: float, detail: str) -> Dict[str, Any]:
    return {
        "ok": ok,
        "status": status,
        "latency_ms": round((time.monotonic() - started) * 1000.0, 3),
        "detail": detail[:_DETAIL],
    }


def _error_text(exc: BaseException, host: str, port: int, timeout: float) -> str:
    if isinstance(exc, (socket.timeout, asyncio.TimeoutError)):
        return f"no answer from {host}:{port} within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}:{port} (is the release listening on $PORT?)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{host}:{port}: {exc.strerror}"
    return f"{host}:{port}: {type(exc).__name__}: {exc}"


def _http_blocking(
    host: str, port: int, path: str, timeout: float, expect: Optional[List[int]]
) -> Dict[str, Any]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "GET", path, headers={"User-Agent": "shipyard-agent-probe", "Connection": "close"}
        )
        response = conn.getresponse()
        body = response.read(_DETAIL)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return _result(False, None, started, _error_text(exc, host, port, timeout))
    finally:
        conn.close()
    ok = status in expect if expect is not None else 200 <= status < 400
    text = body.decode("utf-8", "replace")
    if not ok:
        wanted = "one of " + ", ".join(map(str, expect)) if expect else "200-399"
        text = f"status {status}, expected {wanted}: {text}"
    return _result(ok, status, started, text)


async def http_probe(
    host: str, port: int, path: str, timeout: float, expect: Optional[List[int]]
) -> Dict[str, Any]:
    """GET `path`; passes on a status in `expect` (default 200-399)."""
    loop = asyncio.get_running_loop()
    # http.client in a worker thread: a slow release must not stall the agent's loop.
    return await loop.run_in_executor(None, _http_blocking, host, port, path, timeout, expect)


async def tcp_probe(host: str, port: int, timeout: float) -> Dict[str, Any]:
    """Passes if a TCP connection to host:port opens within `timeout`."""
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return _result(False, None, started, _error_text(exc, host, port, timeout))
    writer.close()
    return _result(True, None, started, f"connected to {host}:{port}")


def _command_blocking(
    command: str, cwd: Path, env: Dict[str, str], timeout: float
) -> Dict[str, Any]:
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return _result(False, None, started, f"cannot run /bin/sh: {exc}")
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: sh and what it started
        proc.communicate()
        return _result(False, None, started, f"command timed out after {timeout:g}s")
    text = output.decode("utf-8", "replace").strip()
    ok = proc.returncode == 0
    if not ok:
        text = f"exit code {proc.returncode}: {text[-(_DETAIL - 20) :]}"
    return _result(ok, proc.returncode, started, text)


async def command_probe(
    command: str, cwd: Path, env: Dict[str, str], timeout: float
) -> Dict[str, Any]:
    """Passes if `command` (run by /bin/sh -c) exits 0 within `timeout`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _command_blocking, command, cwd, env, timeout)
