"""What each training lever gives the model-free agent: PPO variants trained side by side in the
true default world (or --world), several seeds each, evaluated on the same paired episodes
against the exact optimum and the best fixed price.

Levers (``--levers``, comma-separated):
  base        the night's configuration (`TrainConfig` defaults)
  gamma99     discount 0.99 (instead of 1.0 over the 168-step season)
  ent01       entropy coefficient 0.01 (instead of 0.003)
  envs256     256 parallel markets (instead of 64)
  lr_linear   learning rate decaying linearly to 0
  net256      a 256x256 network (instead of 128x128)
  imitate     the actor first imitates the world's exact plan (behavioural cloning of the
              planner, `pipeline.model.train.imitate`), then PPO trains it: a model-based
              warm start, where the solver can run

Headroom = (policy − static) / (dp − static) on the same episodes. Last line:
``best_lever=… best_headroom_median=… base_headroom_median=…``.

    python bench/ppo_levers.py [--timesteps 1000000] [--seeds 3] [--levers base,imitate]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from pipeline.model.agents import agent_policy
from pipeline.model.evaluation import baselines, evaluate
from pipeline.model.planner import plan
from pipeline.model.train import TrainConfig, train_agent
from sim.world import World, load_world

LEVERS = {
    "base": {},
    "gamma99": {"gamma": 0.99},
    "ent01": {"ent_coef": 0.01},
    "envs256": {"n_envs": 256},
    "lr_linear": {"lr_schedule": "linear"},
    "net256": {"net_arch": (256, 256)},
    "imitate": {},
}


def run(world: World, lever: str, seed: int, timesteps: int) -> tuple[object, float]:
    config = dataclasses.replace(TrainConfig(timesteps=timesteps, seed=seed), **LEVERS[lever])
    teacher = plan(world).actions if lever == "imitate" else None
    started = time.perf_counter()
    model = train_agent(world, config, teacher=teacher)
    return model, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=None)
    ap.add_argument("--timesteps", type=int, default=1_000_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--levers", default=",".join(LEVERS))
    ap.add_argument("--episodes", type=int, default=400)
    args = ap.parse_args()
    world = load_world(args.world)
    levers = args.levers.split(",")
    unknown = [x for x in levers if x not in LEVERS]
    if unknown:
        ap.error(f"unknown lever {unknown[0]!r}; choose from {', '.join(LEVERS)}")
    policies = dict(baselines(world, ["dp", "static", "rule"], args.episodes))
    seconds: dict[str, list[float]] = {}
    for lever in levers:
        for seed in range(args.seeds):
            model, secs = run(world, lever, seed, args.timesteps)
            policies[f"{lever}/{seed}"] = (agent_policy(model, lever), True)
            seconds.setdefault(lever, []).append(secs)
            print(f"trained {lever} seed {seed} in {secs:.0f}s", flush=True)
    ev = evaluate(world, policies, args.episodes, 7)
    profit = {k: float(r.profit.mean()) for k, r in ev.results.items()}
    dp, static, rule = profit["dp"], profit["static"], profit["rule"]
    print(
        f"\n{world.name}: PPO {args.timesteps:,} SKU-steps, {args.seeds} seeds per lever, "
        f"{args.episodes} paired episodes; static {100 * static / dp:.1f} % of the optimum"
    )
    print(f"{'lever':<11}{'headroom':>9}{'worst':>8}{'% opt':>8}{'vs rule':>9}{'train s':>9}")
    medians = {}
    for lever in levers:
        h = [(profit[f"{lever}/{s}"] - static) / (dp - static) for s in range(args.seeds)]
        pct = [100 * profit[f"{lever}/{s}"] / dp for s in range(args.seeds)]
        vs_rule = [profit[f"{lever}/{s}"] / rule - 1 for s in range(args.seeds)]
        medians[lever] = statistics.median(h)
        print(
            f"{lever:<11}{medians[lever]:>9.0%}{min(h):>8.0%}{statistics.median(pct):>8.1f}"
            f"{statistics.median(vs_rule):>+9.1%}{statistics.median(seconds[lever]):>9.0f}"
        )
    best = max(medians, key=lambda k: medians[k])
    print(
        f"best_lever={best} best_headroom_median={medians[best]:.3f} "
        f"base_headroom_median={medians.get('base', float('nan')):.3f}"
    )


if __name__ == "__main__":
    main()
