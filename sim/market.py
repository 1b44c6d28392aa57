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


@dataclass(frozen=True)
class Arrivals:
    """The exogenous draws of one step: what no price can change."""

    views: np.ndarray  # (N, S) visitors per segment
    u_comp: np.ndarray  # (N,) uniform draw that moves the competitor's state


@dataclass(frozen=True)
class Response:
    """The visitors' choices in one step, per group of visitors who saw one price. A shelf that
    shows one price has one group; an experiment that shows two prices on one shelf (visitors
    randomised between arms) has one group per price, all selling from the same stock.

    Shapes: N episodes, S segments, G groups.
    """

    old: np.ndarray  # (N, G) ladder level the group saw before this step
    level: np.ndarray  # (N, G) ladder level shown this step
    views: np.ndarray  # (N, S, G)
    carts: np.ndarray  # (N, S, G) carts, including the abandoned ones
    abandons: np.ndarray  # (N, S, G)
    sold: np.ndarray  # (N, G) units sold (stock shared by the groups)
    price: np.ndarray  # (N, G)
    margin: np.ndarray  # (N, G)
    reward: np.ndarray  # (N, G) before the clearance bonus (which belongs to the shelf)

    @property
    def changed(self) -> np.ndarray:
        return np.asarray(self.level != self.old)


def split_sold(intents: np.ndarray, sold: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which carts got the units when stock ran short (uniformly among the carts): ``intents``
    (N, M) carts kept per cell, ``sold`` (N,) units sold; returns the units per cell."""
    out = np.array(intents, copy=True)
    short = np.flatnonzero(intents.sum(axis=1) > sold)
    for i in short:
        out[i] = rng.multivariate_hypergeometric(intents[i], int(sold[i]))
    return out


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
        # the competitor's price / reference where it is known exactly (a live request); None:
        # its modelled state's (``comp``)
        self.comp_ratio_given: np.ndarray | None = None
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
    def competitor_ratio(self) -> np.ndarray:
        """The competitor's price / the SKU's reference price."""
        if self.comp_ratio_given is not None:
            return self.comp_ratio_given
        return np.asarray(self.p.comp_ratio[self.sku, self.comp])

    @property
    def competitor_price(self) -> np.ndarray:
        return np.asarray(self.p.ref_price[self.sku] * self.competitor_ratio)

    def observe(self) -> np.ndarray:
        """Per-SKU normalised observations, shape (N, 16 + S), float32 (see `observe`)."""
        return observe(
            self.p,
            self.sku,
            self.t,
            self.inventory,
            self.p.ratios[self.level],
            self.competitor_ratio,
            self.velocity,
            self.views_ema,
            self.carts_ema,
        )

    def step(
        self,
        actions: np.ndarray,
        exo: np.random.Generator,
        endo: np.random.Generator,
        levels: np.ndarray | None = None,
        arrivals: Arrivals | None = None,
    ) -> StepOutcome:
        """Advance every episode one step. Episodes already at the horizon must be reset first.
        ``levels``: where the price lands when it is not where the actions move it (a served
        policy's guardrails, `sim.served`); ``arrivals``: the step's visitors when they were
        drawn before the policy acted (`arrive`)."""
        p = self.p
        actions = np.asarray(actions, dtype=np.int64).reshape(self.n)
        if (actions < 0).any() or (actions >= p.A).any():
            raise ValueError(f"actions must be integers in [0, {p.A - 1}] (got {actions})")
        old = self.level
        if levels is None:
            new = np.clip(old + p.moves[actions], 0, p.L - 1)
        else:
            new = np.asarray(levels, dtype=np.int64).reshape(self.n)
            if (new < 0).any() or (new >= p.L).any():
                raise ValueError(f"levels must be integers in [0, {p.L - 1}] (got {new})")
        inv, comp, comp_price = self.inventory, self.comp, self.competitor_price
        t = self.t
        if arrivals is None:
            arrivals = self.arrive(exo)
        r = self.respond(arrivals.views[:, :, None], new[:, None], old[:, None], endo)
        bonus, done = self.advance(arrivals, r)
        sold = r.sold[:, 0]
        return StepOutcome(
            t=t.copy(),
            sku=self.sku.copy(),
            inventory_before=inv.copy(),
            level_before=old.copy(),
            level=new,
            comp_before=comp.copy(),
            price=r.price[:, 0],
            competitor_price=comp_price,
            views=arrivals.views,
            carts=r.carts[:, :, 0],
            abandons=r.abandons[:, :, 0],
            sold=sold,
            margin=r.margin[:, 0],
            revenue=sold * r.price[:, 0],
            changed=new != old,
            bonus=bonus,
            reward=r.reward[:, 0] + bonus,
            done=done,
        )

    def arrive(self, exo: np.random.Generator) -> Arrivals:
        """This step's visitors per segment and the competitor's draw: Poisson arrivals with the
        step's seasonality (over-dispersed by a Gamma shock where the world says so). The shapes
        never depend on the actions, so policies on the same seed meet the same visitors."""
        p = self.p
        if np.any(self.t >= p.T):
            raise RuntimeError("an episode is past its horizon; reset it before stepping")
        k, t = self.sku, self.t
        lam = p.arrivals[k, t][:, None] * p.seg_mix[t]
        if p.dispersion.any():  # over-dispersed demand: a Gamma(1/a, a) shock to the step's rate
            lam = lam * demand_shock(p.dispersion[k], exo)[:, None]
        return Arrivals(exo.poisson(lam), exo.random(self.n))

    def respond(
        self, views: np.ndarray, level: np.ndarray, old: np.ndarray, endo: np.random.Generator
    ) -> Response:
        """The visitors' choices: each of ``views`` (N, S, G) carts with the world's probability
        at its group's price ``level`` (N, G), abandons with the probability of the move from
        ``old`` (N, G) (what the group saw before), and the rest buy while the shared stock
        lasts (when it runs short, the units go to carts drawn uniformly)."""
        p = self.p
        k, comp, inv = self.sku, self.comp, self.inventory
        q = p.buy_prob[
            k[:, None, None], self._seg[None, :, None], level[:, None, :], comp[:, None, None]
        ]
        carts = endo.binomial(views, q)
        abandons = endo.binomial(carts, p.abandon[old, level][:, None, :])
        abandons *= (inv > 0)[:, None, None]
        intents = (carts - abandons).sum(axis=1)  # (N, G)
        total = intents.sum(axis=1)
        sold_total = np.minimum(total, inv)
        # one group takes what sold; several share it out by a draw (only then: one group
        # consumes exactly the draws it always did)
        sold = sold_total[:, None] if level.shape[1] == 1 else split_sold(intents, sold_total, endo)
        price = p.ref_price[k][:, None] * p.ratios[level]
        margin = sold * (price - p.unit_cost[k][:, None])
        reward = (
            p.margin_weight * margin
            - p.abandon_cost * abandons.sum(axis=1)
            - p.change_cost[k][:, None] * (level != old)
        )
        return Response(old, level, views, carts, abandons, sold, price, margin, reward)

    def advance(self, arrivals: Arrivals, r: Response) -> tuple[np.ndarray, np.ndarray]:
        """The step ends: stock goes down by what sold, a scheduled restock arrives, the
        clearance bonus is paid at the horizon, the competitor moves, the averages of sales,
        views and carts take the step's counts; the price in force is the first group's.
        Returns (bonus, done) per episode."""
        p = self.p
        k, t = self.sku, self.t
        inv_after = self.inventory - r.sold.sum(axis=1)
        t_next = t + 1
        done = t_next >= p.T
        restock = np.where(done, 0, p.restock[k, np.minimum(t_next, p.T - 1)])
        inv_next = np.minimum(p.capacity[k], inv_after + restock)
        bonus = np.where(done & (inv_next <= p.clear_max_left[k]), p.clear_bonus[k], 0.0)
        comp_next = (arrivals.u_comp[:, None] > p.comp_cdf[self.comp]).sum(axis=1)
        a = p.velocity_alpha
        self.velocity = (1 - a) * self.velocity + a * r.sold.sum(axis=1)
        self.views_ema = (1 - a) * self.views_ema + a * r.views.sum(axis=(1, 2))
        self.carts_ema = (1 - a) * self.carts_ema + a * r.carts.sum(axis=(1, 2))
        self.level = r.level[:, 0].copy()
        self.inventory = inv_next
        self.t = t_next
        self.comp = np.minimum(comp_next, p.C - 1)
        self.comp_ratio_given = None
        return bonus, done


def observation_columns(world: World) -> list[str]:
    """The observation's column names for a world: the fixed ones, then one per segment."""
    return [*OBS_NAMES, *(f"segment_{s.name}" for s in world.segments)]
