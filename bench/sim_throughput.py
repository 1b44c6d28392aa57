"""SKU-steps per second: the vectorised market vs PricingEnv in SB3's DummyVecEnv, same SKUs.

Both step the same world with uniformly random actions for the same number of SKUs, in this one
process, one after the other. Last line: ``speedup=<x>``.

    python bench/sim_throughput.py [--skus 4096] [--seconds 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from sim.env import PricingEnv
from sim.vec_env import MarketVecEnv
from sim.world import default_world


def steps_per_second(venv, n: int, seconds: float, seed: int) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    venv.reset()
    actions = rng.integers(0, venv.action_space.n, size=(256, n))
    venv.step(actions[0])  # warm-up
    steps = 0
    start = time.perf_counter()
    while True:
        venv.step(actions[steps % 256])
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and steps >= 3:
            return steps * n / elapsed, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=4096, help="SKUs stepped side by side")
    ap.add_argument("--seconds", type=float, default=5.0, help="time per contender")
    args = ap.parse_args()
    world = default_world()
    n = args.skus

    vec = MarketVecEnv(world, num_envs=n, seed=0)
    vec_rate, vec_steps = steps_per_second(vec, n, args.seconds, 0)

    dummy = DummyVecEnv([lambda: PricingEnv(world) for _ in range(n)])
    dummy.seed(0)
    ref_rate, ref_steps = steps_per_second(dummy, n, args.seconds, 0)

    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"world: {world.name}, {n} SKUs stepped side by side, random actions")
    print(f"{'contender':<34}{'SKU-steps/s':>14}{'calls':>8}")
    print(f"{'MarketVecEnv (numpy, one call)':<34}{vec_rate:>14,.0f}{vec_steps:>8}")
    print(f"{'DummyVecEnv of PricingEnv':<34}{ref_rate:>14,.0f}{ref_steps:>8}")
    print(f"speedup={vec_rate / ref_rate:.1f}")


if __name__ == "__main__":
    main()
