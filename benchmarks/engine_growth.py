"""How deploy, finish and down grow with the number of components.

    .venv/bin/python benchmarks/engine_growth.py [--sizes 30,100,300] [--json FILE]

For each size N: a generated project of 3 levels of N/3 components (the 30-component
benchmark's apps and health settings, `max_parallel = 10`), a first deploy, then a
`deploy --full` that reuses every artifact (N new releases started, switched, verified,
the N old ones retired), then `down`. Reported per size: the `--full` deploy's wall time, its
`finish` step (from the journal), the wall time of `down`, each also per component; and the
growth exponent k fitted to time ≈ c·N^k over the sizes (least squares on the logs): k = 1 is
linear. Everything it started is stopped at the end of each size.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import _project as P


def fit_exponent(sizes: list[int], times: list[float]) -> float:
    """k of time ≈ c·N^k, least squares on (log N, log time)."""
    xs = [math.log(n) for n in sizes]
    ys = [math.log(max(t, 1e-6)) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def one_size(n: int) -> dict[str, Any]:
    width = max(1, n // 3)
    with P.short_tmp() as folder:
        gen = P.generate_project(folder, width=width, depth=3)
        with P.session(gen.path) as sy:
            started = time.perf_counter()
            first = sy.deploy(sy.plan(P.ENV))
            cold = time.perf_counter() - started
            assert first.record.status == "succeeded", first.record
            plan = sy.plan(P.ENV, selection="full")
            started = time.perf_counter()
            view = sy.deploy(plan)
            full = time.perf_counter() - started
            assert view.record.status == "succeeded", view.record
            steps = P.step_times(sy.store.events(view.record.id))
            finish = steps["finish"].duration
            started = time.perf_counter()
            stopped = sy.down(P.ENV)
            down = time.perf_counter() - started
        return {
            "components": len(gen.components),
            "cold_deploy_s": cold,
            "full_deploy_s": full,
            "finish_step_s": finish,
            "down_s": down,
            "stopped": len(stopped),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="30,100,300", help="component counts (default %(default)s)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict[str, Any] = {"machine": P.machine(), "sizes": {}}
    rows = []
    for n in sizes:
        row = one_size(n)
        rows.append(row)
        figures["sizes"][str(row["components"])] = row
        c = row["components"]
        print(
            f"N={c:5d}: deploy --full {row['full_deploy_s']:7.2f}s "
            f"({row['full_deploy_s'] / c * 1000:5.0f} ms/component), finish "
            f"{row['finish_step_s']:6.2f}s, down {row['down_s']:6.2f}s "
            f"({row['stopped']} stopped), first deploy {row['cold_deploy_s']:.2f}s",
            flush=True,
        )
    if len(rows) >= 2:
        counts = [r["components"] for r in rows]
        figures["growth_exponent"] = {
            key: fit_exponent(counts, [r[key] for r in rows])
            for key in ("full_deploy_s", "finish_step_s", "down_s", "cold_deploy_s")
        }
        print("growth exponent k (time ≈ c·N^k):", P.rounded(figures["growth_exponent"], 2))
    figures["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    P.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
