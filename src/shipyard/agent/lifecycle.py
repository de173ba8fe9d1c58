"""Starting, stopping and inspecting the agent process (what `shipyard agent ...` calls)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import select
import subprocess
import sys
import time
import zipimport
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import procinfo
from .client import AgentClient
from .errors import AgentRequestError
from .paths import AgentPaths
from .state import read_state

if TYPE_CHECKING:
    from .daemon import ExitPlan
    from .keeper import KeeperChannel

__all__ = [
    "agent_status",
    "configure_logging",
    "ensure_agent",
    "install_agent",
    "launch_command",
    "run_foreground",
    "start_background",
    "start_daemon",
    "stop_agent",
]

_LOGGER = "shipyard.agent"


def configure_logging(paths: AgentPaths, *, to_stderr: bool) -> logging.Logger:
    """agent.log (rotated at 5 MB, 2 copies), plus stderr when running in a terminal/systemd."""
    logger = logging.getLogger(_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        str(paths.log), maxBytes=5 * 1024 * 1024, backupCount=2
    )
    file_handler.setFormatter(fmt)
    logger.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        logger.addHandler(stream)
    return logger


def _stderr_is_log(paths: AgentPaths) -> bool:
    # A daemonized agent's stderr already is agent.log: logging there twice would double lines.
    try:
        err = os.fstat(2)
        log = os.stat(paths.log)
    except OSError:
        return False
    return (err.st_dev, err.st_ino) == (log.st_dev, log.st_ino)


def _zip_archive() -> Optional[str]:
    """The .pyz this agent was loaded from, if it runs as a zipapp."""
    package = sys.modules.get(__package__ or "shipyard.agent")
    loader = getattr(package, "__loader__", None)
    if isinstance(loader, zipimport.zipimporter):
        return str(loader.archive)
    return None


def launch_command(python: Optional[str] = None) -> List[str]:
    """The command that runs this very agent code: `python -I agent.pyz` or `python -m ...`."""
    exe = python or sys.executable
    archive = _zip_archive()
    if archive is not None:
        return [exe, "-I", archive]
    return [exe, "-m", "shipyard.agent"]


def _import_roots() -> List[str]:
    """The folder that makes `shipyard.agent` importable for another interpreter (the agent
    needs nothing beyond the standard library)."""
    import shipyard

    return [str(Path(shipyard.__file__ or "").resolve().parent.parent)]


def run_foreground(
    root: Path,
    *,
    on_ready: Optional[Callable[[], None]] = None,
    **agent_options: Any,
) -> None:
    """Run the agent in this process until it is shut down (for systemd and debugging).

    This process becomes the keeper (it holds the listening sockets) and forks the worker that
    routes and supervises, again whenever it dies. `agent_options` go to `Agent` (restart
    policy, port allocator, ...). Raises `AgentRequestError` when the agent cannot start.
    """
    from .daemon import LISTEN_FDS_ENV, parse_listen_fds, raise_open_file_limit
    from .keeper import Keeper

    paths = AgentPaths(root)
    paths.ensure()
    logger = configure_logging(paths, to_stderr=not _stderr_is_log(paths))
    # The keeper holds a copy of every listener: with links, 1,000 components are over 3,000.
    raise_open_file_limit()

    def worker(inherited: Dict[str, int], channel: KeeperChannel) -> int:
        try:
            run_worker(paths, inherited, channel, **agent_options)
        except AgentRequestError:
            return 1  # told the keeper already (`failed`)
        return 0

    # Sockets inherited from an agent that re-executed into this version (before keepers).
    held = parse_listen_fds(os.environ.pop(LISTEN_FDS_ENV, None))
    Keeper(paths, worker, on_ready=on_ready or (lambda: None), logger=logger, held=held).run()
    logger.info("agent stopped")


def run_worker(
    paths: AgentPaths,
    inherited: Dict[str, int],
    keeper: Optional[KeeperChannel],
    **agent_options: Any,
) -> None:
    """The worker: serve the control socket, route and supervise until told to stop.

    A `reexec` replaces this process (same pid) and does not return.
    """
    import asyncio

    from .daemon import Agent

    logger = configure_logging(paths, to_stderr=not _stderr_is_log(paths))
    agent = Agent(
        paths,
        inherited_fds=inherited,
        on_ready=keeper.ready if keeper is not None else (lambda: None),
        logger=logger,
        keeper=keeper,
        **agent_options,
    )
    try:
        plan = asyncio.run(agent.run())
    except AgentRequestError as exc:
        if keeper is not None:
            keeper.failed(exc.message, exc.hint)
        raise
    if plan.reexec:
        _reexec(paths, plan, keeper)


def run_reexecuted_worker(root: Path) -> None:
    """The `worker` command: a worker that re-executed itself, keeping sockets and keeper."""
    from .daemon import LISTEN_FDS_ENV, parse_listen_fds
    from .keeper import KeeperChannel

    paths = AgentPaths(root)
    inherited = parse_listen_fds(os.environ.pop(LISTEN_FDS_ENV, None))
    keeper = KeeperChannel.from_env(os.environ)
    run_worker(paths, inherited, keeper)


def _reexec(paths: AgentPaths, plan: ExitPlan, keeper: Optional[KeeperChannel]) -> None:
    from .daemon import LISTEN_FDS_ENV

    env = dict(os.environ)
    env[LISTEN_FDS_ENV] = json.dumps(plan.listen_fds)
    if keeper is not None:
        keeper.for_exec(env)
    argv = [*launch_command(), "worker", "--root", str(paths.root)]
    logging.getLogger(_LOGGER).info("re-executing: %s (fds %s)", argv, plan.listen_fds)
    logging.shutdown()
    os.execve(argv[0], argv, env)


def _become_daemon(paths: AgentPaths) -> None:
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    log_fd = os.open(str(paths.log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    # Uncaught tracebacks (there should be none) still end up in agent.log.
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)


def _log_tail(paths: AgentPaths, lines: int = 5) -> str:
    from .logfiles import tail

    text = tail(paths.log, lines)
    return ("; last lines of the log: " + " | ".join(text)) if text else ""


def start_daemon(root: Path, timeout: float = 15.0) -> Dict[str, Any]:
    """Start the agent as a daemon (double fork + setsid) unless one already answers.

    Returns the agent's `ping` once its socket answers; raises `agent_start_failed` (pointing at
    agent.log) if it does not within `timeout`. Call it only from a single-threaded process (the
    `start` command): forking a process that has threads is unsafe.
    """
    paths = AgentPaths(root)
    paths.ensure()
    client = AgentClient(paths.root, timeout=5.0)
    try:
        return client.ping()
    except AgentRequestError as exc:
        if exc.code != "agent_not_running":
            raise
    read_fd, write_fd = os.pipe()  # the daemon reports "ok" or its startup error here
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked children
        code = 0
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            _become_daemon(paths)

            def ready() -> None:
                os.write(write_fd, b"ok\n")
                os.close(write_fd)

            try:
                run_foreground(paths.root, on_ready=ready)
            except AgentRequestError as exc:
                os.write(write_fd, f"error: {exc.message} (hint: {exc.hint})\n".encode())
                code = 1
            except BaseException as exc:
                logging.getLogger(_LOGGER).exception("agent crashed")
                os.write(write_fd, f"error: {type(exc).__name__}: {exc}\n".encode())
                code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    os.waitpid(pid, 0)
    report = b""
    deadline = time.monotonic() + timeout
    try:
        while not report.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready_fds, _, _ = select.select([read_fd], [], [], remaining)
            if not ready_fds:
                break
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(read_fd)
    text = report.decode("utf-8", "replace").strip()
    if text != "ok":
        if text.startswith("error: "):
            why = text[len("error: ") :]
        else:
            why = text or f"it exited or did not become ready within {timeout:g}s"
        raise AgentRequestError(
            "agent_start_failed",
            f"the agent for {paths.root} did not start: {why}",
            f"see {paths.log}{_log_tail(paths)}",
        )
    return client.ping()


def _launcher(paths: AgentPaths, python: str) -> Tuple[List[str], Dict[str, str]]:
    """How to run this agent code with `python`: the command, and the environment it needs.

    With this very interpreter: `-m shipyard.agent`, with PYTHONPATH set to where it imports
    shipyard from. With another one (or when this code runs from a .pyz): a zipapp under
    `python -I`, exactly as on a remote host, so nothing of this interpreter's packages leaks.
    """
    if _zip_archive() is None and os.path.realpath(python) == os.path.realpath(sys.executable):
        existing = os.environ.get("PYTHONPATH")
        path = os.pathsep.join([*_import_roots(), *filter(None, [existing])])
        return [python, "-m", "shipyard.agent"], {"PYTHONPATH": path}
    from .zipapp import build_zipapp

    paths.ensure()
    archive = _zip_archive()
    if archive is None:
        archive = str(build_zipapp(paths.dir / "shipyard-agent.pyz"))
    return [python, "-I", archive], {}


def install_agent(
    root: Path,
    *,
    user: bool,
    python: str = sys.executable,
    unit_dir: Optional[Path] = None,
) -> Dict[str, Any]:
    """Put the agent of `root` under systemd (see `systemd.install_unit` for the result).

    Where systemd runs, an agent already running outside it is stopped first, leaving its
    releases running: the agent systemd starts adopts them.
    """
    from .systemd import install_unit, systemctl_command

    paths = AgentPaths(root)
    paths.ensure()
    command, env = _launcher(paths, python)
    systemctl = systemctl_command(user)
    stopped = None
    if systemctl is not None:
        stopped = stop_agent(paths.root, stop_processes=False)
    result = install_unit(
        paths.root, command, user=user, env=env, unit_dir=unit_dir, systemctl=systemctl
    )
    result["stopped_agent_pid"] = stopped["pid"] if stopped else None
    return result


def start_background(
    root: Path, python: str = sys.executable, timeout: float = 15.0
) -> AgentClient:
    """Make sure an agent serves `root` (starting one with `python` if needed); its client."""
    return ensure_agent(root, python, timeout)[0]


def ensure_agent(
    root: Path, python: str = sys.executable, timeout: float = 15.0
) -> Tuple[AgentClient, bool]:
    """Make sure an agent serves `root`; its client, and True if it had to be started (no
    agent answered: a command should say so, since the site was down meanwhile).

    The agent is started by running `python -m shipyard.agent start` in a child process, which
    daemonizes; this keeps fork() out of the caller, which may have threads. With another
    interpreter than this one (or when this code runs from a .pyz), the agent runs from a
    zipapp under `python -I` instead, exactly as on a remote host: nothing of this
    interpreter's packages leaks into it.
    """
    paths = AgentPaths(root)
    client = AgentClient(paths.root)
    try:
        client.ping()
        return client, False
    except AgentRequestError as exc:
        if exc.code != "agent_not_running":
            raise
    env = dict(os.environ)
    launcher, extra_env = _launcher(paths, python)
    env.update(extra_env)
    cmd = [*launcher, "start", "--root", str(paths.root), "--timeout", str(timeout)]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            timeout=timeout + 15.0,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentRequestError(
            "agent_start_failed",
            f"could not run {' '.join(cmd)}: {exc}",
            f"check the interpreter {python!r}; see {paths.log}",
        ) from None
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        raise AgentRequestError(
            "agent_start_failed",
            f"the agent for {paths.root} did not start: {output[-800:]}",
            f"see {paths.log}",
        )
    client.ping()
    return client, True


def stop_agent(root: Path, stop_processes: bool = True, timeout: float = 30.0) -> Dict[str, Any]:
    """Shut the agent down (stopping its releases unless told not to) and wait until it exited.

    Returns `{"was_running": bool, "pid": int|None, "keeper_pid": int|None,
    "stopped": ["component/release", ...]}`; waits for the worker and the keeper to exit.
    """
    client = AgentClient(root)
    try:
        ping = client.ping()
    except AgentRequestError as exc:
        if exc.code == "agent_not_running":
            return {"was_running": False, "pid": None, "keeper_pid": None, "stopped": []}
        raise
    pid = int(ping["pid"])
    keeper = ping.get("keeper_pid")
    pids = [(p, procinfo.start_ticks(p)) for p in (pid, keeper) if isinstance(p, int)]
    result = client.shutdown(stop_processes=stop_processes)
    deadline = time.monotonic() + timeout
    for each, ticks in pids:
        while not procinfo.has_exited(each, ticks):
            if time.monotonic() >= deadline:
                raise AgentRequestError(
                    "agent_timeout",
                    f"the agent (pid {each}) answered the shutdown but is still running",
                    f"see {client.paths.log}; kill it with: kill {each}",
                )
            time.sleep(0.02)
    return {
        "was_running": True,
        "pid": pid,
        "keeper_pid": keeper,
        "stopped": list(result.get("stopped", [])),
    }


def agent_status(root: Path) -> Dict[str, Any]:
    """What the agent says about itself, or what its state file says when it is not running."""
    paths = AgentPaths(root)
    base: Dict[str, Any] = {
        "root": str(paths.root),
        "socket": str(paths.sock),
        "log": str(paths.log),
        "state_file": str(paths.state),
    }
    client = AgentClient(paths.root, timeout=10.0)
    try:
        ping = client.ping()
        listing = client.list_releases()
    except AgentRequestError as exc:
        if exc.code != "agent_not_running":
            raise
        base.update(
            {
                "running": False,
                "pid": None,
                "keeper_pid": None,
                "error": exc.message,
                "hint": exc.hint,
            }
        )
        saved = read_state(paths.state)
        base["recorded_releases"] = [
            {k: r.get(k) for k in ("component", "release", "desired", "pid", "port")}
            for r in saved.get("releases", [])
            if isinstance(r, dict)
        ]
        base["recorded_routes"] = [r for r in saved.get("routes", []) if isinstance(r, dict)]
        return base
    base.update({"running": True, **ping})
    base["releases"] = listing["releases"]
    base["routes"] = listing["routes"]
    rss = procinfo.rss_bytes(int(ping["pid"]))
    base["rss_bytes"] = rss
    return base
