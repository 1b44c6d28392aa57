"""Off-policy evaluation on logs of the tiny world, checked against the simulator that wrote them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy.stats import poisson

from pipeline.model.logged import (
    UNIT_COLUMNS,
    decision_units,
    logged_market,
    served_decision_units,
    target_probs,
)
from pipeline.model.ope import (
    RidgeRewardModel,
    cross_fit,
    doubly_robust,
    effective_sample_size,
    importance_weights,
    ope_agrees,
    ope_compare,
    snips,
)
from sim.history import generate_history
from sim.market import Market, StepOutcome
from sim.policies import EpsilonGreedy, Policy, RandomPolicy, RulePolicy, StaticPolicy
from sim.stats import mean_ci95
from sim.world import World
from tests.conftest import tiny_world_dict

START = dt.date(
    2026, 3, 4
)  # a Wednesday: seasons of the tiny world (48 h) start Wed, Fri, Sun, ...
DAYS = 14
SEED = 0


class StateRecorder(Policy):
    """Wraps the logging policy and records the true market state at every step it acts in.

    It draws nothing itself, so the log it helps write is the one the bare logging policy writes.
    """

    def __init__(self, base: Policy) -> None:
        self.base = base
        self.name = base.name
        self.steps: list[pd.DataFrame] = []
        self._state: dict[str, np.ndarray] = {}

    def reset(self, market: Market, idx: np.ndarray, rng: np.random.Generator) -> None:
        self.base.reset(market, idx, rng)

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        return self.base.probs(market, obs)

    def act(
        self, market: Market, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        self._state = {
            "t": market.t.copy(),
            "sku_index": market.sku.copy(),
            "inventory": market.inventory.copy(),
            "level_before": market.level.copy(),
            "comp": market.comp.copy(),
            "velocity": market.velocity.copy(),
            "views_ema": market.views_ema.copy(),
            "carts_ema": market.carts_ema.copy(),
        }
        return self.base.act(market, obs, rng)

    def update(self, market: Market, outcome: StepOutcome) -> None:
        self.steps.append(
            pd.DataFrame(
                {
                    **self._state,
                    "level": outcome.level,
                    "views": outcome.views.sum(axis=1),
                    "reward": outcome.reward - outcome.bonus,
                }
            )
        )
        self.base.update(market, outcome)


@dataclass(frozen=True)
class ExactRewardModel:
    """The true expected reward of every action, from the world's own dynamics (perfect knowledge).

    Per segment, visitors are Poisson and carts, abandons and intents are binomial thinnings, so the
    intents are Poisson too and E[units] = Σ_{j < stock} P(intents > j). A logged unit had at least
    one visitor, so the margin and abandon terms are conditioned on that.
    """

    world: World

    def fit(self, units: pd.DataFrame) -> ExactRewardModel:
        return self

    def predict(self, units: pd.DataFrame) -> np.ndarray:
        base = self.world.compile()
        out = np.zeros((len(units), base.A))
        for start, rows in units.groupby("season_start").indices.items():
            # the log's seasons run on the calendar: rebuild the seasonality of this one
            ts = pd.Timestamp(start)
            horizon = self.world.horizon.model_copy(
                update={"start_weekday": ts.weekday(), "start_hour": ts.hour}
            )
            p = self.world.model_copy(update={"horizon": horizon}).compile()
            u = units.iloc[rows]
            k, t = u["sku_index"].to_numpy(), u["t"].to_numpy()
            old, c = u["level_before"].to_numpy(), u["comp"].to_numpy()
            stock = u["inventory"].to_numpy()
            lam = p.arrivals[k, t][:, None] * p.seg_mix[t]
            j = np.arange(max(int(stock.max()), 1))
            for a in range(p.A):
                new = np.clip(old + p.moves[a], 0, p.L - 1)
                q = p.buy_prob[k[:, None], np.arange(p.S)[None, :], new[:, None], c[:, None]]
                carts = (lam * q).sum(axis=1)
                ab = p.abandon[old, new]
                sf = poisson.sf(j[None, :], (carts * (1 - ab))[:, None])
                units_sold = (sf * (j[None, :] < stock[:, None])).sum(axis=1)
                price = p.ref_price[k] * p.ratios[new]
                margin = p.margin_weight * units_sold * (price - p.unit_cost[k])
                abandon_cost = p.abandon_cost * carts * ab * (stock > 0)
                at_least_one = 1.0 - np.exp(-lam.sum(axis=1))
                out[rows, a] = (margin - abandon_cost) / at_least_one - p.change_cost[k] * (
                    new != old
                )
        return out


@pytest.fixture(scope="module")
def world() -> World:
    return World.model_validate(tiny_world_dict())


@pytest.fixture(scope="module")
def logged(world: World) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(decisions, decision units, the simulator's true state of every step with a visitor)."""
    recorder = StateRecorder(EpsilonGreedy(RulePolicy(world.compile()), 0.1))
    days = list(generate_history(world, DAYS, SEED, START, policy=recorder))
    decisions = pd.concat([d.decisions for d in days], ignore_index=True)
    truth = pd.concat(recorder.steps, ignore_index=True)
    truth = truth[truth["views"] > 0].reset_index(drop=True)
    units = decision_units(decisions, world, season_start=START)
    return decisions, units, truth


@pytest.fixture(scope="module")
def probs(world: World, logged: tuple) -> dict[str, np.ndarray]:
    """Action probabilities of the logging policy and three targets on the logged states."""
    params = world.compile()
    market = logged_market(logged[1], world)
    policies: dict[str, Policy] = {
        "logging": EpsilonGreedy(RulePolicy(params), 0.1),
        "rule": RulePolicy(params),
        "random": RandomPolicy(params.A),
        "static": StaticPolicy(params),
    }
    return {name: target_probs(pol, market) for name, pol in policies.items()}


@pytest.fixture(scope="module")
def exact_q(world: World, logged: tuple) -> np.ndarray:
    return ExactRewardModel(world).predict(logged[1])


def test_units_rebuild_the_simulators_state_and_reward(world: World, logged: tuple) -> None:
    decisions, units, truth = logged
    assert tuple(units.columns) == UNIT_COLUMNS
    # one unit per SKU-step with a visitor, in the market's order (time, then SKU)
    assert len(units) == len(truth)
    for col in ("sku_index", "t", "inventory", "level_before", "level", "comp"):
        np.testing.assert_array_equal(units[col].to_numpy(), truth[col].to_numpy(), err_msg=col)
    for col in ("velocity", "views_ema", "carts_ema", "reward"):
        np.testing.assert_allclose(units[col], truth[col], rtol=1e-9, atol=1e-9, err_msg=col)
    assert units["season_covered"].all()
    assert units["level_before_exact"].mean() > 0.95
    # totals of the per-visitor log are preserved
    purchases = decisions[decisions["outcome"] == "purchase"]
    margin = (purchases["quantity"] * (purchases["price_shown"] - purchases["unit_cost"])).sum()
    abandons = int((decisions["outcome"] == "abandon").sum())
    assert units["views"].sum() == len(decisions)
    assert units["units"].sum() == purchases["quantity"].sum()
    assert units["abandons"].sum() == abandons
    assert units["margin"].sum() == pytest.approx(margin, rel=1e-12)
    changes = (world.reward.price_change_penalty * units["base_price"] * units["changed"]).sum()
    total = margin - world.reward.abandonment_penalty * abandons - changes
    assert units["reward"].sum() == pytest.approx(total, rel=1e-12)
    assert units["reward"].sum() == pytest.approx(truth["reward"].sum(), rel=1e-12)


def test_reconstructed_states_reproduce_the_logged_propensities(
    logged: tuple, probs: dict[str, np.ndarray]
) -> None:
    units = logged[1]
    rows = np.arange(len(units))
    np.testing.assert_array_equal(
        probs["logging"][rows, units["action"]], units["propensity"].to_numpy()
    )
    # the greedy rule agrees with the log wherever the log followed it (propensity 0.92)
    followed = units["propensity"].to_numpy() > 0.5
    assert (probs["rule"][rows, units["action"]][followed] == 1.0).all()


def test_a_log_starting_mid_season_is_rebuilt_where_it_can_be(world: World, logged: tuple) -> None:
    decisions, _, truth = logged
    cut = pd.Timestamp(START + dt.timedelta(days=3), tz="UTC")  # day 2 of the second season
    later = decisions[decisions["ts"] >= cut]
    units = decision_units(later, world, season_start=START)
    tail = truth.iloc[len(truth) - len(units) :].reset_index(drop=True)
    for col in ("t", "inventory", "level", "comp"):
        np.testing.assert_array_equal(units[col], tail[col], err_msg=col)
    covered = units["season_covered"].to_numpy()
    assert 0 < covered.sum() < len(units)
    exact = units["level_before_exact"].to_numpy()
    np.testing.assert_array_equal(units["level_before"][exact], tail["level_before"][exact])
    np.testing.assert_allclose(units["views_ema"][covered], tail["views_ema"][covered], atol=1e-9)
    # the EMAs of the cut season start from zero, so they can only be lower than the truth
    assert (units["views_ema"][~covered] <= tail["views_ema"][~covered] + 1e-9).all()


def test_level_before_at_the_ends_of_the_ladder(world: World) -> None:
    """A move clipped at the top of the ladder is ambiguous until the previous level is known."""
    p = world.compile()
    top = p.L - 1
    up2 = int(np.argmax(p.moves))
    down2 = int(np.argmin(p.moves))
    ref = world.skus[0].ref_price
    season = pd.Timestamp("2026-03-02", tz="UTC")  # the log starts a day into this season
    hours = [25, 26, 29, 30]
    levels = [top, top, top, top - 2]
    actions = [up2, up2, up2, down2]
    rows = pd.DataFrame(
        {
            "ts": [season + pd.Timedelta(hours=h, minutes=10) for h in hours],
            "sku": world.skus[0].id,
            "base_price": ref,
            "price_shown": [round(ref * p.ratios[lv], 2) for lv in levels],
            "competitor_price": ref,
            "inventory": 5,
            "action": actions,
            "propensity": 0.92,
            "outcome": "view",
            "quantity": 0,
            "unit_cost": world.skus[0].unit_cost,
        }
    )
    units = decision_units(rows, world, season_start=season)
    assert units["t"].tolist() == hours
    assert not units["season_covered"].any()
    # first: no history, the unclipped move is assumed; then the previous hour settles it
    assert units["level_before"].tolist() == [top - 2, top, top, top]
    assert units["level_before_exact"].tolist() == [False, True, False, True]
    assert units["changed"].tolist() == [True, False, False, True]


def test_snips_of_the_logging_policy_is_its_on_policy_mean(
    logged: tuple, probs: dict[str, np.ndarray]
) -> None:
    units = logged[1]
    est = snips(units, probs["logging"])
    m, lo, hi = mean_ci95(units["reward"].to_numpy())
    assert est.value == pytest.approx(m, rel=1e-12)
    assert est.logging_value == pytest.approx(m, rel=1e-12)
    assert est.ci95 == pytest.approx((lo, hi), rel=1e-9)
    assert est.ess == pytest.approx(len(units)) and est.n == len(units)
    assert set(est.to_dict()) == {"estimator", "value", "ci95", "ess", "n", "logging_value"}


def test_effective_sample_size_is_at_most_n(logged: tuple, probs: dict[str, np.ndarray]) -> None:
    units = logged[1]
    n = len(units)
    for name, p in probs.items():
        w = importance_weights(units, p)
        ess = effective_sample_size(w)
        assert 0 < ess <= n + 1e-9, name
    # a deterministic target counts the logged decisions that agree with it
    agree = (probs["rule"][np.arange(n), units["action"]] == 1.0).sum()
    assert snips(units, probs["rule"]).ess == pytest.approx(agree)
    assert effective_sample_size(np.ones(7)) == pytest.approx(7)
    assert effective_sample_size(np.array([0.0, 3.0, 0.0])) == pytest.approx(1)
    assert effective_sample_size(np.zeros(4)) == 0.0
    # a target that never takes a logged action has no support at all
    never = np.zeros_like(probs["rule"])
    never[np.arange(n), (units["action"].to_numpy() + 1) % never.shape[1]] = 1.0
    none = snips(units, never)
    assert none.ess == 0.0 and np.isnan(none.value)
    assert ope_agrees(ope_compare(units, never, probs["rule"]), sim_diff=1.0, min_ess=0) is None


def test_rule_without_exploration_matches_its_simulated_value(
    world: World, logged: tuple, probs: dict[str, np.ndarray], exact_q: np.ndarray
) -> None:
    """SNIPS of the greedy rule from the ε-greedy log, against two references:

    the exact one-step value on the logged states (what a per-decision estimator estimates), and
    the rule's own on-policy mean reward per decision in simulated logs of the same days. The second
    also carries the shift in visited states that a one-step estimate ignores, so it is compared
    within the two estimates' combined interval.
    """
    units = logged[1]
    est = snips(units, probs["rule"])
    exact = float((probs["rule"] * exact_q).sum(axis=1).mean())
    assert est.ci95[0] <= exact <= est.ci95[1]

    params = world.compile()
    on_policy = []
    for seed in range(100, 106):
        days = generate_history(world, DAYS, seed, START, policy=RulePolicy(params))
        dec = pd.concat([d.decisions for d in days], ignore_index=True)
        on_policy.append(decision_units(dec, world, season_start=START)["reward"].mean())
    sim_mean, sim_lo, _ = mean_ci95(np.array(on_policy))
    half = np.hypot(est.ci95[1] - est.value, sim_mean - sim_lo)
    assert abs(est.value - sim_mean) <= half


def test_doubly_robust_with_perfect_knowledge(
    world: World, logged: tuple, probs: dict[str, np.ndarray], exact_q: np.ndarray
) -> None:
    units = logged[1]
    model = ExactRewardModel(world)
    # the exact model is calibrated on the log: its mean at the logged actions is the mean reward
    rows = np.arange(len(units))
    resid = units["reward"].to_numpy() - exact_q[rows, units["action"]]
    assert abs(resid.mean()) <= 1.96 * resid.std(ddof=1) / np.sqrt(len(resid))
    for name in ("logging", "rule", "random"):
        est = doubly_robust(units, probs[name], model)
        exact = float((probs[name] * exact_q).sum(axis=1).mean())
        assert est.ci95[0] <= exact <= est.ci95[1], name
        assert est.estimator == "dr" and est.ess <= est.n
    # with the realised reward as the model of the logged action, the correction term vanishes
    realised = exact_q.copy()
    realised[rows, units["action"]] = units["reward"].to_numpy()

    @dataclass(frozen=True)
    class Fixed:
        q: np.ndarray

        def fit(self, units: pd.DataFrame) -> Fixed:
            return self

        def predict(self, units: pd.DataFrame) -> np.ndarray:
            return self.q

    est = doubly_robust(units, probs["random"], Fixed(realised), folds=1)
    assert est.value == pytest.approx(float((probs["random"] * realised).sum(axis=1).mean()))


def test_doubly_robust_with_the_fitted_model(
    world: World, logged: tuple, probs: dict[str, np.ndarray], exact_q: np.ndarray
) -> None:
    units = logged[1]
    model = RidgeRewardModel(world)
    for name in ("rule", "random"):
        dr = doubly_robust(units, probs[name], model, folds=2, seed=0)
        exact = float((probs[name] * exact_q).sum(axis=1).mean())
        assert dr.ci95[0] <= exact <= dr.ci95[1], name
    # out of fold, the model explains the logged rewards about as well as perfect knowledge does
    # (an hour's purchases stay noisy: neither removes more than about a third of the variance)
    rows = np.arange(len(units))
    reward = units["reward"].to_numpy()
    q = cross_fit(model, units, folds=2, seed=0)
    resid = np.var(reward - q[rows, units["action"]])
    assert resid < min(0.9 * np.var(reward), 1.1 * np.var(reward - exact_q[rows, units["action"]]))
    # cross-fitting is deterministic for a seed
    assert doubly_robust(units, probs["random"], model, seed=3) == doubly_robust(
        units, probs["random"], model, seed=3
    )
    with pytest.raises(ValueError, match="before fit"):
        model.predict(units)


def test_ope_compare_pairs_the_estimates(
    world: World, logged: tuple, probs: dict[str, np.ndarray], exact_q: np.ndarray
) -> None:
    units = logged[1]
    same = ope_compare(units, probs["rule"], probs["rule"])
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0]
    for model in (None, RidgeRewardModel(world)):
        cmp = ope_compare(units, probs["rule"], probs["random"], reward_model=model)
        assert cmp["estimator"] == ("snips" if model is None else "dr")
        assert cmp["min_ess"] == min(cmp["ess_a"], cmp["ess_b"]) <= cmp["n"] == len(units)
        exact = float(((probs["rule"] - probs["random"]) * exact_q).sum(axis=1).mean())
        assert cmp["ci95"][0] <= exact <= cmp["ci95"][1]
        # pairing: the difference's interval is narrower than the two intervals side by side
        a = (
            snips(units, probs["rule"])
            if model is None
            else doubly_robust(units, probs["rule"], model)
        )
        b = (
            snips(units, probs["random"])
            if model is None
            else doubly_robust(units, probs["random"], model)
        )
        assert cmp["value_a"] == pytest.approx(a.value) and cmp["value_b"] == pytest.approx(b.value)
        width = cmp["ci95"][1] - cmp["ci95"][0]
        assert width < (a.ci95[1] - a.ci95[0]) + (b.ci95[1] - b.ci95[0])
    # the static baseline is far from the logger: little support
    thin = ope_compare(units, probs["static"], probs["rule"])
    assert thin["min_ess"] < 0.1 * len(units)
    assert ope_agrees(thin, sim_diff=1.0, min_ess=0.1 * len(units)) is None


def test_ope_agrees_only_rejects_a_confident_opposite_sign() -> None:
    def cmp(lo: float, hi: float, ess: float = 500.0) -> dict:
        return {"diff": (lo + hi) / 2, "ci95": [lo, hi], "min_ess": ess}

    assert ope_agrees(cmp(0.5, 2.0), sim_diff=3.0, min_ess=100) is True
    assert ope_agrees(cmp(-1.0, 2.0), sim_diff=3.0, min_ess=100) is True
    assert ope_agrees(cmp(-2.0, -0.5), sim_diff=3.0, min_ess=100) is False
    assert ope_agrees(cmp(0.5, 2.0), sim_diff=-1.0, min_ess=100) is False
    assert ope_agrees(cmp(-2.0, -0.5), sim_diff=-1.0, min_ess=100) is True
    assert ope_agrees(cmp(-2.0, -0.5, ess=50), sim_diff=3.0, min_ess=100) is None


def test_a_trained_agent_is_evaluated_on_the_logged_states(world: World, logged: tuple) -> None:
    from pipeline.model.artifacts import AgentPolicy
    from pipeline.model.train import TrainConfig, train_agent

    cfg = TrainConfig(
        timesteps=384, n_envs=8, n_steps=48, batch_size=96, n_epochs=1, seed=0, net_arch=(16,)
    )
    agent = AgentPolicy(train_agent(world, cfg))
    units = logged[1]
    p = target_probs(agent, logged_market(units, world))
    assert p.shape == (len(units), world.compile().A)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    est = snips(units, p)
    assert np.isfinite(est.value) and 0 < est.ess <= est.n
    # run greedily, as the evaluation runs agents: one-hot on the most probable move
    g = target_probs(agent, logged_market(units, world), greedy=True)
    assert set(np.unique(g)) <= {0.0, 1.0}
    np.testing.assert_array_equal(g.argmax(axis=1), p.argmax(axis=1))


def test_bad_inputs_fail_with_a_message(world: World, logged: tuple) -> None:
    decisions, units, _ = logged
    with pytest.raises(ValueError, match="propensity"):
        decision_units(decisions.drop(columns=["propensity"]), world)
    with pytest.raises(ValueError, match="not in world"):
        decision_units(decisions.assign(sku="nope"), world)
    mixed = decisions.copy()
    hour_key = mixed["sku"] + mixed["ts"].dt.floor("h").astype(str)
    first = mixed.index[hour_key.duplicated(keep=False)][0]
    mixed.loc[first, "action"] = (mixed.loc[first, "action"] + 1) % 5
    with pytest.raises(ValueError, match="vary within a SKU-step"):
        decision_units(mixed, world, season_start=START)
    with pytest.raises(ValueError, match="shape"):
        snips(units, np.ones((3, 5)) / 5)
    assert decision_units(decisions.iloc[:0], world).empty


def test_a_served_log_is_rebuilt_arm_by_arm(world: World, logged: tuple) -> None:
    """The pricing service logs two arms, each holding its own price per SKU and period: one
    SKU-step then holds two decisions, which `served_decision_units` rebuilds separately."""
    decisions, units, _ = logged
    control = decisions.assign(ab_arm="control")
    treatment = decisions.assign(ab_arm="treatment", propensity=decisions["propensity"] * 0.5)
    served = pd.concat([control, treatment], ignore_index=True)
    with pytest.raises(ValueError, match="split the log by A/B arm"):
        decision_units(served, world, season_start=START)
    both = served_decision_units(served, world, season_start=START)
    assert len(both) == 2 * len(units)
    for arm, part in both.groupby("ab_arm"):
        expected = units["propensity"] * (0.5 if arm == "treatment" else 1.0)
        assert np.allclose(part.sort_values(["decision_ts", "sku_index"])["propensity"], expected)
    assert served_decision_units(control, world, season_start=START).equals(units)
