"""Daily features per SKU from the raw feeds, vectorised with pandas.

One row per (UTC day, SKU) seen in either feed. The *decisions* feed gives the funnel (views, carts,
abandons), the prices shown and the inventory; the *transactions* feed gives what was sold. A
retailer that only has point-of-sale exports still gets features: the decision-derived columns are
then NaN.

Columns of `build_features` (the contract ``FEATURES``; empty only where the decision log is
missing):

- ``date``: the UTC calendar day (``datetime.date``);
- ``sku``: the SKU id;
- ``views``: prices shown, one per visitor (decision rows);
- ``carts``: visitors who carted, whatever happened next (outcomes cart, purchase, abandon);
- ``purchases``: sales lines in the transactions feed;
- ``abandons``: carts abandoned (outcome abandon);
- ``units``: units sold (sum of transaction quantities);
- ``revenue``: sum of quantity x unit price over the transactions;
- ``mean_price``: mean price shown over the day's views;
- ``price_rel``: mean of price shown / base price (1.0 = the reference price);
- ``competitor_gap``: mean of log(price shown / competitor price); > 0 means dearer than the competitor;
- ``inventory_start``: stock before the first logged hour of the day;
- ``inventory_end``: stock after the last logged hour's sales (a restock arriving after that hour is
  not visible in the log);
- ``conversion``: purchases / views, both counted in the decision log so that the ratio stays in
  [0, 1] even when the POS feed holds sales the pricing service never logged;
- ``abandon_rate``: abandons / carts;
- ``sales_velocity``: units per hour of the day (units / 24);
- ``price_changes``: how often the shown price moved between consecutive logged hours of the day.

Counts derived from decisions are float64 so that "unknown" (NaN, transactions only) and "zero"
(logged, nothing happened) keep one stable dtype across partitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sim.feeds import ABANDON, CARTED, PURCHASE, Column, Feed

FEATURES = Feed(
    "features",
    (
        Column("date", "date"),
        Column("sku", "str"),
        Column("views", "float", required=False),
        Column("carts", "float", required=False),
        Column("purchases", "int"),
        Column("abandons", "float", required=False),
        Column("units", "int"),
        Column("revenue", "float"),
        Column("mean_price", "float", required=False),
        Column("price_rel", "float", required=False),
        Column("competitor_gap", "float", required=False),
        Column("inventory_start", "float", required=False),
        Column("inventory_end", "float", required=False),
        Column("conversion", "float", required=False),
        Column("abandon_rate", "float", required=False),
        Column("sales_velocity", "float"),
        Column("price_changes", "float", required=False),
    ),
)
FEATURE_COLUMNS = FEATURES.names
#: what a transactions-only log also gives; every other feature needs the decision log
TRANSACTION_FEATURES: tuple[str, ...] = ("purchases", "units", "revenue", "sales_velocity")
DECISION_FEATURES: tuple[str, ...] = tuple(
    c for c in FEATURE_COLUMNS if c not in ("date", "sku", *TRANSACTION_FEATURES)
)
# Counts that are 0 (not NaN) for an SKU-day the decision log covers but that had no rows.
_DECISION_COUNTS = ("views", "carts", "abandons", "price_changes")
_KEYS = ["day", "sku"]
DEFAULT_PRICE_EDGES: tuple[float, ...] = (0.0, 0.7, 0.8, 0.9, 0.95, 1.05, 1.1, 1.2, 1.3, np.inf)


def _utc(ts: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; naive ones are taken to be UTC already (the feed contract)."""
    return pd.to_datetime(ts, utc=True)


def _decision_rows(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per decision with what the features aggregate (day, SKU, hour, funnel flags,
    prices, stock, units sold)."""
    ts = _utc(decisions["ts"])
    hour = ts.dt.floor("h")
    outcome = decisions["outcome"].to_numpy()
    price = decisions["price_shown"].to_numpy(dtype=float)
    purchase = outcome == PURCHASE
    return pd.DataFrame(
        {
            "day": hour.dt.floor("D"),
            "sku": decisions["sku"].to_numpy(),
            "hour": hour,
            "ts": ts,
            "cart": np.isin(outcome, CARTED),
            "purchase": purchase,
            "abandon": outcome == ABANDON,
            "price": price,
            "rel": price / decisions["base_price"].to_numpy(dtype=float),
            "gap": np.log(price / decisions["competitor_price"].to_numpy(dtype=float)),
            "inventory": decisions["inventory"].to_numpy(dtype=float),
            "sold": np.where(purchase, decisions["quantity"].to_numpy(dtype=float), 0.0),
        }
    )


def _decision_features(decisions: pd.DataFrame) -> pd.DataFrame:
    d = _decision_rows(decisions)
    daily = d.groupby(_KEYS, sort=True).agg(
        views=("price", "size"),
        carts=("cart", "sum"),
        dec_purchases=("purchase", "sum"),
        abandons=("abandon", "sum"),
        mean_price=("price", "mean"),
        price_rel=("rel", "mean"),
        competitor_gap=("gap", "mean"),
    )
    # Price and stock are set once per step, so one row per logged hour is the price path.
    hourly = (
        d.groupby([*_KEYS, "hour"], sort=True)
        .agg(price=("price", "first"), inventory=("inventory", "first"), sold=("sold", "sum"))
        .reset_index()
    )
    by_day = hourly.groupby(_KEYS, sort=True)
    previous = by_day["price"].shift()
    hourly["moved"] = previous.notna() & (hourly["price"] != previous)
    first = by_day.head(1).set_index(_KEYS)
    last = by_day.tail(1).set_index(_KEYS)
    daily["price_changes"] = hourly.groupby(_KEYS, sort=True)["moved"].sum()
    daily["inventory_start"] = first["inventory"]
    daily["inventory_end"] = last["inventory"] - last["sold"]
    return daily.astype(float)


def _transaction_features(transactions: pd.DataFrame) -> pd.DataFrame:
    qty = transactions["quantity"].to_numpy(dtype=float)
    t = pd.DataFrame(
        {
            "day": _utc(transactions["ts"]).dt.floor("D"),
            "sku": transactions["sku"].to_numpy(),
            "qty": qty,
            "revenue": qty * transactions["unit_price"].to_numpy(dtype=float),
        }
    )
    return t.groupby(_KEYS, sort=True).agg(
        purchases=("qty", "size"), units=("qty", "sum"), revenue=("revenue", "sum")
    )


def build_features(decisions: pd.DataFrame | None, transactions: pd.DataFrame) -> pd.DataFrame:
    """Aggregate the raw feeds to one row per UTC day and SKU.

    Args:
        decisions: the decisions feed (DECISION_COLUMNS), or None when only POS data exists.
        transactions: the transactions feed (TRANSACTION_COLUMNS).

    Returns:
        A frame with ``FEATURE_COLUMNS`` (see the module docstring for their meaning), sorted by
        date and SKU. Decision-derived columns are NaN when ``decisions`` is None.
    """
    tx = _transaction_features(transactions)
    return _assemble(None if decisions is None else _decision_features(decisions), tx)


# --- streaming: a day's partition read part by part ---------------------------------------------
#
# A day of a large catalogue (tens of millions of decision rows) is never held whole: each part
# of the partition is reduced to partial sums per (day, SKU, hour) for decisions and per (day, SKU)
# for transactions, the partials of all parts are combined (sums add; the hour's price and stock
# are those of its earliest row), and the daily features are computed from the combined hours,
# which number at most 24 per SKU-day. Memory is bounded by the largest part plus the hourly table,
# whatever the parts' split (by SKU block from `pricing history`, by batch from the service).

_HOUR_KEYS = ["day", "sku", "hour"]
_HOUR_SUMS = ("views", "carts", "dec_purchases", "abandons", "price_sum", "rel_sum", "gap_sum", "sold")


def decision_partials(decisions: pd.DataFrame) -> pd.DataFrame:
    """One part of a decision log reduced to per-(day, SKU, hour) partial sums, plus the price
    and stock of each hour's earliest row (``ts_first``, ``price``, ``inventory``)."""
    d = _decision_rows(decisions)
    sums = d.groupby(_HOUR_KEYS, sort=False).agg(
        views=("price", "size"),
        carts=("cart", "sum"),
        dec_purchases=("purchase", "sum"),
        abandons=("abandon", "sum"),
        price_sum=("price", "sum"),
        rel_sum=("rel", "sum"),
        gap_sum=("gap", "sum"),
        sold=("sold", "sum"),
    )
    first = d.sort_values("ts", kind="stable").groupby(_HOUR_KEYS, sort=False).first()
    sums["ts_first"] = first["ts"]
    sums["price"] = first["price"]
    sums["inventory"] = first["inventory"]
    return sums.astype({c: float for c in _HOUR_SUMS}).reset_index()


def transaction_partials(transactions: pd.DataFrame) -> pd.DataFrame:
    """One part of a transactions log reduced to per-(day, SKU) partial sums."""
    return _transaction_features(transactions).astype(float).reset_index()


def features_from_partials(
    decisions: Sequence[pd.DataFrame] | None, transactions: Sequence[pd.DataFrame]
) -> pd.DataFrame:
    """The daily features (as `build_features`) from the partials of every part of the feeds.

    Args:
        decisions: `decision_partials` of each decisions part, or None when only POS data exists.
        transactions: `transaction_partials` of each transactions part.
    """
    tx = (
        pd.concat(transactions, ignore_index=True)
        .groupby(_KEYS, sort=True)[["purchases", "units", "revenue"]]
        .sum()
    )
    if decisions is None:
        return _assemble(None, tx)
    parts = pd.concat(decisions, ignore_index=True)
    by_hour = parts.groupby(_HOUR_KEYS, sort=True)
    hourly = by_hour[list(_HOUR_SUMS)].sum()
    first = parts.sort_values("ts_first", kind="stable").groupby(_HOUR_KEYS, sort=True).first()
    hourly["price"] = first["price"]
    hourly["inventory"] = first["inventory"]
    hourly = hourly.reset_index()
    by_day = hourly.groupby(_KEYS, sort=True)
    daily = by_day[["views", "carts", "dec_purchases", "abandons"]].sum()
    totals = by_day[["price_sum", "rel_sum", "gap_sum"]].sum()
    daily["mean_price"] = totals["price_sum"] / daily["views"]
    daily["price_rel"] = totals["rel_sum"] / daily["views"]
    daily["competitor_gap"] = totals["gap_sum"] / daily["views"]
    previous = by_day["price"].shift()
    hourly["moved"] = previous.notna() & (hourly["price"] != previous)
    start = by_day.head(1).set_index(_KEYS)
    end = by_day.tail(1).set_index(_KEYS)
    daily["price_changes"] = hourly.groupby(_KEYS, sort=True)["moved"].sum()
    daily["inventory_start"] = start["inventory"]
    daily["inventory_end"] = end["inventory"] - end["sold"]
    return _assemble(daily.astype(float), tx)


def _assemble(dec: pd.DataFrame | None, tx: pd.DataFrame) -> pd.DataFrame:
    """The feature table from daily decision features (None: POS only) and transaction sums."""
    if dec is not None:
        out = dec.join(tx, how="outer")
        out[list(_DECISION_COUNTS)] = out[list(_DECISION_COUNTS)].fillna(0.0)
        out["conversion"] = out["dec_purchases"] / out["views"].where(out["views"] > 0)
        out["abandon_rate"] = out["abandons"] / out["carts"].where(out["carts"] > 0)
    else:
        out = tx.copy()
        for col in DECISION_FEATURES:
            out[col] = np.nan
    out[["purchases", "units", "revenue"]] = out[["purchases", "units", "revenue"]].fillna(0)
    out = out.sort_index().reset_index()
    out["date"] = out["day"].dt.date.astype(object)
    out["sku"] = out["sku"].astype(str)
    out["purchases"] = out["purchases"].astype(np.int64)
    out["units"] = out["units"].astype(np.int64)
    out["revenue"] = out["revenue"].astype(float)
    out["sales_velocity"] = out["units"] / 24.0
    return out[list(FEATURE_COLUMNS)].astype({c: float for c in DECISION_FEATURES})


def conversion_by_price_bucket(
    decisions: pd.DataFrame, edges: Sequence[float] = DEFAULT_PRICE_EDGES
) -> pd.DataFrame:
    """Conversion of views by bucket of relative price, pooled over SKUs.

    The relative price (price shown / base price) makes buckets comparable across a catalogue;
    the fidelity gate compares this curve between logs and the refit simulator.

    Args:
        decisions: the decisions feed.
        edges: increasing bucket edges of price_shown / base_price; a bucket is [lo, hi).

    Returns:
        One row per bucket: ``lo``, ``hi``, ``bucket`` (label "[lo, hi)"), ``views``, ``purchases``
        and ``conversion`` (purchases / views, NaN for an empty bucket).
    """
    edges_arr = np.asarray(edges, dtype=float)
    if edges_arr.ndim != 1 or len(edges_arr) < 2 or np.any(np.diff(edges_arr) <= 0):
        raise ValueError(f"edges must be at least two strictly increasing numbers (got {edges})")
    rel = decisions["price_shown"].to_numpy(dtype=float) / decisions["base_price"].to_numpy(
        dtype=float
    )
    bucket = np.searchsorted(edges_arr, rel, side="right") - 1
    inside = (bucket >= 0) & (bucket < len(edges_arr) - 1)
    n = len(edges_arr) - 1
    purchase = decisions["outcome"].to_numpy() == PURCHASE
    views = np.bincount(bucket[inside], minlength=n)
    purchases = np.bincount(bucket[inside], weights=purchase[inside], minlength=n)
    lo, hi = edges_arr[:-1], edges_arr[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        conversion = np.where(views > 0, purchases / np.maximum(views, 1), np.nan)
    return pd.DataFrame(
        {
            "bucket": [f"[{a:g}, {b:g})" for a, b in zip(lo, hi, strict=True)],
            "lo": lo,
            "hi": hi,
            "views": views.astype(np.int64),
            "purchases": purchases.astype(np.int64),
            "conversion": conversion,
        }
    )
