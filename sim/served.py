"""A policy as the pricing service serves it: its greedy action, ε-greedy exploration, and the
guardrails every answer goes through.

The service (`serving.decide`) prices with these functions, and the evaluation runs a policy
through `AsServed`, so what the night's table and the gate judge is what visitors will see:

- **Exploration.** With probability ε the action is drawn uniformly; the rest of the time it is
  the policy's most probable action (`explore`).
- **Guardrails** (`Guardrails.levels`), whatever the policy says: at most ``max_step_levels``
  ladder steps per decision period, inside ``min_price_ratio``..``max_price_ratio`` of the
  reference price, never below unit cost x (1 + ``margin_floor``). A guardrail may land the price
  on a level no single action reaches (a floor several steps up): the market then moves there.
- **The observation** of a trained agent is normalised with its own world's arrays (traffic,
  segment mix) around the market's catalogue (`Lens`), as the service computes it
  (`serving.market.LiveWorld`), whatever world the market really is.
- **Holds.** A price holds for its decision period, which is what one step of the market is. It
  is decided by the period's first visitor, with a draw seeded by the salt, the SKU, the arm and
  the period (`draw_actions`, `unit_point`): a SKU nobody visits keeps its price, and the same
  period always draws the same action.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sim.catalogue import Catalogue, apply_catalogue
from sim.market import Arrivals, Market, StepOutcome, observe
from sim.params import MarketParams
from sim.policies import Policy, one_hot
from sim.world import World


def unit_point(salt: str, key: str) -> float:
    """A fixed point in [0, 1) for ``key``: the first 8 bytes of a salted BLAKE2b."""
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return float(int.from_bytes(digest, "big") / 2.0**64)


def hold_draws(salt: str, skus: list[str], arm: str, period: int) -> np.ndarray:
    """The uniform draw of each SKU's hold for ``arm`` at ``period`` (the service's)."""
    return np.array([unit_point(salt, f"{s}\x1f{arm}\x1f{period}") for s in skus])


def draw_actions(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The action each row's uniform ``u`` picks from its probabilities (inverse CDF)."""
    cdf = probs.cumsum(axis=1)
    return np.asarray(np.minimum((u[:, None] >= cdf).sum(axis=1), probs.shape[1] - 1))


@dataclass(frozen=True)
class Draws:
    """Where the service's draws come from, so that an evaluation draws what it would: its salt,
    the arm, the world's SKU ids, and the decision period of the season's first step."""

    salt: str
    arm: str
    skus: tuple[str, ...]
    period0: int


class Lens:
    """The observation a policy trained in ``world`` is served: the market's state normalised
    with the arrays of its own world around the market's catalogue and season (what
    `serving.market.LiveWorld` computes from a request), not with the market's true arrays."""

    def __init__(self, world: World) -> None:
        self.world = world
        # the market arrays last seen (held, so that their id cannot be another's) and ours
        self._for: tuple[MarketParams, MarketParams | None] | None = None

    def _params(self, market: Market) -> MarketParams | None:
        """Its own arrays for this market (None: they are the market's)."""
        if self._for is None or self._for[0] is not market.p:
            seen = market.p.world
            own = apply_catalogue(self.world, Catalogue.of_world(seen))
            same = own.fingerprint() == seen.fingerprint()
            self._for = (market.p, None if same else own.compile())
        return self._for[1]

    def observe(self, market: Market) -> np.ndarray:
        p = self._params(market)
        if p is None:
            return market.observe()
        return observe(
            p,
            market.sku,
            market.t,
            market.inventory,
            market.p.ratios[market.level],
            market.competitor_ratio,
            market.velocity,
            market.views_ema,
            market.carts_ema,
        )


@dataclass(frozen=True)
class Guardrails:
    """What no answer may break (the service's ``PRICING_SERVE_*`` guardrails)."""

    max_step_levels: int = 2  # ladder steps per decision period
    min_price_ratio: float = 0.0  # of the reference price
    max_price_ratio: float = 10.0
    margin_floor: float = 0.05  # never below unit cost x (1 + margin_floor)

    def levels(
        self, p: MarketParams, k: np.ndarray, level: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(served, raw)``, shape (N, A): the level each action lands on from ``level`` for
        SKUs ``k``, after and before the guardrails."""
        raw = np.clip(level[:, None] + p.moves[None, :], 0, p.L - 1)
        s = self.max_step_levels
        step = np.clip(raw, level[:, None] - s, level[:, None] + s)
        ratios = p.ratios
        lo = int(np.searchsorted(ratios, self.min_price_ratio - 1e-9))
        hi = int(np.searchsorted(ratios, self.max_price_ratio + 1e-9)) - 1
        bounded = np.clip(step, lo, max(lo, hi))
        floor_ratio = p.unit_cost[k] * (1.0 + self.margin_floor) / p.ref_price[k]
        floor = np.minimum(np.searchsorted(ratios, floor_ratio - 1e-12), p.L - 1)
        return np.maximum(bounded, floor[:, None]), raw


def explore(greedy: np.ndarray, epsilon: np.ndarray | float, n_actions: int) -> np.ndarray:
    """Action probabilities (N, A): the ``greedy`` action with probability 1 − ε, plus ε spread
    uniformly over all actions (ε per row or one for all)."""
    eps = np.broadcast_to(np.asarray(epsilon, dtype=float), greedy.shape)
    return np.asarray((1.0 - eps[:, None]) * one_hot(greedy, n_actions) + eps[:, None] / n_actions)


def served_propensity(
    probs: np.ndarray, served: np.ndarray, raw: np.ndarray, action: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the decision log records of the drawn ``action`` (N,): the level served, the action
    logged (one that reaches that level unclipped, else the drawn one), its propensity (the
    summed probability of every action the guardrails turn into the price served) and whether a
    guardrail changed the price."""
    rows = np.arange(len(action))
    chosen = served[rows, action]
    same = served == chosen[:, None]
    propensity = (probs * same).sum(axis=1)
    clipped = chosen != raw[rows, action]
    unclipped = same & (raw == chosen[:, None])
    logged = np.where(unclipped.any(axis=1), unclipped.argmax(axis=1), action)
    return chosen, logged, propensity, clipped


class AsServed(Policy):
    """``base`` as the service serves it: greedy (``greedy=True``: trained agents and the
    planner) or as its own probabilities (the rule-based pricer is one-hot anyway), explored
    with ``epsilon`` (one for all, or one per SKU of the world: the service may explore some
    SKUs only) and held inside ``guardrails``."""

    def __init__(
        self,
        base: Policy,
        guardrails: Guardrails,
        epsilon: float | np.ndarray,
        greedy: bool = True,
        name: str | None = None,
        draws: Draws | None = None,
    ) -> None:
        eps = np.asarray(epsilon, dtype=float)
        if eps.size == 0 or (eps < 0).any() or (eps > 1).any():
            raise ValueError(f"epsilon must be in [0, 1] (got {epsilon})")
        self.base = base
        self.guardrails = guardrails
        self.epsilon = epsilon
        self.greedy = greedy
        self.name = name or f"{base.name} as served"
        self.draws = draws  # None: the evaluation's own random draws

    def reset(self, market: Market, idx: np.ndarray, rng: np.random.Generator) -> None:
        self.base.reset(market, idx, rng)

    def update(self, market: Market, outcome: StepOutcome) -> None:
        self.base.update(market, outcome)

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        base = self.base.probs(market, obs)
        eps = np.asarray(self.epsilon, dtype=float)
        if eps.ndim:
            eps = eps[market.sku]
        if self.greedy:
            return explore(base.argmax(axis=1), eps, base.shape[1])
        eps = np.broadcast_to(eps, (base.shape[0],))[:, None]
        return np.asarray((1.0 - eps) * base + eps / base.shape[1])

    def act(
        self, market: Market, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        probs = self.probs(market, obs)
        if self.draws is None:
            return super().act(market, obs, rng)
        d = self.draws
        u = np.empty(market.n)
        for t in np.unique(market.t):  # one period per step of the season
            rows = np.flatnonzero(market.t == t)
            ids = [d.skus[k] for k in market.sku[rows]]
            u[rows] = hold_draws(d.salt, ids, d.arm, d.period0 + int(t))
        return draw_actions(probs, u), probs

    def levels(
        self, market: Market, actions: np.ndarray, arrivals: Arrivals | None = None
    ) -> np.ndarray:
        """The guardrails' level for each action; a SKU without a visitor this period keeps
        its price (the service decides a hold at the period's first request)."""
        served, _ = self.guardrails.levels(market.p, market.sku, market.level)
        out = np.asarray(served[np.arange(market.n), actions])
        if arrivals is not None:
            out = np.where(arrivals.views.sum(axis=1) > 0, out, market.level)
        return out
