"""A fine-tuning night against a scratch night: wall time and what each candidate earns.

Where the exact solver cannot run, the night's candidates are model-free, and a night may start
from the champion's weights (``PRICING_TRAIN_INIT=champion``, a ``PRICING_FINETUNE_FRACTION``
share of a scratch night's PPO budget) instead of from scratch. This bench runs, with the night's
own functions (`pipeline.nightly.run.run_night`) and PPO as the only candidate kind:

1. ``--days`` days of the rule-based pricer's logs of the default world into a fresh lake;
2. night 1 (day D) from scratch: its PPO model becomes the champion if the gate promotes it;
3. the data folder copied twice; night 2 (day D + 1, one more day of logs) run in each copy,
   once from scratch and once fine-tuning the champion.

Each night runs in a fresh process, as a scheduled night does.

It prints each night's wall time by step and the candidate's % of the refit world's optimum and
gain over the rule in the night's own evaluation, then the ratio of the two second nights. Last
line: ``finetune_night_ratio=… scratch_night_s=… finetune_night_s=…``. The goal: a fine-tuning
night in at most half the time of a scratch night, at the same quality.

    python bench/finetune_night.py [--ppo-timesteps 1000000] [--days 28] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.contracts import evaluation_report_path, gate_decision_path
from pipeline.data.lake import Lake
from pipeline.data.synthetic import write_history
from pipeline.nightly.results import StepResult
from pipeline.nightly.run import run_night
from pipeline.settings import Settings
from sim.world import load_world

START = dt.date(2026, 1, 5)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def night(data: Path, date: dt.date, init: str, timesteps: int) -> dict[str, Any]:
    """One night in ``data``; its steps' seconds, status and the evaluation of its candidate."""
    settings = Settings(
        data_dir=data, algos=("ppo",), train_init=init, ppo_timesteps=timesteps, train_days=28
    )
    steps: list[tuple[str, float]] = []
    started_from: list[str] = []

    def on_step(name: str, seconds: float, out: StepResult | None) -> None:
        steps.append((name, seconds))
        if name.startswith("train") and out is not None:
            started_from.append(str(out.to_dict().get("init")))
        log(f"{init} night {date}: {name} {seconds:.1f}s")

    started = time.perf_counter()
    result = run_night(settings, date, say=log, on_step=on_step)
    total = time.perf_counter() - started
    evaluation = _evaluation(data, date)
    gate = data / "lake" / gate_decision_path(date)
    promoted = gate.exists() and json.loads(gate.read_text())["promote"]
    return {
        "init": ",".join(started_from) or init,
        "total": total,
        "steps": steps,
        "status": result.status,
        "promoted": promoted,
    } | evaluation


def fresh(data: Path, date: dt.date, init: str, timesteps: int) -> dict[str, Any]:
    """`night` in a process of its own, as a scheduled night runs: nothing cached in this one
    (the solver's tables, imports) makes the second night look cheaper than it is."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(night, (data, date, init, timesteps))
    return result


def _evaluation(data: Path, date: dt.date) -> dict[str, Any]:
    """The candidate's row of the night's evaluation report (refit world), if it got there."""
    path = data / "lake" / evaluation_report_path(date)
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    rows = report["policies"]
    cand = rows.get(report["evidence"].get("candidate_label"))
    rule = rows.get("rule")
    if cand is None or rule is None:
        return {}
    return {
        "pct_optimal": cand["pct_of_optimal"],
        "vs_rule": cand["mean_profit"] / rule["mean_profit"] - 1 if rule["mean_profit"] else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ppo-timesteps", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep the data folders here")
    args = ap.parse_args()

    root = Path(args.keep or tempfile.mkdtemp(prefix="finetune-bench-"))
    first = root / "first"
    write_history(Lake.from_uri(str(first / "lake")), load_world(), args.days + 1, args.seed, START)
    day1 = START + dt.timedelta(days=args.days - 1)
    day2 = day1 + dt.timedelta(days=1)
    one = fresh(first, day1, "scratch", args.ppo_timesteps)
    if not one["promoted"]:
        sys.exit(f"night 1 promoted no champion to fine-tune: {one}")
    for name in ("scratch", "champion"):
        shutil.copytree(first, root / name)
    scratch = fresh(root / "scratch", day2, "scratch", args.ppo_timesteps)
    tuned = fresh(root / "champion", day2, "champion", args.ppo_timesteps)

    print(f"PPO {args.ppo_timesteps:,} SKU-steps a scratch night; default world; seed {args.seed}")
    print(
        "| night | started from | wall s | PPO s | other steps s | % of refit optimum | vs rule |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, r in (("1", one), ("2", scratch), ("2", tuned)):
        ppo_s = sum(s for n, s in r["steps"] if n.startswith("train"))
        pct = r.get("pct_optimal")
        gain = r.get("vs_rule")
        print(
            f"| {label} | {r['init']} | {r['total']:.0f} | {ppo_s:.0f} | "
            f"{r['total'] - ppo_s:.0f} | "
            f"{'n/a' if pct is None else f'{pct:.1f}'} | "
            f"{'n/a' if gain is None else f'{gain:+.1%}'} |"
        )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    ratio = tuned["total"] / scratch["total"]
    print(
        f"finetune_night_ratio={ratio:.2f} scratch_night_s={scratch['total']:.0f} "
        f"finetune_night_s={tuned['total']:.0f}"
    )


if __name__ == "__main__":
    main()
