from __future__ import annotations

import numpy as np
from stable_baselines3 import PPO

from sim.env import PricingEnv
from sim.vec_env import MarketVecEnv
from sim.world import World


def test_single_slot_matches_pricing_env_exactly(tiny_world: World) -> None:
    actions = np.random.default_rng(1).integers(0, 5, size=48 * 2)
    env = PricingEnv(tiny_world)
    venv = MarketVecEnv(tiny_world, num_envs=1, seed=42)
    obs_e, _ = env.reset(seed=42)
    obs_v = venv.reset()
    assert np.array_equal(obs_e, obs_v[0])
    for a in actions:
        obs_e, r_e, term, _, _ = env.step(int(a))
        obs_v, _, done, infos = venv.step(np.array([a]))
        assert r_e == float(venv.last_outcome.reward[0])
        if term:
            assert done[0]
            assert np.array_equal(obs_e, infos[0]["terminal_observation"])
            obs_e, _ = env.reset()  # continues the same streams, like the auto-reset
        assert np.array_equal(obs_e, obs_v[0])


def test_many_slots_match_return_distribution(tiny_world: World) -> None:
    """N SKU-episodes in one call have the same return distribution as N separate envs."""
    n = 400
    venv = MarketVecEnv(tiny_world, num_envs=n, seed=3, skus=np.zeros(n, dtype=int))
    venv.reset()
    vec_returns = np.zeros(n)
    for _ in range(48):
        _, _, _, _ = venv.step(np.full(n, 3))
        vec_returns += venv.last_outcome.reward
    env_returns = []
    env = PricingEnv(tiny_world)
    for i in range(n):
        env.reset(seed=10_000 + i, options={"sku": 0})
        total = 0.0
        for _ in range(48):
            _, r, *_ = env.step(3)
            total += float(r)
        env_returns.append(total)
    a, b = vec_returns, np.array(env_returns)
    se = np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
    assert abs(a.mean() - b.mean()) < 4 * se
    assert 0.8 < a.std() / b.std() < 1.25


def test_sb3_trains_on_it_directly(tiny_world: World) -> None:
    venv = MarketVecEnv(tiny_world, num_envs=8, seed=0, reward_scale="sku")
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=48,
        batch_size=96,
        n_epochs=1,
        seed=0,
        policy_kwargs={"net_arch": [16]},
        device="cpu",
    )
    model.learn(total_timesteps=800)
    assert model.num_timesteps >= 800


def test_reward_scale_only_rescales(tiny_world: World) -> None:
    a = MarketVecEnv(tiny_world, num_envs=4, seed=9)
    b = MarketVecEnv(tiny_world, num_envs=4, seed=9, reward_scale="sku")
    a.reset()
    b.reset()
    acts = np.array([0, 1, 3, 4])
    _, ra, _, _ = a.step(acts)
    _, rb, _, _ = b.step(acts)
    assert np.allclose(a.last_outcome.reward, b.last_outcome.reward)
    assert not np.allclose(ra, rb)
