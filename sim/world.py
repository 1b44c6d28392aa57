"""The world file: a catalogue of SKUs and the market around them.

A world is a JSON document validated by the pydantic models below. `load_world` turns a file into a
frozen `World`; `World.compile()` turns it into `MarketParams`, the numpy arrays that the env, the
vectorised market and the DP solver all share, so the three can never disagree about the dynamics.

Prices live on a ladder: every price is ``ref_price * ratio`` with ``ratio`` on the grid
``price_min, price_min + price_step, ..., price_max`` (fractions of the SKU's reference price). The
actions are moves on that ladder in percent of the reference price (default −10 %, −5 %, 0, +5 %, +10 %),
clipped at the ends. The ladder keeps the price a small discrete state, which is what makes the exact
dynamic-programming optimum computable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class WorldError(ValueError):
    """A world file is missing, unreadable or out of range; the message names the field and the fix."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Horizon(_Frozen):
    steps: int = Field(168, ge=2, le=2000, description="decisions per episode")
    step_hours: int = Field(1, ge=1, le=24, description="hours between two decisions")
    start_weekday: int = Field(0, ge=0, le=6, description="weekday of the first step, 0 = Monday")
    start_hour: int = Field(0, ge=0, le=23, description="hour of day of the first step")


class Pricing(_Frozen):
    price_min: float = Field(0.6, gt=0.0, le=1.0, description="lowest price, fraction of reference")
    price_max: float = Field(
        1.5, ge=1.0, le=5.0, description="highest price, fraction of reference"
    )
    price_step: float = Field(
        0.05, gt=0.0, le=0.5, description="ladder step, fraction of reference"
    )
    initial_price: float = Field(1.0, gt=0.0, le=5.0, description="price at reset, fraction of ref")
    actions: tuple[float, ...] = Field(
        (-0.10, -0.05, 0.0, 0.05, 0.10),
        min_length=2,
        max_length=15,
        description="price moves in fractions of the reference price",
    )

    @model_validator(mode="after")
    def _ladder(self) -> Pricing:
        n = (self.price_max - self.price_min) / self.price_step
        if abs(n - round(n)) > 1e-6:
            raise ValueError(
                "pricing.price_step must divide price_max - price_min "
                f"(got {self.price_step} for {self.price_min}..{self.price_max})"
            )
        if round(n) + 1 > 101:
            raise ValueError(f"pricing: the ladder has {round(n) + 1} levels; at most 101 allowed")
        for a in self.actions:
            k = a / self.price_step
            if abs(k - round(k)) > 1e-6:
                raise ValueError(
                    f"pricing.actions: {a} is not a multiple of price_step {self.price_step}"
                )
        if 0.0 not in [round(a / self.price_step) * self.price_step for a in self.actions]:
            raise ValueError("pricing.actions must include 0.0 (keep the price)")
        k0 = (self.initial_price - self.price_min) / self.price_step
        if abs(k0 - round(k0)) > 1e-6 or not self.price_min <= self.initial_price <= self.price_max:
            raise ValueError(
                "pricing.initial_price must lie on the ladder price_min + k * price_step within "
                f"[price_min, price_max] (got {self.initial_price})"
            )
        return self


class Segment(_Frozen):
    name: str = Field(min_length=1, max_length=40)
    share: float = Field(gt=0.0, le=1.0, description="share of visitors")
    intent: float = Field(ge=-10.0, le=10.0, description="purchase logit at reference prices")
    price_sensitivity: float = Field(
        ge=0.0, le=20.0, description="logit slope in log(price / reference)"
    )
    competitor_sensitivity: float = Field(
        ge=0.0, le=20.0, description="logit slope in log(price / competitor price)"
    )
    weekend_multiplier: float = Field(1.0, gt=0.0, le=10.0, description="share factor Sat/Sun")


class Seasonality(_Frozen):
    hour_of_day: tuple[float, ...] = Field(
        (1.0,) * 24, min_length=24, max_length=24, description="relative arrivals by hour"
    )
    day_of_week: tuple[float, ...] = Field(
        (1.0,) * 7, min_length=7, max_length=7, description="relative arrivals by weekday"
    )

    @model_validator(mode="after")
    def _positive(self) -> Seasonality:
        for field in ("hour_of_day", "day_of_week"):
            values = getattr(self, field)
            if min(values) < 0 or max(values) <= 0:
                raise ValueError(f"seasonality.{field}: weights must be >= 0 with one > 0")
        return self


class CompetitorState(_Frozen):
    name: str = Field(min_length=1, max_length=40)
    price_ratio: float = Field(gt=0.1, le=3.0, description="competitor price / its reference")


class Competitor(_Frozen):
    states: tuple[CompetitorState, ...] = Field(min_length=1, max_length=10)
    transition: tuple[tuple[Prob, ...], ...] = Field(description="row-stochastic, one row a state")
    initial_state: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _stochastic(self) -> Competitor:
        n = len(self.states)
        if len(self.transition) != n or any(len(row) != n for row in self.transition):
            raise ValueError(f"competitor.transition must be a {n}x{n} matrix (one row per state)")
        for i, row in enumerate(self.transition):
            if abs(sum(row) - 1.0) > 1e-6:
                raise ValueError(
                    f"competitor.transition[{i}] must sum to 1 (got {sum(row):.6f}); rescale the row"
                )
        if self.initial_state >= n:
            raise ValueError(f"competitor.initial_state must be in 0..{n - 1}")
        return self


class Abandonment(_Frozen):
    base: Prob = Field(0.05, description="probability a cart is abandoned at an unchanged price")
    per_price_increase: float = Field(
        3.0, ge=0.0, le=50.0, description="added abandon probability per unit of log price rise"
    )


class Reward(_Frozen):
    margin_weight: float = Field(1.0, gt=0.0, le=10.0, description="weight on units x margin")
    abandonment_penalty: float = Field(0.5, ge=0.0, le=1000.0, description="cost per abandon")
    price_change_penalty: float = Field(
        0.02, ge=0.0, le=10.0, description="cost per price change, in reference prices"
    )
    clearance_bonus: float = Field(
        0.0, ge=0.0, le=1000.0, description="bonus for meeting clearance, in reference prices"
    )


class Observation(_Frozen):
    velocity_halflife: float = Field(6.0, gt=0.0, le=1000.0, description="steps")


class Sku(_Frozen):
    id: str = Field(min_length=1, max_length=64)
    ref_price: float = Field(gt=0.0, le=1e6)
    unit_cost: float = Field(ge=0.0, le=1e6)
    competitor_ref: float | None = Field(None, gt=0.0, le=1e6, description="default: ref_price")
    arrival_rate: float = Field(gt=0.0, le=500.0, description="visitors per hour on average")
    capacity: int = Field(ge=1, le=1000, description="shelf capacity in units")
    initial_inventory: int = Field(ge=0, le=1000)
    restock_every: int = Field(0, ge=0, le=10000, description="steps between restocks; 0 = never")
    restock_qty: int = Field(0, ge=0, le=1000)
    clearance_target: Prob = Field(
        0.0, description="fraction of capacity that must be sold by the end for the bonus; 0 = none"
    )
    price_sensitivity_scale: float = Field(
        1.0, gt=0.0, le=20.0, description="multiplies every segment's price sensitivity here"
    )
    demand_dispersion: float = Field(
        0.0,
        ge=0.0,
        le=50.0,
        description="over-dispersion of a day's units: variance = mean + this x mean^2; 0 = Poisson",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Sku:
        if self.initial_inventory > self.capacity:
            raise ValueError(
                f"skus[{self.id}].initial_inventory {self.initial_inventory} exceeds capacity "
                f"{self.capacity}"
            )
        if self.restock_every and not self.restock_qty:
            raise ValueError(f"skus[{self.id}]: restock_every is set but restock_qty is 0")
        return self

    @property
    def competitor_reference(self) -> float:
        return self.competitor_ref if self.competitor_ref is not None else self.ref_price


class World(_Frozen):
    """A market: horizon, price ladder, customers, seasonality, competitor, costs and catalogue."""

    name: str = Field("world", min_length=1, max_length=80)
    description: str = ""
    horizon: Horizon = Horizon()
    pricing: Pricing = Pricing()
    segments: tuple[Segment, ...] = Field(min_length=1, max_length=10)
    seasonality: Seasonality = Seasonality()
    competitor: Competitor
    abandonment: Abandonment = Abandonment()
    reward: Reward = Reward()
    observation: Observation = Observation()
    skus: tuple[Sku, ...] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _cross(self) -> World:
        total = sum(s.share for s in self.segments)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"segments[*].share must sum to 1 (got {total:.6f}); rescale the shares"
            )
        ids = [s.id for s in self.skus]
        if len(set(ids)) != len(ids):
            raise ValueError("skus[*].id must be unique")
        for i, s in enumerate(self.skus):
            if s.unit_cost >= s.ref_price * self.pricing.price_max:
                raise ValueError(
                    f"skus[{i}].unit_cost {s.unit_cost} must be below the highest price "
                    f"{s.ref_price * self.pricing.price_max:.2f} (ref_price x pricing.price_max)"
                )
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: a cache key and lineage tag."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_skus(self, skus: list[Sku]) -> World:
        return self.model_copy(update={"skus": tuple(skus)})

    def expand(self, n_skus: int, seed: int) -> World:
        """A catalogue of ``n_skus`` items: the first ones as written, then jittered copies.

        Copies vary reference price, cost and traffic by up to ±15 % so a large synthetic catalogue is
        not a set of clones.
        """
        if n_skus < 1:
            raise WorldError("n_skus must be >= 1")
        if n_skus <= len(self.skus):
            return self.with_skus(list(self.skus[:n_skus]))
        rng = np.random.default_rng(seed)
        skus = list(self.skus)
        i = 0
        while len(skus) < n_skus:
            base = self.skus[i % len(self.skus)]
            f_price, f_rate = rng.uniform(0.85, 1.15, size=2)
            skus.append(
                base.model_copy(
                    update={
                        "id": f"{base.id}-{len(skus):05d}",
                        "ref_price": round(base.ref_price * f_price, 2),
                        "unit_cost": round(base.unit_cost * f_price, 2),
                        "competitor_ref": None
                        if base.competitor_ref is None
                        else round(base.competitor_ref * f_price, 2),
                        "arrival_rate": round(base.arrival_rate * f_rate, 3),
                    }
                )
            )
            i += 1
        return self.with_skus(skus)

    def compile(self) -> MarketParams:
        return MarketParams.from_world(self)


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid world file {source}:"]
    for e in err.errors():
        loc = ""
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {loc or '<root>'}: {msg}{shown}")
    return "\n".join(lines)


def parse_world(data: dict[str, Any], source: str = "<dict>") -> World:
    try:
        return World.model_validate(data)
    except ValidationError as err:
        raise WorldError(format_validation_error(err, source)) from None


def load_world(path: str | Path | None = None) -> World:
    """Load and validate a world file; ``None`` gives the default world."""
    if path is None:
        text = resources.files("sim.worlds").joinpath("default.json").read_text()
        return parse_world(json.loads(text), "default.json")
    p = Path(path)
    if not p.is_file():
        raise WorldError(
            f"world file {p} not found; write one with `pricing world --default > {p}`"
        )
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise WorldError(f"world file {p} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise WorldError(f"world file {p} must hold a JSON object")
    return parse_world(data, str(p))


def default_world() -> World:
    return load_world(None)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


@dataclass(frozen=True)
class MarketParams:
    """Everything the dynamics need, as arrays. Shapes: K SKUs, T steps, S segments, L price levels,
    C competitor states, A actions."""

    world: World
    T: int
    L: int
    A: int
    C: int
    S: int
    K: int
    ratios: np.ndarray  # (L,) price / reference
    moves: np.ndarray  # (A,) ladder steps per action
    initial_level: int
    hour: np.ndarray  # (T,) hour of day at each step
    weekday: np.ndarray  # (T,) weekday at each step
    traffic: np.ndarray  # (T,) seasonal multiplier of arrivals, mean 1 over a week
    seg_mix: np.ndarray  # (T, S) segment shares at each step
    ref_price: np.ndarray  # (K,)
    unit_cost: np.ndarray  # (K,)
    capacity: np.ndarray  # (K,) int
    initial_inventory: np.ndarray  # (K,) int
    arrivals: np.ndarray  # (K, T) expected visitors per step
    buy_prob: np.ndarray  # (K, S, L, C) purchase (cart) probability of one visitor
    cart_rate: np.ndarray  # (K, T, L, C) expected carts per step
    abandon: np.ndarray  # (L, L) abandon probability moving from level i to level j
    comp_ratio: np.ndarray  # (K, C) competitor price / our reference
    comp_P: np.ndarray  # (C, C) transition matrix
    comp_cdf: np.ndarray  # (C, C) row-wise cumulative
    comp_initial: int
    restock: np.ndarray  # (K, T) units arriving at the start of step t (t >= 1)
    clear_max_left: np.ndarray  # (K,) int: the bonus is paid if end inventory <= this; -1 = none
    clear_bonus: np.ndarray  # (K,) currency
    dispersion: np.ndarray  # (K,) per-step over-dispersion of demand (0 = Poisson), see _dispersion
    change_cost: np.ndarray  # (K,) currency per price change
    abandon_cost: float
    margin_weight: float
    velocity_alpha: float
    remaining_traffic: np.ndarray  # (K, T+1) expected visitors from step t to the end
    future_restock: np.ndarray  # (K, T+1) units still to arrive after step t

    @classmethod
    def from_world(cls, w: World) -> MarketParams:
        ladder = _ladder(w.pricing)
        clock = _clock(w)
        demand = _demand(w, ladder["ratios"], clock)
        stock = _stock(w, clock["T"])
        rw = w.reward
        ref = np.array([s.ref_price for s in w.skus])
        arrivals = demand["arrivals"]
        K = len(w.skus)
        remaining_traffic = np.concatenate(
            [np.cumsum(arrivals[:, ::-1], axis=1)[:, ::-1], np.zeros((K, 1))], axis=1
        )
        return cls(
            world=w,
            **ladder,
            **clock,
            **demand,
            **stock,
            S=len(w.segments),
            K=K,
            ref_price=ref,
            unit_cost=np.array([s.unit_cost for s in w.skus]),
            change_cost=rw.price_change_penalty * ref,
            abandon_cost=rw.abandonment_penalty,
            margin_weight=rw.margin_weight,
            velocity_alpha=float(1.0 - 0.5 ** (1.0 / w.observation.velocity_halflife)),
            remaining_traffic=remaining_traffic,
        )

    @property
    def obs_dim(self) -> int:
        return N_FIXED_OBS + self.S


N_FIXED_OBS = 16


def _ladder(pr: Pricing) -> dict[str, Any]:
    """The price ladder: its ratios to the reference price, each action's move in steps."""
    L = round((pr.price_max - pr.price_min) / pr.price_step) + 1
    return {
        "L": L,
        "ratios": pr.price_min + pr.price_step * np.arange(L),
        "moves": np.array([round(a / pr.price_step) for a in pr.actions], dtype=np.int64),
        "A": len(pr.actions),
        "initial_level": round((pr.initial_price - pr.price_min) / pr.price_step),
    }


def _clock(w: World) -> dict[str, Any]:
    """Hour and weekday of each step, and the seasonal multiplier of arrivals (mean 1 a week)."""
    T = w.horizon.steps
    hours_from_start = w.horizon.start_hour + w.horizon.step_hours * np.arange(T)
    hour = hours_from_start % 24
    weekday = (w.horizon.start_weekday + hours_from_start // 24) % 7
    hod = np.asarray(w.seasonality.hour_of_day, dtype=float)
    dow = np.asarray(w.seasonality.day_of_week, dtype=float)
    traffic = (hod / hod.mean())[hour] * (dow / dow.mean())[weekday]
    return {"T": T, "hour": hour, "weekday": weekday, "traffic": traffic}


def _demand(w: World, ratios: np.ndarray, clock: dict[str, Any]) -> dict[str, Any]:
    """Segment mix, purchase probabilities, arrivals, abandonment and the competitor's chain."""
    seg = w.segments
    share = np.array([s.share for s in seg])
    wk = np.array([s.weekend_multiplier for s in seg])
    weekend = (clock["weekday"] >= 5)[:, None]
    mix = np.where(weekend, share * wk, share)
    seg_mix = mix / mix.sum(axis=1, keepdims=True)

    skus = w.skus
    ref = np.array([s.ref_price for s in skus])
    comp_ref = np.array([s.competitor_reference for s in skus])
    comp_states = np.array([c.price_ratio for c in w.competitor.states])
    comp_ratio = comp_ref[:, None] * comp_states[None, :] / ref[:, None]  # (K, C)

    intent = np.array([s.intent for s in seg])
    scale = np.array([s.price_sensitivity_scale for s in skus])
    beta = scale[:, None] * np.array([s.price_sensitivity for s in seg])[None, :]  # (K, S)
    gamma = np.array([s.competitor_sensitivity for s in seg])
    log_p = np.log(ratios)  # (L,)
    log_gap = log_p[None, :, None] - np.log(comp_ratio)[:, None, :]  # (K, L, C)
    logit = (
        intent[None, :, None, None]
        - beta[:, :, None, None] * log_p[None, None, :, None]
        - gamma[None, :, None, None] * log_gap[:, None, :, :]
    )
    buy_prob = _sigmoid(logit)  # (K, S, L, C)

    rate = np.array([s.arrival_rate for s in skus]) * w.horizon.step_hours
    arrivals = rate[:, None] * clock["traffic"][None, :]  # (K, T)
    cart_rate = np.einsum("kt,ts,kslc->ktlc", arrivals, seg_mix, buy_prob)

    ab = w.abandonment
    rise = np.maximum(0.0, log_p[None, :] - log_p[:, None])  # (from, to)
    abandon = np.clip(ab.base + ab.per_price_increase * rise, 0.0, 1.0)

    P = np.array(w.competitor.transition, dtype=float)
    P = P / P.sum(axis=1, keepdims=True)
    comp_cdf = np.cumsum(P, axis=1)
    comp_cdf[:, -1] = 1.0
    return {
        "C": len(comp_states),
        "dispersion": _dispersion(w, clock),
        "seg_mix": seg_mix,
        "arrivals": arrivals,
        "buy_prob": buy_prob,
        "cart_rate": cart_rate,
        "abandon": abandon,
        "comp_ratio": comp_ratio,
        "comp_P": P,
        "comp_cdf": comp_cdf,
        "comp_initial": w.competitor.initial_state,
    }


def _dispersion(w: World, clock: dict[str, Any]) -> np.ndarray:
    """Per-step over-dispersion that gives a day's units the variance ``demand_dispersion`` asks for.

    Each step's visitors are Poisson with a rate scaled by an independent Gamma(1/a, a) draw (mean
    1), so a step's units are negative binomial with variance m + a m^2. Over a day of steps with
    means m_h, the variance is M + a sum(m_h^2) for M = sum(m_h): a = alpha M^2 / sum(m_h^2) gives
    the day's units the variance M + alpha M^2 of a daily negative binomial. Independent steps keep
    the state Markov, so the exact solver stays exact (`sim.dp`).
    """
    alpha = np.array([s.demand_dispersion for s in w.skus])
    if not alpha.any():
        return np.zeros(len(w.skus))
    per_day = max(1, 24 // w.horizon.step_hours)
    hod = np.asarray(w.seasonality.hour_of_day, dtype=float)
    hours = (w.horizon.start_hour + w.horizon.step_hours * np.arange(per_day)) % 24
    m = hod[hours]
    return np.asarray(alpha * m.sum() ** 2 / (m**2).sum())


def _stock(w: World, T: int) -> dict[str, Any]:
    """Capacity, initial stock, scheduled restocks and the clearance targets."""
    skus = w.skus
    K = len(skus)
    restock = np.zeros((K, T), dtype=np.int64)
    for k, s in enumerate(skus):
        if s.restock_every:
            restock[k, s.restock_every :: s.restock_every] = s.restock_qty
    capacity = np.array([s.capacity for s in skus], dtype=np.int64)
    target = np.array([s.clearance_target for s in skus])
    clear_max_left = np.where(target > 0, np.floor((1.0 - target) * capacity + 1e-9), -1).astype(
        np.int64
    )
    future = np.concatenate([np.cumsum(restock[:, ::-1], axis=1)[:, ::-1], np.zeros((K, 1))], 1)
    ref = np.array([s.ref_price for s in skus])
    return {
        "clear_bonus": np.where(target > 0, w.reward.clearance_bonus * ref, 0.0),
        "capacity": capacity,
        "initial_inventory": np.array([s.initial_inventory for s in skus], dtype=np.int64),
        "restock": restock,
        "clear_max_left": clear_max_left,
        # future_restock[t] = units arriving at steps > t
        "future_restock": np.concatenate([future[:, 1:], np.zeros((K, 1))], axis=1),
    }
