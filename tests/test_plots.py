"""Evaluation plots are drawn without a display and written as non-empty PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.model.plots import (
    action_mix,
    price_paths,
    price_trajectories,
    profit_distribution,
    save_figures,
)
from sim.evaluate import rollout
from sim.policies import make_baselines
from sim.world import World

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_are_written(tiny_world: World, tmp_path: Path) -> None:
    params = tiny_world.compile()
    policies = make_baselines(params, ["rule", "static", "random"])
    results = {name: rollout(params, pol, 4, seed=0) for name, pol in policies.items()}
    figs = {
        "profit": profit_distribution(results),
        "action_mix": action_mix(results, tiny_world.pricing.actions),
        "prices": price_trajectories(tiny_world, policies, seed=0, episodes=2),
    }
    for fig in figs.values():
        assert all(ax.get_title() and ax.get_ylabel() for ax in fig.axes)
        assert any(ax.get_xlabel() for ax in fig.axes)  # panels sharing x label the bottom one
    paths = save_figures(figs, tmp_path / "plots")
    assert [p.name for p in paths] == ["profit.png", "action_mix.png", "prices.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_price_paths_are_the_evaluated_episodes(tiny_world: World) -> None:
    """Same seed, same streams: the recorded paths change price exactly as often as the rollout."""
    params = tiny_world.compile()
    policies = make_baselines(params, ["rule", "random"])
    paths = price_paths(tiny_world, policies, seed=3, episodes=4)
    start = np.full((4, 1), params.ratios[params.initial_level])
    for name, pol in make_baselines(params, ["rule", "random"]).items():
        price = paths.price[name]
        assert price.shape == (4, params.T)
        changes = (np.diff(np.concatenate([start, price], axis=1), axis=1) != 0).sum(axis=1)
        np.testing.assert_array_equal(changes, rollout(params, pol, 4, seed=3).price_changes)
    # competitor moves are exogenous: every policy met the same ones
    assert paths.competitor.shape == (4, params.T)


def test_bad_arguments(tiny_world: World, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        profit_distribution({})
    params = tiny_world.compile()
    results = {"rule": rollout(params, make_baselines(params, ["rule"])["rule"], 2, seed=0)}
    with pytest.raises(ValueError, match="moves"):
        action_mix(results, actions=[0.0, 0.05])
    with pytest.raises(ValueError, match="file stems"):
        save_figures({"../escape": profit_distribution(results)}, tmp_path)
