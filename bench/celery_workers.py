"""The clustered night on the production configuration, on 1 vs 2 Celery workers.

For each ``--workers`` count: a fresh local lake with ``--days`` days of the rule-based pricer's
logs of ``--skus`` SKUs (the expanded bundled world, `pricing history --skus N`), then the
production stack as local processes (`tests/integration/stack.py`: Airflow's api-server,
scheduler, dag-processor and that many Celery workers of one task slot each, on PostgreSQL with
Redis as the broker; an MLflow server on PostgreSQL) with ``PRICING_CLUSTERS=true``, and one
`pricing_nightly` run triggered through the REST API and polled to its end. Measured: the run's
wall time (trigger to end), and the busy time of every task (its start to end, as Airflow
recorded them), summed and per cluster step. The stack is torn down between counts; PostgreSQL
and Redis must be running (as on every machine here).

Last line: ``celery_speedup=<wall 1 worker / wall 2 workers> night_1w_s=<…> night_2w_s=<…>``.

    python bench/celery_workers.py [--skus 2000] [--days 14] [--workers 1 2]
        [--skus-per-cluster 500] [--algos ppo] [--ppo-timesteps 200000] [--episodes 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = dt.date(2026, 1, 5)


def _history(root: Path, skus: int, days: int) -> dict[str, str]:
    from pipeline.data.lake import Lake
    from pipeline.data.synthetic import write_history
    from sim.world import default_world, template_of

    templates = default_world()
    world = templates.expand(skus, 0)
    categories = {s.id: template_of(templates, s.id) or s.id for s in world.skus}
    write_history(Lake.from_uri(str(root / "lake")), world, days, 0, START, categories=categories)
    return {"PRICING_DATA_DIR": str(root)}


def _seconds(ti: dict[str, Any]) -> float:
    start, end = ti.get("start_date"), ti.get("end_date")
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _night(workers: int, args: argparse.Namespace, pricing: dict[str, str]) -> dict[str, Any]:
    from tests.integration.stack import production_stack
    from tests.integration.test_production_stack import trigger_and_wait

    last = START + dt.timedelta(days=args.days - 1)
    with (
        tempfile.TemporaryDirectory(prefix="bench-celery-") as tmp,
        production_stack(Path(tmp), pricing, workers=workers, concurrency=1) as stack,
    ):
        token = stack.token()
        started = time.monotonic()
        run = trigger_and_wait(
            stack,
            token,
            "pricing_nightly",
            {"dag_run_id": f"bench__{workers}w", "logical_date": f"{last}T00:00:00Z"},
            every_s=10.0,
            deadline_s=args.deadline_s,
        )
        wall = time.monotonic() - started
    busy: dict[str, float] = defaultdict(float)
    clusters = set()
    for ti in run.task_instances:
        busy[ti["task_id"]] += _seconds(ti)
        if ti["task_id"].startswith("cluster.") and ti["map_index"] >= 0:
            clusters.add(ti["map_index"])
    states = run.states()
    return {
        "wall_s": wall,
        "state": run.run["state"],
        "busy": dict(busy),
        "clusters": len(clusters),
        "hosts": sorted({ti["hostname"] for ti in run.task_instances if ti.get("hostname")}),
        "failed": sorted(k for k, v in states.items() if v not in ("success", "skipped")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skus", type=int, default=2000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--skus-per-cluster", type=int, default=500)
    ap.add_argument("--algos", default="ppo", help="comma-separated")
    ap.add_argument("--ppo-timesteps", type=int, default=200_000)
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--deadline-s", type=float, default=7200.0)
    args = ap.parse_args()
    if args.days < 4:
        ap.error("--days must be >= 4 (a training window and held-out days)")
    algos = [a for a in args.algos.split(",") if a]
    results = {}
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="bench-celery-lake-") as lake_dir:
            root = Path(lake_dir)
            started = time.perf_counter()
            pricing = {
                **_history(root, args.skus, args.days),
                "PRICING_CLUSTERS": "true",
                "PRICING_TRAIN_DAYS": str(args.days),
                "PRICING_HOLDOUT_DAYS": str(min(7, args.days - 2)),
                "PRICING_ALGOS": "[" + ",".join(f'"{a}"' for a in algos) + "]",
                "PRICING_PPO_TIMESTEPS": str(args.ppo_timesteps),
                "PRICING_EVAL_EPISODES": str(args.episodes),
                "PRICING_SKUS_PER_CLUSTER": str(args.skus_per_cluster),
                # one task slot per worker and one thread per task: the workers are the lever
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            }
            print(f"history: {time.perf_counter() - started:.0f} s", flush=True)
            r = _night(workers, args, pricing)
        results[workers] = r
        busy = sum(r["busy"].values())
        print(
            f"{workers} worker(s): night {r['wall_s']:.0f} s ({r['state']}), {r['clusters']} "
            f"clusters, task time {busy:.0f} s (busy share {busy / r['wall_s'] / workers:.2f} "
            f"of {workers} slot(s)), hosts {r['hosts']}, not successful: {r['failed'] or 'none'}",
            flush=True,
        )
        for name, seconds in sorted(r["busy"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:<22} {seconds:8.1f} s")
    if 1 in results and 2 in results:
        one, two = results[1]["wall_s"], results[2]["wall_s"]
        print(
            f"celery_speedup={one / two:.2f} night_1w_s={one:.0f} night_2w_s={two:.0f} "
            f"({args.skus:,} SKUs, {args.days} days, algos {args.algos}, 2 cores)"
        )


if __name__ == "__main__":
    main()
