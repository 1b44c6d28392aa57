"""Who gets which price: the A/B arm, the policy's action distribution, exploration, guardrails,
and the price held for a SKU, arm and decision period.

- **Arms.** A salted hash of ``customer_id`` maps each customer to a fixed point in [0, 1); the
  customer is in treatment when the point is below the share, so raising the share moves only the
  customers between the old share and the new one, and lowering it moves them back.
- **Policies.** Treatment is priced by the champion (greedy action, plus ε-greedy exploration that
  decays with a half-life and may be limited to some SKUs or categories); control by the rule-based
  pricer with a little exploration of its own, so off-policy evaluation has support in both arms.
  With no champion to serve, treatment gets the rule-based pricer too, named ``fallback``.
- **Holds.** The first request of a decision period decides the price for its SKU and arm; every
  later visitor of the period (on any worker) sees the same price. The draw is seeded by the salt,
  SKU, arm and period, so it is reproducible.
- **Guardrails**, whatever the policy says: at most ``max_step_levels`` ladder steps per period,
  inside the price bounds, never below unit cost x (1 + margin floor). The propensity logged is
  that of the price actually served: the sum of the probabilities of every action the guardrails
  turn into that price.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from serving.arms import Arms, Assignment
from serving.champion import Champion
from serving.config import ServeSettings
from serving.market import LiveWorld
from serving.schemas import Arm, PolicyName, SkuColumns, SkuState
from serving.store import Store
from sim.market import Market, ladder_level
from sim.params import MarketParams
from sim.policies import RulePolicy
from sim.served import draw_actions, explore, hold_draws, served_propensity


@dataclass(frozen=True)
class Batch:
    """SKU states as columns (NaN where the request gave nothing): what the pricer reads."""

    sku: list[str]
    inventory: np.ndarray
    competitor_price: np.ndarray
    current_price: np.ndarray
    views: np.ndarray
    carts: np.ndarray
    sales: np.ndarray

    @classmethod
    def of_rows(cls, items: Sequence[SkuState]) -> Batch:
        def column(name: str) -> np.ndarray:
            return np.array([getattr(i, name) for i in items], dtype=float)  # None: NaN

        return cls(
            [i.sku for i in items],
            np.array([i.inventory for i in items], dtype=np.int64),
            *(column(n) for n in _OPTIONAL),
        )

    @classmethod
    def of_columns(cls, c: SkuColumns) -> Batch:
        n = len(c.sku)

        def column(name: str) -> np.ndarray:
            values = getattr(c, name)
            return np.full(n, np.nan) if values is None else np.array(values, dtype=float)

        return cls(c.sku, np.array(c.inventory, dtype=np.int64), *(column(n) for n in _OPTIONAL))

    def __len__(self) -> int:
        return len(self.sku)

    def take(self, rows: np.ndarray) -> Batch:
        return Batch(
            [self.sku[j] for j in rows],
            self.inventory[rows],
            *(getattr(self, n)[rows] for n in _OPTIONAL),
        )


_OPTIONAL = ("competitor_price", "current_price", "views", "carts", "sales")


class UnknownSku(KeyError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__(skus)
        self.skus = skus


@dataclass(frozen=True)
class Decision:
    sku: str
    level: int
    price: float
    action: int
    propensity: float
    policy: PolicyName
    version: str | None
    explored: bool
    clipped: bool


class Observed(NamedTuple):
    p: MarketParams
    k: np.ndarray  # catalogue index of each SKU
    level: np.ndarray  # ladder level in force before the period
    market: Market
    obs: np.ndarray
    states: list[tuple[Any, ...]]  # the SKUs' averages to store


@dataclass
class Knobs:
    """What the admin API may change at run time."""

    treatment_share: float
    epsilon: float
    control_epsilon: float
    explore_skus: tuple[str, ...]

    @classmethod
    def of(cls, s: ServeSettings) -> Knobs:
        return cls(s.treatment_share, s.epsilon, s.control_epsilon, s.explore_skus)


class Pricer:
    def __init__(
        self, serve: ServeSettings, store: Store, live: LiveWorld, tag: str | None = None
    ) -> None:
        self.serve = serve
        self.tag = tag  # a cluster's lane (serving.lanes): its champion's versions read <n>@<tag>
        self.store = store
        self.live = live
        self.champion: Champion | None = None
        self.knobs = Knobs.of(serve)
        self.started = time.time()
        self._cache: dict[tuple[str, int], dict[str, Decision]] = {}
        self.guardrails = serve.guardrails
        self.arms = Arms(serve.experiment, serve.salt, block_periods=1, washout_periods=0)
        self._blocks()  # a switchback whose washout fills its blocks is refused at start

    def _blocks(self) -> None:
        """The switchback's block and washout in decision periods of the live clock."""
        clock, hours = self.live.clock, self.serve.switchback_hours
        if hours and hours % clock.step_hours:
            raise ValueError(
                f"PRICING_SERVE_SWITCHBACK_HOURS={hours} is not a whole number of the world's "
                f"{clock.step_hours}-hour decision periods; set a multiple of {clock.step_hours}"
            )
        self.arms.block_periods = hours // clock.step_hours if hours else clock.steps
        self.arms.washout_periods = -(-self.serve.washout_hours // clock.step_hours)
        if self.arms.washout_periods >= self.arms.block_periods:
            raise ValueError(
                f"PRICING_SERVE_WASHOUT_HOURS={self.serve.washout_hours} leaves nothing of a "
                f"switchback block of {self.arms.block_periods * clock.step_hours} hours "
                f"({clock.step_hours}-hour periods); set it below the block"
            )

    # -- arms and exploration ------------------------------------------------------------------
    def assign(self, customer_id: str, ts: dt.datetime, skus: list[str]) -> list[Assignment]:
        """Each SKU's arm for this customer now (`serving.arms`: the experiment's design)."""
        clock = self.live.clock
        self._blocks()  # the live world may have been reloaded with another clock
        return self.arms.assign(
            self.knobs.treatment_share,
            customer_id,
            skus,
            clock.period(ts),
            tuple(self.live.index),
            self.live.categories,
        )

    def epsilon_now(self, now: float | None = None) -> float:
        hours = ((now or time.time()) - self.started) / 3600.0
        decayed = self.knobs.epsilon * 0.5 ** (hours / self.serve.epsilon_halflife_hours)
        return float(max(min(self.serve.epsilon_min, self.knobs.epsilon), decayed))

    def _explores(self, sku: str) -> bool:
        allowed = self.knobs.explore_skus
        return not allowed or any(sku == a or sku.startswith(a) for a in allowed)

    def forget_cache(self) -> None:
        self._cache.clear()

    # -- deciding ------------------------------------------------------------------------------
    def price(self, arm: Arm, ts: dt.datetime, batch: Batch) -> tuple[int, list[Decision]]:
        """The decision period of ``ts`` and each SKU's held decision (deciding the missing)."""
        index = self.live.index
        unknown = [s for s in batch.sku if s not in index]
        if unknown:
            raise UnknownSku(unknown)
        period = self.live.clock.period(ts)
        cache = self._cache.setdefault((arm, period), {})
        if len(self._cache) > 8:
            for key in sorted(self._cache, key=lambda k: k[1])[:-4]:
                del self._cache[key]
        missing: dict[str, int] = {}
        for j, sku in enumerate(batch.sku):
            if sku not in cache and sku not in missing:
                missing[sku] = j
        if missing:
            found = self.store.holds(arm, period, list(missing))
            fresh = [j for sku, j in missing.items() if sku not in found]
            if fresh:
                mine = self._decide(arm, period, batch.take(np.array(fresh, dtype=np.int64)))
                if mine is None:  # another worker decided some first: theirs hold
                    found = self.store.holds(arm, period, list(missing))
                else:
                    found.update(mine)
            ratios = self.live.params(self.live.clock.season_and_step(period)[0]).ratios
            for sku, row in found.items():
                cache[sku] = self._decision(sku, row, ratios)
        return period, [cache[s] for s in batch.sku]

    def _decision(self, sku: str, row: tuple[Any, ...], ratios: np.ndarray) -> Decision:
        level, action, propensity, policy, version, explored, clipped = row
        ref = self.live.ref_price[self.live.index[sku]]
        ratio = float(ratios[level])
        return Decision(
            sku,
            level,
            ref * ratio,
            action,
            propensity,
            policy,
            version,
            bool(explored),
            bool(clipped),
        )

    def observation(self, arm: Arm, period: int, batch: Batch) -> Observed:
        """The live state of ``batch`` for ``arm`` at the start of ``period``, and the
        observation the policy acts on (`sim.market.observe`)."""
        live = self.live
        season, t = live.clock.season_and_step(period)
        p = live.params(season)
        k = np.array([live.index[s] for s in batch.sku], dtype=np.int64)
        known = self.store.sku_states(batch.sku)  # the SKUs this service has priced
        level = self._levels(p, arm, period, batch, k, known)
        ema, states = self._averages(p, period, batch, known)
        given = ~np.isnan(batch.competitor_price)
        comp = np.where(
            given, batch.competitor_price / p.ref_price[k], p.comp_ratio[k, p.comp_initial]
        )
        market, obs = live.market(p, k, t, batch.inventory, level, comp, ema)
        return Observed(p, k, level, market, obs, states)

    def _decide(self, arm: Arm, period: int, batch: Batch) -> dict[str, tuple[Any, ...]] | None:
        """Decide ``batch`` and store the holds; they are returned when every one was stored
        (None when another worker had decided some first)."""
        skus = batch.sku
        p, k, level, market, obs, states = self.observation(arm, period, batch)
        probs, greedy, policy, version = self._probs(arm, p, market, obs, skus)
        action = self._draw(arm, period, skus, probs)
        served, raw = self.guardrails.levels(p, k, level)
        chosen, logged, propensity, clipped = served_propensity(probs, served, raw, action)
        explored = action != greedy
        holds = [
            (
                skus[j],
                int(chosen[j]),
                int(logged[j]),
                float(propensity[j]),
                policy,
                version,
                int(explored[j]),
                int(clipped[j]),
            )
            for j in range(len(batch))
        ]
        if self.store.decide(arm, period, holds, states) < len(holds):
            return None
        return {h[0]: h[1:] for h in holds}

    def _levels(
        self,
        p: MarketParams,
        arm: Arm,
        period: int,
        batch: Batch,
        k: np.ndarray,
        known: Mapping[str, Any],
    ) -> np.ndarray:
        """The level in force before this period: the arm's last hold this season, else the
        ladder's starting level (a season starts afresh, as every episode the policy trained
        and was evaluated on). The shelf price a request gives counts only for a SKU this
        service has never priced, after its season's first period (a service started
        mid-season meets the price on the shelf)."""
        season_start = period - self.live.clock.season_and_step(period)[1]
        last = self.store.last_levels(arm, period, batch.sku, since=season_start)
        out = np.full(len(batch), p.initial_level, dtype=np.int64)
        new = np.array([s not in known for s in batch.sku], dtype=bool)
        shelf = ~np.isnan(batch.current_price) & new & (period > season_start)
        if shelf.any():
            out[shelf] = ladder_level(p, batch.current_price[shelf] / p.ref_price[k[shelf]])
        for j, sku in enumerate(batch.sku):
            if sku in last:
                out[j] = last[sku]
        return out

    def _averages(
        self, p: MarketParams, period: int, batch: Batch, known: Mapping[str, Any]
    ) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
        """Sales, views and carts averages at ``period``, as the simulator keeps them (each
        period's counts folded in at rate ``velocity_alpha``): the stored ones, then every
        period since — the counts the service saw itself (`Store.seen`: prices shown, carts and
        sales reported), the last period's as the request gives them when it does. Zero at a
        season's first period and for a SKU not priced yet this season (an episode starts with
        no history, as in training and evaluation)."""
        a = p.velocity_alpha
        season_start = period - self.live.clock.season_and_step(period)[1]
        n = len(batch)
        ema = np.zeros((n, 3))
        if period > season_start:
            stored = np.array([known.get(s, (season_start, 0.0, 0.0, 0.0)) for s in batch.sku])
            stale = stored[:, 0] < season_start  # last priced in an earlier season: from zero
            stored[stale] = (season_start, 0.0, 0.0, 0.0)
            since = stored[:, 0].astype(np.int64)
            folding = since < period
            # ema_P = (1-a)^(P-since) ema_since + a sum_q (1-a)^(P-1-q) counts_q, q < P
            # (a state stored for a later period, from a request dated later: taken as it is)
            ema = stored[:, 1:] * ((1 - a) ** np.maximum(period - since, 0))[:, None]
            row = {s: j for j, s in enumerate(batch.sku)}
            last = np.zeros((n, 3))
            for (s, q), c in self.store.seen(batch.sku, int(since.min()), period - 1).items():
                j = row[s]
                if q < since[j]:
                    continue
                if q == period - 1:
                    last[j] = c
                else:
                    ema[j] += a * (1 - a) ** (period - 1 - q) * np.asarray(c, dtype=float)
            given = np.stack([batch.sales, batch.views, batch.carts], axis=1)
            last = np.where(np.isnan(given), last, given)  # the request's word, where it gives it
            ema += a * last * folding[:, None]
        states = list(zip(batch.sku, [period] * n, *ema.T.tolist(), strict=True))
        return ema, states

    def _probs(
        self, arm: Arm, p: MarketParams, market: Market, obs: np.ndarray, skus: list[str]
    ) -> tuple[np.ndarray, np.ndarray, PolicyName, str | None]:
        """Each SKU's action probabilities as served (`sim.served.explore`) and greedy action:
        treatment the champion's, control (or treatment without a champion) the rule-based
        pricer's, the one the evaluation runs."""
        champion = self.champion
        explore_ok = np.array([self._explores(s) for s in skus])
        if arm == "treatment" and champion is not None:
            greedy = champion.policy.actions(obs, market.sku)
            eps = self.epsilon_now() * explore_ok
            policy: PolicyName = "champion"
            version: str | None = (
                champion.version if self.tag is None else f"{champion.version}@{self.tag}"
            )
        else:
            greedy = RulePolicy(p).probs(market, obs).argmax(axis=1)
            eps = (self.knobs.control_epsilon * explore_ok).astype(float)
            policy, version = ("rule" if arm == "control" else "fallback"), None
        return explore(greedy, eps, p.A), greedy, policy, version

    def _draw(self, arm: Arm, period: int, skus: list[str], probs: np.ndarray) -> np.ndarray:
        return draw_actions(probs, hold_draws(self.serve.salt, skus, arm, period))
