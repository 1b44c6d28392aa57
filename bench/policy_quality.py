"""Agent quality: PPO trained with a stated budget vs the DP optimum and the baselines.

Trains PPO in the vectorised market of the default world (or --world), then evaluates dp, ppo,
static, rule, myopic, bandit and random on the same seeds (common random numbers) and prints the
table with each policy's % of the exact optimum. Last line: ``ppo_pct_of_optimal=<x>``.

    python bench/policy_quality.py [--timesteps 2000000] [--seed 0] [--episodes 600]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.model.artifacts import save_agent
from pipeline.model.evaluation import evaluate, resolve_policies
from pipeline.model.train import TrainConfig, train_agent
from sim.world import load_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=None, help="world file (default: bundled)")
    ap.add_argument("--timesteps", type=int, default=2_000_000, help="PPO budget in SKU-steps")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--episodes", type=int, default=600, help="evaluation episodes per policy")
    ap.add_argument("--eval-seed", type=int, default=7, help="evaluation seed (shared)")
    args = ap.parse_args()
    world = load_world(args.world)
    config = TrainConfig(timesteps=args.timesteps, seed=args.seed)
    start = time.perf_counter()
    model = train_agent(world, config)
    train_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ppo.zip"
        save_agent(model, path)
        names = ["dp", str(path), "static", "rule", "myopic", "bandit", "random"]
        policies = resolve_policies(world, names, args.episodes)
        evaluation = evaluate(world, policies, args.episodes, args.eval_seed)
    report = evaluation.report()
    rows = sorted(report["policies"].items(), key=lambda kv: -kv[1]["mean_profit"])
    print(f"world: {world.name} ({len(world.skus)} SKUs, {world.horizon.steps} steps/episode)")
    print(
        f"PPO budget: {config.timesteps:,} SKU-steps, {config.n_envs} envs, net {list(config.net_arch)},"
        f" seed {config.seed}; trained in {train_s:.0f}s"
    )
    print(
        f"evaluation: {args.episodes} episodes per policy, seed {args.eval_seed}, same seeds for all"
    )
    print(f"exact optimum (DP expected profit per episode): {report['dp_expected_profit']:,.1f}")
    print(f"{'policy':<10}{'mean profit':>13}{'95% CI':>22}{'% of optimal':>14}{'changes/ep':>12}")
    for name, r in rows:
        lo, hi = r["ci95"]
        print(
            f"{name:<10}{r['mean_profit']:>13,.1f}{f'[{lo:,.0f}, {hi:,.0f}]':>22}"
            f"{r['pct_of_optimal']:>14.1f}{r['price_changes_per_episode']:>12.1f}"
        )
    ppo = report["policies"]["ppo"]
    for base in ("dp", "static", "rule"):
        diff, lo, hi = evaluation.paired("ppo", base)
        gain = 100 * (ppo["mean_profit"] / report["policies"][base]["mean_profit"] - 1)
        print(
            f"ppo - {base}: {diff:+,.1f} per episode, paired bootstrap 95% CI "
            f"[{lo:+,.1f}, {hi:+,.1f}] ({gain:+.1f} %)"
        )
    print(f"ppo_pct_of_optimal={ppo['pct_of_optimal']:.1f}")


if __name__ == "__main__":
    main()
