"""examples/pystack with shipyard's Python builder, against a pip install into a venv per release.

shipyard (this version): the first deploy, a code-only redeploy, a no-change `deploy --full`
and `--deploys` more code-only redeploys, each timed through the console script; disk from
`status --json` (each file once: hard links count once) and of one release folder's own
files. The baseline is what users did by hand before: per release and component,
`python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` (pip's wheel cache warm
after its first run), timed and measured for real once for api and web (the worker's
requirements are the api's: counted again); its disk after N deploys is computed
from that measured size for the way shipyard stored it before this change (every artifact
kept, a full copy per release: N artifacts + keep_releases releases per component).

    .venv/bin/python benchmarks/pystack_deploy.py [--deploys 2] [--json FILE]   # about 2 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _project import commit_all, free_ports, git, machine, short_tmp, show, write_json

REPO = Path(__file__).resolve().parents[1]
PYSTACK = REPO / "examples" / "pystack"
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
WHEEL_CACHE = "/tmp/shipyard-bench-uv-cache"  # kept between runs, as on a build machine
KEEP = 3  # keep_releases of the example


def cli(project: Path, *args: str) -> tuple[float, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [SHIPYARD, "-C", str(project), "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "UV_CACHE_DIR": WHEEL_CACHE},
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"shipyard {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, json.loads(done.stdout)


def own_bytes(folder: Path) -> int:
    """Bytes of files under `folder` that no other path shares (link count 1)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink == 1:
                total += st.st_blocks * 512
    return total


def tree_bytes(folder: Path) -> tuple[int, int]:
    """(bytes, files) of everything under `folder`."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            files += 1
    return total, files


def shipyard_runs(folder: Path, deploys: int) -> dict[str, Any]:
    project = folder / "pystack"
    shutil.copytree(PYSTACK, project, ignore=shutil.ignore_patterns(".shipyard", "__pycache__"))
    config = project / "shipyard.toml"
    api, web = free_ports(2)
    config.write_text(
        config.read_text()
        .replace("port = 4100", f"port = {api}")
        .replace("port = 4101", f"port = {web}")
    )
    git(project, "init", "-q")
    commit_all(project, "v1")
    figures: dict[str, Any] = {}
    try:
        figures["first_deploy_s"], first = cli(project, "deploy", "--full")
        main = project / "api" / "main.py"
        main.write_text(main.read_text() + "# 1\n")
        commit_all(project, "code only")
        figures["code_only_redeploy_s"], _ = cli(project, "deploy")
        figures["no_change_full_s"], _ = cli(project, "deploy", "--full")
        release = project / ".shipyard" / "local" / "web" / "releases" / first["id"]
        figures["release_files"] = tree_bytes(release)[1]
        figures["release_own_bytes"] = own_bytes(release)
        later = []
        for n in range(deploys):
            main.write_text(main.read_text() + f"# {n + 2}\n")
            commit_all(project, f"code only {n + 2}")
            later.append(cli(project, "deploy")[0])
        figures["more_code_only_redeploys_s"] = later
        figures["deploys"] = 3 + deploys
        figures["disk_after"] = cli(project, "status")[1]["disk"]
    finally:
        subprocess.run([SHIPYARD, "-C", str(project), "down"], capture_output=True, timeout=120)
    return figures


def baseline(folder: Path) -> dict[str, Any]:
    """`python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` per component."""
    figures: dict[str, Any] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for component in ("api", "web"):
        release = folder / "baseline" / component
        shutil.copytree(PYSTACK / component, release)
        started = time.monotonic()
        subprocess.run(
            "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt",
            shell=True,
            cwd=release,
            env=env,
            check=True,
            timeout=600,
        )
        size, files = tree_bytes(release)
        figures[component] = {
            "seconds": time.monotonic() - started,
            "bytes": size,
            "files": files,
        }
    # The worker's requirements are the api's: the same install again, in its own venv.
    figures["worker"] = dict(figures["api"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=2, help="more code-only redeploys")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = parser.parse_args()
    with short_tmp() as folder:
        after = shipyard_runs(folder, args.deploys)
        before = baseline(folder)
    n = after["deploys"]
    per_release = sum(c["bytes"] for c in before.values())
    before_s = sum(c["seconds"] for c in before.values())
    data = {
        "machine": machine(),
        "shipyard": after,
        "pip_per_release": before,
        "compare": {
            "release_bytes_before": per_release,
            "release_own_bytes_after_web": after["release_own_bytes"],
            "install_per_deploy_s_before": before_s,
            "first_deploy_s_after": after["first_deploy_s"],
            "code_only_redeploy_s_after": after["code_only_redeploy_s"],
            "no_change_full_s_after": after["no_change_full_s"],
            f"disk_after_{n}_deploys_before_computed": per_release * (n + min(n, KEEP)),
            f"disk_after_{n}_deploys_after": after["disk_after"]["total"],
        },
    }
    show(data)
    write_json(args.json, data)


if __name__ == "__main__":
    main()
