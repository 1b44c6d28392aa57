"""Evaluation plots: profit per episode, action mix and price paths, saved as PNG files.

Figures are built with matplotlib's object API on the Agg canvas, never through pyplot: no display
is needed and no global figure registry grows in a long-lived worker.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sim.evaluate import Rollouts, episode_skus
from sim.market import Market, make_streams
from sim.policies import Policy
from sim.stats import mean_ci95
from sim.world import World

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas, so savefig needs no backend selection
    return fig


def _check_results(results: Mapping[str, Rollouts]) -> None:
    if not results:
        raise ValueError("results is empty: pass at least one policy's rollouts")


def profit_distribution(results: Mapping[str, Rollouts]) -> Figure:
    """Box plot of the profit per episode of each policy, with the mean and its 95 % CI.

    Args:
        results: per-episode results by policy name, from the same seeds (`sim.evaluate.rollout`).
    """
    _check_results(results)
    names = list(results)
    fig = _figure(max(4.0, 1.3 * len(names) + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.boxplot([results[n].profit for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    for i, n in enumerate(names, start=1):
        m, lo, hi = mean_ci95(results[n].profit)
        ax.errorbar(
            [i], [m], yerr=[[m - lo], [hi - m]], fmt="D", color="tab:red", capsize=4, zorder=3
        )
    episodes = len(next(iter(results.values())).profit)
    ax.set_title(f"Profit per episode ({episodes} episodes, same seeds); ◆ mean with 95 % CI")
    ax.set_xlabel("policy")
    ax.set_ylabel("profit per episode (currency units)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _action_labels(n_actions: int, actions: Sequence[float] | None) -> list[str]:
    if actions is None:
        return [f"action {a}" for a in range(n_actions)]
    if len(actions) != n_actions:
        raise ValueError(f"actions has {len(actions)} moves but the results count {n_actions}")
    return ["keep" if abs(a) < 1e-12 else f"{100 * a:+g} %" for a in actions]


def action_mix(results: Mapping[str, Rollouts], actions: Sequence[float] | None = None) -> Figure:
    """Stacked bars: the share of decisions each policy gave to each price move.

    Args:
        results: per-episode results by policy name.
        actions: the price moves in fractions of the reference price (``world.pricing.actions``),
            for the legend; default labels are action indices.
    """
    _check_results(results)
    names = list(results)
    counts = np.array([results[n].action_counts for n in names], dtype=float)
    share = 100.0 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    labels = _action_labels(counts.shape[1], actions)
    fig = _figure(7.0, max(2.5, 0.6 * len(names) + 1.8))
    ax = fig.add_subplot()
    colors = [f"C{a}" for a in range(counts.shape[1])]
    left = np.zeros(len(names))
    for a, label in enumerate(labels):
        ax.barh(names, share[:, a], left=left, label=label, color=colors[a % len(colors)])
        left += share[:, a]
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_title("Action mix: share of pricing decisions per move")
    ax.set_xlabel("share of decisions (%)")
    ax.set_ylabel("policy")
    ax.legend(title="price move", loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=len(labels))
    return fig


@dataclass(frozen=True)
class PricePaths:
    """Price paths of several policies on the same episodes.

    Attributes:
        sku: (E,) SKU index of each episode.
        price: policy name -> (E, T) price / reference price at each step (after the move).
        competitor: (E, T) competitor price / our reference price (the same for every policy).
    """

    sku: np.ndarray
    price: dict[str, np.ndarray]
    competitor: np.ndarray


def price_paths(
    world: World,
    policies: Mapping[str, Policy],
    seed: int,
    episodes: int = 3,
    greedy: Collection[str] = (),
) -> PricePaths:
    """Run ``episodes`` episodes per policy and record the price at every step.

    The random streams are those of `sim.evaluate.rollout` with the same seed, so every policy meets
    the same SKUs, visitors and competitor moves, and the paths are those the evaluation scored.

    Args:
        world: the market.
        policies: policies by name.
        seed: seed of the episodes.
        episodes: how many episodes (they cycle through the catalogue).
        greedy: names of the policies run on their most probable action (trained agents).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {episodes})")
    if not policies:
        raise ValueError("policies is empty: pass at least one policy")
    params = world.compile()
    skus = episode_skus(params, episodes)
    idx = np.arange(episodes)
    prices: dict[str, np.ndarray] = {}
    competitor = np.zeros((episodes, params.T))
    for name, policy in policies.items():
        market = Market(params, episodes)
        exo, endo = make_streams(np.random.default_rng(seed))
        policy_rng = np.random.default_rng([seed, 1])
        market.reset(idx, skus)
        policy.reset(market, idx, policy_rng)
        path = np.zeros((episodes, params.T))
        for t in range(params.T):
            obs = market.observe()
            if name in greedy:
                actions = policy.probs(market, obs).argmax(axis=1)
            else:
                actions, _ = policy.act(market, obs, policy_rng)
            competitor[:, t] = params.comp_ratio[market.sku, market.comp]
            out = market.step(actions, exo, endo)
            policy.update(market, out)
            path[:, t] = params.ratios[out.level]
        prices[name] = path
    return PricePaths(sku=skus, price=prices, competitor=competitor)


def price_trajectories(
    world: World,
    policies: Mapping[str, Policy],
    seed: int,
    episodes: int = 3,
    greedy: Collection[str] = (),
) -> Figure:
    """One panel per episode: each policy's price / reference over the season, with the competitor's.

    Args:
        world: the market.
        policies: policies by name.
        seed: seed of the episodes (same SKUs, visitors and competitor moves for every policy).
        episodes: how many episodes (panels).
        greedy: names of the policies run on their most probable action (trained agents).
    """
    paths = price_paths(world, policies, seed, episodes, greedy)
    step_hours = world.horizon.step_hours
    fig = _figure(9.0, 2.6 * episodes + 0.8)
    axes = fig.subplots(episodes, 1, sharex=True, squeeze=False)[:, 0]
    T = paths.competitor.shape[1]
    hours = step_hours * np.arange(T + 1)
    for e, ax in enumerate(axes):
        sku = world.skus[int(paths.sku[e])]
        for name, path in paths.price.items():
            ax.stairs(path[e], hours, label=name, linewidth=1.6, baseline=None)
        ax.stairs(
            paths.competitor[e],
            hours,
            label="competitor",
            color="0.4",
            linestyle="--",
            linewidth=1.0,
            baseline=None,
        )
        ax.axhline(sku.unit_cost / sku.ref_price, color="tab:red", linewidth=0.8, alpha=0.6)
        ax.set_title(f"SKU {sku.id} (reference {sku.ref_price:g}, red line: unit cost)")
        ax.set_ylabel("price / reference price")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(f"hours since season start (h; one decision every {step_hours} h)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, len(labels)))
    fig.suptitle(f"Price paths on the same episodes (seed {seed})")
    return fig


def save_figures(figs: Mapping[str, Figure], out_dir: str | Path) -> list[Path]:
    """Write each figure to ``out_dir/<name>.png``; returns the paths in the order given.

    Raises:
        ValueError: a name is not a plain file stem (letters, digits, ``_``, ``-``, ``.``).
    """
    bad = [n for n in figs if not _NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"figure names must be plain file stems (got {bad})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100, format="png")
        paths.append(path)
    return paths
