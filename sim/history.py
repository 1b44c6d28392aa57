"""Synthetic history: what a retailer's logs would hold after running a pricing policy.

Two feeds, one day at a time (see DESIGN.md, "Data contracts"):

- *decisions*: one row per price shown to a visitor, with the logging policy's action and its
  propensity (the probability the policy gave that action), and the visitor's outcome;
- *transactions*: one row per purchase, as a point-of-sale export would have it.

The logging policy is the rule-based pricer with ε-uniform exploration, so the decision log carries
the support that off-policy evaluation needs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.feeds import DECISION_COLUMNS, OUTCOMES, PURCHASE
from sim.market import Market, StepOutcome, make_streams, split_sold
from sim.policies import EpsilonGreedy, Policy, RulePolicy
from sim.world import World


@dataclass(frozen=True)
class DayLogs:
    date: dt.date
    decisions: pd.DataFrame
    transactions: pd.DataFrame


@dataclass(frozen=True)
class Clock:
    """Decision periods of ``step_hours`` counted from ``anchor``; a selling season is ``steps`` of
    them, and seasons repeat. The pricing service and a replay keep time with it."""

    anchor: dt.datetime
    step_hours: int
    steps: int

    @classmethod
    def of(cls, world: World, anchor: dt.datetime) -> Clock:
        return cls(anchor, world.horizon.step_hours, world.horizon.steps)

    def period(self, ts: dt.datetime) -> int:
        seconds = (ts - self.anchor).total_seconds()
        return int(seconds // (self.step_hours * 3600))

    def season_and_step(self, period: int) -> tuple[int, int]:
        return period // self.steps, period % self.steps

    def period_start(self, period: int) -> dt.datetime:
        return self.anchor + dt.timedelta(hours=period * self.step_hours)

    def season_start(self, season: int) -> dt.datetime:
        return self.period_start(season * self.steps)


def episode_world(world: World, start: dt.datetime) -> World:
    """``world`` with a selling season starting at ``start`` (its weekday and hour): what the
    seasons of the logs, the pricing service and a replay are compiled from."""
    horizon = world.horizon.model_copy(
        update={"start_weekday": start.weekday(), "start_hour": start.hour}
    )
    return world.model_copy(update={"horizon": horizon})


def _rows(
    out: StepOutcome,
    actions: np.ndarray,
    propensity: np.ndarray,
    start: dt.datetime,
    step_hours: int,
    world: World,
    policy_id: str,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Expand one step's per-segment counts into one row per visitor."""
    intents = out.carts - out.abandons
    bought = split_sold(intents, out.sold, rng)
    stocked_out = intents - bought
    viewed_only = out.views - out.carts
    # counts[i, s, o] for outcomes in OUTCOMES order
    counts = np.stack([viewed_only, stocked_out, bought, out.abandons], axis=2)
    _, s, o = counts.shape
    flat = counts.reshape(-1)
    total = int(flat.sum())
    if total == 0:
        return pd.DataFrame(columns=list(DECISION_COLUMNS))
    cell = np.repeat(np.arange(flat.size), flat)
    env = cell // (s * o)
    seg = (cell // o) % s
    outcome = cell % o
    seconds = rng.uniform(0, step_hours * 3600.0, size=total)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    sku_ids = np.array([sk.id for sk in world.skus])
    seg_names = np.array([sg.name for sg in world.segments])
    return pd.DataFrame(
        {
            "ts": ts,
            "sku": sku_ids[out.sku[env]],
            "segment": seg_names[seg],
            "customer_id": rng.integers(0, 2_000_000, size=total),
            "base_price": np.array([sk.ref_price for sk in world.skus])[out.sku[env]],
            "price_shown": np.round(out.price[env], 2),
            "competitor_price": np.round(out.competitor_price[env], 2),
            "inventory": out.inventory_before[env],
            "action": actions[env],
            "propensity": propensity[env],
            "policy_id": policy_id,
            "ab_arm": "control",
            "outcome": np.array(OUTCOMES)[outcome],
            "quantity": (outcome == OUTCOMES.index(PURCHASE)).astype(np.int64),
            "unit_cost": np.array([sk.unit_cost for sk in world.skus])[out.sku[env]],
            "experiment": None,  # the logging policy priced every visitor: no experiment
            "unit": None,
            "washout": np.zeros(total, dtype=np.int64),
        }
    )


def generate_history(
    world: World,
    days: int,
    seed: int,
    start: dt.date,
    policy: Policy | None = None,
    epsilon: float = 0.1,
    id_prefix: str = "",
) -> Iterator[DayLogs]:
    """Yield the decisions and transactions feeds day by day, deterministically for a seed.

    Every SKU of ``world`` sells in parallel; a new selling season (the world's horizon) starts
    whenever the previous one ends, with stock and price back to their initial values.
    ``id_prefix`` goes into every event, transaction and customer id, so that the logs of
    several simulations (blocks of a large catalogue) never share an id.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1 (got {days})")
    step_hours = world.horizon.step_hours
    if 24 % step_hours:
        raise ValueError(f"horizon.step_hours must divide 24 for daily logs (got {step_hours})")
    root = np.random.default_rng(seed)
    exo, endo = make_streams(root)
    log_rng = np.random.default_rng([seed, 2])
    policy_rng = np.random.default_rng([seed, 1])
    begin = dt.datetime.combine(start, dt.time(0))
    steps_per_day = 24 // step_hours
    total_steps = days * steps_per_day
    n = len(world.skus)
    market: Market | None = None
    ep_world = world
    logger: Policy = policy or EpsilonGreedy(RulePolicy(world.compile()), epsilon)
    counter = 0
    day_rows: list[pd.DataFrame] = []
    for g in range(total_steps):
        now = begin + dt.timedelta(hours=g * step_hours)
        if market is None or market.t[0] >= market.p.T:
            ep_world = episode_world(world, now)
            market = Market(ep_world.compile(), n)
            idx = np.arange(n)
            market.reset(idx, idx)
            logger.reset(market, idx, policy_rng)
        obs = market.observe()
        actions, probs = logger.act(market, obs, policy_rng)
        out = market.step(actions, exo, endo)
        logger.update(market, out)
        propensity = probs[np.arange(n), actions]
        rows = _rows(out, actions, propensity, now, step_hours, ep_world, logger.name, log_rng)
        if len(rows):
            day_rows.append(rows)
        if (g + 1) % steps_per_day == 0:
            day = (begin + dt.timedelta(hours=(g + 1 - steps_per_day) * step_hours)).date()
            dec = (
                pd.concat(day_rows, ignore_index=True)
                if day_rows
                else pd.DataFrame(columns=list(DECISION_COLUMNS))
            )
            dec = dec.sort_values(["ts", "sku"], kind="stable").reset_index(drop=True)
            ids = np.arange(counter, counter + len(dec))
            counter += len(dec)
            dec.insert(0, "event_id", [f"ev-{seed}-{id_prefix}{i:012d}" for i in ids])
            dec["customer_id"] = f"c{id_prefix}" + dec["customer_id"].astype("int64").astype(str)
            dec = dec[list(DECISION_COLUMNS)]
            tx = dec[dec["outcome"] == PURCHASE]
            trans = pd.DataFrame(
                {
                    "transaction_id": "tx-" + tx["event_id"].str.removeprefix("ev-"),
                    "ts": tx["ts"],
                    "sku": tx["sku"],
                    "quantity": tx["quantity"],
                    "unit_price": tx["price_shown"],
                    "unit_cost": tx["unit_cost"],
                    "customer_id": tx["customer_id"],
                }
            ).reset_index(drop=True)
            # Yielded from a box, its own references dropped: a suspended generator holds no day.
            box = [DayLogs(date=day, decisions=dec, transactions=trans)]
            del dec, tx, trans, rows
            day_rows = []
            yield box.pop()
