"""Evaluate policies on common random numbers, against the DP optimum."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.dp import solve_world
from sim.market import Market, make_streams
from sim.params import MarketParams
from sim.policies import Policy
from sim.stats import mean_ci95, paired_bootstrap_ci


@dataclass(frozen=True)
class Rollouts:
    """Per-episode totals of one policy."""

    sku: np.ndarray  # (E,) SKU index of each episode
    profit: np.ndarray  # (E,) sum of rewards, in currency
    revenue: np.ndarray
    margin: np.ndarray
    units: np.ndarray
    abandons: np.ndarray
    price_changes: np.ndarray
    action_counts: np.ndarray  # (A,) over all steps


def episode_skus(params: MarketParams, episodes: int) -> np.ndarray:
    """Episodes cycle through the catalogue so every SKU gets the same weight."""
    return np.arange(episodes) % params.K


def rollout(
    params: MarketParams,
    policy: Policy,
    episodes: int,
    seed: int,
    greedy: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Rollouts:
    """Run ``episodes`` full episodes side by side.

    The market's streams come from ``seed`` alone, so every policy evaluated with the same seed sees
    the same SKUs, visitors and competitor moves (common random numbers). ``greedy`` takes the most
    probable action instead of sampling (for learned policies).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {episodes})")
    market = Market(params, episodes)
    exo, endo = make_streams(np.random.default_rng(seed))
    policy_rng = np.random.default_rng([seed, 1])
    idx = np.arange(episodes)
    market.reset(idx, episode_skus(params, episodes))
    policy.reset(market, idx, policy_rng)
    totals = {k: np.zeros(episodes) for k in ("profit", "revenue", "margin", "units", "ab", "ch")}
    counts = np.zeros(params.A, dtype=np.int64)
    for t in range(params.T):
        obs = market.observe()
        # the visitors first (a served policy prices only where someone comes); the exogenous
        # stream is drawn in the same order either way
        arrivals = market.arrive(exo)
        if greedy:
            probs = policy.probs(market, obs)
            actions = probs.argmax(axis=1)
        else:
            actions, probs = policy.act(market, obs, policy_rng)
        levels = policy.levels(market, actions, arrivals)
        out = market.step(actions, exo, endo, levels=levels, arrivals=arrivals)
        policy.update(market, out)
        counts += np.bincount(actions, minlength=params.A)
        totals["profit"] += out.reward
        totals["revenue"] += out.revenue
        totals["margin"] += out.margin
        totals["units"] += out.sold
        totals["ab"] += out.abandons.sum(axis=1)
        totals["ch"] += out.changed
        if progress is not None:
            progress(t + 1, params.T)
    return Rollouts(
        sku=market.sku.copy(),
        profit=totals["profit"],
        revenue=totals["revenue"],
        margin=totals["margin"],
        units=totals["units"],
        abandons=totals["ab"],
        price_changes=totals["ch"],
        action_counts=counts,
    )


def paired_difference(
    a: Rollouts, b: Rollouts, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and paired-bootstrap 95 % CI of the per-episode profit difference ``a − b``.

    Pairing removes the variance both policies share (which SKU, which visitors, which flash
    sales), so the interval is far tighter than the two separate intervals suggest. The two must
    have run the same episodes (the same seed).
    """
    if not np.array_equal(a.sku, b.sku):
        raise ValueError("the two rollouts did not run the same episodes; use the same seed")
    return paired_bootstrap_ci(a.profit - b.profit, n_boot, seed)


def dp_values(params: MarketParams) -> np.ndarray:
    """Optimal expected profit from the initial state, per SKU."""
    return np.array([s.value0 for s in solve_world(params)])


def summarize(
    params: MarketParams,
    results: Mapping[str, Rollouts],
    episodes: int,
    seed: int,
    optimum: np.ndarray | None,
) -> dict[str, Any]:
    """The evaluation report: ``{"episodes", "seed", "policies": {name: {...}}}``.

    ``pct_of_optimal`` is the policy's mean profit over the exact expected optimum of the same
    episodes' SKUs (null when no optimum is given).
    """
    skus = episode_skus(params, episodes)
    dp_mean = float(optimum[skus].mean()) if optimum is not None else None
    report: dict[str, Any] = {
        "episodes": episodes,
        "seed": seed,
        "dp_expected_profit": dp_mean,
        "policies": {},
    }
    for name, r in results.items():
        m, lo, hi = mean_ci95(r.profit)
        total = r.action_counts.sum()
        report["policies"][name] = {
            "mean_profit": m,
            "ci95": [lo, hi],
            "pct_of_optimal": None if dp_mean is None else 100.0 * m / dp_mean,
            "mean_revenue": float(r.revenue.mean()),
            "mean_units": float(r.units.mean()),
            "mean_abandons": float(r.abandons.mean()),
            "price_changes_per_episode": float(r.price_changes.mean()),
            "action_mix": [float(c) / total for c in r.action_counts],
        }
    return report
