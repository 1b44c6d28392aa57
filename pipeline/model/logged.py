"""The logged decisions as decision units: what off-policy evaluation (`pipeline.model.ope`) and
the monitor's reference read.

The decisions feed holds one row per visitor, but the logging policy acts once per SKU and step (an
hour by default): every visitor of that SKU-hour saw the same price, drawn with the same propensity.
So the unit of evaluation is the *decision unit*, one SKU-hour:

- `decision_units` groups the log into decision units, with the hour's realised reward computed as
  the simulator does, and rebuilds the state the logging policy acted in (step of the selling
  season, stock, price level before the move, competitor state, recent-sales averages);
- `logged_market` loads those states into a `sim.market.Market`, so any `sim.policies.Policy`
  (baselines, `pipeline.model.artifacts.AgentPolicy`) can say what it would have done there, and
  `target_probs` asks it.

Only hours with visitors are logged: a SKU-hour with no visitor leaves no row, so its decision is
missing; its stock, price and recent-sales state are still rebuilt exactly, because an empty hour
sells nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from sim.feeds import ABANDON, CARTED, DECISIONS, PURCHASE
from sim.market import Market, ladder_level
from sim.params import MarketParams
from sim.policies import Policy
from sim.world import World

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
    "event_id", "segment", "customer_id", "policy_id", "ab_arm", *DECISIONS.late
)

# The default season clock is anchored at a fixed Monday, so that any slice of the same log puts a
# given hour at the same step of the season.
_EPOCH_MONDAY = pd.Timestamp("1970-01-05", tz="UTC")


def catalogue_free_params(world: World) -> MarketParams:
    """The SKU-independent arrays (ladder, moves, horizon, EMA rate) without compiling every SKU."""
    return world.with_skus(list(world.skus[:1])).compile()


def _season_anchor(world: World, season_start: dt.date | pd.Timestamp | None) -> pd.Timestamp:
    if season_start is not None:
        ts = pd.Timestamp(season_start)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    h = world.horizon
    return _EPOCH_MONDAY + pd.Timedelta(days=h.start_weekday, hours=h.start_hour)


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
            range, a propensity is not in (0, 1], or the logged action, propensity or price
            varies within a SKU-step.
    """
    if len(decisions) == 0:
        return pd.DataFrame({c: [] for c in UNIT_COLUMNS})
    params = catalogue_free_params(world)
    sku_index = _check_log(decisions, world, params)
    anchor = _season_anchor(world, season_start)
    step_td = pd.Timedelta(hours=world.horizon.step_hours)
    ts = pd.to_datetime(decisions["ts"], utc=True)
    step = ((ts - anchor) // step_td).to_numpy(dtype=np.int64)
    u = _group_units(_visitor_rows(decisions, sku_index, step))
    season = np.floor_divide(u["step"].to_numpy(), params.T)
    t = u["step"].to_numpy() - season * params.T
    u["decision_ts"] = anchor + step_td * u["step"].to_numpy()
    u["season_start"] = anchor + step_td * params.T * season
    u["t"] = t
    u["season_covered"] = (u["season_start"] >= ts.min().floor("D")).to_numpy()
    _add_state_and_reward(u, world, params, season, t)
    u = u.sort_values(["decision_ts", "sku_index"], kind="stable").reset_index(drop=True)
    return u[list(UNIT_COLUMNS)]


def served_decision_units(
    decisions: pd.DataFrame,
    world: World,
    season_start: dt.date | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """`decision_units` of a log the pricing service wrote: each A/B arm holds its own price per
    SKU and period, so each arm is a logging policy of its own, rebuilt on its own and then
    pooled (every unit keeps its own logging propensity, which is all an importance-weighted
    estimate needs); the sales, views and carts averages are the SKU's, over every arm's
    visitors, as the service keeps them. A log with one arm or none is `decision_units`
    itself."""
    arms = decisions["ab_arm"].dropna().unique() if "ab_arm" in decisions else []
    if len(arms) < 2:
        return decision_units(decisions, world, season_start)
    parts = [
        decision_units(decisions[decisions["ab_arm"] == arm], world, season_start) for arm in arms
    ]
    units = pd.concat(parts, ignore_index=True)
    # the averages are the SKU's, over every arm's visitors, as the service keeps them
    keys = ["sku_index", "season_start", "t"]
    steps = units.groupby(keys, sort=True)[["units", "views", "carts"]].sum().reset_index()
    ema = _emas(
        catalogue_free_params(world).velocity_alpha,
        steps["sku_index"].to_numpy(),
        steps["season_start"].astype("int64").to_numpy(),
        steps["t"].to_numpy(),
        steps[["units", "views", "carts"]].to_numpy(dtype=float),
    )
    steps["velocity"], steps["views_ema"], steps["carts_ema"] = ema[:, 0], ema[:, 1], ema[:, 2]
    averages = ["velocity", "views_ema", "carts_ema"]
    units = units.drop(columns=averages).merge(steps[[*keys, *averages]], on=keys, how="left")
    units = units.sort_values(["decision_ts", "sku_index"], kind="stable").reset_index(drop=True)
    return units[list(UNIT_COLUMNS)]


def _check_log(decisions: pd.DataFrame, world: World, params: MarketParams) -> dict[str, int]:
    """The SKU index of the world's catalogue, once the log is known to fit the world."""
    missing = [c for c in REQUIRED_DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise ValueError(f"decisions lack column(s) {missing}; expected the decisions feed")
    sku_index = {s.id: k for k, s in enumerate(world.skus)}
    unknown = sorted(set(decisions["sku"].astype(str).unique()) - set(sku_index))
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
    return sku_index


def _visitor_rows(
    decisions: pd.DataFrame, sku_index: dict[str, int], step: np.ndarray
) -> pd.DataFrame:
    """One row per visitor, with the SKU-step it belongs to and its sale, as numbers."""
    sku_col = decisions["sku"].astype(str)
    outcome = decisions["outcome"].astype(str).to_numpy()
    qty = np.where(outcome == PURCHASE, decisions["quantity"].to_numpy(dtype=np.int64), 0)
    price_shown = decisions["price_shown"].to_numpy(dtype=float)
    cost = decisions["unit_cost"].to_numpy(dtype=float)

    def text(col: str) -> Any:
        return decisions[col].astype(str).to_numpy() if col in decisions.columns else ""

    return pd.DataFrame(
        {
            "sku_index": sku_col.map(sku_index).to_numpy(dtype=np.int64),
            "step": step,
            "sku": sku_col.to_numpy(),
            "base_price": decisions["base_price"].to_numpy(dtype=float),
            "unit_cost": cost,
            "price": price_shown,
            "competitor_price": decisions["competitor_price"].to_numpy(dtype=float),
            "inventory": decisions["inventory"].to_numpy(dtype=np.int64),
            "action": decisions["action"].to_numpy().astype(np.int64),
            "propensity": decisions["propensity"].to_numpy(dtype=float),
            "policy_id": text("policy_id"),
            "ab_arm": text("ab_arm"),
            "views": 1,
            "carts": np.isin(outcome, CARTED).astype(np.int64),
            "abandons": (outcome == ABANDON).astype(np.int64),
            "units": qty,
            "revenue": qty * price_shown,
            "margin": qty * (price_shown - cost),
        }
    )


_PER_DECISION = [
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
_PER_VISITOR = ["views", "carts", "abandons", "units", "revenue", "margin"]


def _group_units(rows: pd.DataFrame) -> pd.DataFrame:
    """The visitors of each SKU-step as one decision unit; one decision per SKU-step expected."""
    g = rows.groupby(["sku_index", "step"], sort=True)
    # Stock may fall during a step as visitors buy (a live service logs each visitor's stock):
    # the decision's state is the stock when the step began, the most of them.
    constant = ["action", "propensity", "price"]
    spread = g[constant].max() - g[constant].min()
    varies = [c for c in constant if (spread[c].abs() > 1e-9).any()]
    if varies:
        raise ValueError(
            f"the logged {', '.join(varies)} vary within a SKU-step; one decision per SKU and "
            "step is expected (split the log by A/B arm or policy first)"
        )
    first = g[_PER_DECISION].first()
    first["inventory"] = g["inventory"].max()
    return pd.concat([first, g[_PER_VISITOR].sum()], axis=1).reset_index()


def _add_state_and_reward(
    u: pd.DataFrame, world: World, params: MarketParams, season: np.ndarray, t: np.ndarray
) -> None:
    """The state each decision was taken in (ladder levels, competitor state, EMAs) and the
    simulator's step reward, as columns of ``u``."""
    k = u["sku_index"].to_numpy()
    level = ladder_level(params, u["price"].to_numpy() / u["base_price"].to_numpy())
    comp_ref = np.array([s.competitor_reference for s in world.skus])[k]
    states = np.array([c.price_ratio for c in world.competitor.states])
    comp_rel = u["competitor_price"].to_numpy() / comp_ref
    level_before, exact = _levels_before(
        params, k, season, t, level, u["action"].to_numpy(), u["season_covered"].to_numpy()
    )
    changed = level != level_before
    rw = world.reward
    u["level"] = level
    u["level_before"] = level_before
    u["level_before_exact"] = exact
    u["changed"] = changed
    u["comp"] = np.abs(comp_rel[:, None] - states[None, :]).argmin(axis=1)
    u["reward"] = (
        rw.margin_weight * u["margin"].to_numpy()
        - rw.abandonment_penalty * u["abandons"].to_numpy()
        - rw.price_change_penalty * u["base_price"].to_numpy() * changed
    )
    units = np.stack([u["units"], u["views"], u["carts"]], axis=1).astype(float)
    ema = _emas(params.velocity_alpha, k, season, t, units)
    u["velocity"], u["views_ema"], u["carts_ema"] = ema[:, 0], ema[:, 1], ema[:, 2]


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
        policy: any sim policy (baselines, `pipeline.model.artifacts.AgentPolicy`); it is reset first.
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
