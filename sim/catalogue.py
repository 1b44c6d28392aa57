"""The catalogue: what a retailer knows about each SKU from its own systems, kept as data.

Costs, stock (capacity, starting inventory, restocks), clearance targets and the price ladder
cannot be learned from customer behaviour, so the nightly refit does not estimate them: it reads
them from a catalogue and fits the market (customers, traffic, competitor) around them. The lake
keeps dated catalogue snapshots (`pricing history` and `pricing ingest` write them; a pricing team
may edit them); a night uses the latest snapshot on or before its date.

A catalogue item may carry facts that were estimated rather than known — a point-of-sale export
has no capacity, and sometimes no cost — and names them in ``assumed`` so that they can be
corrected.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim.world import Horizon, Pricing, Sku, World, WorldError, format_validation_error

ASSUMED_COST_RATIO = 0.6  # unit cost assumed as this share of the price when no cost is known
CAPACITY_HORIZONS = 1.2  # capacity assumed as this many horizons of average sales


# a Sku's demand, which the market holds (the refit estimates it), not the catalogue
MARKET_FIELDS = ("arrival_rate", "price_sensitivity_scale", "demand_dispersion")


class CatalogueError(WorldError):
    """A catalogue is unreadable or out of range; the message names the field and the fix."""


class CatalogueItem(BaseModel):
    """One SKU's facts. ``initial_inventory`` defaults to ``capacity``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    ref_price: float = Field(gt=0.0, le=1e6, description="reference price; the ladder's unit")
    unit_cost: float = Field(ge=0.0, le=1e6)
    competitor_ref: float | None = Field(None, gt=0.0, le=1e6, description="default: ref_price")
    capacity: int = Field(ge=1, le=1000, description="shelf capacity in units")
    initial_inventory: int | None = Field(None, ge=0, le=1000, description="default: capacity")
    restock_every: int = Field(0, ge=0, le=10000, description="steps between restocks; 0 = never")
    restock_qty: int = Field(0, ge=0, le=1000)
    clearance_target: float = Field(0.0, ge=0.0, le=1.0, description="share of capacity to sell")
    assumed: tuple[str, ...] = Field((), description="fields estimated, not known: check them")
    category: str | None = Field(
        None, max_length=80, description="its category: thin SKUs borrow demand estimates from it"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CatalogueItem:
        if self.initial_inventory is not None and self.initial_inventory > self.capacity:
            raise ValueError(
                f"initial_inventory {self.initial_inventory} exceeds capacity {self.capacity}"
            )
        if self.restock_every and not self.restock_qty:
            raise ValueError("restock_every is set but restock_qty is 0")
        return self

    def to_sku(self, arrival_rate: float) -> Sku:
        data = self.model_dump(exclude={"assumed", "category"})
        if data["initial_inventory"] is None:
            data["initial_inventory"] = self.capacity
        return Sku(**data, arrival_rate=arrival_rate)


class Catalogue(BaseModel):
    """The SKUs' facts, the price ladder, and the horizon in which restocks (in steps) and
    clearance targets (by the horizon's end) are stated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: Horizon = Horizon()
    pricing: Pricing = Pricing()
    skus: tuple[CatalogueItem, ...] = Field(min_length=1, max_length=1_000_000)

    @model_validator(mode="after")
    def _cross(self) -> Catalogue:
        seen: set[str] = set()
        for i, s in enumerate(self.skus):
            if s.id in seen:
                raise ValueError(f"skus[{i}].id {s.id!r} appears twice; SKU ids must be unique")
            seen.add(s.id)
            top = s.ref_price * self.pricing.price_max
            if s.unit_cost >= top:
                raise ValueError(
                    f"skus[{i}].unit_cost {s.unit_cost} must be below the highest price "
                    f"{top:.2f} (ref_price x pricing.price_max)"
                )
        return self

    @classmethod
    def of_world(cls, world: World) -> Catalogue:
        """The catalogue a world file describes (its traffic is market, not catalogue)."""
        items = [CatalogueItem(**s.model_dump(exclude=set(MARKET_FIELDS))) for s in world.skus]
        return cls(horizon=world.horizon, pricing=world.pricing, skus=tuple(items))

    def ids(self) -> list[str]:
        return [s.id for s in self.skus]

    def merged(self, items: list[CatalogueItem], replace: bool) -> Catalogue:
        """This catalogue with ``items`` added; an item whose id is known replaces the known one
        only if ``replace`` (otherwise what is known — perhaps corrected by hand — stays)."""
        known = {s.id: s for s in self.skus}
        for item in items:
            if replace or item.id not in known:
                known[item.id] = item
        return Catalogue(horizon=self.horizon, pricing=self.pricing, skus=tuple(known.values()))

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_defaults=False), indent=1)


def parse_catalogue(data: Any, source: str = "<catalogue>") -> Catalogue:
    if not isinstance(data, dict):
        raise CatalogueError(f"catalogue {source} must hold a JSON object")
    try:
        return Catalogue.model_validate(data)
    except ValidationError as err:
        raise CatalogueError(
            format_validation_error(err, source).replace("invalid world file", "invalid catalogue")
        ) from None


def apply_catalogue(base: World, catalogue: Catalogue) -> World:
    """``base``'s market (customers, seasonality, competitor, rewards) around the catalogue's
    SKUs, ladder and horizon. A SKU the base world knows keeps its traffic; a new one starts
    from the median traffic of the base world (the refit estimates traffic from the logs)."""
    rates = {s.id: s.arrival_rate for s in base.skus}
    prior = float(np.median(list(rates.values())))
    market = {s.id: s.model_dump(include=set(MARKET_FIELDS) - {"arrival_rate"}) for s in base.skus}
    skus = [
        item.to_sku(rates.get(item.id, prior)).model_copy(update=market.get(item.id, {}))
        for item in catalogue.skus
    ]
    try:
        return World.model_validate(
            {
                **base.model_dump(mode="json"),
                "horizon": catalogue.horizon.model_dump(mode="json"),
                "pricing": catalogue.pricing.model_dump(mode="json"),
                "skus": [s.model_dump(mode="json") for s in skus],
            }
        )
    except ValidationError as err:
        raise CatalogueError(
            format_validation_error(err, "catalogue applied to the world")
        ) from None


def derive_item(
    sku: str,
    prices: np.ndarray,
    costs: np.ndarray,
    units_per_hour: float,
    horizon_hours: float,
    assumed_cost_ratio: float = ASSUMED_COST_RATIO,
) -> CatalogueItem:
    """A catalogue item from sales alone: reference price = median price paid; cost = median
    known unit cost, else ``assumed_cost_ratio`` of the price; capacity = 1.2 horizons of the
    average sales (at least 5), no restocks. What was assumed is listed in ``assumed``."""
    ref = round(float(np.median(prices)), 2)
    known = costs[np.isfinite(costs)]
    assumed = ["capacity"]
    if len(known):
        cost = float(np.median(known))
    else:
        cost = assumed_cost_ratio * ref
        assumed.insert(0, "unit_cost")
    capacity = int(min(1000, max(5, math.ceil(CAPACITY_HORIZONS * units_per_hour * horizon_hours))))
    return CatalogueItem(
        id=sku,
        ref_price=ref,
        unit_cost=round(min(cost, ref * 1.4), 2),
        capacity=capacity,
        assumed=tuple(assumed),
    )


def derive_items(transactions: pd.DataFrame, horizon_hours: float) -> list[CatalogueItem]:
    """`derive_item` for every SKU of a transactions feed (positive quantities and prices)."""
    tx = transactions[["ts", "sku", "quantity", "unit_price"]].copy()
    tx["unit_cost"] = (
        pd.to_numeric(transactions["unit_cost"], errors="coerce")
        if "unit_cost" in transactions
        else np.nan
    )
    tx["quantity"] = pd.to_numeric(tx["quantity"], errors="coerce")
    tx["unit_price"] = pd.to_numeric(tx["unit_price"], errors="coerce")
    tx = tx[(tx["quantity"] > 0) & (tx["unit_price"] > 0)]
    if tx.empty:
        return []
    days = max(1, int(pd.to_datetime(tx["ts"], utc=True).dt.floor("D").nunique()))
    category = (
        transactions.loc[tx.index, "category"].groupby(tx["sku"].astype(str)).agg(_mode)
        if "category" in transactions
        else pd.Series(dtype=object)
    )
    items = []
    for sku, g in tx.groupby(tx["sku"].astype(str), sort=True):
        item = derive_item(
            str(sku),
            g["unit_price"].to_numpy(dtype=float),
            g["unit_cost"].to_numpy(dtype=float),
            float(g["quantity"].sum()) / (24.0 * days),
            horizon_hours,
        )
        if isinstance(category.get(str(sku)), str):
            item = item.model_copy(update={"category": category[str(sku)][:80]})
        items.append(item)
    return items


def _mode(values: pd.Series) -> str | None:
    """The most frequent non-blank value, or None."""
    v = values.dropna().astype(str).str.strip()
    v = v[v != ""]
    return str(v.mode().iloc[0]) if len(v) else None
