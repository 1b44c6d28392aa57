"""A night fanned out over clusters, at growing catalogue sizes: wall time per step and per SKU.

For each ``--skus`` size: ``--days`` days of the rule-based pricer's logs of the expanded bundled
world (`pricing history --skus N`) into a fresh local lake (in a child process of its own, timed
apart: not part of the night), then, in a fresh child process, `run_clustered_night` for the last
day — validation and features for the catalogue, the clusters (``--skus-per-cluster``), and each
cluster's refit, fidelity, training (``--algos``), evaluation and gate — with ``--workers``
cluster nights side by side (1: in that process, as one Celery worker does them in turn).

A first night validates every day of the window; with ``--steady`` the earlier days carry the
validation reports the nights before would have written (seeded, not re-validated: the history
is generated clean) and the timed night validates its own day, as every night after the first
does — a first night's validation costs about that day's times the window's days.

Peak memory: the night's process (the catalogue's steps, and the cluster nights with one
worker), the largest worker process, and all of them together (sampled).

Last line: ``per_sku_cost_ratio=<night s per SKU, largest vs smallest size> night_<N>k_s=<…>``.

    python bench/clustered_night.py [--skus 1000 5000] [--days 14] [--skus-per-cluster 500]
        [--algos planner] [--episodes 60] [--workers 2] [--steady]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START = dt.date(2026, 1, 5)


def _settings(root: str, args: dict[str, Any]) -> Any:
    from pipeline.settings import Settings

    return Settings(
        data_dir=Path(root),
        train_days=args["days"],
        holdout_days=min(7, args["days"] - 2),
        algos=tuple(args["algos"]),
        eval_episodes=args["episodes"],
        skus_per_cluster=args["skus_per_cluster"],
        ppo_timesteps=args["ppo_timesteps"],
        night_workers=args.get("workers", 1),
    )


def history(root: str, skus: int, args: dict[str, Any]) -> dict[str, Any]:
    """``args["days"]`` days of logs of ``skus`` SKUs into the lake under ``root``."""
    from pipeline.data.lake import open_lake
    from pipeline.data.synthetic import write_history
    from sim.world import default_world, template_of

    templates = default_world()
    world = templates.expand(skus, 0)
    categories = {s.id: template_of(templates, s.id) or s.id for s in world.skus}
    started = time.perf_counter()
    lake = open_lake(_settings(root, args))
    write_history(lake, world, args["days"], 0, START, categories=categories)
    return {"history_s": time.perf_counter() - started}


def _night(root: str, skus: int, args: dict[str, Any]) -> dict[str, Any]:
    import logging

    from pipeline.nightly.run import run_clustered_night

    logging.disable(logging.WARNING)
    settings = _settings(root, args)
    last = START + dt.timedelta(days=args["days"] - 1)
    if args.get("steady"):
        _seed_reports(settings, last)
    steps: dict[str, float] = {}

    def timing(name: str, seconds: float, out: Any) -> None:
        steps[name] = steps.get(name, 0.0) + seconds

    sampler = _Sampler()
    sampler.start()
    started = time.perf_counter()
    night = run_clustered_night(settings, last, on_step=timing)
    night_s = time.perf_counter() - started
    sampler.done = True
    statuses = [r.status for r in night.clusters.values()]
    moved = sum(
        1
        for r in night.clusters.values()
        if r.status == "completed" and getattr(r.steps.get("gate"), "moved", False)
    )
    return {
        "night_s": night_s,
        "steps": steps,
        "clusters": len(statuses),
        "completed": statuses.count("completed"),
        "moved": moved,
        "status": night.status,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mb": sampler.worker_mb,
        "total_peak_mb": sampler.total_mb,
    }


class _Sampler(threading.Thread):
    """Resident memory of the worker processes, sampled twice a second: the largest worker's
    peak, and the peak of the night's process and its workers together. (A child's own
    ``ru_maxrss`` would count its parent's memory at the fork before its exec.)"""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = False
        self.worker_mb = 0.0
        self.total_mb = 0.0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done:
            rss = []
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss.append(child.memory_info().rss / 2**20)
            self.worker_mb = max([self.worker_mb, *rss])
            self.total_mb = max(self.total_mb, me.memory_info().rss / 2**20 + sum(rss))
            time.sleep(0.5)


def _seed_reports(settings: Any, last: dt.date) -> None:
    """The validation reports the nights before ``last`` would have left for their days (the
    history is generated clean; what validating a day costs is measured on ``last``'s)."""
    import json

    from pipeline.contracts import validation_report_path
    from pipeline.data.lake import open_lake
    from pipeline.data.validation import ValidationResult

    lake = open_lake(settings)
    for i in range(1, settings.train_days):
        day = last - dt.timedelta(days=i)
        for feed in ("decisions", "transactions"):
            seeded = ValidationResult(feed, day, True, [], {"validated_with": "a night before"})
            lake.write_bytes(
                validation_report_path(feed, day), json.dumps(seeded.summary()).encode()
            )


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh process: its peak memory is its own."""
    # not a multiprocessing.Pool: its processes are daemons, which may not start the night's
    # own worker processes
    from pipeline.nightly.workers import exit_with_parent

    with ProcessPoolExecutor(
        1, mp_context=mp.get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        return dict(pool.submit(fn, *args).result())


def run_sizes(sizes: list[int], opts: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The night at each catalogue size, printed as it ends."""
    results = {}
    for n in sorted(set(sizes)):
        with tempfile.TemporaryDirectory(prefix="bench-clusters-") as tmp:
            r = {**in_child(history, tmp, n, opts), **in_child(_night, tmp, n, opts)}
        results[n] = r
        workers = opts.get("workers", 1)
        print(
            f"{n:,} SKUs x {opts['days']} days: history {r['history_s']:.0f} s; night "
            f"{r['night_s']:.0f} s ({1000 * r['night_s'] / n:.1f} ms/SKU) on {workers} "
            f"worker(s), {r['clusters']} clusters ({r['completed']} completed, {r['moved']} "
            f"promoted), status {r['status']}; peak {r['peak_mb']:.0f} MB (night's process), "
            f"{r['worker_peak_mb']:.0f} MB (largest worker), {r['total_peak_mb']:.0f} MB "
            "(together)",
            flush=True,
        )
        task_s = sum(r["steps"].values())
        for name, seconds in sorted(r["steps"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:<16} {seconds:8.1f} s  {100 * seconds / task_s:5.1f} % of task time")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skus", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--skus-per-cluster", type=int, default=500)
    ap.add_argument("--algos", default="planner", help="comma-separated")
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--ppo-timesteps", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=1, help="cluster nights side by side")
    ap.add_argument("--steady", action="store_true", help="earlier days already validated")
    args = ap.parse_args()
    if args.days < 4:
        ap.error("--days must be >= 4 (a training window and held-out days)")
    opts = {
        "days": args.days,
        "algos": [a for a in args.algos.split(",") if a],
        "episodes": args.episodes,
        "skus_per_cluster": args.skus_per_cluster,
        "ppo_timesteps": args.ppo_timesteps,
        "workers": args.workers,
        "steady": args.steady,
    }
    results = run_sizes(args.skus, opts)
    small, large = min(results), max(results)
    ratio = (results[large]["night_s"] / large) / (results[small]["night_s"] / small)
    print(
        f"per_sku_cost_ratio={ratio:.2f} night_{large // 1000}k_s={results[large]['night_s']:.0f} "
        f"({large:,} vs {small:,} SKUs, {args.days} days, algos {args.algos}, "
        f"{args.workers} worker(s){', steady' if args.steady else ''})"
    )


if __name__ == "__main__":
    main()
