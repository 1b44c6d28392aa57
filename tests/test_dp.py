from __future__ import annotations

import numpy as np
import pytest

from sim.dp import best_static_level, evaluate_price_path, solve_sku, static_path
from sim.evaluate import rollout
from sim.policies import StaticPolicy, TabularPolicy
from sim.world import World


@pytest.mark.parametrize("k", [0, 1])
def test_dp_value_matches_monte_carlo_of_its_policy(tiny_world: World, k: int) -> None:
    p = tiny_world.compile()
    sol = solve_sku(p, k)
    tables = [sol.policy if j == k else np.zeros_like(sol.policy) for j in range(p.K)]
    pol = TabularPolicy("dp", [solve_sku(p, j).policy for j in range(p.K)], p.A)
    del tables
    n = 3000
    r = rollout(p, pol, n * p.K, seed=123)
    returns = r.profit[r.sku == k]
    half = 1.96 * returns.std(ddof=1) / np.sqrt(len(returns))
    assert abs(returns.mean() - sol.value0) < max(half, 1e-9) * 1.5, (returns.mean(), sol.value0)


def test_price_path_value_matches_monte_carlo(tiny_world: World) -> None:
    p = tiny_world.compile()
    level, value = best_static_level(p, 1)
    assert value == pytest.approx(evaluate_price_path(p, 1, static_path(p, level)))
    targets = np.array([p.initial_level, level])
    r = rollout(p, StaticPolicy(p, targets), 4000, seed=5)
    returns = r.profit[r.sku == 1]
    half = 1.96 * returns.std(ddof=1) / np.sqrt(len(returns))
    assert abs(returns.mean() - value) < 1.5 * half


def test_optimum_dominates_static_and_myopic(tiny_world: World) -> None:
    p = tiny_world.compile()
    for k in range(p.K):
        sol = solve_sku(p, k)
        _, static_value = best_static_level(p, k)
        assert sol.value0 >= static_value - 1e-6
        # value-to-go never increases as the season runs out, at the initial price and state
        v = sol.value[:, int(p.initial_inventory[k]), p.initial_level, 0]
        assert v[-1] <= v[0]


def test_empty_shelf_is_never_repriced(tiny_world: World) -> None:
    """With nothing to sell and no restock ahead, a price change only costs: the optimum keeps
    the price. (Before a restock, moving to a better price while empty is right.)"""
    p = tiny_world.compile()
    levels = np.arange(p.L)[None, :, None]

    def moved(policy: np.ndarray) -> np.ndarray:  # [t, level, competitor] -> price changed?
        return np.clip(levels + p.moves[policy], 0, p.L - 1) != levels

    assert not moved(solve_sku(p, 1).policy[:, 0]).any()
    assert not moved(solve_sku(p, 0).policy[24:, 0]).any()


def test_higher_cost_never_lowers_the_optimal_price(tiny_world: World) -> None:
    base = tiny_world
    dear = base.with_skus([base.skus[0].model_copy(update={"unit_cost": 14.0}), base.skus[1]])
    pb, pd_ = base.compile(), dear.compile()
    lb, _ = best_static_level(pb, 0)
    ld, _ = best_static_level(pd_, 0)
    assert ld >= lb


def test_batched_static_values_match_single_path_evaluation(tiny_world: World) -> None:
    from sim.dp import static_values

    p = tiny_world.compile()
    for k in range(p.K):
        batched = static_values(p, k)
        single = [evaluate_price_path(p, k, static_path(p, lv)) for lv in range(p.L)]
        assert np.allclose(batched, single, rtol=1e-12, atol=1e-9)


def test_over_dispersed_demand_stays_exact(tiny_world: World) -> None:
    """With a Gamma shock on each step's traffic, the solver's negative-binomial values match the
    simulator, and a whole day's units get the variance ``mean + alpha x mean^2`` asked for."""
    alpha = 0.3
    world = tiny_world.with_skus(
        [s.model_copy(update={"demand_dispersion": alpha}) for s in tiny_world.skus]
    )
    p = world.compile()
    assert (p.dispersion > alpha).all()  # per step, more than per day
    pol = TabularPolicy("dp", [solve_sku(p, j).policy for j in range(p.K)], p.A)
    r = rollout(p, pol, 3000 * p.K, seed=11)
    for k in range(p.K):
        returns = r.profit[r.sku == k]
        half = 1.96 * returns.std(ddof=1) / np.sqrt(len(returns))
        assert abs(returns.mean() - solve_sku(p, k).value0) < 1.5 * half
    # one fixed price, stock enough never to run out: the units sold are the demand itself
    calm = world.with_skus(
        [s.model_copy(update={"capacity": 1000, "initial_inventory": 1000}) for s in world.skus]
    ).compile()
    hold = StaticPolicy(calm, np.full(calm.K, calm.initial_level))
    days = rollout(calm, hold, 4000, seed=3)
    units = days.units[days.sku == 0]
    m = calm.arrivals[0] * units.mean() / calm.arrivals[0].sum()  # each step's mean units
    assert units.var() == pytest.approx(m.sum() + calm.dispersion[0] * (m**2).sum(), rel=0.15)
    # over whole days of steps, that is the daily negative binomial's alpha x mean^2
    per_day = 24 // calm.world.horizon.step_hours
    day = m[:per_day]
    assert calm.dispersion[0] * (day**2).sum() == pytest.approx(alpha * day.sum() ** 2, rel=0.05)
