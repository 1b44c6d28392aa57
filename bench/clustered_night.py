"""A night fanned out over clusters, at growing catalogue sizes: wall time per step and per SKU.

For each ``--skus`` size, in a fresh child process (so each peak RSS is its own): ``--days`` days
of the rule-based pricer's logs of the expanded bundled world (`pricing history --skus N`) into a
fresh local lake, then `run_clustered_night` for the last day — validation and features for the
catalogue, the clusters (``--skus-per-cluster``), and each cluster's refit, fidelity, training
(``--algos``), evaluation and gate in turn (one process: what one Celery worker does; the DAG
hands the clusters to every free worker). History generation is timed apart; the night's
validation checks every day of the window (a first night: a steady-state night checks one).

Last line: ``per_sku_cost_ratio=<night s per SKU, largest vs smallest size> night_<N>_s=<…>``.

    python bench/clustered_night.py [--skus 1000 5000] [--days 14] [--skus-per-cluster 500]
        [--algos planner] [--episodes 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START = dt.date(2026, 1, 5)


def _night(root: str, skus: int, args: dict[str, Any]) -> dict[str, Any]:
    import logging

    from pipeline.data.lake import open_lake
    from pipeline.data.synthetic import write_history
    from pipeline.nightly.run import run_clustered_night
    from pipeline.settings import Settings
    from sim.world import default_world, template_of

    logging.disable(logging.WARNING)
    settings = Settings(
        data_dir=Path(root),
        train_days=args["days"],
        holdout_days=min(7, args["days"] - 2),
        algos=tuple(args["algos"]),
        eval_episodes=args["episodes"],
        skus_per_cluster=args["skus_per_cluster"],
        ppo_timesteps=args["ppo_timesteps"],
    )
    templates = default_world()
    world = templates.expand(skus, 0)
    categories = {s.id: template_of(templates, s.id) or s.id for s in world.skus}
    started = time.perf_counter()
    write_history(open_lake(settings), world, args["days"], 0, START, categories=categories)
    history_s = time.perf_counter() - started
    last = START + dt.timedelta(days=args["days"] - 1)
    steps: dict[str, float] = {}

    def timing(name: str, seconds: float, out: Any) -> None:
        steps[name] = steps.get(name, 0.0) + seconds

    started = time.perf_counter()
    night = run_clustered_night(settings, last, on_step=timing)
    night_s = time.perf_counter() - started
    statuses = [r.status for r in night.clusters.values()]
    moved = sum(
        1
        for r in night.clusters.values()
        if r.status == "completed" and getattr(r.steps.get("gate"), "moved", False)
    )
    return {
        "history_s": history_s,
        "night_s": night_s,
        "steps": steps,
        "clusters": len(statuses),
        "completed": statuses.count("completed"),
        "moved": moved,
        "status": night.status,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skus", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--skus-per-cluster", type=int, default=500)
    ap.add_argument("--algos", default="planner", help="comma-separated")
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--ppo-timesteps", type=int, default=200_000)
    args = ap.parse_args()
    if args.days < 4:
        ap.error("--days must be >= 4 (a training window and held-out days)")
    opts = {
        "days": args.days,
        "algos": [a for a in args.algos.split(",") if a],
        "episodes": args.episodes,
        "skus_per_cluster": args.skus_per_cluster,
        "ppo_timesteps": args.ppo_timesteps,
    }
    sizes = sorted(set(args.skus))
    results = {}
    for n in sizes:
        with (
            tempfile.TemporaryDirectory(prefix="bench-clusters-") as tmp,
            mp.get_context("spawn").Pool(1) as pool,
        ):
            r = pool.apply(_night, (tmp, n, opts))
        results[n] = r
        print(
            f"{n:,} SKUs x {args.days} days: history {r['history_s']:.0f} s; night "
            f"{r['night_s']:.0f} s ({1000 * r['night_s'] / n:.1f} ms/SKU), {r['clusters']} "
            f"clusters ({r['completed']} completed, {r['moved']} promoted), status "
            f"{r['status']}, peak {r['peak_mb']:.0f} MB",
            flush=True,
        )
        for name, seconds in sorted(r["steps"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:<16} {seconds:8.1f} s  {100 * seconds / r['night_s']:5.1f} %")
    small, large = sizes[0], sizes[-1]
    ratio = (results[large]["night_s"] / large) / (results[small]["night_s"] / small)
    print(
        f"per_sku_cost_ratio={ratio:.2f} night_{large // 1000}k_s={results[large]['night_s']:.0f} "
        f"({large:,} vs {small:,} SKUs, {args.days} days, algos {args.algos})"
    )


if __name__ == "__main__":
    main()
