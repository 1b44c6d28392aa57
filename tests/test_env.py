from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sim  # noqa: F401  (registers Pricing-v0)
from sim.env import PricingEnv
from sim.world import World


def test_gymnasium_checker_passes_without_warnings(tiny_world: World) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(PricingEnv(tiny_world), skip_render_check=True)


def test_sb3_checker_passes_without_warnings(tiny_world: World) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(PricingEnv(tiny_world), warn=True)


def test_registered_default_env_checks() -> None:
    env = gym.make("Pricing-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)


def _rollout(env: PricingEnv, seed: int, actions: np.ndarray) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    trace = [(obs.copy(), info["sku"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(int(a))
        trace.append((obs.copy(), r, term, trunc, info["sold"], info["inventory"]))
        if term:
            break
    return trace


def _same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, np.ndarray):
                if not np.array_equal(u, v):
                    return False
            elif u != v:
                return False
    return True


def test_deterministic_under_seed(tiny_world: World) -> None:
    actions = np.random.default_rng(0).integers(0, 5, size=48)
    a = _rollout(PricingEnv(tiny_world), 11, actions)
    b = _rollout(PricingEnv(tiny_world), 11, actions)
    c = _rollout(PricingEnv(tiny_world), 12, actions)
    assert _same(a, b)
    assert not _same(a, c)
    assert a[-1][2] is True  # terminated at the horizon


def test_pickle_round_trip_continues_identically(tiny_world: World) -> None:
    env = PricingEnv(tiny_world)
    env.reset(seed=5)
    for a in (0, 3, 2):
        env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    for a in (4, 1, 2, 2):
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = clone.step(a)
        assert np.array_equal(o1, o2) and r1 == r2


def test_episode_accounting(tiny_world: World) -> None:
    env = PricingEnv(tiny_world)
    obs, info = env.reset(seed=1, options={"sku": 0})
    assert info["sku"] == "scarce" and info["inventory"] == 25
    inv = info["inventory"]
    total_sold = 0
    for t in range(48):
        obs, _, term, trunc, info = env.step(2)
        assert 0 <= info["sold"] <= inv
        total_sold += info["sold"]
        assert not trunc
        assert term == (t == 47)
        inv = info["inventory"]
        assert env.observation_space.contains(obs)
    # capacity 25 + two restocks of 10 (steps 24; 48 is the end) caps what can be sold
    assert total_sold <= 25 + 10


def test_bad_action_and_sku_rejected(tiny_world: World) -> None:
    env = PricingEnv(tiny_world)
    with pytest.raises(ValueError, match="sku"):
        env.reset(seed=0, options={"sku": 9})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(7)
