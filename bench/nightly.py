"""Wall time of each nightly step and of the whole night, for a stated catalogue and history length.

Simulates ``--days`` days of logs of the rule-based pricer for ``--skus`` SKUs (the bundled world
expanded with jittered copies) into a fresh local lake, then runs every step of the nightly loop
(``pipeline.nightly.run.run_night``, the one order `pricing nightly` follows) for the last day,
timing each step with ``time.perf_counter``. The training window is the whole history
(``train_days = --days``), the last 7 days held out. History generation is timed but is not part of the night.

Also measured, outside the night:

- validating one day (``validate_raw`` when every earlier day already has its validation report:
  what a steady-state night does; the first night on a fresh lake validates every day);
- feature-extraction throughput: ``build_features`` over the whole window's decisions and
  transactions, in decision rows (events) per second.

The goal is a night within 10 minutes for 1,000 SKUs x 90 days on 2 cores. The training budgets
dominate the night and are printed with the results. Last lines: ``night_seconds=<x>`` and
``feature_events_per_second=<y>``.

    python bench/nightly.py [--skus 1000] [--days 90] [--seed 0] [--data-dir DIR] [--keep]
        [--ppo-timesteps 2000000] [--dqn-timesteps 300000] [--algos ppo,dqn] [--episodes 300]

With ``--catalogue 1000 50000`` it measures the night of a catalogue instead: the clustered
night (`bench/clustered_night.py`: one agent per cluster, ``--workers`` cluster nights side by
side) at each size, and the peak memory of the data steps of a first night (validating every day
of the window, then the features) at ``--feature-days 30 90`` days of the smallest catalogue,
each in a fresh process. Last line: ``per_sku_cost_ratio=… night_<N>k_s=…
feature_peak_mb_ratio=…`` (largest vs smallest catalogue; longest vs shortest window).

Quick check: ``python bench/nightly.py --skus 20 --days 21 --ppo-timesteps 20000
--dqn-timesteps 5000 --episodes 60``. Without ``--data-dir`` the lake, MLflow store and models go
to a temporary folder that is removed at the end unless ``--keep``; a ``--data-dir`` must be empty
or absent (a registry that already holds this date's candidates would skip training).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from pipeline.contracts import ALGORITHMS
from pipeline.data.features import build_features
from pipeline.data.lake import Lake
from pipeline.data.synthetic import write_history
from pipeline.nightly.results import StepResult
from pipeline.nightly.run import run_night
from pipeline.nightly.steps import extract_features, validate_raw
from pipeline.settings import Settings
from sim.world import load_world

GOAL_SECONDS = 600.0
GOAL_SKUS = 1000
GOAL_DAYS = 90
HOLDOUT_DAYS = 7


def log(msg: str) -> None:
    """Progress on stderr, so stdout holds only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_text() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def train_progress(algo: str) -> Callable[[int, int, float | None], None]:
    """Log about every 10 % of a training run."""
    next_share = [0.1]

    def report(done: int, total: int, profit: float | None) -> None:
        if done / total >= next_share[0] or done >= total:
            shown = "n/a" if profit is None else f"{profit:,.1f}"
            log(f"train_{algo}: {done:,}/{total:,} SKU-steps, recent episode profit {shown}")
            while next_share[0] <= done / total:
                next_share[0] += 0.1

    return report


class Interrupted(BaseException):
    """SIGTERM (e.g. from ``timeout``) arrived: report what was measured, then stop.

    A BaseException, like KeyboardInterrupt, so that libraries' ``except Exception`` handlers
    (Great Expectations' renderers have some) do not swallow it.
    """


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class NightTimings:
    steps: list[tuple[str, float]] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: str | None = None  # why a gate stopped the night
    stopped_at: str | None = None
    interrupted: str | None = None  # the step that was running when SIGTERM came
    one_day_validate_s: float | None = None

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)


def run_timed_night(settings: Settings, date: dt.date, now: dt.datetime) -> NightTimings:
    """The night as `pricing nightly` runs it (`run_night`, every step in its one order), each
    step timed; then ``validate_raw`` once more, outside the night's total: every earlier day
    has its report by then, so it validates only ``date``, as a steady-state night does."""
    night = NightTimings()
    running = ["validate"]

    def say(message: str) -> None:  # run_night says "<step> …" as a step starts
        running[0] = message.split(" ")[0]
        log(message)

    def on_step(name: str, seconds: float, out: StepResult | None) -> None:
        night.steps.append((name, seconds))
        if out is not None:
            night.outputs[name] = out.to_dict()
        log(f"{name}: {seconds:.1f}s")

    try:
        result = run_night(
            settings, date, say=say, train_progress=train_progress, now=now, on_step=on_step
        )
        if result.status == "stopped":
            night.stopped, night.stopped_at = result.reason, result.stopped_at
        else:
            running[0] = "validate (one day)"
            started = time.perf_counter()
            validate_raw(settings, date, now)
            night.one_day_validate_s = time.perf_counter() - started
    except Interrupted:
        night.interrupted = running[0]
    return night


def read_window(lake: Lake, dates: list[dt.date]) -> tuple[pd.DataFrame, pd.DataFrame]:
    decisions = pd.concat(
        [lake.read_partition("raw", "decisions", d) for d in dates], ignore_index=True
    )
    transactions = pd.concat(
        [lake.read_partition("raw", "transactions", d) for d in dates], ignore_index=True
    )
    return decisions, transactions


def print_table(timings: list[tuple[str, float]], night: float) -> None:
    print(f"{'step':<12}{'seconds':>10}{'share':>9}")
    for name, seconds in timings:
        share = seconds / night if night > 0 else 0.0
        print(f"{name:<12}{seconds:>10.1f}{share:>9.1%}")
    print(f"{'total':<12}{night:>10.1f}{1:>9.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=GOAL_SKUS, help="SKUs in the catalogue")
    ap.add_argument(
        "--days", type=int, default=GOAL_DAYS, help="days of history (= training window)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the catalogue and the history")
    ap.add_argument("--start", default="2026-01-05", help="first day of the history, YYYY-MM-DD")
    ap.add_argument("--world", type=Path, default=None, help="base world file (default: bundled)")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    ap.add_argument("--ppo-timesteps", type=int, default=2_000_000, help="PPO budget in SKU-steps")
    ap.add_argument("--dqn-timesteps", type=int, default=300_000, help="DQN budget in SKU-steps")
    ap.add_argument("--algos", default="ppo,dqn", help="algorithms trained, comma-separated")
    ap.add_argument("--episodes", type=int, default=300, help="evaluation episodes per policy")
    ap.add_argument(
        "--catalogue",
        type=int,
        nargs="+",
        default=None,
        help="the clustered night at these catalogue sizes instead (see the module's doc)",
    )
    ap.add_argument("--workers", type=int, default=2, help="with --catalogue: side by side")
    ap.add_argument("--skus-per-cluster", type=int, default=500, help="with --catalogue")
    ap.add_argument("--feature-days", type=int, nargs=2, default=[30, 90])
    ap.add_argument(
        "--steady",
        action="store_true",
        help="with --catalogue: a night after the first (its own day validated, see "
        "bench/clustered_night.py)",
    )
    args = ap.parse_args()
    if args.catalogue:
        sys.exit(catalogue(args))
    if args.skus < 1:
        ap.error(f"--skus must be >= 1 (got {args.skus})")
    if args.days <= HOLDOUT_DAYS:
        ap.error(f"--days must exceed the {HOLDOUT_DAYS} held-out days (got {args.days})")
    try:
        start = dt.date.fromisoformat(args.start)
    except ValueError:
        ap.error(f"--start must be a date YYYY-MM-DD (got {args.start!r})")
    algos = tuple(a.strip() for a in args.algos.split(",") if a.strip())
    if not algos or any(a not in ALGORITHMS for a in algos):
        ap.error(f"--algos must list {' and/or '.join(ALGORITHMS)}, comma-separated")
    if args.episodes < 10:
        ap.error(f"--episodes must be >= 10 (got {args.episodes})")

    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="bench-nightly-")) if temporary else args.data_dir
    if not temporary and data_dir.exists() and any(data_dir.iterdir()):
        ap.error(f"--data-dir {data_dir} is not empty; pass an empty or new folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    try:
        status = run(args, algos, start, data_dir)
    except Interrupted:
        print("interrupted (SIGTERM) before the night started: nothing of the night was measured")
        status = 143
    finally:
        if temporary and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            log(f"data kept in {data_dir}")
    sys.exit(status)


def _data_steps(root: str, skus: int, days: int) -> dict[str, Any]:
    """A first night's validation (every day of the window) and features, in this process."""
    import clustered_night

    settings = clustered_night._settings(root, _catalogue_opts(days))
    last = clustered_night.START + dt.timedelta(days=days - 1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    validate_raw(settings, last)
    extract_features(settings, last)
    return {
        "seconds": time.perf_counter() - started,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_mb": base,
    }


def _catalogue_opts(days: int, args: argparse.Namespace | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {"days": days, "skus_per_cluster": 500, "workers": 1, "algos": ["ppo"]}
    if args is not None:
        opts.update(
            algos=[a for a in args.algos.split(",") if a],
            episodes=args.episodes,
            ppo_timesteps=args.ppo_timesteps,
            workers=args.workers,
            steady=args.steady,
            skus_per_cluster=args.skus_per_cluster,
        )
    else:
        opts.update(episodes=60, ppo_timesteps=1)
    return opts


def catalogue(args: argparse.Namespace) -> int:
    """The ``--catalogue`` benchmark; returns the exit status."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import clustered_night

    logging.basicConfig(level=logging.WARNING)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores; load average at start: "
        f"{load_text()}"
    )
    small = min(args.catalogue)
    peaks = {}
    for days in sorted(set(args.feature_days)):
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            clustered_night.in_child(clustered_night.history, tmp, small, _catalogue_opts(days))
            r = clustered_night.in_child(_data_steps, tmp, small, days)
        peaks[days] = r["peak_mb"]
        print(
            f"data steps of a first night, {small:,} SKUs x {days} days (every day validated, "
            f"then the features): {r['seconds']:.0f} s, peak {r['peak_mb']:.0f} MB (after "
            f"imports {r['base_mb']:.0f} MB)",
            flush=True,
        )
    results = clustered_night.run_sizes(args.catalogue, _catalogue_opts(args.days, args))
    large = max(results)
    ratio = (results[large]["night_s"] / large) / (results[small]["night_s"] / small)
    short, long = min(peaks), max(peaks)
    print(
        f"per_sku_cost_ratio={ratio:.2f} night_{large // 1000}k_s={results[large]['night_s']:.0f} "
        f"feature_peak_mb_ratio={peaks[long] / peaks[short]:.2f} ({large:,} vs {small:,} SKUs, "
        f"{args.days} days, {args.workers} workers, clusters of {args.skus_per_cluster}"
        f"{', steady' if args.steady else ''}; {long} "
        f"vs {short} days)"
    )
    return 0 if all(r["status"] != "stopped" for r in results.values()) else 1


def run(args: argparse.Namespace, algos: tuple[str, ...], start: dt.date, data_dir: Path) -> int:
    """The whole benchmark; returns the exit status (143 when SIGTERM cut the night short)."""
    world = load_world(args.world).expand(args.skus, args.seed)
    world_file = data_dir / "world.json"
    world_file.write_text(world.to_json())
    last = start + dt.timedelta(days=args.days - 1)
    # the night runs the morning after its logical date, so no logged timestamp is in the future
    now = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(6), tzinfo=dt.UTC)
    # Where data and models go is pinned here (a PRICING_* variable or a .env file must not
    # point the run at a shared lake or registry); other PRICING_* variables still apply.
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        lake_uri=str(data_dir / "lake"),
        s3_endpoint_url=None,
        world_file=world_file,
        mlflow_tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}",
        algos=algos,
        ppo_timesteps=args.ppo_timesteps,
        dqn_timesteps=args.dqn_timesteps,
        train_days=args.days,
        holdout_days=HOLDOUT_DAYS,
        eval_episodes=args.episodes,
    )
    lake = Lake.from_uri(settings.lake)
    print(
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    print(f"load average at start: {load_text()}")
    print(
        f"catalogue: {args.skus:,} SKUs ({world.name} expanded, seed {args.seed}); history: "
        f"{args.days} days from {start} to {last}; night for {last} "
        f"(training window {args.days} days, {HOLDOUT_DAYS} held out)"
    )
    budgets = []
    if "ppo" in algos:
        budgets.append(f"PPO {settings.ppo_timesteps:,}")
    if "dqn" in algos:
        budgets.append(f"DQN {settings.dqn_timesteps:,}")
    print(
        f"TRAINING BUDGET: {', '.join(budgets) or 'none'} SKU-steps "
        f"({settings.n_envs} envs, seed {settings.train_seed}); "
        f"evaluation: {settings.eval_episodes} episodes per policy"
    )

    log("generating history …")
    started = time.perf_counter()

    def progress(day: dt.date) -> None:
        done = (day - start).days + 1
        if done % 10 == 0 or done == args.days:
            log(f"history: {done}/{args.days} days")

    written = write_history(lake, world, args.days, args.seed, start, on_day=progress)
    n_dec, n_tx = written.decisions, written.transactions
    history_s = time.perf_counter() - started
    print(
        f"history generation (not part of the night): {history_s:.1f}s for {n_dec:,} decisions "
        f"and {n_tx:,} transactions"
    )

    # measured before the night so that a night cut short by SIGTERM still reports it
    log("feature throughput …")
    dates = [start + dt.timedelta(days=i) for i in range(args.days)]
    decisions, transactions = read_window(lake, dates)
    started = time.perf_counter()
    features = build_features(decisions, transactions)
    feature_s = time.perf_counter() - started
    events = len(decisions)
    events_per_s = events / feature_s
    print(
        f"feature extraction (build_features, whole window): {len(features):,} SKU-days from "
        f"{events:,} decision rows and {len(transactions):,} transactions in {feature_s:.2f}s"
    )
    del decisions, transactions, features
    gc.collect()

    night = run_timed_night(settings, last, now)
    total = night.total

    print()
    if night.stopped is not None:
        print(f"NIGHT STOPPED at step {night.stopped_at!r}: {night.stopped}")
        print("timings so far:")
    elif night.interrupted is not None:
        print(
            f"NIGHT INTERRUPTED (SIGTERM) during step {night.interrupted!r}; the last row is that "
            "step's time until then, and the total is a lower bound"
        )
    else:
        print("night completed")
    print_table(night.steps, total)
    if night.one_day_validate_s is not None:
        validate_s = dict(night.steps)["validate"]
        validated = night.outputs["validate"].get("validated", [])
        print(
            f"validate on this first night: {validate_s:.1f}s for {len(validated)} partitions; "
            f"one day (both feeds, as a steady-state night validates): "
            f"{night.one_day_validate_s:.1f}s"
        )
        if night.stopped is None and night.interrupted is None:
            steady = total - validate_s + night.one_day_validate_s
            print(f"steady-state night (validate one day): {steady:.1f}s")
    if "evaluate" in night.outputs:
        ev = night.outputs["evaluate"]
        lo, hi = ev["diff_ci95"]
        print(
            f"challenger v{ev['challenger']} vs {ev['incumbent']}: {ev['diff_mean']:+,.1f} "
            f"per episode, 95% CI [{lo:+,.1f}, {hi:+,.1f}]"
        )
    if "gate" in night.outputs:
        gate = night.outputs["gate"]
        print(f"gate: promote={gate.get('promote')} moved={gate.get('moved')}")
    complete = night.stopped is None and night.interrupted is None
    if total > GOAL_SECONDS:
        verdict = "NOT within"
    elif complete:
        verdict = "within"
    else:
        verdict = "unknown (the night did not finish)"
    size_note = (
        ""
        if args.skus == GOAL_SKUS and args.days == GOAL_DAYS
        else f"; this run is {args.skus:,} SKUs x {args.days} days, not the goal's size"
    )
    print(
        f"goal: night <= {GOAL_SECONDS / 60:.0f} min for {GOAL_SKUS:,} SKUs x {GOAL_DAYS} days "
        f"on 2 cores: {verdict} ({total:.1f}s{size_note})"
    )
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores; load average at end: "
        f"{load_text()}; peak memory {peak_rss_gib():.1f} GiB"
    )
    print(f"night_seconds={total:.1f}")
    print(f"feature_events_per_second={events_per_s:.0f}")
    return 143 if night.interrupted is not None else 0


if __name__ == "__main__":
    main()
