"""`shipyard changes` on a generated monorepo, side by side with `turbo ls --affected`.

    .venv/bin/python benchmarks/changes_bench.py                 # 1,000 components, growth, turbo
    .venv/bin/python benchmarks/changes_bench.py --components 100 --no-turbo --runs 1

The repository (N components in a layered dependency graph, 100,000 files, 2,000 commits) is
written with `git fast-import` and cached in /tmp/shipyard-bench-changes/, so only the first
run pays for it. Every component is also an npm workspace package (package.json with its
workspace dependencies), so Turborepo reads the same graph. For each range (HEAD~1, HEAD~20,
HEAD~1000) the script checks both answers against a naive reference computed here, then times
`shipyard --json changes --since REF` and `turbo ls --affected` alternately (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

CACHE = Path("/tmp/shipyard-bench-changes")
TURBO_DIR = Path("/tmp/shipyard-bench-turbo")
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
LAYERS = 10
SEED = 12
RANGES = (1, 20, 1000)


def name(i: int) -> str:
    return f"c{i:04d}"


def graph(components: int) -> dict[str, list[str]]:
    """Layered: each component of layer k depends on 1–3 components of layer k-1."""
    rng = random.Random(SEED)
    per = max(1, components // LAYERS)
    layers = [list(range(k * per, min(components, (k + 1) * per))) for k in range(LAYERS)]
    layers[-1] += list(range(LAYERS * per, components))
    deps: dict[str, list[str]] = {}
    for k, layer in enumerate(layers):
        for i in layer:
            below = layers[k - 1] if k else []
            picks = rng.sample(below, min(len(below), rng.randint(1, 3))) if below else []
            deps[name(i)] = sorted(name(j) for j in picks)
    return deps


def shipyard_toml(deps: dict[str, list[str]]) -> str:
    lines = [
        "[project]",
        'name = "mono"',
        'default_environment = "local"',
        'global_inputs = ["shipyard.toml", "global.json"]',
        "",
        "[environments.local]",
        'target = "local"',
        "",
    ]
    for comp, after in deps.items():
        lines += [f"[components.{comp}]", f'path = "packages/{comp}"', 'start = "true"']
        if after:
            lines.append("depends_on = [" + ", ".join(f'"{d}"' for d in after) + "]")
        lines.append("")
    return "\n".join(lines)


def package_json(comp: str, after: list[str]) -> str:
    return json.dumps(
        {"name": comp, "version": "1.0.0", "dependencies": {d: "*" for d in after}}, indent=1
    )


def generate(components: int, files: int, commits: int) -> Path:
    """The cached repository (fast-import stream → bare objects → one checkout)."""
    repo = CACHE / f"mono-{components}-{files}-{commits}"
    if (repo / ".done").exists():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    deps = graph(components)
    names = list(deps)
    rng = random.Random(SEED)
    per_component = max(1, files // components - 1)
    out: list[bytes] = []

    def data(text: str) -> None:
        raw = text.encode()
        out.append(b"data %d\n" % len(raw) + raw + b"\n")

    def commit(
        mark: int, message: str, entries: list[tuple[str, str | None]], parent: bool
    ) -> None:
        out.append(b"commit refs/heads/main\n")
        out.append(b"mark :%d\n" % mark)
        stamp = 1_700_000_000 + mark * 60
        out.append(b"committer bench <bench@example.com> %d +0000\n" % stamp)
        data(message)
        if parent:
            out.append(b"from :%d\n" % (mark - 1))
        for path, text in entries:
            if text is None:
                out.append(b"D " + path.encode() + b"\n")
            else:
                out.append(b"M 100644 inline " + path.encode() + b"\n")
                data(text)

    first: list[tuple[str, str | None]] = [
        ("shipyard.toml", shipyard_toml(deps)),
        ("global.json", "{}\n"),
        ("README.md", "generated monorepo\n"),
        (
            "package.json",
            json.dumps(
                {
                    "name": "mono",
                    "private": True,
                    "packageManager": "npm@10.9.0",
                    "workspaces": ["packages/*"],
                }
            ),
        ),
        ("turbo.json", json.dumps({"globalDependencies": ["global.json"], "tasks": {}})),
    ]
    for comp in names:
        first.append((f"packages/{comp}/package.json", package_json(comp, deps[comp])))
        for j in range(per_component):
            first.append((f"packages/{comp}/src/f{j:04d}.txt", f"{comp} {j}\n"))
    commit(1, "first", first, parent=False)
    for n in range(2, commits + 1):
        comp = rng.choice(names)
        entries: list[tuple[str, str | None]] = []
        for _ in range(rng.randint(1, 4)):
            j = rng.randrange(per_component)
            entries.append((f"packages/{comp}/src/f{j:04d}.txt", f"{comp} {j} v{n}\n"))
        if n % 97 == 0:  # now and then a new file, a deleted one, a doc outside every package
            entries.append((f"packages/{comp}/src/new{n}.txt", "new\n"))
            entries.append((f"docs/note{n}.md", "note\n"))
        commit(n, f"change {n}", entries, parent=True)
    stream = b"".join(out)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=stream, check=True)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=repo, check=True)
    (repo / ".gitignore").write_text(".shipyard/\nnode_modules/\n.turbo/\n")
    subprocess.run(["git", "update-index", "--assume-unchanged", "README.md"], cwd=repo)
    (repo / ".done").write_text("")
    return repo


def reference(repo: Path, since: str) -> set[str]:
    """Changed files mapped by folder, closed over dependents: the obvious way."""
    base = _git(repo, "merge-base", since, "HEAD")
    changed = _git(repo, "diff", "--name-only", "--no-renames", base, "HEAD").splitlines()
    config = tomllib.loads((repo / "shipyard.toml").read_text())
    deps = {name: list(c.get("depends_on", [])) for name, c in config["components"].items()}
    if any(f in ("global.json", "shipyard.toml") for f in changed):
        return set(deps)
    hit = {f.split("/")[1] for f in changed if f.startswith("packages/")}
    grew = True
    while grew:
        grew = False
        for comp, after in deps.items():
            if comp not in hit and hit & set(after):
                hit.add(comp)
                grew = True
    return hit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def timed(args: list[str], **options: Any) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall time and CPU time (user + system, the process and every child it waited for, so
    git's and turbo's helpers count): on a machine other jobs load, CPU time is the steadier
    figure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, **options)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def run_shipyard(repo: Path, since: str) -> tuple[float, float, set[str]]:
    wall, cpu, done = timed([SHIPYARD, "-C", str(repo), "--json", "changes", "--since", since])
    if done.returncode != 0:
        raise SystemExit(f"shipyard failed: {done.stdout}{done.stderr}")
    return wall, cpu, {a["name"] for a in json.loads(done.stdout)["affected"]}


def run_turbo(repo: Path, since: str) -> tuple[float, float, set[str]] | None:
    turbo = TURBO_DIR / "node_modules" / ".bin" / "turbo"
    if not turbo.exists():
        return None
    env = {
        **os.environ,
        "TURBO_SCM_BASE": _git(repo, "rev-parse", since),
        "TURBO_SCM_HEAD": "HEAD",
        "TURBO_TELEMETRY_DISABLED": "1",
        "DO_NOT_TRACK": "1",
    }
    wall, cpu, done = timed([str(turbo), "ls", "--affected", "--output=json"], cwd=repo, env=env)
    if done.returncode != 0:
        raise SystemExit(f"turbo failed: {done.stderr or done.stdout}")
    items = json.loads(done.stdout)["packages"]["items"]
    return wall, cpu, {p["name"] for p in items if p["name"] != "//"}


IN_PROCESS = """
import sys, time
from pathlib import Path
from typing import Any
from shipyard.service import Shipyard
start = time.perf_counter()
Shipyard(Path(sys.argv[1])).changes(since=sys.argv[2])
print(time.perf_counter() - start)
"""


def in_process(repo: Path, since: str) -> float:
    """`Shipyard.changes` alone in a fresh process, its imports done first: the command's own
    work without the CLI's start-up (and without any cache of an earlier run)."""
    done = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(repo), since],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def startup() -> tuple[float, float]:
    """`shipyard --version`: what every command pays before it starts (wall, CPU)."""
    wall, cpu, _done = timed([SHIPYARD, "--version"])
    return wall, cpu


def measure(repo: Path, runs: int, turbo: bool) -> list[dict[str, object]]:
    rows = []
    for back in RANGES:
        since = f"HEAD~{back}"
        expected = reference(repo, since)
        ours, theirs, inner, floor = [], [], [], []
        ours_cpu, theirs_cpu, floor_cpu = [], [], []
        turbo_ok: bool | None = None
        for _ in range(runs):
            wall, cpu, found = run_shipyard(repo, since)
            assert found == expected, (since, sorted(found ^ expected)[:10])
            ours.append(wall)
            ours_cpu.append(cpu)
            inner.append(in_process(repo, since))
            wall, cpu = startup()
            floor.append(wall)
            floor_cpu.append(cpu)
            if turbo:
                result = run_turbo(repo, since)
                if result is not None:
                    theirs.append(result[0])
                    theirs_cpu.append(result[1])
                    turbo_ok = result[2] == expected
        changed = len(_git(repo, "diff", "--name-only", since, "HEAD").splitlines())
        rows.append(
            {
                "range": since,
                "changed_files": changed,
                "affected": len(expected),
                "shipyard_cli_s": _median(ours),
                "shipyard_cli_cpu_s": _median(ours_cpu),
                "shipyard_in_process_s": _median(inner),
                "cli_startup_s": _median(floor),
                "cli_startup_cpu_s": _median(floor_cpu),
                "turbo_s": _median(theirs),
                "turbo_cpu_s": _median(theirs_cpu),
                "turbo_correct": turbo_ok,
            }
        )
    return rows


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-turbo", action="store_true")
    args = parser.parse_args()
    report = {}
    for count in args.components:
        start = time.perf_counter()
        repo = generate(count, args.files, args.commits)
        made = time.perf_counter() - start
        print(f"# {count} components: repository ready in {made:.1f} s ({repo})", flush=True)
        rows = measure(repo, args.runs, turbo=not args.no_turbo)
        report[count] = rows
        for row in rows:
            print(json.dumps(row), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
