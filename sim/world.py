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
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from sim.params import MarketParams

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


#: price tiers of an expanded catalogue: name, price factor, share
TIERS: tuple[tuple[str, float, float], ...] = (
    ("budget", 0.7, 0.3),
    ("standard", 1.0, 0.5),
    ("premium", 1.6, 0.2),
)
#: stock profiles of an expanded catalogue: name, traffic, shelf and stock, restock interval, share
PROFILES: tuple[tuple[str, float, float, float, float], ...] = (
    ("fast", 2.0, 1.5, 0.5, 0.2),
    ("regular", 1.0, 1.0, 1.0, 0.6),
    ("slow", 0.35, 0.6, 2.0, 0.2),
)


def template_of(templates: World, sku_id: str) -> str | None:
    """The SKU of ``templates`` that ``sku_id`` was expanded from (`World.expand`): itself, or the
    longest template id it extends with ``-``; None for a foreign id."""
    best = None
    for t in templates.skus:
        if (sku_id == t.id or sku_id.startswith(t.id + "-")) and (
            best is None or len(t.id) > len(best)
        ):
            best = t.id
    return best


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
        """A catalogue of ``n_skus`` items drawn from this world's SKUs as templates: the first
        ones as written, then copies named ``<template>-<tier><number>`` (`template_of` finds
        their template, the category they belong to).

        Each copy draws a price tier (`TIERS`: budget, standard, premium: reference price, cost
        and competitor price scaled together, ±10 %) and a stock profile (`PROFILES`: fast
        movers with more traffic, shelf and restocks; slow movers with less of each), and its
        traffic varies by ±15 %, so a large catalogue is not a set of clones.
        """
        if n_skus < 1:
            raise WorldError("n_skus must be >= 1")
        if n_skus <= len(self.skus):
            return self.with_skus(list(self.skus[:n_skus]))
        rng = np.random.default_rng(seed)
        extra = n_skus - len(self.skus)
        template = np.arange(extra) % len(self.skus)
        tier = rng.choice(len(TIERS), size=extra, p=[t[2] for t in TIERS])
        profile = rng.choice(len(PROFILES), size=extra, p=[p[4] for p in PROFILES])
        f_price = rng.uniform(0.9, 1.1, size=extra)
        f_rate = rng.uniform(0.85, 1.15, size=extra)
        skus = list(self.skus)
        for i in range(extra):
            base = self.skus[template[i]]
            t_name, t_price, _ = TIERS[tier[i]]
            _, p_rate, p_stock, p_restock, _ = PROFILES[profile[i]]
            price = t_price * f_price[i]
            capacity = int(min(1000, max(1, round(base.capacity * p_stock))))
            restock_every = (
                max(1, round(base.restock_every * p_restock)) if base.restock_every else 0
            )
            skus.append(
                base.model_copy(
                    update={
                        "id": f"{base.id}-{t_name[0]}{len(skus):06d}",
                        "ref_price": round(base.ref_price * price, 2),
                        "unit_cost": round(base.unit_cost * price, 2),
                        "competitor_ref": None
                        if base.competitor_ref is None
                        else round(base.competitor_ref * price, 2),
                        "arrival_rate": round(
                            min(500.0, base.arrival_rate * p_rate * f_rate[i]), 3
                        ),
                        "capacity": capacity,
                        "initial_inventory": min(capacity, round(base.initial_inventory * p_stock)),
                        "restock_every": restock_every,
                        "restock_qty": min(1000, round(base.restock_qty * p_stock))
                        if restock_every
                        else base.restock_qty,
                    }
                )
            )
        return self.with_skus(skus)

    def compile(self) -> MarketParams:
        from sim.params import MarketParams

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
