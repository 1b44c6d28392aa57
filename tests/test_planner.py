"""The model-based candidate: the exact plan of a world, served from observations."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.data.lake import Lake
from pipeline.model.agents import agent_policy, algo_name, served_policy
from pipeline.model.artifacts import ModelIntegrityError
from pipeline.model.evaluation import baselines, evaluate
from pipeline.model.planner import Planner, PlannerPolicy, load_planner, plan, save_planner
from pipeline.model.train import TrainConfig, WarmStartError, train_agent, warm_start
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from pipeline.tracking import experiment
from sim.dp import solve_world
from sim.market import Market, observed_state
from sim.policies import RandomPolicy
from sim.world import World
from tests.conftest import tiny_world_dict


@pytest.fixture(scope="module")
def world() -> World:
    return World.model_validate(tiny_world_dict())


@pytest.fixture(scope="module")
def planner(world: World) -> Planner:
    return plan(world)


def _random_states(world: World, n: int, seed: int) -> tuple[Market, np.ndarray]:
    """Markets in random solver states (with random averages), and their observations."""
    p = world.compile()
    rng = np.random.default_rng(seed)
    m = Market(p, n)
    m.sku = rng.integers(0, p.K, n)
    m.t = rng.integers(0, p.T, n)
    m.inventory = rng.integers(0, p.capacity[m.sku] + 1)
    m.level = rng.integers(0, p.L, n)
    m.comp = rng.integers(0, p.C, n)
    m.velocity, m.views_ema, m.carts_ema = rng.gamma(2.0, 1.0, (3, n))
    return m, m.observe()


def test_the_observation_decodes_to_the_solver_state(world: World) -> None:
    market, obs = _random_states(world, 5000, seed=1)
    t, inventory, level, comp = observed_state(market.p, obs, market.sku)
    np.testing.assert_array_equal(t, market.t)
    np.testing.assert_array_equal(inventory, market.inventory)
    np.testing.assert_array_equal(level, market.level)
    np.testing.assert_array_equal(comp, market.comp)


def test_planner_acts_as_the_solver_on_its_states(world: World, planner: Planner) -> None:
    solutions = solve_world(world.compile())
    market, obs = _random_states(world, 5000, seed=2)
    want = np.array(
        [
            solutions[k].policy[t, i, lv, c]
            for k, t, i, lv, c in zip(
                market.sku, market.t, market.inventory, market.level, market.comp, strict=True
            )
        ]
    )
    np.testing.assert_array_equal(planner.actions(obs, market.sku), want)
    # the served form is the planner itself: the same lookup the service runs
    np.testing.assert_array_equal(served_policy(planner).actions(obs, market.sku), want)
    assert algo_name(planner) == "planner"
    with pytest.raises(ValueError, match="SKU index"):
        planner.actions(obs, None)


def test_planner_in_the_simulator_earns_the_optimum(world: World, planner: Planner) -> None:
    policies = {"planner": (agent_policy(planner, "planner"), True)}
    policies.update(baselines(world, ["dp"], 40))
    ev = evaluate(world, policies, 40, seed=3)
    np.testing.assert_array_equal(ev.results["planner"].profit, ev.results["dp"].profit)


def test_saved_planner_is_hash_checked_and_never_unpickled(
    world: World, planner: Planner, tmp_path: Path
) -> None:
    path = tmp_path / "agent.npz"
    save_planner(planner, path)
    again = load_planner(path, world)
    np.testing.assert_array_equal(again.table, planner.table)
    # tampered bytes: refused on the hash, before numpy reads the file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match"):
        load_planner(path, world)
    # another world: refused even with a good hash
    save_planner(planner, path)
    other = json.loads(json.dumps(tiny_world_dict()))
    other["skus"][0]["ref_price"] = 21.0
    with pytest.raises(ModelIntegrityError, match="solved for world"):
        load_planner(path, World.model_validate(other))


def test_planner_registers_loads_and_serves_through_pyfunc(
    world: World, planner: Planner, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, model_name="planner-test", mlflow_tracking_uri="")
    reg = Registry(settings, Lake.from_uri(settings.lake))
    with experiment(settings, "test"), mlflow.start_run():
        mv = reg.register_candidate(planner, world, "planner", {"logical_date": "2026-01-01"})
    loaded = reg.load(mv.version)
    assert isinstance(loaded.model, Planner)
    np.testing.assert_array_equal(loaded.model.table, planner.table)
    assert reg.label(mv.version).endswith("planner")

    market, obs = _random_states(world, 50, seed=4)
    from sim.market import observation_columns

    frame = pd.DataFrame(obs, columns=observation_columns(world))
    frame["sku"] = [world.skus[k].id for k in market.sku]
    ref = market.p.ref_price[market.sku]
    frame["ref_price"] = ref
    frame["current_price"] = ref * market.p.ratios[market.level]
    out = reg.load_pyfunc(mv.version, tmp_path / "pyfunc").predict(frame)
    np.testing.assert_array_equal(out["action"], planner.actions(obs, market.sku))
    with pytest.raises(Exception, match="sku"):
        reg.load_pyfunc(mv.version, tmp_path / "pyfunc2").predict(frame.drop(columns="sku"))


def test_planner_policy_beats_random_in_the_simulator(world: World, planner: Planner) -> None:
    policies = {
        "planner": (PlannerPolicy(planner), True),
        "random": (RandomPolicy(world.compile().A), False),
    }
    ev = evaluate(world, policies, 30, seed=5)
    assert ev.results["planner"].profit.mean() > ev.results["random"].profit.mean()


def _tiny_config(seed: int) -> TrainConfig:
    return TrainConfig(
        timesteps=96, n_envs=2, n_steps=48, batch_size=48, n_epochs=1, seed=seed, net_arch=(16,)
    )


def test_warm_start_loads_the_champions_weights(world: World) -> None:
    champion = train_agent(world, _tiny_config(0))
    # zero further steps of learning would be no training at all: compare right after loading
    fresh = train_agent(world, _tiny_config(1), start=None)
    before = {k: v.clone() for k, v in fresh.policy.state_dict().items()}
    warm_start(fresh, champion)
    after = fresh.policy.state_dict()
    for key, value in champion.policy.state_dict().items():
        assert np.array_equal(after[key].numpy(), value.numpy()), key
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    # another network size does not fit
    other = train_agent(
        world,
        TrainConfig(timesteps=96, n_envs=2, n_steps=48, batch_size=48, n_epochs=1, net_arch=(8,)),
    )
    with pytest.raises(WarmStartError, match="do not fit"):
        warm_start(other, champion)


def test_behavioural_clone_tracks_the_logging_policy_and_beats_random(world: World) -> None:
    import datetime as dt

    from pipeline.model.cloning import fit_cloned_policy
    from pipeline.model.logged import decision_units, logged_market
    from sim.history import generate_history
    from sim.policies import EpsilonGreedy, RulePolicy

    start = dt.date(2026, 1, 5)
    rule = RulePolicy(world.compile())
    days = list(generate_history(world, 20, 0, start, policy=EpsilonGreedy(rule, 0.1)))
    decisions = pd.concat([d.decisions for d in days], ignore_index=True)
    units = decision_units(decisions, world, season_start=start)
    clone = fit_cloned_policy(units, world, seed=0)
    assert clone.n_units == len(units)
    market = logged_market(units, world)
    greedy = clone.probs(market, market.observe()).argmax(axis=1)
    ruled = rule.probs(market, market.observe()).argmax(axis=1)
    # it imitates the rule it saw (10 % of the log is exploration): most actions agree ...
    assert (greedy == ruled).mean() > 0.8
    # ... and its action mix is the log's
    A = world.compile().A
    logged_mix = np.bincount(units["action"], minlength=A) / len(units)
    clone_mix = np.bincount(greedy, minlength=A) / len(greedy)
    assert 0.5 * np.abs(logged_mix - clone_mix).sum() < 0.15
    policies = {
        "bc": (clone, True),
        "random": (RandomPolicy(A), False),
    }
    ev = evaluate(world, policies, 30, seed=6)
    assert ev.results["bc"].profit.mean() > ev.results["random"].profit.mean()
    with pytest.raises(ValueError, match="too few"):
        fit_cloned_policy(units.head(10), world)


def test_a_planner_prices_another_world_of_its_skus_by_id(world: World, planner: Planner) -> None:
    """A champion planned on an earlier night prices tonight's world by SKU id, whatever the
    order; a SKU it never planned is refused by name."""
    swapped = tiny_world_dict()
    swapped["skus"] = swapped["skus"][::-1]
    other = World.model_validate(swapped)
    market, obs = _random_states(other, 200, seed=7)
    got = PlannerPolicy(planner).probs(market, obs).argmax(axis=1)
    np.testing.assert_array_equal(got, planner.actions(obs, 1 - market.sku))
    extra = tiny_world_dict()
    extra["skus"][1]["id"] = "new-sku"
    market, obs = _random_states(World.model_validate(extra), 10, seed=8)
    with pytest.raises(ValueError, match="new-sku"):
        PlannerPolicy(planner).probs(market, obs)
