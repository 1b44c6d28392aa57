"""Off-policy evaluation (OPE) of pricing policies on the logged decisions.

The decisions feed holds one row per visitor, but the logging policy acts once per SKU and step (an
hour by default): every visitor of that SKU-hour saw the same price, drawn with the same propensity.
So the unit of evaluation is the *decision unit*, one SKU-hour:

1. `decision_units` groups the log into decision units, with the hour's realised reward computed as
   the simulator does, and rebuilds the state the logging policy acted in (step of the selling
   season, stock, price level before the move, competitor state, recent-sales averages);
2. `logged_market` loads those states into a `sim.market.Market`, so any `sim.policies.Policy`
   (baselines, `pipeline.models.AgentPolicy`) can say what it would have done there, and
   `target_probs` asks it;
3. `snips` and `doubly_robust` estimate the mean reward per decision of the target policy from the
   importance weights ``target(a | x) / propensity``; `ope_compare` estimates the paired difference
   of two targets, and `ope_agrees` checks it against the simulator's verdict where the logs give
   enough support (effective sample size).

Limitations, read before trusting a number:

- **One-step estimates.** Each estimate is the expected reward of the target's action *in the states
  the logging policy visited*. The effect of the action on later states (stock sold today is not for
  sale tomorrow; a price cut now changes the level the next move starts from) is ignored, as is the
  different state distribution the target would visit. A policy that wins by planning over the season
  (the DP optimum, a trained agent saving stock for the evening peak) can look worse here than in
  the simulator, and a greedy one better. That is why the promotion gate only asks for agreement in
  sign, and only where the support is large.
- **Only hours with visitors are logged.** A SKU-hour with no visitor leaves no row, so its decision
  (and any price-change penalty it paid) is missing. The estimand is the mean reward over SKU-hours
  with at least one visitor. Their stock, price and recent-sales state are still rebuilt exactly,
  because an empty hour sells nothing.
- **No clearance bonus.** The end-of-season bonus depends on the whole season, not on one decision,
  so it is left out of the per-decision reward.
- **Stateful targets** (the Thompson-sampling bandit) are asked in a freshly reset state: their
  within-season learning is not replayed.
- **Independence.** The confidence intervals treat decision units as independent; consecutive hours
  of a SKU are correlated, so the intervals are somewhat optimistic.
- **Noisy hours.** An hour's few purchases are mostly chance, so even a perfect reward model
  explains only part of the reward's variance (about a quarter on the tiny test world) and the
  doubly robust estimate is not always tighter than SNIPS. Both are kept; the gate reads their
  effective sample size before their sign.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.feeds import ABANDON, CARTED, DECISIONS, PURCHASE
from sim.market import Market
from sim.policies import Policy
from sim.stats import Z95
from sim.world import MarketParams, World

UNIT_COLUMNS: tuple[str, ...] = (
    "decision_ts",  # start of the SKU-step, UTC
    "sku",
    "sku_index",  # position of the SKU in the world's catalogue
    "season_start",  # start of the selling season the step belongs to, UTC
    "t",  # step within the season
    "season_covered",  # the log covers the season from its start (state rebuilt exactly)
    "base_price",
    "unit_cost",
    "price",  # price shown after the move
    "level",  # ladder level of the price shown
    "level_before",  # ladder level the move started from
    "level_before_exact",  # level_before is known, not inferred across an unlogged hour
    "changed",
    "competitor_price",
    "comp",  # competitor state index
    "inventory",  # stock before the step's sales
    "action",
    "propensity",
    "policy_id",
    "ab_arm",
    "views",
    "carts",  # carts including the abandoned ones, as the simulator counts them
    "abandons",
    "units",
    "revenue",
    "margin",
    "reward",
    "velocity",  # EMA of units sold per step, before this step
    "views_ema",
    "carts_ema",
)

#: the decisions feed's columns the estimators read (no ids, segment, policy or A/B arm)
REQUIRED_DECISION_COLUMNS = DECISIONS.without(
    "event_id", "segment", "customer_id", "policy_id", "ab_arm"
)

# The default season clock is anchored at a fixed Monday, so that any slice of the same log puts a
# given hour at the same step of the season.
_EPOCH_MONDAY = pd.Timestamp("1970-01-05", tz="UTC")


def _catalogue_free_params(world: World) -> MarketParams:
    """The SKU-independent arrays (ladder, moves, horizon, EMA rate) without compiling every SKU."""
    return world.with_skus(list(world.skus[:1])).compile()


def _season_anchor(world: World, season_start: dt.date | pd.Timestamp | None) -> pd.Timestamp:
    if season_start is not None:
        ts = pd.Timestamp(season_start)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    h = world.horizon
    return _EPOCH_MONDAY + pd.Timedelta(days=h.start_weekday, hours=h.start_hour)


def _ladder_level(params: MarketParams, ratio: np.ndarray) -> np.ndarray:
    pr = params.world.pricing
    level = np.rint((ratio - pr.price_min) / pr.price_step).astype(np.int64)
    return np.asarray(np.clip(level, 0, params.L - 1))


def decision_units(
    decisions: pd.DataFrame,
    world: World,
    season_start: dt.date | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Group the decisions feed into one decision unit per SKU-step, with state and reward.

    The reward is the simulator's step reward, from the logged prices and costs: ``margin_weight x
    units x (price − unit_cost) − abandonment_penalty x abandons − price_change_penalty x base_price``
    when the price moved from the SKU's previous step. The clearance bonus is left out (it belongs to
    the season, not to one decision).

    The state is rebuilt as the logging policy saw it. The step ``t`` counts steps since the start of
    the selling season; seasons last ``horizon.steps`` steps and repeat back to back from
    ``season_start`` (default: the world's ``horizon.start_weekday`` and ``start_hour``, on a fixed
    Monday grid, which suits seasons of whole weeks). The price level before the move is the previous
    step's level, the world's initial level at step 0, and otherwise (an unlogged hour in between, or
    a season that started before the log) the level the logged move and the shown price imply. The
    averages of units, views and carts are the simulator's EMAs over the season's earlier steps (an
    unlogged hour had no visitor, so it counts as zero). The log is assumed to hold every visitor from
    midnight UTC of its first day.

    Args:
        decisions: the decisions feed (see `sim.feeds.DECISIONS`); one policy and one A/B
            arm per SKU-step (filter by arm first if the split is per customer).
        world: the world whose catalogue, ladder, horizon and reward weights the log follows.
        season_start: the start of any one selling season (a date means its midnight; naive times
            are UTC).

    Returns:
        One row per SKU-step with at least one visitor, columns `UNIT_COLUMNS`, sorted by time and
        SKU.

    Raises:
        ValueError: a required column is missing, a SKU is not in the world, an action is out of
            range, a propensity is not in (0, 1], or the logged action, propensity, price or stock
            varies within a SKU-step.
    """
    missing = [c for c in REQUIRED_DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise ValueError(f"decisions lack column(s) {missing}; expected the decisions feed")
    if len(decisions) == 0:
        return pd.DataFrame({c: [] for c in UNIT_COLUMNS})
    params = _catalogue_free_params(world)
    sku_index = {s.id: k for k, s in enumerate(world.skus)}
    sku_col = decisions["sku"].astype(str)
    unknown = sorted(set(sku_col.unique()) - set(sku_index))
    if unknown:
        raise ValueError(
            f"{len(unknown)} SKU(s) of the log are not in world {world.name!r} "
            f"(e.g. {unknown[:3]}); evaluate with the world the log was recorded in"
        )
    action = decisions["action"].to_numpy()
    if ((action < 0) | (action >= params.A)).any():
        raise ValueError(f"logged actions must be in 0..{params.A - 1} for this world's moves")
    prop = decisions["propensity"].to_numpy(dtype=float)
    if not ((prop > 0) & (prop <= 1)).all():
        raise ValueError("logged propensities must be in (0, 1]; a zero propensity has no support")

    anchor = _season_anchor(world, season_start)
    step_td = pd.Timedelta(hours=world.horizon.step_hours)
    ts = pd.to_datetime(decisions["ts"], utc=True)
    step = ((ts - anchor) // step_td).to_numpy(dtype=np.int64)
    outcome = decisions["outcome"].astype(str).to_numpy()
    purchase = outcome == PURCHASE
    qty = np.where(purchase, decisions["quantity"].to_numpy(dtype=np.int64), 0)
    price_shown = decisions["price_shown"].to_numpy(dtype=float)
    cost = decisions["unit_cost"].to_numpy(dtype=float)
    rows = pd.DataFrame(
        {
            "sku_index": sku_col.map(sku_index).to_numpy(dtype=np.int64),
            "step": step,
            "sku": sku_col.to_numpy(),
            "base_price": decisions["base_price"].to_numpy(dtype=float),
            "unit_cost": cost,
            "price": price_shown,
            "competitor_price": decisions["competitor_price"].to_numpy(dtype=float),
            "inventory": decisions["inventory"].to_numpy(dtype=np.int64),
            "action": action.astype(np.int64),
            "propensity": prop,
            "policy_id": decisions["policy_id"].astype(str).to_numpy()
            if "policy_id" in decisions.columns
            else "",
            "ab_arm": decisions["ab_arm"].astype(str).to_numpy()
            if "ab_arm" in decisions.columns
            else "",
            "views": 1,
            "carts": np.isin(outcome, CARTED).astype(np.int64),
            "abandons": (outcome == ABANDON).astype(np.int64),
            "units": qty,
            "revenue": qty * price_shown,
            "margin": qty * (price_shown - cost),
        }
    )
    g = rows.groupby(["sku_index", "step"], sort=True)
    constant = ["action", "propensity", "price", "inventory"]
    spread = g[constant].max() - g[constant].min()
    varies = [c for c in constant if (spread[c].abs() > 1e-9).any()]
    if varies:
        raise ValueError(
            f"the logged {', '.join(varies)} vary within a SKU-step; one decision per SKU and "
            "step is expected (split the log by A/B arm or policy first)"
        )
    first = g[
        [
            "sku",
            "base_price",
            "unit_cost",
            "price",
            "competitor_price",
            "inventory",
            "action",
            "propensity",
            "policy_id",
            "ab_arm",
        ]
    ].first()
    sums = g[["views", "carts", "abandons", "units", "revenue", "margin"]].sum()
    u = pd.concat([first, sums], axis=1).reset_index()

    k = u["sku_index"].to_numpy()
    step_u = u["step"].to_numpy()
    T = params.T
    season = np.floor_divide(step_u, T)
    t = step_u - season * T
    season_td = step_td * T
    u["decision_ts"] = anchor + step_td * step_u
    u["season_start"] = anchor + season_td * season
    u["t"] = t
    coverage = ts.min().floor("D")
    u["season_covered"] = (u["season_start"] >= coverage).to_numpy()

    ratio = u["price"].to_numpy() / u["base_price"].to_numpy()
    level = _ladder_level(params, ratio)
    comp_ref = np.array([s.competitor_reference for s in world.skus])[k]
    states = np.array([c.price_ratio for c in world.competitor.states])
    comp_rel = u["competitor_price"].to_numpy() / comp_ref
    comp = np.abs(comp_rel[:, None] - states[None, :]).argmin(axis=1)

    level_before, exact = _levels_before(
        params, k, season, t, level, u["action"].to_numpy(), u["season_covered"].to_numpy()
    )
    changed = level != level_before
    change_cost = world.reward.price_change_penalty * u["base_price"].to_numpy()
    rw = world.reward
    reward = (
        rw.margin_weight * u["margin"].to_numpy()
        - rw.abandonment_penalty * u["abandons"].to_numpy()
        - change_cost * changed
    )
    ema = _emas(
        params.velocity_alpha,
        k,
        season,
        t,
        np.stack([u["units"], u["views"], u["carts"]], axis=1).astype(float),
    )
    u["level"] = level
    u["level_before"] = level_before
    u["level_before_exact"] = exact
    u["changed"] = changed
    u["comp"] = comp
    u["reward"] = reward
    u["velocity"], u["views_ema"], u["carts_ema"] = ema[:, 0], ema[:, 1], ema[:, 2]
    u = u.sort_values(["decision_ts", "sku_index"], kind="stable").reset_index(drop=True)
    return u[list(UNIT_COLUMNS)]


def _levels_before(
    params: MarketParams,
    k: np.ndarray,
    season: np.ndarray,
    t: np.ndarray,
    level: np.ndarray,
    action: np.ndarray,
    covered: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Ladder level each move started from; rows sorted by (SKU, season, t)."""
    n = len(level)
    m = params.moves[action]
    top = params.L - 1
    # The levels a move ``m`` could have come from to land on ``level``: one, unless clipped at an
    # end of the ladder, where a whole range lands on the same end.
    lo = level - m
    hi = level - m
    up_clip = (level == top) & (m > 0)
    down_clip = (level == 0) & (m < 0)
    lo = np.where(up_clip, top - m, lo)
    hi = np.where(up_clip, top, hi)
    lo = np.where(down_clip, 0, lo)
    hi = np.where(down_clip, -m, hi)
    lo, hi = np.clip(lo, 0, top), np.clip(hi, 0, top)

    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (k[1:] != k[:-1]) | (season[1:] != season[:-1])
    prev_level = np.empty(n, dtype=np.int64)
    prev_t = np.empty(n, dtype=np.int64)
    prev_level[1:], prev_t[1:] = level[:-1], t[:-1]
    # at a season start the price is the initial level (a virtual step −1); before the log, unknown
    known = ~new_group | covered
    prev_level = np.where(new_group, params.initial_level, prev_level)
    prev_t = np.where(new_group, -1, prev_t)
    guess = np.where(known, prev_level, level - m)
    before = np.clip(guess, lo, hi)
    consistent = known & (np.clip(prev_level + m, 0, top) == level)
    exact = (consistent & (prev_t == t - 1)) | (lo == hi)
    return before.astype(np.int64), exact


def _emas(
    alpha: float, k: np.ndarray, season: np.ndarray, t: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """The simulator's EMAs before each step, from the season's earlier logged steps.

    Rows are sorted by (SKU, season, t). An unlogged step had no visitor, so it only decays the
    averages. Loops over the rank within a season (at most ``horizon.steps`` passes), vectorised over
    all SKU-seasons, so the work grows linearly with the log.
    """
    n = len(t)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (k[1:] != k[:-1]) | (season[1:] != season[:-1])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    rank = np.arange(n) - starts[group]
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(rank.max() + 2))
    decay = 1.0 - alpha
    ema = np.zeros_like(x)
    for r in range(1, len(bounds) - 1):
        i = order[bounds[r] : bounds[r + 1]]
        j = i - 1
        gap = (t[i] - t[j] - 1).astype(float)
        ema[i] = (decay * ema[j] + alpha * x[j]) * (decay**gap)[:, None]
    return ema


def logged_market(units: pd.DataFrame, world: World) -> Market:
    """A `Market` with one slot per decision unit, in the state the logging policy acted in.

    The time features of the observation (hour, weekday, segment mix, expected traffic left) follow
    ``world``'s horizon at step ``t``: the clock the agents were trained on.

    Args:
        units: decision units from `decision_units`.
        world: the world the units were built with.

    Returns:
        A market whose ``sku``, ``t``, ``inventory``, ``level`` (before the move), ``comp`` and EMAs
        are those of the units, row for row.
    """
    if len(units) == 0:
        raise ValueError("no decision units: the log is empty")
    params = world.compile()
    sku_index = {s.id: k for k, s in enumerate(world.skus)}
    try:
        k = np.array([sku_index[s] for s in units["sku"].astype(str)], dtype=np.int64)
    except KeyError as err:
        raise ValueError(
            f"SKU {err.args[0]!r} of the units is not in world {world.name!r}"
        ) from None
    t = units["t"].to_numpy(dtype=np.int64)
    if (t < 0).any() or (t >= params.T).any():
        raise ValueError(f"units' t must be in 0..{params.T - 1}; were they built with this world?")
    market = Market(params, len(units))
    market.sku = k
    market.t = t
    # the simulator never holds more than the shelf: a log that does is clipped to it
    market.inventory = np.minimum(units["inventory"].to_numpy(dtype=np.int64), params.capacity[k])
    market.level = units["level_before"].to_numpy(dtype=np.int64)
    market.comp = units["comp"].to_numpy(dtype=np.int64)
    market.velocity = units["velocity"].to_numpy(dtype=float)
    market.views_ema = units["views_ema"].to_numpy(dtype=float)
    market.carts_ema = units["carts_ema"].to_numpy(dtype=float)
    return market


def target_probs(policy: Policy, market: Market, seed: int = 0, greedy: bool = False) -> np.ndarray:
    """The probabilities ``policy`` gives every action in every logged state, shape (N, A).

    Args:
        policy: any sim policy (baselines, `pipeline.models.AgentPolicy`); it is reset first.
        market: from `logged_market`.
        seed: seeds the policy's own randomness (e.g. the bandit's posterior draws).
        greedy: one-hot on the most probable action, as the evaluation runs trained agents.
    """
    idx = np.arange(market.n)
    policy.reset(market, idx, np.random.default_rng(seed))
    probs = np.asarray(policy.probs(market, market.observe()), dtype=float)
    if probs.shape != (market.n, market.p.A):
        raise ValueError(
            f"policy {policy.name!r} returned shape {probs.shape}, expected {(market.n, market.p.A)}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"policy {policy.name!r} returned invalid probabilities")
    total = probs.sum(axis=1, keepdims=True)
    if np.abs(total - 1.0).max() > 1e-6:
        raise ValueError(f"policy {policy.name!r}: probabilities do not sum to 1 per row")
    if greedy:
        return np.asarray(np.eye(probs.shape[1])[probs.argmax(axis=1)])
    return np.asarray(probs / total)


@dataclass(frozen=True)
class OPEEstimate:
    """An off-policy estimate of a target policy's mean reward per decision (currency per SKU-step).

    Attributes:
        estimator: ``"snips"`` or ``"dr"``.
        value: the estimate.
        ci95: normal-approximation 95 % confidence interval.
        ess: effective sample size of the importance weights, ``(Σw)² / Σw²`` (at most ``n``).
        n: number of decision units.
        logging_value: the logging policy's on-policy mean reward per decision, for context.
    """

    estimator: str
    value: float
    ci95: tuple[float, float]
    ess: float
    n: int
    logging_value: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ci95": list(self.ci95)}


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²``: how many on-policy decisions the weighted
    sample is worth (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=float)
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def _checked(units: pd.DataFrame, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rewards, actions, target probabilities) after checking the shapes agree."""
    n = len(units)
    if n == 0:
        raise ValueError("no decision units: nothing to evaluate")
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"target probabilities must have shape ({n}, A) (got {p.shape})")
    a = units["action"].to_numpy(dtype=np.int64)
    if a.max() >= p.shape[1]:
        raise ValueError(f"a logged action is out of range for {p.shape[1]} actions")
    return units["reward"].to_numpy(dtype=float), a, p


def importance_weights(units: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    """``target(a | x) / propensity`` of each logged decision."""
    _, a, p = _checked(units, probs)
    return np.asarray(p[np.arange(len(a)), a] / units["propensity"].to_numpy(dtype=float))


def _se(influence: np.ndarray) -> float:
    n = len(influence)
    return float(np.sqrt(np.sum(influence**2) / (n * (n - 1)))) if n > 1 else 0.0


def _snips_parts(units: pd.DataFrame, probs: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """SNIPS value, its influence function per unit (mean zero) and the weights."""
    r, _, _ = _checked(units, probs)
    w = importance_weights(units, probs)
    if w.sum() <= 0:
        return float("nan"), np.full(len(r), np.nan), w
    value = float(np.sum(w * r) / np.sum(w))
    return value, w * (r - value) / w.mean(), w


def snips(units: pd.DataFrame, target_probs: np.ndarray) -> OPEEstimate:
    """Self-normalised importance sampling of the target's mean reward per decision.

    ``Σ w r / Σ w`` with ``w = target(a | x) / propensity``. Self-normalising trades a small bias for
    a much lower variance than plain importance sampling and keeps the estimate within the range of
    the rewards. The interval is the delta-method normal interval. A target that gives no mass to any
    logged action has no support: the value is NaN and the ESS 0.

    Args:
        units: decision units from `decision_units`.
        target_probs: the target's action probabilities per unit, shape (N, A) (`target_probs`).
    """
    value, infl, w = _snips_parts(units, target_probs)
    se = _se(infl)
    return OPEEstimate(
        estimator="snips",
        value=value,
        ci95=(value - Z95 * se, value + Z95 * se),
        ess=effective_sample_size(w),
        n=len(units),
        logging_value=float(units["reward"].mean()),
    )


class RewardModel(Protocol):
    """Predicts the expected reward of every action in every unit's state, for the doubly robust
    estimator."""

    def fit(self, units: pd.DataFrame) -> RewardModel:
        """Return a model fitted on ``units`` (``self`` is left unchanged)."""
        ...

    def predict(self, units: pd.DataFrame) -> np.ndarray:
        """Expected reward of each action in each unit's state, shape (N, A)."""
        ...


@dataclass(frozen=True)
class RidgeRewardModel:
    """A pooled ridge regression of the reward per visitor, shared by the whole catalogue.

    The reward of an action is known in part: the price-change penalty follows from the move, and a
    SKU with no stock sells nothing and loses no cart. The rest is modelled per visitor, in reference
    prices, as a linear function of the unit margin at the new price times features of that price
    (log price / reference, log price / competitor, their squares and product, weekend, stock per
    visitor), plus terms for the price rise that drives abandonment. Predictions are scaled by the
    hour's visitor count: visitors arrive before they see the price, so their number does not depend
    on the action, and conditioning on it takes the traffic's share out of the reward's variance.

    Attributes:
        world: the world whose ladder and reward weights the units follow.
        alpha: ridge penalty, in visitors.
        coef: fitted coefficients (None until `fit`).
    """

    world: World
    alpha: float = 1.0
    coef: np.ndarray | None = None

    @staticmethod
    def _features(units: pd.DataFrame, ratio_new: np.ndarray, ratio_old: np.ndarray) -> np.ndarray:
        base = units["base_price"].to_numpy(dtype=float)
        comp_rel = units["competitor_price"].to_numpy(dtype=float) / base
        z = np.log(ratio_new)
        g = np.log(ratio_new / comp_rel)
        margin = ratio_new - units["unit_cost"].to_numpy(dtype=float) / base
        weekend = (pd.to_datetime(units["decision_ts"], utc=True).dt.day_of_week >= 5).to_numpy()
        stock = units["inventory"].to_numpy(dtype=float)
        cover = np.minimum(1.0, stock / units["views"].to_numpy(dtype=float))
        rise = np.maximum(0.0, np.log(ratio_new / ratio_old))
        cols = [
            margin,
            margin * z,
            margin * g,
            margin * z * z,
            margin * g * g,
            margin * z * g,
            margin * weekend,
            margin * cover,
            np.ones_like(z),
            z,
            g,
            rise,
        ]
        return np.stack(cols, axis=1)

    def fit(self, units: pd.DataFrame) -> RidgeRewardModel:
        """Fit on the logged actions of ``units`` with stock; returns a fitted copy."""
        params = _catalogue_free_params(self.world)
        u = units[units["inventory"].to_numpy() > 0]
        before = u["level_before"].to_numpy(dtype=np.int64)
        new = np.clip(before + params.moves[u["action"].to_numpy(dtype=np.int64)], 0, params.L - 1)
        x = self._features(u, params.ratios[new], params.ratios[before])
        base = u["base_price"].to_numpy(dtype=float)
        change = self.world.reward.price_change_penalty * base * (new != before)
        views = u["views"].to_numpy(dtype=float)
        y = (u["reward"].to_numpy(dtype=float) + change) / (views * base)
        # weighted by visitors: an hour with more visitors measures the per-visitor reward better
        xw = x * views[:, None]
        gram = x.T @ xw + self.alpha * np.eye(x.shape[1])
        return dataclasses.replace(self, coef=np.linalg.solve(gram, xw.T @ y))

    def predict(self, units: pd.DataFrame) -> np.ndarray:
        """Expected reward of each action in each unit's state, shape (N, A)."""
        if self.coef is None:
            raise ValueError("RidgeRewardModel.predict before fit: call fit(units) first")
        params = _catalogue_free_params(self.world)
        before = units["level_before"].to_numpy(dtype=np.int64)
        new = np.clip(before[:, None] + params.moves[None, :], 0, params.L - 1)
        base = units["base_price"].to_numpy(dtype=float)
        scale = units["views"].to_numpy(dtype=float) * base
        stocked = units["inventory"].to_numpy() > 0
        out = np.empty(new.shape)
        for a in range(params.A):
            x = self._features(units, params.ratios[new[:, a]], params.ratios[before])
            out[:, a] = np.where(stocked, (x @ self.coef) * scale, 0.0)
        change = self.world.reward.price_change_penalty * base[:, None] * (new != before[:, None])
        return np.asarray(out - change)


def cross_fit(
    reward_model: RewardModel, units: pd.DataFrame, folds: int = 2, seed: int = 0
) -> np.ndarray:
    """Out-of-fold reward predictions, shape (N, A): each unit is predicted by a model that did not
    see it, so the model's overfit does not leak into the doubly robust correction."""
    n = len(units)
    if folds < 1 or folds > n:
        raise ValueError(f"folds must be in 1..{n} (got {folds})")
    if folds == 1:
        return np.asarray(reward_model.fit(units).predict(units), dtype=float)
    fold = np.random.default_rng(seed).permutation(n) % folds
    out: np.ndarray | None = None
    for f in range(folds):
        test = fold == f
        pred = np.asarray(
            reward_model.fit(units[~test]).predict(units[test].reset_index(drop=True)),
            dtype=float,
        )
        if out is None:
            out = np.empty((n, pred.shape[1]))
        out[test] = pred
    assert out is not None
    return out


def _dr_terms(units: pd.DataFrame, probs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-unit doubly robust scores: model value of the target plus the weighted residual."""
    r, a, p = _checked(units, probs)
    if q.shape != p.shape:
        raise ValueError(f"reward predictions have shape {q.shape}, expected {p.shape}")
    w = importance_weights(units, probs)
    idx = np.arange(len(a))
    return np.asarray((p * q).sum(axis=1) + w * (r - q[idx, a]))


def doubly_robust(
    units: pd.DataFrame,
    target_probs: np.ndarray,
    reward_model: RewardModel,
    folds: int = 2,
    seed: int = 0,
) -> OPEEstimate:
    """Doubly robust estimate of the target's mean reward per decision.

    ``mean( Σ_a target(a | x) q̂(x, a) + w (r − q̂(x, a_logged)) )``: the reward model's value of the
    target, corrected by the importance-weighted residual on the logged action. Unbiased if either the
    propensities or the model are right, and less noisy than importance sampling when the model
    explains much of the reward. The model is cross-fitted (``folds`` random folds, ``seed``).

    Args:
        units: decision units from `decision_units`.
        target_probs: the target's action probabilities per unit, shape (N, A).
        reward_model: e.g. ``RidgeRewardModel(world)``; fitted here, per fold.
        folds: cross-fitting folds (1 fits and predicts in-sample).
        seed: seeds the fold assignment.
    """
    q = cross_fit(reward_model, units, folds, seed)
    psi = _dr_terms(units, target_probs, q)
    value = float(psi.mean())
    se = _se(psi - value)
    return OPEEstimate(
        estimator="dr",
        value=value,
        ci95=(value - Z95 * se, value + Z95 * se),
        ess=effective_sample_size(importance_weights(units, target_probs)),
        n=len(units),
        logging_value=float(units["reward"].mean()),
    )


def ope_compare(
    units: pd.DataFrame,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    reward_model: RewardModel | None = None,
    folds: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Estimated difference ``a − b`` of the mean reward per decision, paired on the same units.

    SNIPS by default, doubly robust when a ``reward_model`` is given (one cross-fit shared by both
    targets). The interval is a normal interval on the paired per-unit influence terms, so what the
    two estimates share cancels.

    Returns:
        JSON-ready ``{"estimator", "diff", "ci95": [lo, hi], "value_a", "value_b", "ess_a",
        "ess_b", "min_ess", "n", "logging_value"}``; ``min_ess`` is the support of the comparison.
    """
    n = len(units)
    if reward_model is None:
        va, ia, wa = _snips_parts(units, probs_a)
        vb, ib, wb = _snips_parts(units, probs_b)
        estimator = "snips"
        diff_terms = ia - ib
    else:
        q = cross_fit(reward_model, units, folds, seed)
        psi_a, psi_b = _dr_terms(units, probs_a, q), _dr_terms(units, probs_b, q)
        va, vb = float(psi_a.mean()), float(psi_b.mean())
        wa, wb = importance_weights(units, probs_a), importance_weights(units, probs_b)
        estimator = "dr"
        diff_terms = (psi_a - psi_b) - (va - vb)
    diff = va - vb
    se = _se(diff_terms)
    ess_a, ess_b = effective_sample_size(wa), effective_sample_size(wb)
    return {
        "estimator": estimator,
        "diff": diff,
        "ci95": [diff - Z95 * se, diff + Z95 * se],
        "value_a": va,
        "value_b": vb,
        "ess_a": ess_a,
        "ess_b": ess_b,
        "min_ess": min(ess_a, ess_b),
        "n": n,
        "logging_value": float(units["reward"].mean()),
    }


def ope_agrees(compare: Mapping[str, Any], sim_diff: float, min_ess: float) -> bool | None:
    """Does the off-policy comparison agree in sign with the simulator's difference?

    Args:
        compare: a result of `ope_compare`.
        sim_diff: the simulator's estimate of the same difference ``a − b``.
        min_ess: the least effective sample size at which the logs count as support.

    Returns:
        None when the logs give too little support (``min_ess`` not reached or no estimate);
        False when the off-policy interval excludes zero on the other side of ``sim_diff``;
        True otherwise (an interval that straddles zero does not contradict the simulator).
    """
    if not compare["min_ess"] >= min_ess or not np.isfinite(compare["diff"]):
        return None
    lo, hi = compare["ci95"]
    if sim_diff > 0:
        return bool(hi >= 0)
    if sim_diff < 0:
        return bool(lo <= 0)
    return True
