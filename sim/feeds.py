"""The two raw feeds' data contracts: the one definition every reader and writer imports.

- **decisions**: what the pricing service logs, one row per price shown, with the logging policy's
  action and its propensity and the visitor's outcome (`sim.history` writes it for synthetic
  logs; validation, features, the refit, off-policy evaluation and the monitor read it);
- **transactions**: a plain point-of-sale export, one row per sale (`pipeline.data.ingest` maps a
  foreign export onto it).

Each column has a kind (``str``, ``int``, ``float``, ``ts``: an aware UTC timestamp, or ``date``)
and says whether a row may leave it empty. Derived tables use the same `Feed` class (the daily
features: `pipeline.data.features.FEATURES`). Changing a column here changes it for every stage; the tests
check that they all read these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

Kind = Literal["str", "int", "float", "ts", "date"]
_DTYPE = {"str": object, "int": "int64", "float": "float64", "ts": object, "date": object}

# The visitor's outcome after seeing a price: only viewed it; carted it but the shelf was empty
# (a sale lost to a stock-out); bought it; carted it and abandoned the cart.
VIEW, CART, PURCHASE, ABANDON = "view", "cart", "purchase", "abandon"
OUTCOMES = (VIEW, CART, PURCHASE, ABANDON)
CARTED = (CART, PURCHASE, ABANDON)  # the visitor put the item in the cart
WOULD_BUY = (CART, PURCHASE)  # carted and kept it


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = True  # rows may not leave it empty
    doc: str = ""
    # added to the contract after partitions were written: one written before reads it as `fill`
    late: bool = False
    fill: str | int | float | None = None


@dataclass(frozen=True)
class Feed:
    """A feed's name and columns, in the order the lake stores them."""

    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def of_kind(self, kind: Kind) -> list[str]:
        return [c.name for c in self.columns if c.kind == kind]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def subset(self, *names: str) -> tuple[str, ...]:
        """The columns a stage reads, checked against the contract when the stage is imported."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {unknown}; its columns: {self.names}")
        return names

    @property
    def late(self) -> tuple[str, ...]:
        """Columns added after partitions were written (`conform` fills them)."""
        return tuple(c.name for c in self.columns if c.late)

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A partition written before the `late` columns existed, with them (each its `fill`),
        in the contract's order; any other frame unchanged (its schema drift stays visible)."""
        missing = [c for c in self.columns if c.late and c.name not in frame.columns]
        if not missing or set(self.names) - {c.name for c in missing} - set(frame.columns):
            return frame
        out = frame.copy(deep=False)
        for c in missing:
            out[c.name] = pd.Series([c.fill] * len(out), index=out.index, dtype=_DTYPE[c.kind])
        return out[[*self.names, *(c for c in frame.columns if c not in self.names)]]

    def without(self, *names: str) -> tuple[str, ...]:
        """Every column but ``names`` (checked against the contract), in the feed's order."""
        self.subset(*names)
        return tuple(n for n in self.names if n not in names)


DECISIONS = Feed(
    "decisions",
    (
        Column("event_id", "str", doc="unique id of the price shown"),
        Column("ts", "ts", doc="when the price was shown"),
        Column("sku", "str"),
        Column("segment", "str", required=False, doc="the visitor's segment, if known"),
        Column("customer_id", "str", required=False),
        Column("base_price", "float", doc="the SKU's reference price"),
        Column("price_shown", "float"),
        Column("competitor_price", "float"),
        Column("inventory", "int", doc="units in stock when the price was shown"),
        Column("action", "int", doc="index of the price move the logging policy chose"),
        Column("propensity", "float", doc="probability the logging policy gave that action"),
        Column("policy_id", "str", doc="the logging policy"),
        Column("ab_arm", "str", required=False, doc="A/B arm"),
        Column("outcome", "str", doc="one of OUTCOMES"),
        Column("quantity", "int", doc="units bought (0 unless a purchase)"),
        Column("unit_cost", "float"),
        Column(
            "experiment",
            "str",
            required=False,
            doc="the A/B design the arm came from: visitor, sku or switchback",
            late=True,
        ),
        Column(
            "unit",
            "str",
            required=False,
            doc="what the design randomised to the arm: the customer, sku:<id> or block:<n>",
            late=True,
        ),
        Column(
            "washout",
            "int",
            required=False,
            doc="1 in a switchback's washout period (left out of its analysis), else 0",
            late=True,
            fill=0,
        ),
    ),
)

TRANSACTIONS = Feed(
    "transactions",
    (
        Column("transaction_id", "str"),
        Column("ts", "ts"),
        Column("sku", "str"),
        Column("quantity", "int"),
        Column("unit_price", "float"),
        Column("unit_cost", "float", required=False, doc="NaN where unknown"),
        Column("customer_id", "str", required=False),
    ),
)

FEEDS = {feed.name: feed for feed in (DECISIONS, TRANSACTIONS)}
DECISION_COLUMNS = DECISIONS.names
TRANSACTION_COLUMNS = TRANSACTIONS.names
