from __future__ import annotations

import numpy as np
import pytest

from sim.evaluate import dp_values, rollout
from sim.market import Market
from sim.policies import (
    POLICY_NAMES,
    BanditPolicy,
    EpsilonGreedy,
    RulePolicy,
    make_baselines,
    move_table,
    sample_actions,
)
from sim.world import World, default_world


@pytest.fixture
def market(tiny_world: World) -> Market:
    p = tiny_world.compile()
    m = Market(p, 64)
    m.reset(np.arange(64), np.arange(64) % p.K)
    return m


def test_every_policy_returns_distributions(tiny_world: World, market: Market) -> None:
    p = tiny_world.compile()
    policies = make_baselines(p, list(POLICY_NAMES))
    rng = np.random.default_rng(0)
    exo, endo = np.random.default_rng(1), np.random.default_rng(2)
    for pol in policies.values():
        pol.reset(market, np.arange(market.n), rng)
    for _ in range(10):
        obs = market.observe()
        for name, pol in policies.items():
            probs = pol.probs(market, obs)
            assert probs.shape == (market.n, p.A), name
            assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0), name
        actions, probs = policies["bandit"].act(market, obs, rng)
        assert np.all(probs[np.arange(market.n), actions] > 0)
        out = market.step(actions, exo, endo)
        policies["bandit"].update(market, out)


def test_epsilon_greedy_propensities(tiny_world: World, market: Market) -> None:
    p = tiny_world.compile()
    pol = EpsilonGreedy(RulePolicy(p), 0.2)
    probs = pol.probs(market, market.observe())
    assert np.all(probs >= 0.2 / p.A - 1e-12)
    assert np.allclose(probs.max(axis=1), 0.8 + 0.2 / p.A)
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedy(RulePolicy(p), 1.5)


def test_sampling_follows_probabilities() -> None:
    rng = np.random.default_rng(0)
    probs = np.tile([0.1, 0.0, 0.6, 0.3], (20000, 1))
    freq = np.bincount(sample_actions(probs, rng), minlength=4) / 20000
    assert np.allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.015)


def test_rule_respects_margin_floor(tiny_world: World) -> None:
    p = tiny_world.compile()
    r = rollout(p, RulePolicy(p), 200, seed=1)
    assert np.all(r.units >= 0)
    m = Market(p, 1)
    m.reset(np.array([0]), np.array([0]))
    m.level[:] = 0  # already at the lowest price: any further cut is refused
    a = RulePolicy(p).probs(m, m.observe()).argmax(axis=1)
    assert p.moves[a[0]] >= 0


def test_move_table_reaches_targets(tiny_world: World) -> None:
    p = tiny_world.compile()
    table = move_table(p)
    for start in range(p.L):
        for target in range(p.L):
            level = start
            for _ in range(p.L):
                level = int(np.clip(level + p.moves[table[level, target]], 0, p.L - 1))
            assert level == target


def test_bandit_learns_within_a_week() -> None:
    p = default_world().compile()
    r = rollout(p, BanditPolicy(p), 120, seed=4)
    rand = rollout(p, make_baselines(p, ["random"])["random"], 120, seed=4)
    assert r.profit.mean() > 1.1 * rand.profit.mean()
    assert r.price_changes.mean() < 0.5 * rand.price_changes.mean()


def test_ranking_on_common_random_numbers(tiny_world: World) -> None:
    p = tiny_world.compile()
    pols = make_baselines(p, ["dp", "static", "random"])
    res = {n: rollout(p, pol, 400, seed=8) for n, pol in pols.items()}
    opt = dp_values(p)[np.arange(400) % p.K].mean()
    assert res["dp"].profit.mean() > res["static"].profit.mean() > res["random"].profit.mean()
    assert abs(res["dp"].profit.mean() / opt - 1) < 0.03
    # same seeds: the same visitors arrive whatever the policy does
    assert np.array_equal(res["dp"].sku, res["random"].sku)


def test_unknown_policy_name(tiny_world: World) -> None:
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        make_baselines(tiny_world.compile(), ["greedy"])


def test_paired_difference_is_tighter_than_separate_intervals(tiny_world: World) -> None:
    from sim.evaluate import paired_difference
    from sim.stats import mean_ci95

    p = tiny_world.compile()
    pols = make_baselines(p, ["dp", "static"])
    a, b = rollout(p, pols["dp"], 300, seed=2), rollout(p, pols["static"], 300, seed=2)
    diff, lo, hi = paired_difference(a, b)
    assert diff == pytest.approx(a.profit.mean() - b.profit.mean())
    _, alo, ahi = mean_ci95(a.profit)
    assert hi - lo < (ahi - alo) / 2
    with pytest.raises(ValueError, match="same seed"):
        paired_difference(a, rollout(p, pols["static"], 301, seed=2))
