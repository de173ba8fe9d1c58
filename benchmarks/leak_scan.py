"""The leak scanner on a generated, realistic tree: MB/s on one core, recall per kind, precision.

    .venv/bin/python benchmarks/leak_scan.py [--mb 100] [--seed 1] [--json]

The tree (in a temporary folder, removed at the end) holds source in several languages,
package lockfiles (npm integrity hashes, yarn, go.sum, poetry), minified bundles with inline
base64 images, source maps, HTML with SRI hashes, Kubernetes YAML, docs, changelogs full of git
SHAs and UUIDs, test fixtures with EXAMPLE keys and AWS's documented example keys; into it go
credentials of every kind the scanner knows (tests/leak_samples.py), each in one of several
contexts (code string, .env, YAML, JSON, a comment, an HTTP header in docs, a minified
bundle). A finding on a planted credential's file and line with its kind is a true positive;
any other finding is a false positive. The scan is timed in this process, on one thread, after
one warm-up pass over a small part of the tree (the file cache is warm: the figure is the
scanner's, not the disk's).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import shutil
import string
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.leak_samples import MAKERS, lookalikes, pick, planted

from shipyard.effects.leaks import Scanner, scan_paths

WORDS = [
    "user",
    "order",
    "item",
    "cart",
    "price",
    "total",
    "amount",
    "account",
    "service",
    "client",
    "request",
    "response",
    "handler",
    "config",
    "value",
    "result",
    "error",
    "status",
    "session",
    "cache",
    "queue",
    "event",
    "payload",
    "record",
    "index",
    "buffer",
    "stream",
    "reader",
    "writer",
    "builder",
    "factory",
    "manager",
    "context",
    "options",
    "params",
    "headers",
    "body",
    "query",
    "limit",
    "offset",
    "page",
    "size",
    "count",
    "name",
    "title",
    "description",
    "created",
    "updated",
    "deleted",
    "enabled",
]
HEX = "0123456789abcdef"


def ident(rng: random.Random) -> str:
    parts = rng.choices(WORDS, k=rng.randint(1, 3))
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def python_file(rng: random.Random, lines: int) -> list[str]:
    out = ["import json", "import logging", "", "log = logging.getLogger(__name__)", ""]
    while len(out) < lines:
        fn = ident(rng)
        out += [
            f"def {fn}({ident(rng)}, {ident(rng)}=None):",
            f'    """Return the {rng.choice(WORDS)} of a {rng.choice(WORDS)}."""',
            f"    {ident(rng)} = {ident(rng)}.get('{rng.choice(WORDS)}', {rng.randint(0, 999)})",
            f"    if {ident(rng)} is None:",
            f"        log.info('no {rng.choice(WORDS)} for %s', {ident(rng)})",
            f"    return json.dumps({{'{rng.choice(WORDS)}': {ident(rng)}}})",
            "",
        ]
    return out


def go_file(rng: random.Random, lines: int) -> list[str]:
    out = ["package main", "", 'import "fmt"', ""]
    while len(out) < lines:
        out += [
            f"func {ident(rng).capitalize()}({ident(rng)} string) error {{",
            f'\tfmt.Println("{rng.choice(WORDS)}", {ident(rng)})',
            f"\treturn nil // {uuid.UUID(bytes=rng.randbytes(16))}",
            "}",
            "",
        ]
    return out


def ts_file(rng: random.Random, lines: int) -> list[str]:
    out = ["import { Injectable } from '@angular/core';", ""]
    while len(out) < lines:
        out += [
            f"export async function {ident(rng)}({ident(rng)}: string): Promise<void> {{",
            f"  const {ident(rng)} = await fetch(`/api/{rng.choice(WORDS)}/${{{ident(rng)}}}`);",
            f"  const token = localStorage.getItem('{rng.choice(WORDS)}');",
            "  if (!token) { throw new Error('not signed in'); }",
            "}",
            "",
        ]
    return out


def minified(rng: random.Random, size: int) -> list[str]:
    chunks = []
    total = 0
    while total < size:
        if rng.random() < 0.05:
            image = base64.b64encode(rng.randbytes(rng.randint(300, 3000))).decode()
            chunk = f'e.src="data:image/png;base64,{image}";'
        else:
            a, b = pick(rng, string.ascii_letters, 1), pick(rng, string.ascii_letters, 1)
            chunk = (
                f"function {a}{b}(e,t){{var n=e.{rng.choice(WORDS)}||t.token,r=e.password;"
                f'return n?{a}(n,"{pick(rng, string.ascii_letters + string.digits, 12)}"):r}}'
            )
        chunks.append(chunk)
        total += len(chunk)
    return ["".join(chunks)]


def source_map(rng: random.Random, size: int) -> list[str]:
    mappings = ";".join(
        ",".join(pick(rng, string.ascii_letters + string.digits + "+/", 6) for _ in range(8))
        for _ in range(size // 60)
    )
    return [json.dumps({"version": 3, "sources": ["a.ts"], "mappings": mappings})]


def package_lock(rng: random.Random, entries: int) -> list[str]:
    packages = {}
    for _ in range(entries):
        name = ident(rng).lower()
        packages[f"node_modules/{name}"] = {
            "version": f"{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            "resolved": f"https://registry.npmjs.org/{name}/-/{name}-1.0.0.tgz",
            "integrity": "sha512-" + base64.b64encode(rng.randbytes(64)).decode(),
        }
    return json.dumps({"lockfileVersion": 3, "packages": packages}, indent=2).splitlines()


def yarn_lock(rng: random.Random, entries: int) -> list[str]:
    out = []
    for _ in range(entries):
        name = ident(rng).lower()
        out += [
            f'"{name}@^1.0.0":',
            '  version "1.0.3"',
            f'  resolved "https://registry.yarnpkg.com/{name}/-/{name}-1.0.3.tgz'
            f'#{pick(rng, HEX, 40)}"',
            f"  integrity sha512-{base64.b64encode(rng.randbytes(64)).decode()}",
            "",
        ]
    return out


def go_sum(rng: random.Random, entries: int) -> list[str]:
    return [
        f"github.com/{ident(rng).lower()}/{ident(rng).lower()} v1.{rng.randint(0, 9)}.0 "
        f"h1:{base64.b64encode(rng.randbytes(32)).decode()}"
        for _ in range(entries)
    ]


def poetry_lock(rng: random.Random, entries: int) -> list[str]:
    out = []
    for _ in range(entries):
        out += [
            "[[package]]",
            f'name = "{ident(rng).lower()}"',
            'version = "2.1.0"',
            "files = [",
            f'    {{file = "x-2.1.0.tar.gz", hash = "sha256:{pick(rng, HEX, 64)}"}},',
            "]",
            "",
        ]
    return out


def html(rng: random.Random, lines: int) -> list[str]:
    out = ["<!doctype html>", "<html><head>"]
    while len(out) < lines:
        digest = base64.b64encode(rng.randbytes(48)).decode()
        out += [
            f'<script src="/js/{ident(rng)}.js" integrity="sha384-{digest}" '
            'crossorigin="anonymous"></script>',
            f'<p class="{rng.choice(WORDS)}">{" ".join(rng.choices(WORDS, k=12))}</p>',
        ]
    return out


def k8s(rng: random.Random, docs: int) -> list[str]:
    out = []
    for _ in range(docs):
        name = ident(rng).lower()
        out += [
            "apiVersion: apps/v1",
            "kind: Deployment",
            f"metadata: {{name: {name}, uid: {uuid.UUID(bytes=rng.randbytes(16))}}}",
            "spec:",
            "  template:",
            "    spec:",
            "      containers:",
            f"        - image: registry.internal/{name}@sha256:{pick(rng, HEX, 64)}",
            "          env:",
            "            - name: DB_PASSWORD",
            "              valueFrom: {secretKeyRef: {name: db, key: password}}",
            "---",
        ]
    return out


def docs(rng: random.Random, lines: int) -> list[str]:
    out = ["# Changelog", ""]
    while len(out) < lines:
        out += [
            f"- {' '.join(rng.choices(WORDS, k=8))} ({pick(rng, HEX, 40)})",
            f"- fixed {rng.choice(WORDS)} for request {uuid.UUID(bytes=rng.randbytes(16))}",
        ]
    return out


GENERATORS = [
    ("py", python_file, 400),
    ("go", go_file, 400),
    ("ts", ts_file, 400),
    ("md", docs, 300),
    ("html", html, 300),
    ("yaml", k8s, 20),
]


def build_tree(root: Path, megabytes: float, rng: random.Random) -> dict[tuple[str, int], str]:
    """Write the tree; return (path, line) → kind of every planted credential."""
    truth: dict[tuple[str, int], str] = {}
    target = int(megabytes * 1_000_000)
    written = 0
    count = 0
    kinds = list(MAKERS)
    # Bodies are drawn from pools (generating 100 MB of fresh text would take minutes); what
    # goes into each file (look-alikes, a credential) is new every time.
    pool: dict[str, list[list[str]]] = defaultdict(list)

    def body(key: str, make: Callable[[], list[str]]) -> list[str]:
        if len(pool[key]) < 12:
            pool[key].append(make())
        return list(rng.choice(pool[key]))

    while written < target:
        count += 1
        roll = rng.random()
        folder = f"svc{count % 40}"
        if roll < 0.04:
            name, lines = f"{folder}/package-lock.json", body("npm", lambda: package_lock(rng, 300))
        elif roll < 0.06:
            name, lines = f"{folder}/yarn.lock", body("yarn", lambda: yarn_lock(rng, 300))
        elif roll < 0.08:
            name, lines = f"{folder}/go.sum", body("go", lambda: go_sum(rng, 600))
        elif roll < 0.10:
            name, lines = f"{folder}/poetry.lock", body("poetry", lambda: poetry_lock(rng, 200))
        elif roll < 0.16:
            name = f"{folder}/dist/app.{count}.min.js"
            lines = body("min", lambda: minified(rng, 150_000))
        elif roll < 0.19:
            name = f"{folder}/dist/app.{count}.min.js.map"
            lines = body("map", lambda: source_map(rng, 150_000))
        else:
            ext, make, size = rng.choice(GENERATORS)
            name = f"{folder}/src/{ident(rng)}_{count}.{ext}"
            lines = body(ext, lambda make=make, size=size: make(rng, size))  # type: ignore[misc]
        if rng.random() < 0.5:  # look-alikes everywhere
            for line in rng.sample(lookalikes(rng), 4):
                lines.insert(rng.randrange(len(lines) + 1), line.rstrip("\n"))
            lines = "\n".join(lines).split("\n")  # one entry per line: numbers stay right
        if not name.endswith((".map", ".lock", ".sum", "-lock.json")) and rng.random() < 0.3:
            sample = planted(rng, rng.choice(kinds))
            text = sample.text.rstrip("\n")
            if name.endswith(".min.js"):  # in a bundle: inside the one long line
                text = text.replace("\n", "\\n")
                lines[0] = lines[0][:5000] + f';var k="{text}";' + lines[0][5000:]
                truth[(name, 1)] = sample.kind
            else:
                at = rng.randrange(len(lines) + 1)
                lines.insert(at, text)
                truth[(name, at + 1)] = sample.kind
        data = "\n".join(lines) + "\n"
        file = root / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(data)
        written += len(data)
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=108.0, help="text to generate (MB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="shipyard-leakbench-"))
    try:
        started = time.perf_counter()
        truth = build_tree(root, args.mb, rng)
        generated = time.perf_counter() - started
        scanner = Scanner()
        scan_paths(scanner, root, [root / "svc0"])  # warm-up (imports, caches)
        cpu = time.process_time()
        wall = time.perf_counter()
        leaks, size = scan_paths(scanner, root, [root], use_git=False)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        total_bytes = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    found: dict[tuple[str, int], set[str]] = defaultdict(set)
    for leak in leaks:
        found[(leak.path, leak.line)].add(leak.kind)
    planted_by_kind = Counter(truth.values())
    hits = Counter(kind for where, kind in truth.items() if kind in found.get(where, set()))
    false = [
        (leak.rule, leak.path, leak.line)
        for leak in leaks
        if truth.get((leak.path, leak.line)) != leak.kind
    ]
    true_findings = len(leaks) - len(false)
    result = {
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "load_average": os.getloadavg()[0],
        "tree_mb": round(total_bytes / 1e6, 1),
        "scanned_mb": round(size / 1e6, 1),
        "generated_s": round(generated, 1),
        "scan_wall_s": round(wall, 2),
        "scan_cpu_s": round(cpu, 2),
        "mb_per_cpu_s": round(total_bytes / 1e6 / cpu, 1),
        "planted": sum(planted_by_kind.values()),
        "recall": round(sum(hits.values()) / max(1, sum(planted_by_kind.values())), 4),
        "precision": round(true_findings / max(1, len(leaks)), 4),
        "findings": len(leaks),
        "false_positives": len(false),
        "recall_per_kind": {
            k: f"{hits[k]}/{n} = {hits[k] / n:.2f}" for k, n in sorted(planted_by_kind.items())
        },
        "false_positive_examples": false[:10],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<18} {v}")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
