"""Baseline pricing policies behind one interface.

Every policy returns, for each of the N episodes of a `Market`, the probability of every action
(shape (N, A)). Acting samples from those probabilities, so the probability of the action taken is
its propensity, which the decision log records for off-policy evaluation. Deterministic policies
return one-hot rows. Policies read the market's true state in natural units (inventory, price level,
competitor state, step), as a pricing service reads its own databases; learned agents read the
normalised observation instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.dp import best_static_level, solve_world
from sim.market import Arrivals, Market, StepOutcome
from sim.params import MarketParams

POLICY_NAMES = ("dp", "rule", "static", "myopic", "bandit", "random")


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    out = np.zeros((actions.shape[0], n_actions))
    out[np.arange(actions.shape[0]), actions] = 1.0
    return out


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``probs`` (inverse-CDF on one uniform per row)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.asarray(np.minimum((u[:, None] > cdf).sum(axis=1), probs.shape[1] - 1))


def move_table(params: MarketParams) -> np.ndarray:
    """``table[level, target]``: the action that moves from ``level`` closest to ``target``, the
    smaller move on ties."""
    L = params.L
    table = np.zeros((L, L), dtype=np.int64)
    for lo in range(L):
        for tg in range(L):
            landed = np.clip(lo + params.moves, 0, L - 1)
            key = np.abs(landed - tg) * 1000 + np.abs(params.moves)
            table[lo, tg] = int(np.argmin(key))
    return table


class Policy:
    """Base class: override `probs`; `reset` and `update` are hooks for stateful policies."""

    name = "policy"

    def reset(self, market: Market, idx: np.ndarray, rng: np.random.Generator) -> None:
        """New episodes start in slots ``idx``."""

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(self, market: Market, outcome: StepOutcome) -> None:
        """Learn from the step just taken (bandits)."""

    def levels(
        self, market: Market, actions: np.ndarray, arrivals: Arrivals | None = None
    ) -> np.ndarray:
        """The ladder level each action moves the price to, given the step's ``arrivals`` when
        they are drawn first (a served policy's guardrails may land elsewhere, and it decides
        only where visitors come: `sim.served.AsServed`)."""
        return np.asarray(np.clip(market.level + market.p.moves[actions], 0, market.p.L - 1))

    def act(
        self, market: Market, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample actions; returns (actions, probabilities of every action)."""
        probs = self.probs(market, obs)
        return sample_actions(probs, rng), probs


class TabularPolicy(Policy):
    """Acts from per-SKU tables indexed [t, inventory, level, competitor]."""

    def __init__(self, name: str, tables: Sequence[np.ndarray], n_actions: int) -> None:
        self.name = name
        inv_max = max(t.shape[1] for t in tables)
        T, _, L, C = tables[0].shape
        stacked = np.zeros((len(tables), T, inv_max, L, C), dtype=np.int8)
        for k, t in enumerate(tables):
            stacked[k, :, : t.shape[1]] = t
        self.table = stacked
        self.n_actions = n_actions

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        a = self.table[market.sku, market.t, market.inventory, market.level, market.comp]
        return one_hot(a.astype(np.int64), self.n_actions)


class StaticPolicy(Policy):
    """The best fixed price per SKU (exact search over the ladder), reached as fast as the moves
    allow and then held."""

    name = "static"

    def __init__(
        self,
        params: MarketParams,
        targets: np.ndarray | None = None,
        skus: Sequence[int] | None = None,
    ) -> None:
        """``skus`` limits the (exact, per-SKU) search to the SKUs that will be evaluated; the
        others keep the initial price."""
        if targets is None:
            targets = np.full(params.K, params.initial_level, dtype=np.int64)
            for k in range(params.K) if skus is None else sorted(set(skus)):
                targets[k] = best_static_level(params, int(k))[0]
        self.targets = np.asarray(targets, dtype=np.int64)
        self.moves = move_table(params)
        self.n_actions = params.A

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        a = self.moves[market.level, self.targets[market.sku]]
        return one_hot(a, self.n_actions)


class RulePolicy(Policy):
    """A hand-written pricer of the kind retailers run: if-else on inventory, competitor and hour.

    In order: never below cost x (1 + margin floor); match a competitor who undercuts by more than
    10 % (down 10 %); scarce stock (under 20 % of capacity): up 5 %; stock well ahead of a linear
    sell-down plan: down 5 %; evening peak (18-21 h) below 110 % of reference: up 5 %; night
    (0-6 h) above reference: down 5 %; otherwise drift towards the competitor's price by 5 %.
    """

    name = "rule"

    def __init__(self, params: MarketParams, margin_floor: float = 0.1) -> None:
        self.p = params
        self.margin_floor = margin_floor
        m = params.moves
        self._down2 = int(np.argmin(m))
        self._up1 = int(np.argmin(np.where(m > 0, m, 10**9)))
        self._down1 = int(np.argmax(np.where(m < 0, m, -(10**9))))
        self._keep = int(np.argmin(np.abs(m)))

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        p = self.p
        k = market.sku
        t = np.minimum(market.t, p.T - 1)
        price_rel = p.ratios[market.level]
        comp_rel = market.competitor_ratio  # as given where known (a live request)
        stock = market.inventory / p.capacity[k]
        plan = 1.0 - market.t / p.T
        hour = p.hour[t]
        a = np.full(market.n, self._keep)
        drift_up = price_rel < comp_rel * 0.95
        drift_down = price_rel > comp_rel * 1.05
        a = np.where(drift_down, self._down1, np.where(drift_up, self._up1, a))
        a = np.where((hour < 6) & (price_rel > 1.0), self._down1, a)
        a = np.where((hour >= 18) & (hour <= 21) & (price_rel < 1.1), self._up1, a)
        a = np.where(stock > plan + 0.2, self._down1, a)
        a = np.where(stock < 0.2, self._up1, a)
        a = np.where((comp_rel < price_rel * 0.9) & (stock >= 0.2), self._down2, a)
        # margin floor: a move that would price below cost x (1 + floor) is not taken
        new_level = np.clip(market.level + p.moves[a], 0, p.L - 1)
        floor = p.unit_cost[k] * (1 + self.margin_floor) / p.ref_price[k]
        a = np.where((p.ratios[new_level] < floor) & (p.moves[a] < 0), self._keep, a)
        return one_hot(a, p.A)


class MyopicPolicy(TabularPolicy):
    """Greedy on the known demand model: the action with the best expected profit this step."""


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, n_actions: int) -> None:
        self.n_actions = n_actions

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        return np.full((market.n, self.n_actions), 1.0 / self.n_actions)


class EpsilonGreedy(Policy):
    """Mixes a policy with uniform exploration: the logging policy of the decision feed."""

    def __init__(self, base: Policy, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] (got {epsilon})")
        self.base = base
        self.epsilon = epsilon
        self.name = f"{base.name}-eps{epsilon:g}"

    def reset(self, market: Market, idx: np.ndarray, rng: np.random.Generator) -> None:
        self.base.reset(market, idx, rng)

    def update(self, market: Market, outcome: StepOutcome) -> None:
        self.base.update(market, outcome)

    def levels(
        self, market: Market, actions: np.ndarray, arrivals: Arrivals | None = None
    ) -> np.ndarray:
        return self.base.levels(market, actions, arrivals)

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        base = self.base.probs(market, obs)
        return np.asarray((1.0 - self.epsilon) * base + self.epsilon / base.shape[1])


class BanditPolicy(Policy):
    """Thompson sampling over price levels, learning within the episode.

    The arms are every other ladder level from 70 % to 140 % of the reference price. Each arm has a
    Gamma posterior on its conversion rate (units sold per visitor). Every ``period`` steps the
    policy draws rates from the posteriors and picks the arm with the best sampled margin x rate;
    in between it moves to that arm and holds it, so it does not pay for a price change every hour.
    It knows its costs but not the demand curve, and ignores inventory: the classic
    learn-the-demand-curve baseline. At a decision step the returned probabilities are those of
    the move, estimated from ``n_samples`` posterior draws.
    """

    name = "bandit"

    def __init__(
        self,
        params: MarketParams,
        prior_rate: float = 0.15,
        prior_strength: float = 10.0,
        period: int = 6,
        n_samples: int = 32,
    ) -> None:
        self.p = params
        self.alpha0 = prior_rate * prior_strength
        self.beta0 = prior_strength
        self.period = period
        self.n_samples = n_samples
        self.moves = move_table(params)
        arms = np.flatnonzero((params.ratios > 0.7 - 1e-9) & (params.ratios < 1.4 + 1e-9))
        self.arms = arms[::2] if len(arms) > 4 else np.arange(params.L)
        self.alpha = np.zeros((0, len(self.arms)))
        self.beta = np.zeros((0, len(self.arms)))
        self.target = np.zeros(0, dtype=np.int64)
        self.rng = np.random.default_rng(0)

    def reset(self, market: Market, idx: np.ndarray, rng: np.random.Generator) -> None:
        if self.alpha.shape[0] != market.n:
            self.alpha = np.full((market.n, len(self.arms)), self.alpha0)
            self.beta = np.full((market.n, len(self.arms)), self.beta0)
            self.target = np.full(market.n, self.p.initial_level, dtype=np.int64)
        self.alpha[idx] = self.alpha0
        self.beta[idx] = self.beta0
        self.target[idx] = market.level[idx]
        self.rng = rng

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        p = self.p
        n = market.n
        hold = one_hot(self.moves[market.level, self.target], p.A)
        decide = np.flatnonzero(market.t % self.period == 0)
        if len(decide) == 0:
            return hold
        k = market.sku[decide]
        m = len(decide)
        draws = self.rng.gamma(
            self.alpha[decide][:, None, :],
            1.0 / self.beta[decide][:, None, :],
            size=(m, self.n_samples, len(self.arms)),
        )
        unit_margin = (
            p.ref_price[k][:, None] * p.ratios[self.arms][None, :] - p.unit_cost[k][:, None]
        )
        best = self.arms[np.argmax(draws * unit_margin[:, None, :], axis=2)]  # (m, samples)
        self.target[decide] = best[:, 0]
        actions = self.moves[market.level[decide][:, None], best]  # (m, samples)
        counts = np.zeros((m, p.A))
        np.add.at(counts, (np.repeat(np.arange(m), self.n_samples), actions.ravel()), 1.0)
        hold[decide] = counts / self.n_samples
        del n
        return hold

    def act(
        self, market: Market, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        probs = self.probs(market, obs)
        # the first posterior draw decided the target: take its move, report the estimated probs
        actions = self.moves[market.level, self.target]
        return actions, probs

    def update(self, market: Market, outcome: StepOutcome) -> None:
        arm_of_level = np.full(self.p.L, -1)
        arm_of_level[self.arms] = np.arange(len(self.arms))
        arm = arm_of_level[outcome.level]
        rows = np.flatnonzero(arm >= 0)
        self.alpha[rows, arm[rows]] += outcome.sold[rows]
        self.beta[rows, arm[rows]] += outcome.views[rows].sum(axis=1)


def make_baselines(
    params: MarketParams, names: Sequence[str], skus: Sequence[int] | None = None
) -> dict[str, Policy]:
    """Build the named baseline policies for a world (solving the DP once if any needs it).

    ``skus``: only these SKUs will be evaluated (the static search is per SKU and costly)."""
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        raise ValueError(
            f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICY_NAMES)} or a model path"
        )
    out: dict[str, Policy] = {}
    solutions = None
    if "dp" in names or "myopic" in names:
        solutions = solve_world(params)
    for name in names:
        if name == "dp":
            assert solutions is not None
            out[name] = TabularPolicy("dp", [s.policy for s in solutions], params.A)
        elif name == "myopic":
            assert solutions is not None
            out[name] = MyopicPolicy("myopic", [s.myopic for s in solutions], params.A)
        elif name == "rule":
            out[name] = RulePolicy(params)
        elif name == "static":
            out[name] = StaticPolicy(params, skus=skus)
        elif name == "bandit":
            out[name] = BanditPolicy(params)
        elif name == "random":
            out[name] = RandomPolicy(params.A)
    return out
