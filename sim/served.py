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
- **Holds.** A price holds for its decision period, which is what one step of the market is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.market import Market, StepOutcome
from sim.params import MarketParams
from sim.policies import Policy, one_hot


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
    with ``epsilon`` and held inside ``guardrails``."""

    def __init__(
        self,
        base: Policy,
        guardrails: Guardrails,
        epsilon: float,
        greedy: bool = True,
        name: str | None = None,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] (got {epsilon})")
        self.base = base
        self.guardrails = guardrails
        self.epsilon = epsilon
        self.greedy = greedy
        self.name = name or f"{base.name} as served"

    def reset(self, market: Market, idx: np.ndarray, rng: np.random.Generator) -> None:
        self.base.reset(market, idx, rng)

    def update(self, market: Market, outcome: StepOutcome) -> None:
        self.base.update(market, outcome)

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        base = self.base.probs(market, obs)
        if self.greedy:
            return explore(base.argmax(axis=1), self.epsilon, base.shape[1])
        return np.asarray((1.0 - self.epsilon) * base + self.epsilon / base.shape[1])

    def levels(self, market: Market, actions: np.ndarray) -> np.ndarray:
        served, _ = self.guardrails.levels(market.p, market.sku, market.level)
        return np.asarray(served[np.arange(market.n), actions])
