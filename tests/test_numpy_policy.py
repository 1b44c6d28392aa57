"""The service's numpy network computes SB3's greedy action, for both algorithms."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.numpy_policy import export_policy
from pipeline.model.train import TrainConfig, train_agent
from sim.market import Market, observe
from sim.policies import RandomPolicy
from sim.world import World


def _recorded_observations(world: World, n: int) -> np.ndarray:
    """Observations of a random pricer's episodes: varied states, as an env produces them."""
    params = world.compile()
    market = Market(params, 64)
    idx = np.arange(64)
    market.reset(idx, idx % len(world.skus))
    rng = np.random.default_rng(0)
    exo, endo = np.random.default_rng(1), np.random.default_rng(2)
    policy = RandomPolicy(params.A)
    rows = []
    while sum(len(r) for r in rows) < n:
        obs = market.observe()
        rows.append(obs)
        actions, _ = policy.act(market, obs, rng)
        market.step(actions, exo, endo)
        ended = np.flatnonzero(market.t >= params.T)
        if len(ended):
            market.reset(ended, ended % len(world.skus))
    return np.concatenate(rows)[:n]


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_exported_network_acts_as_sb3(tiny_world: World, algo: str) -> None:
    config = TrainConfig(
        algo=algo, timesteps=768, n_envs=8, n_steps=48, batch_size=96, n_epochs=1, net_arch=(32, 32)
    )
    model = train_agent(tiny_world, config)
    net = export_policy(model)
    obs = _recorded_observations(tiny_world, 10_000)
    expected, _ = model.predict(obs, deterministic=True)
    assert (net.actions(obs) == expected).all()
    probs = net.probs(obs)
    assert np.allclose(probs.sum(axis=1), 1.0)
    if algo == "ppo":  # the action distribution is SB3's too
        import torch

        with torch.no_grad():
            dist = model.policy.get_distribution(torch.as_tensor(obs[:256]))
            sb3 = dist.distribution.probs.numpy()
        assert np.allclose(probs[:256], sb3, atol=1e-5)


def test_the_observation_function_is_the_markets(tiny_world: World) -> None:
    params = tiny_world.compile()
    market = Market(params, 2)
    market.reset(np.arange(2), np.arange(2))
    rng = np.random.default_rng(3)
    for _ in range(30):
        got = observe(
            params,
            market.sku,
            market.t,
            market.inventory,
            params.ratios[market.level],
            params.comp_ratio[market.sku, market.comp],
            market.velocity,
            market.views_ema,
            market.carts_ema,
        )
        assert np.array_equal(got, market.observe())
        market.step(rng.integers(0, params.A, 2), rng, rng)
