"""What the service accepts and answers. Pydantic rejects bad input with 422 and one message per
field (NaN and infinities, negative stock, absurd prices, wrong types, missing fields)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sim.feeds import OUTCOMES

Arm = Literal["control", "treatment"]
PolicyName = Literal["champion", "rule", "fallback"]
Outcome = Literal["view", "cart", "purchase", "abandon"]
assert set(OUTCOMES) == {"view", "cart", "purchase", "abandon"}

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
MAX_PRICE = 1e6


class SkuState(BaseModel):
    """What the pricing platform knows of one SKU now."""

    model_config = _STRICT

    sku: str = Field(min_length=1, max_length=64, examples=["backpack-00001"])
    inventory: int = Field(ge=0, le=1_000_000, description="units in stock now")
    competitor_price: float | None = Field(
        None, gt=0.0, le=MAX_PRICE, description="default: the catalogue's competitor reference"
    )
    current_price: float | None = Field(
        None,
        gt=0.0,
        le=MAX_PRICE,
        description=(
            "the price on the shelf before this decision; read only for a SKU the service has "
            "not priced yet, after its season's first period (a season starts at the reference "
            "price, as the policy was trained)"
        ),
    )
    views: int | None = Field(
        None, ge=0, le=10_000_000, description="visitors in the last decision period"
    )
    carts: int | None = Field(None, ge=0, le=10_000_000, description="carts in the last period")
    sales: int | None = Field(
        None, ge=0, le=10_000_000, description="units sold in the last period"
    )


class PriceRequest(SkuState):
    """One visitor looking at one SKU."""

    customer_id: str = Field(min_length=1, max_length=128)
    ts: AwareDatetime | None = Field(None, description="default: now (UTC)")
    segment: str | None = Field(None, max_length=64)


MAX_BATCH = 20_000
Sku = Annotated[str, Field(min_length=1, max_length=64)]
Stock = Annotated[int, Field(ge=0, le=1_000_000)]
Money = Annotated[float, Field(gt=0.0, le=MAX_PRICE)]
Count = Annotated[int, Field(ge=0, le=10_000_000)]


class SkuColumns(BaseModel):
    """Many SKUs' states as columns, one value per SKU in each (``null`` where unknown); the
    fields mean what `SkuState`'s do. A catalogue re-price reads and answers faster this way."""

    model_config = _STRICT

    sku: list[Sku] = Field(min_length=1, max_length=MAX_BATCH)
    inventory: list[Stock]
    competitor_price: list[Money | None] | None = None
    current_price: list[Money | None] | None = None
    views: list[Count | None] | None = None
    carts: list[Count | None] | None = None
    sales: list[Count | None] | None = None

    @model_validator(mode="after")
    def _one_per_sku(self) -> SkuColumns:
        n = len(self.sku)
        for name in type(self).model_fields:
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(
                    f"columns.{name} has {len(values)} values and columns.sku {n}: give one per "
                    "SKU (null where unknown)"
                )
        return self


class PricesRequest(BaseModel):
    """One visitor, many SKUs (a category page, or a catalogue re-price): as ``items`` (one
    object per SKU; the answer lists ``prices`` likewise) or as ``columns`` (the answer too)."""

    model_config = _STRICT

    customer_id: str = Field(min_length=1, max_length=128)
    ts: AwareDatetime | None = None
    segment: str | None = Field(None, max_length=64)
    items: list[SkuState] | None = Field(None, min_length=1, max_length=MAX_BATCH)
    columns: SkuColumns | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PricesRequest:
        if (self.items is None) == (self.columns is None):
            raise ValueError("give the SKUs either as items (a list of objects) or as columns")
        return self

    def columns_(self) -> SkuColumns:
        assert self.columns is not None  # a request without items has columns
        return self.columns


class PriceAnswer(BaseModel):
    sku: str
    price: float
    action: int
    propensity: float = Field(description="probability of the price served, guardrails included")
    arm: Arm
    unit: str = Field(
        description="what the experiment randomised to the arm: the customer id, sku:<id> or "
        "block:<n> (PRICING_SERVE_EXPERIMENT)"
    )
    washout: bool = Field(description="a switchback's washout period: left out of its analysis")
    policy: PolicyName
    model_version: str | None
    explored: bool
    clipped: bool
    event_id: str
    valid_until: dt.datetime


class PriceColumns(BaseModel):
    """`PriceAnswer`'s fields as columns, in the request's order."""

    sku: list[str]
    price: list[float]
    action: list[int]
    propensity: list[float]
    explored: list[bool]
    clipped: list[bool]
    event_id: list[str]
    policy: list[PolicyName] | None = Field(
        None, description="per SKU, when the batch's SKUs were priced by different lanes"
    )
    model_version: list[str | None] | None = Field(
        None, description="per SKU, when the batch's SKUs were priced by different lanes"
    )
    arm: list[Arm] | None = Field(None, description="per SKU, when they are in different arms")
    washout: list[bool] | None = Field(None, description="per SKU, when one is in a washout")


class PricesAnswer(BaseModel):
    """``arm``, ``policy`` and ``model_version`` are the first SKU's; with clusters (each SKU
    priced by its cluster's champion) or the ``sku`` design (each SKU in its own arm) every item
    says its own, and columns carry them when they differ."""

    arm: Arm
    policy: PolicyName
    model_version: str | None
    valid_until: dt.datetime
    prices: list[PriceAnswer] | None = Field(None, description="when asked with items")
    columns: PriceColumns | None = Field(None, description="when asked with columns")


class OutcomeReport(BaseModel):
    model_config = _STRICT

    event_id: str = Field(min_length=1, max_length=128)
    outcome: Outcome
    quantity: int = Field(0, ge=0, le=10_000, description="units bought (purchases)")


class AbSettings(BaseModel):
    model_config = _STRICT

    treatment_share: float = Field(ge=0.0, le=1.0)


class ExplorationSettings(BaseModel):
    model_config = _STRICT

    epsilon: float | None = Field(None, ge=0.0, le=1.0)
    control_epsilon: float | None = Field(None, ge=0.0, le=1.0)
    explore_skus: list[str] | None = Field(None, max_length=10_000)
