"""The validation gate's suites: one Great Expectations suite per feed, built from its contract.

What the suites catch (the usual ways real logs go wrong):

- schema drift: a contract column dropped or renamed, an unexpected column, a changed dtype;
- nulls in required columns; an empty partition (zero rows);
- prices that are negative, zero or absurd (more than 20x the base price, or for POS data more
  than 20x off the SKU's median price that day, the usual cents-for-dollars slip); negative costs;
- duplicated event ids or transaction ids (a replayed export);
- timestamps outside the partition's UTC day or later than ``now`` (clock skew, wrong partition);
- propensities outside (0, 1] (off-policy estimates divide by them), unknown outcomes, actions
  outside the action set, negative quantities, a quantity on a row that is not a purchase, and a
  purchase of more units than were in stock.

Two checks need a value computed from two columns, which GX's pandas expectations cannot express
with a factor; the frame handed to GX therefore carries one derived column (``price_to_base`` for
decisions, ``price_to_sku_median`` for transactions, `frame_for_gx`) and the schema check expects
it. Columns, dtypes and required columns come from the feeds' contracts (`sim.feeds`,
`pipeline.data.features.FEATURES`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts import MAX_PRICE_FACTOR
from pipeline.data.features import FEATURES
from pipeline.data.gx import Column, gx, gxe
from sim.feeds import DECISIONS, OUTCOMES, PURCHASE, TRANSACTIONS, Feed
from sim.world import default_world

FEEDS: tuple[str, ...] = ("decisions", "transactions", "features")

ZONE = {"decisions": "raw", "transactions": "raw", "features": "features"}
_DERIVED = {"decisions": "price_to_base", "transactions": "price_to_sku_median", "features": None}
# Several partitions validated in one run carry each row's place in its own partition's day.
WINDOW_COLUMN = "seconds_into_partition_day"
CONTRACTS: dict[str, Feed] = {
    "decisions": DECISIONS,
    "transactions": TRANSACTIONS,
    "features": FEATURES,
}
# Numeric dtype families: the width of an integer is a storage detail, a string price is drift.
_INT_TYPES = ["int64", "int32", "int16", "int8", "Int64", "Int32"]
_FLOAT_TYPES = ["float64", "float32", "Float64", *_INT_TYPES]
_TS_TYPE = "datetime64[ns, UTC]"


def utc_datetime(value: dt.datetime) -> dt.datetime:
    """``now`` as aware UTC; a naive value is taken to be UTC (the lake's clock)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _schema(feed: str, window: bool = False) -> list[Any]:
    columns = list(CONTRACTS[feed].names)
    derived = [d for d in (_DERIVED[feed], WINDOW_COLUMN if window else None) if d]
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, notes="zero rows: the export failed or the file was truncated"
        ),
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*columns, *derived],
            exact_match=True,
            notes="the feed's columns must match the data contract (schema drift)",
        ),
    ]


def _types(contract: Feed) -> list[Any]:
    """Each column's dtype family, from the feed's contract (timestamps are checked apart)."""
    why = "dtype differs from the data contract"
    families = {"str": ["str"], "int": _INT_TYPES, "float": _FLOAT_TYPES}
    return [
        gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=families[kind], notes=why)
        for kind in ("str", "int", "float")
        for c in contract.of_kind(kind)
    ]


def _not_null(columns: Sequence[str]) -> list[Any]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=c, notes="required column has nulls")
        for c in columns
    ]


def _timestamps(date: dt.date | None, now: dt.datetime) -> list[Any]:
    """Timestamps tz-aware, inside the partition's UTC day (``date``; None: several partitions,
    each row's own day through `WINDOW_COLUMN`), and not in the future."""
    if date is None:
        inside = gxe.ExpectColumnValuesToBeBetween(
            column=WINDOW_COLUMN,
            min_value=0,
            max_value=86_400,
            strict_max=True,
            notes="timestamp outside its partition's UTC day",
        )
    else:
        start = dt.datetime.combine(date, dt.time(0), tzinfo=dt.UTC)
        inside = gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            min_value=start,
            max_value=start + dt.timedelta(days=1),
            strict_max=True,
            notes=f"timestamp outside the partition's UTC day {date.isoformat()}",
        )
    return [
        gxe.ExpectColumnTypeToBe(
            column="ts", type_=_TS_TYPE, notes="timestamps must be tz-aware UTC"
        ),
        inside,
        gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            max_value=now,
            notes=f"timestamp in the future (after {now.isoformat()})",
        ),
    ]


def _positive(column: str, why: str, upper: float | None = None) -> Any:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=0,
        strict_min=True,
        max_value=upper,
        strict_max=upper is not None,
        notes=why,
    )


def _at_least(column: str, low: float, why: str, high: float | None = None) -> Any:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=low, max_value=high, notes=why
    )


def build_suite(
    feed: str, date: dt.date | None, now: dt.datetime, n_actions: int | None = None
) -> Any:
    """The GX ExpectationSuite for one feed and partition date: the contract's schema, dtypes and
    required columns, then the feed's own rules.

    Args:
        feed: "decisions", "transactions" or "features".
        date: the partition's UTC day; timestamps must fall inside it. None: a window of raw
            partitions validated at once (see `frame_for_gx`), each row in its own day.
        now: no timestamp may be later than this (naive means UTC).
        n_actions: size of the pricing action set (decisions only); default: the bundled world's.

    Returns:
        An unsaved ``great_expectations.ExpectationSuite`` named after the feed.
    """
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS} (got {feed!r})")
    now = utc_datetime(now)
    contract = CONTRACTS[feed]
    if date is None and feed == "features":
        raise ValueError("the features are validated one day at a time; pass the date")
    exps = [*_schema(feed, window=date is None), *_types(contract), *_not_null(contract.required)]
    if feed == "decisions":
        n = n_actions if n_actions is not None else _default_n_actions()
        exps += _decision_rules(date, now, n)
    elif feed == "transactions":
        exps += _transaction_rules(date, now)
    else:
        assert date is not None
        exps += _feature_rules(date)
    return gx.ExpectationSuite(name=feed, expectations=exps)


def _decision_rules(date: dt.date | None, now: dt.datetime, n: int) -> list[Any]:
    return [
        *_timestamps(date, now),
        gxe.ExpectColumnValuesToBeUnique(
            column="event_id", notes="duplicated event ids (a replayed or doubled export)"
        ),
        _positive("price_shown", "price shown must be > 0"),
        _positive(
            "price_to_base",
            f"price shown must be > 0 and < {MAX_PRICE_FACTOR:g} x base_price",
            upper=MAX_PRICE_FACTOR,
        ),
        _positive("base_price", "base price must be > 0"),
        _positive("competitor_price", "competitor price must be > 0"),
        _at_least("unit_cost", 0, "unit cost must be >= 0"),
        _at_least("inventory", 0, "inventory must be >= 0"),
        gxe.ExpectColumnValuesToBeInSet(
            column="action", value_set=list(range(n)), notes=f"action index must be in 0..{n - 1}"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="propensity",
            min_value=0,
            strict_min=True,
            max_value=1,
            notes="propensity must be in (0, 1]",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="outcome",
            value_set=list(OUTCOMES),
            notes=f"outcome must be one of {', '.join(OUTCOMES)}",
        ),
        _at_least("quantity", 0, "quantity must be >= 0"),
        gxe.ExpectColumnValuesToBeInSet(
            column="quantity",
            value_set=[0],
            row_condition=Column("outcome") != PURCHASE,
            notes="quantity must be 0 unless the outcome is a purchase",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="quantity",
            min_value=1,
            row_condition=Column("outcome") == PURCHASE,
            notes="a purchase must have quantity >= 1",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="inventory",
            column_B="quantity",
            or_equal=True,
            notes="more units sold than were in stock",
        ),
    ]


def _transaction_rules(date: dt.date | None, now: dt.datetime) -> list[Any]:
    return [
        *_timestamps(date, now),
        gxe.ExpectColumnValuesToBeUnique(
            column="transaction_id",
            notes="duplicated transaction ids (a replayed or doubled export)",
        ),
        _positive("unit_price", "unit price must be > 0"),
        gxe.ExpectColumnValuesToBeBetween(
            column="price_to_sku_median",
            min_value=1 / MAX_PRICE_FACTOR,
            max_value=MAX_PRICE_FACTOR,
            notes=f"unit price more than {MAX_PRICE_FACTOR:g}x off the SKU's median that day",
        ),
        _at_least("unit_cost", 0, "unit cost must be >= 0"),
        _at_least("quantity", 0, "quantity must be >= 0"),
    ]


def _feature_rules(date: dt.date) -> list[Any]:
    counts = ["views", "carts", "abandons", "inventory_start", "inventory_end"]
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="date",
            value_set=[date.isoformat()],
            notes=f"feature rows must belong to {date.isoformat()}",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["date", "sku"], notes="one row per SKU and day"
        ),
        *[_at_least(c, 0, f"{c} must be >= 0") for c in counts],
        _at_least("purchases", 0, "purchases must be >= 0"),
        _at_least("units", 0, "units must be >= 0"),
        _at_least("revenue", 0, "revenue must be >= 0"),
        _at_least("sales_velocity", 0, "sales velocity must be >= 0"),
        _at_least("conversion", 0, "conversion must be in [0, 1]", high=1),
        _at_least("abandon_rate", 0, "abandon rate must be in [0, 1]", high=1),
        _at_least("price_changes", 0, "at most one price move per hour", high=23),
        _positive("mean_price", "mean price must be > 0"),
        _positive(
            "price_rel",
            f"relative price must be in (0, {MAX_PRICE_FACTOR:g})",
            upper=MAX_PRICE_FACTOR,
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="units",
            column_B="purchases",
            or_equal=True,
            notes="every purchase sells at least one unit",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="views",
            column_B="carts",
            or_equal=True,
            notes="more carts than views",
        ),
    ]


def _default_n_actions() -> int:
    return len(default_world().pricing.actions)


def frame_for_gx(
    feed: str,
    df: pd.DataFrame,
    days: pd.Series | None = None,
    sku_median: pd.Series | None = None,
) -> pd.DataFrame:
    """The frame GX sees: the partition plus the derived check column, dtypes made checkable.

    ``days`` gives each row's partition day when several partitions are validated at once: the
    SKU's median price is then taken per day, and `WINDOW_COLUMN` holds each row's seconds into
    its own partition's day. ``sku_median`` (transactions: each SKU's median unit price of the
    day, by SKU) is used when the frame is a part of its day, not all of it.

    GX's per-value type check only runs on object columns, so string columns go to object (the
    values are unchanged); tz-aware timestamps get one unit, since the unit is storage detail that
    differs between writers (pandas 3 reads microseconds, the generator writes nanoseconds). GX
    stores suites as JSON, where a date becomes its ISO string, so the features' ``date`` column
    is compared as ISO strings too.
    """
    if feed in CONTRACTS:
        df = CONTRACTS[feed].conform(df)  # a partition written before a late column
    out = df.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.StringDtype):
            out[col] = s.astype(object)
        elif isinstance(s.dtype, pd.DatetimeTZDtype):
            out[col] = s.dt.as_unit("ns")
    if feed == "features" and "date" in out.columns:
        out["date"] = out["date"].map(_iso_date, na_action="ignore")
    derived = _DERIVED[feed]
    if feed == "decisions":
        out[derived] = _numeric(out, "price_shown") / _numeric(out, "base_price")
    elif feed == "transactions":
        price = _numeric(out, "unit_price")
        if sku_median is not None and "sku" in out.columns:
            median = out["sku"].astype(str).map(sku_median).astype(float)
        elif "sku" in out.columns and len(out):
            keys = [out["sku"].astype(str).to_numpy()]
            if days is not None:
                keys.insert(0, days.to_numpy())
            median = price.groupby(keys).transform("median")
        else:
            median = pd.Series(np.nan, index=out.index)
        out[derived] = price / median.where(median > 0)
    if days is not None:
        midnight = pd.to_datetime(days).dt.tz_localize("UTC").set_axis(out.index)
        ts = pd.to_datetime(out["ts"], utc=True, errors="coerce")  # a bad ts fails its type check
        out[WINDOW_COLUMN] = (ts - midnight).dt.total_seconds()
    return out


def _iso_date(value: Any) -> Any:
    """A plain date as ISO text; anything else (a timestamp, a number) unchanged, to be flagged."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)
