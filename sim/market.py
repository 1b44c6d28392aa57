"""The market dynamics, vectorised over N SKU-episodes.

`Market` holds the state of N independent episodes as arrays and steps them all in one call. The
gymnasium env (`PricingEnv`, N = 1), the SB3 vectorised env (`MarketVecEnv`, any N), the log generator
and the evaluation harness all drive this one class, so their dynamics cannot drift apart.

One step, for each episode:

1. the action moves the price on the ladder (clipped at the ends);
2. visitors arrive per segment, Poisson with hour-of-day x day-of-week seasonality;
3. each visitor carts with a logit probability in log(price / reference) and log(price / competitor);
4. a cart is abandoned with a base probability plus a term that grows with the price rise just shown;
5. the remaining carts buy, up to the inventory on hand (the rest is lost to the stock-out);
6. reward = margin_weight x units x (price - cost) - abandon cost x abandons - change cost if the price
   moved, plus the clearance bonus at the end if the inventory left is at most the target;
7. the competitor's state moves along its Markov chain; a scheduled restock arrives.

Randomness comes from two streams. ``exo`` draws what the policy cannot influence (visitors,
competitor moves) with shapes that never depend on the actions, so two policies run on the same seed
face the same visitors and the same flash sales (common random numbers). ``endo`` draws the
price-dependent choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.params import N_FIXED_OBS, MarketParams
from sim.world import World

OBS_NAMES: tuple[str, ...] = (
    "inventory_frac",
    "price_rel",
    "competitor_rel",
    "sales_velocity",
    "views_rate",
    "carts_rate",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "time_left",
    "cost_rel",
    "demand_cover",
    "restock_cover",
    "clearance_gap",
    "clearance_stake",
)
assert len(OBS_NAMES) == N_FIXED_OBS


def obs_bounds(params: MarketParams) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of each observation feature (the values are clipped to them)."""
    low = [0, -1, -1, 0, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0] + [0] * params.S
    high = [1, 4, 4, 5, 10, 5, 1, 1, 1, 1, 1, 5, 8, 20, 1, 10] + [1] * params.S
    return np.array(low, dtype=np.float32), np.array(high, dtype=np.float32)


def observe(
    p: MarketParams,
    sku: np.ndarray,
    t: np.ndarray,
    inventory: np.ndarray,
    price_ratio: np.ndarray,
    competitor_ratio: np.ndarray,
    velocity: np.ndarray,
    views_ema: np.ndarray,
    carts_ema: np.ndarray,
) -> np.ndarray:
    """The observation an agent acts on, shape (N, 16 + S), float32, clipped to `obs_bounds`:
    the one function the simulator and the pricing service both call, so that what an agent is
    served is exactly what it trained on.

    Args:
        p: the world's arrays.
        sku: index of each SKU in the catalogue.
        t: step of the selling season (clipped to the horizon).
        inventory: units on hand.
        price_ratio: current price / the SKU's reference price (a ladder value).
        competitor_ratio: the competitor's price / the SKU's reference price.
        velocity, views_ema, carts_ema: exponential averages of units sold, views and carts per
            step (rate ``p.velocity_alpha``).
    """
    k = sku
    tt = np.minimum(t, p.T - 1)
    cap = p.capacity[k]
    base = p.arrivals[k].mean(axis=1)  # visitors per step on average
    hour = 2 * np.pi * (p.hour[tt] + 0.5) / 24.0
    wday = 2 * np.pi * (p.weekday[tt] + p.hour[tt] / 24.0) / 7.0
    cols = [
        inventory / cap,
        price_ratio - 1.0,
        competitor_ratio - 1.0,
        velocity / base,
        views_ema / base,
        carts_ema / base,
        np.sin(hour),
        np.cos(hour),
        np.sin(wday),
        np.cos(wday),
        1.0 - t / p.T,
        p.unit_cost[k] / p.ref_price[k],
        np.log1p(p.remaining_traffic[k, t] / cap),
        p.future_restock[k, t] / cap,
        np.where(p.clear_max_left[k] >= 0, inventory - p.clear_max_left[k], 0)
        / cap
        * (inventory > p.clear_max_left[k]),
        p.clear_bonus[k] / (p.ref_price[k] * cap),
    ]
    obs = np.concatenate([np.stack(cols, axis=1), p.seg_mix[tt]], axis=1).astype(np.float32)
    low, high = obs_bounds(p)
    return np.clip(obs, low, high)


def ladder_level(p: MarketParams, ratio: np.ndarray) -> np.ndarray:
    """The ladder level nearest each price ratio (price / reference price), clipped to the ladder."""
    pr = p.world.pricing
    level = np.rint((ratio - pr.price_min) / pr.price_step).astype(np.int64)
    return np.asarray(np.clip(level, 0, p.L - 1))


def observed_state(
    p: MarketParams, obs: np.ndarray, sku: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The exact solver's state of each row of an observation (`observe`) of SKUs ``sku``: step,
    units on hand, ladder level and the competitor's nearest modelled state. `observe` is
    invertible in these four (time left, inventory / capacity, price and competitor ratios), so
    a table indexed by the solver's state (`sim.dp`) can price from what the service observes."""
    obs = np.asarray(obs, dtype=np.float64)
    k = np.asarray(sku, dtype=np.int64)
    t = np.clip(np.rint((1.0 - obs[:, 10]) * p.T), 0, p.T - 1).astype(np.int64)
    inventory = np.clip(np.rint(obs[:, 0] * p.capacity[k]), 0, p.capacity[k]).astype(np.int64)
    level = ladder_level(p, obs[:, 1] + 1.0)
    comp = np.abs(p.comp_ratio[k] - (obs[:, 2] + 1.0)[:, None]).argmin(axis=1)
    return t, inventory, level, comp


def demand_shock(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One mean-1 Gamma draw per entry of ``alpha`` (its variance), exactly 1 where alpha is 0."""
    a = np.asarray(alpha, dtype=float)
    safe = np.where(a > 0, a, 1.0)
    return np.where(a > 0, rng.gamma(1.0 / safe, safe), 1.0)


def make_streams(
    seed_source: np.random.Generator,
) -> tuple[np.random.Generator, np.random.Generator]:
    """Derive the exogenous and endogenous streams from one generator (the env's ``np_random``)."""
    a, b = seed_source.integers(0, 2**63 - 1, size=2)
    return np.random.default_rng(int(a)), np.random.default_rng(int(b))


@dataclass
class StepOutcome:
    """What happened in one step, per episode. Counts per segment have shape (N, S)."""

    t: np.ndarray  # step index at which the price was shown
    sku: np.ndarray
    inventory_before: np.ndarray
    level_before: np.ndarray
    level: np.ndarray
    comp_before: np.ndarray
    price: np.ndarray
    competitor_price: np.ndarray
    views: np.ndarray  # (N, S)
    carts: np.ndarray  # (N, S) carts, including the abandoned ones
    abandons: np.ndarray  # (N, S)
    sold: np.ndarray
    margin: np.ndarray
    revenue: np.ndarray
    changed: np.ndarray
    bonus: np.ndarray
    reward: np.ndarray
    done: np.ndarray


class Market:
    """N SKU-episodes of one world, stepped together."""

    def __init__(self, params: MarketParams, n: int) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1 (got {n})")
        self.p = params
        self.n = n
        self.sku = np.zeros(n, dtype=np.int64)
        self.t = np.zeros(n, dtype=np.int64)
        self.inventory = np.zeros(n, dtype=np.int64)
        self.level = np.zeros(n, dtype=np.int64)
        self.comp = np.zeros(n, dtype=np.int64)
        self.velocity = np.zeros(n)
        self.views_ema = np.zeros(n)
        self.carts_ema = np.zeros(n)
        self._seg = np.arange(params.S)
        self.obs_low, self.obs_high = obs_bounds(params)

    def reset(self, idx: np.ndarray, skus: np.ndarray) -> None:
        """Start new episodes in slots ``idx`` for SKUs ``skus``."""
        p = self.p
        self.sku[idx] = skus
        self.t[idx] = 0
        self.inventory[idx] = p.initial_inventory[skus]
        self.level[idx] = p.initial_level
        self.comp[idx] = p.comp_initial
        self.velocity[idx] = 0.0
        self.views_ema[idx] = 0.0
        self.carts_ema[idx] = 0.0

    @property
    def price(self) -> np.ndarray:
        return np.asarray(self.p.ref_price[self.sku] * self.p.ratios[self.level])

    @property
    def competitor_price(self) -> np.ndarray:
        return np.asarray(self.p.ref_price[self.sku] * self.p.comp_ratio[self.sku, self.comp])

    def observe(self) -> np.ndarray:
        """Per-SKU normalised observations, shape (N, 16 + S), float32 (see `observe`)."""
        return observe(
            self.p,
            self.sku,
            self.t,
            self.inventory,
            self.p.ratios[self.level],
            self.p.comp_ratio[self.sku, self.comp],
            self.velocity,
            self.views_ema,
            self.carts_ema,
        )

    def step(
        self, actions: np.ndarray, exo: np.random.Generator, endo: np.random.Generator
    ) -> StepOutcome:
        """Advance every episode one step. Episodes already at the horizon must be reset first."""
        p = self.p
        actions = np.asarray(actions, dtype=np.int64).reshape(self.n)
        if (actions < 0).any() or (actions >= p.A).any():
            raise ValueError(f"actions must be integers in [0, {p.A - 1}] (got {actions})")
        if np.any(self.t >= p.T):
            raise RuntimeError("an episode is past its horizon; reset it before stepping")
        k, t, comp = self.sku, self.t, self.comp
        old = self.level
        new = np.clip(old + p.moves[actions], 0, p.L - 1)
        changed = new != old
        inv = self.inventory
        comp_price = self.competitor_price

        # exogenous: visitors and the competitor's next state (shapes independent of the actions)
        lam = p.arrivals[k, t][:, None] * p.seg_mix[t]
        if p.dispersion.any():  # over-dispersed demand: a Gamma(1/a, a) shock to the step's rate
            lam = lam * demand_shock(p.dispersion[k], exo)[:, None]
        views = exo.poisson(lam)
        u_comp = exo.random(self.n)

        # endogenous: carts, abandons, purchases at the price just set
        q = p.buy_prob[k[:, None], self._seg[None, :], new[:, None], comp[:, None]]
        carts = endo.binomial(views, q)
        abandons = endo.binomial(carts, p.abandon[old, new][:, None])
        abandons *= (inv > 0)[:, None]
        intents = (carts - abandons).sum(axis=1)
        sold = np.minimum(intents, inv)

        price = p.ref_price[k] * p.ratios[new]
        unit_margin = price - p.unit_cost[k]
        margin = sold * unit_margin
        reward = (
            p.margin_weight * margin
            - p.abandon_cost * abandons.sum(axis=1)
            - p.change_cost[k] * changed
        )

        # transition
        inv_after = inv - sold
        t_next = t + 1
        done = t_next >= p.T
        restock = np.where(done, 0, p.restock[k, np.minimum(t_next, p.T - 1)])
        inv_next = np.minimum(p.capacity[k], inv_after + restock)
        bonus = np.where(done & (inv_next <= p.clear_max_left[k]), p.clear_bonus[k], 0.0)
        reward = reward + bonus
        comp_next = (u_comp[:, None] > p.comp_cdf[comp]).sum(axis=1)

        outcome = StepOutcome(
            t=t.copy(),
            sku=k.copy(),
            inventory_before=inv.copy(),
            level_before=old.copy(),
            level=new,
            comp_before=comp.copy(),
            price=price,
            competitor_price=comp_price,
            views=views,
            carts=carts,
            abandons=abandons,
            sold=sold,
            margin=margin,
            revenue=sold * price,
            changed=changed,
            bonus=bonus,
            reward=reward,
            done=done,
        )
        a = p.velocity_alpha
        self.velocity = (1 - a) * self.velocity + a * sold
        self.views_ema = (1 - a) * self.views_ema + a * views.sum(axis=1)
        self.carts_ema = (1 - a) * self.carts_ema + a * carts.sum(axis=1)
        self.level = new
        self.inventory = inv_next
        self.t = t_next
        self.comp = np.minimum(comp_next, p.C - 1)
        return outcome


def observation_columns(world: World) -> list[str]:
    """The observation's column names for a world: the fixed ones, then one per segment."""
    return [*OBS_NAMES, *(f"segment_{s.name}" for s in world.segments)]
