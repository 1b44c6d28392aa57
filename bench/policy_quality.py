"""Agent quality, end to end and over seeds: what a night's champion earns in the *true* world.

For each world and each seed, the path a night takes, with the functions the night calls:

1. history: ``--days`` days of the rule-based pricer with 10 % exploration in the true world
   (`sim.history.generate_history`), the last ``--holdout`` days held out;
2. refit: `sim.fit.fit_world` on the training days, and the fidelity gate on the held-out ones
   (reported; the bench goes on either way and says so);
3. candidates, built in the refit world only: the planner (`pipeline.model.planner.plan`, where
   the solver can run) and PPO (`pipeline.model.train.train_agent`, ``--ppo-timesteps``); the
   behavioural clone of the logged decisions (`pipeline.model.cloning`) as a baseline;
4. the night's choice: the candidate with the best mean profit in the refit world
   (`pipeline.model.evaluation.evaluate`, as the night's evaluation picks its challenger);
5. everything evaluated in the true world on the same paired episodes, against the exact optimum
   (dp), the best fixed price (static) and the rule. Separately, PPO trained in the true world.

Headroom = (policy − static) / (dp − static) on the same episodes. Per world, per candidate kind:
median and worst headroom over the seeds, % of the optimum, gain over the rule, training seconds.
Per seed it also prints what the refit costs: the true optimum's profit evaluated in the refit
world vs in the truth (how far the refit's view of the best policy is off), the refit planner in
the truth (the ceiling of anything trained in that refit), and what the refit recovered (each
segment's price sensitivity as a ratio to the truth, the competitor chain's largest error).

Last line: ``night_headroom_median=… night_headroom_worst=… vs_rule_worst=… first_night_s=…``
(the default world; fractions and seconds; first_night_s is the candidates' build time of the
night's path: refit + planner + PPO, without validation and registry overheads: see
``bench/nightly.py`` and the README for a whole ``make demo``).

    python bench/policy_quality.py [--seeds 5] [--worlds default,examples/worlds/clearance.json]
        [--ppo-timesteps 1000000] [--true-ppo] [--episodes 400]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.model.agents import agent_policy
from pipeline.model.cloning import fit_cloned_policy
from pipeline.model.evaluation import baselines, evaluate
from pipeline.model.logged import decision_units
from pipeline.model.planner import dp_tractable, plan
from pipeline.model.train import TrainConfig, train_agent
from sim.fit import fidelity_check, fit_world
from sim.history import generate_history
from sim.policies import Policy
from sim.world import World, load_world

START = dt.date(2026, 1, 5)
WORLDS = "default,examples/worlds/clearance.json,examples/worlds/flash_sales.json"


@dataclass
class Seed:
    """One seed of one world: headroom, % of optimum and gain over rule per policy."""

    headroom: dict[str, float] = field(default_factory=dict)
    pct: dict[str, float] = field(default_factory=dict)
    vs_rule: dict[str, float] = field(default_factory=dict)
    vs_static: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    night: str = ""
    fidelity: str = ""
    refit_gap: float = float("nan")  # true optimum's profit: refit world / truth − 1
    recovered: str = ""  # elasticities and competitor chain of the refit vs the truth


def _history(world: World, days: int, seed: int) -> pd.DataFrame:
    frames = [d.decisions for d in generate_history(world, days, seed, START, epsilon=0.1)]
    return pd.concat(frames, ignore_index=True)


def _split(decisions: pd.DataFrame, days: int, holdout: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = pd.to_datetime(decisions["ts"], utc=True)
    cut = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=days - holdout)
    return decisions[ts < cut], decisions[ts >= cut]


def run_seed(world: World, seed: int, args: argparse.Namespace) -> Seed:
    out = Seed()
    decisions = _history(world, args.days, seed)
    train, held = _split(decisions, args.days, args.holdout)
    started = time.perf_counter()
    refit = fit_world(world, train).world
    out.seconds["refit"] = time.perf_counter() - started
    out.recovered = _recovered(world, refit)
    fid = fidelity_check(refit, held, 0.03, 1.75)
    out.fidelity = "pass" if fid.passed else f"FAIL ({fid.message})"
    candidates: dict[str, Policy] = {}
    if dp_tractable(refit.compile()):
        started = time.perf_counter()
        candidates["planner"] = agent_policy(plan(refit), "planner")
        out.seconds["planner"] = time.perf_counter() - started
    if args.ppo_timesteps > 0:
        started = time.perf_counter()
        config = TrainConfig(timesteps=args.ppo_timesteps, seed=seed)
        candidates["ppo"] = agent_policy(train_agent(refit, config), "ppo")
        out.seconds["ppo"] = time.perf_counter() - started
    # the night's choice: the best candidate in the refit world (as the night's evaluation)
    in_refit = evaluate(refit, {k: (v, True) for k, v in candidates.items()}, args.episodes, 11)
    out.night = max(candidates, key=lambda k: in_refit.results[k].profit.mean())
    units = decision_units(train, world, season_start=START)
    policies: dict[str, tuple[Policy, bool]] = {k: (v, True) for k, v in candidates.items()}
    policies["bc"] = (fit_cloned_policy(units, world, seed=seed), True)
    if args.true_ppo and args.ppo_timesteps > 0:
        started = time.perf_counter()
        config = TrainConfig(timesteps=args.ppo_timesteps, seed=seed)
        policies["ppo_true"] = (agent_policy(train_agent(world, config), "ppo_true"), True)
        out.seconds["ppo_true"] = time.perf_counter() - started
    tractable = dp_tractable(world.compile())
    names = ["static", "rule", *(["dp"] if tractable else [])]
    policies.update(baselines(world, names, args.episodes))
    ev = evaluate(world, policies, args.episodes, 1000 + seed)
    profit = {k: float(r.profit.mean()) for k, r in ev.results.items()}
    top = profit["dp"] if tractable else float("nan")
    for name in [*candidates, "bc", *(["ppo_true"] if "ppo_true" in policies else []), "rule"]:
        out.headroom[name] = (profit[name] - profit["static"]) / (top - profit["static"])
        out.pct[name] = 100 * profit[name] / top
        out.vs_rule[name] = profit[name] / profit["rule"] - 1
        out.vs_static[name] = profit[name] / profit["static"] - 1
    out.vs_rule["static"] = profit["static"] / profit["rule"] - 1
    night = out.night
    out.headroom["night"], out.pct["night"] = out.headroom[night], out.pct[night]
    out.vs_rule["night"] = out.vs_rule[night]
    out.vs_static["night"] = out.vs_static[night]
    if tractable:  # the true optimum seen through the refit world
        dp_true = baselines(world, ["dp"], args.episodes)["dp"]
        seen = evaluate(refit, {"dp": dp_true}, args.episodes, 1000 + seed)
        out.refit_gap = float(seen.results["dp"].profit.mean()) / profit["dp"] - 1
    return out


def _recovered(truth: World, refit: World) -> str:
    """Per-segment price sensitivity (refit / truth) and the competitor chain's largest error."""
    fitted = {s.name: s.price_sensitivity for s in refit.segments}
    ratios = [
        f"{s.name} {fitted[s.name] / s.price_sensitivity:.2f}"
        for s in truth.segments
        if s.name in fitted and s.price_sensitivity
    ]
    p_err = float(np.abs(refit.compile().comp_P - truth.compile().comp_P).max())
    return f"price sensitivity refit/truth: {', '.join(ratios) or 'n/a'}; comp chain max err {p_err:.3f}"


def _row(name: str, seeds: list[Seed], seconds: str | None = None) -> str:
    h = [s.headroom[name] for s in seeds if name in s.headroom]
    if not h:
        return ""
    pct = [s.pct[name] for s in seeds]
    rule = [s.vs_rule[name] for s in seeds]
    static = [s.vs_static[name] for s in seeds]
    secs = [s.seconds[seconds] for s in seeds if seconds in s.seconds] if seconds else []
    shown = f"{statistics.median(secs):>8.0f}" if secs else f"{'':>8}"
    return (
        f"  {name:<10}{statistics.median(h):>9.0%}{min(h):>8.0%}{statistics.median(pct):>10.1f}"
        f"{statistics.median(rule):>+10.1%}{min(rule):>+9.1%}"
        f"{statistics.median(static):>+10.1%}{shown}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default=WORLDS, help="comma-separated: default or world files")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per world (K)")
    ap.add_argument("--days", type=int, default=28, help="days of logged history")
    ap.add_argument("--holdout", type=int, default=7, help="held-out days (fidelity gate)")
    ap.add_argument("--ppo-timesteps", type=int, default=1_000_000, help="0: no PPO")
    ap.add_argument("--true-ppo", action="store_true", help="also train PPO in the true world")
    ap.add_argument("--episodes", type=int, default=400, help="paired evaluation episodes")
    args = ap.parse_args()
    default_summary: list[Seed] = []
    for spec in args.worlds.split(","):
        world = load_world(None if spec == "default" else Path(spec))
        seeds: list[Seed] = []
        print(f"\n== {world.name}: {len(world.skus)} SKUs, {args.seeds} seeds", flush=True)
        for seed in range(args.seeds):
            s = run_seed(world, seed, args)
            seeds.append(s)
            parts = " ".join(f"{k}={v:.0%}" for k, v in s.headroom.items() if v == v) or (
                "n/a (no exact optimum); vs static "
                + " ".join(f"{k}={v:+.1%}" for k, v in s.vs_static.items())
            )
            print(
                f"  seed {seed}: headroom {parts}; night picks {s.night}; fidelity {s.fidelity}; "
                f"true optimum in the refit world {s.refit_gap:+.1%} vs truth; "
                f"seconds {', '.join(f'{k} {v:.0f}' for k, v in s.seconds.items())}; "
                f"{s.recovered}",
                flush=True,
            )
        print(
            f"  {'policy':<10}{'headroom':>9}{'worst':>8}{'% opt':>10}{'vs rule':>10}"
            f"{'worst':>9}{'vs static':>10}{'train s':>8}"
        )
        for name, secs in (
            ("night", None),
            ("planner", "planner"),
            ("ppo", "ppo"),
            ("ppo_true", "ppo_true"),
            ("bc", None),
            ("rule", None),
        ):
            line = _row(name, seeds, secs)
            if line:
                print(line)
        if spec == "default":
            default_summary = seeds
    if default_summary:
        h = [s.headroom["night"] for s in default_summary]
        r = [s.vs_rule["night"] for s in default_summary]
        first = statistics.median(
            sum(v for k, v in s.seconds.items() if k != "ppo_true") for s in default_summary
        )
        print(
            f"night_headroom_median={statistics.median(h):.3f} night_headroom_worst={min(h):.3f} "
            f"vs_rule_worst={min(r):.3f} first_night_s={first:.0f}"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
