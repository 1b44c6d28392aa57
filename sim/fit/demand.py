"""`fit_demand_transactions`: a per-SKU Poisson demand curve fitted to a plain point-of-sale
export (no impressions), for retailers who have no decision log yet."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.feeds import TRANSACTIONS
from sim.fit.mle import FitError, estimate, poisson_glm, require_columns, to_json

TRANSACTION_FIELDS = TRANSACTIONS.subset("ts", "sku", "quantity")

# --------------------------------------------------------------------------------------------------
# transactions-only demand


@dataclass(frozen=True)
class DemandFit:
    """Per-SKU price elasticities fitted to a transactions log, and a summary of their signs."""

    table: pd.DataFrame
    summary: dict[str, Any]

    def report(self) -> dict[str, Any]:
        return dict(
            to_json({"summary": self.summary, "skus": self.table.to_dict(orient="records")})
        )


def daily_sales(transactions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    require_columns(transactions, TRANSACTION_FIELDS, "transactions")
    df = transactions.copy()
    if "unit_price" not in df.columns:
        if "line_total" not in df.columns:
            raise FitError("transactions log needs unit_price or line_total")
        df["unit_price"] = df["line_total"] / df["quantity"]
    df["quantity"] = pd.to_numeric(df["quantity"], errors="coerce")
    df["unit_price"] = pd.to_numeric(df["unit_price"], errors="coerce")
    # returns and unpriced lines say nothing about the price a buyer accepted
    keep = (df["quantity"] > 0) & (df["unit_price"] > 0)
    dropped = int((~keep).sum())
    df = df[keep]
    if df.empty:
        raise FitError("transactions log has no line with positive quantity and price")
    df["day"] = pd.to_datetime(df["ts"], utc=True).dt.floor("D")
    df["sku"] = df["sku"].astype(str)
    df["revenue"] = df["quantity"] * df["unit_price"]
    daily = df.groupby(["sku", "day"]).agg(units=("quantity", "sum"), revenue=("revenue", "sum"))
    daily["price"] = daily["revenue"] / daily["units"]
    return daily.reset_index(), dropped


def daily_panel(daily: pd.DataFrame, days: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """Selling days per SKU (``sku, day, units, price``) completed with the SKU's days without a
    sale: every trading day (a day anything sold) between its first and last sale, or every day in
    ``days`` if given, with 0 units at the price last seen (the next one before its first sale).

    Dropping those days would keep only the days demand happened to be high and bias both the
    level and the spread of demand. Caution: a POS log cannot tell a day without demand from a day
    out of stock; a long stock-out reads as weak demand here.
    """
    trading = pd.DatetimeIndex(sorted(daily["day"].unique())) if days is None else days
    parts = []
    for sku, d in daily.groupby("sku", sort=True):
        d = d.set_index("day").sort_index()
        span = (
            trading
            if days is not None
            else trading[(trading >= d.index[0]) & (trading <= d.index[-1])]
        )
        full = d.reindex(span.union(d.index))
        full["units"] = full["units"].fillna(0.0)
        full["price"] = full["price"].ffill().bfill()
        full["sku"] = sku
        parts.append(full.rename_axis("day").reset_index()[["sku", "day", "units", "price"]])
    return pd.concat(parts, ignore_index=True)


def _fit_sku(sku: str, d: pd.DataFrame, min_days: int) -> dict[str, Any]:
    """One SKU's row of the demand table: its elasticity, or why it is not identifiable."""
    y = d["units"].to_numpy(dtype=float)
    log_p = np.log(d["price"].to_numpy(dtype=float))
    rec: dict[str, Any] = {
        "sku": sku,
        "days": len(d),
        "selling_days": int((y > 0).sum()),
        "units": float(y.sum()),
        "mean_price": float(d["price"].mean()),
        "price_cv": float(np.std(np.exp(log_p)) / np.mean(np.exp(log_p))),
        "elasticity": math.nan,
        "se": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "dispersion": math.nan,
        "negative": False,
        "significant": False,
        "converged": False,
        "identifiable": False,
        "reason": "",
    }
    if rec["selling_days"] < min_days:
        return rec | {"reason": f"only {rec['selling_days']} selling days (< {min_days})"}
    if np.std(log_p) < 1e-3:
        return rec | {"reason": "no price variation"}
    weekday = d["day"].dt.day_of_week.to_numpy()
    present = sorted(set(weekday.tolist()))
    dummies = [(weekday == w).astype(float) for w in present[1:]]
    x = np.column_stack([np.ones_like(y), log_p - log_p.mean(), *dummies])
    if len(y) <= x.shape[1]:
        return rec | {"reason": f"{len(y)} days for {x.shape[1]} parameters"}
    res = poisson_glm(x, y)
    mu = np.exp(x @ res.coef)
    dispersion = float(((y - mu) ** 2 / mu).sum() / (len(y) - x.shape[1]))
    se = float(res.se[1]) * math.sqrt(max(1.0, dispersion))
    est = float(res.coef[1])
    ci = estimate(est, se)
    return rec | {
        "elasticity": est,
        "se": se,
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
        "dispersion": dispersion,
        "negative": est < 0,
        "significant": bool(ci["ci_high"] < 0 or ci["ci_low"] > 0),
        "converged": res.converged,
        "identifiable": res.converged and math.isfinite(se),
        "reason": "" if res.converged else "the likelihood maximisation did not converge",
    }


def fit_demand_transactions(transactions: pd.DataFrame, min_days: int = 14) -> DemandFit:
    """Per SKU, a Poisson regression of daily units on log(daily mean unit price) and weekday.

    The elasticity is the log-price coefficient. Days without a sale count as 0 units at the
    price last seen (`daily_panel`). Standard errors come from the inverse
    Fisher information, widened by sqrt(Pearson chi2 / dof) where the daily counts are
    over-dispersed (quasi-Poisson). A SKU with fewer than ``min_days`` selling days or without
    price variation is reported as not identifiable. Caution: prices set by a pricer that reacts
    to demand (stock, competitor) are endogenous, so these are associations, not causal effects.
    """
    if min_days < 3:
        raise ValueError(f"min_days must be >= 3 (got {min_days})")
    daily, dropped = daily_sales(transactions)
    daily = daily_panel(daily)
    records = [_fit_sku(str(sku), d, min_days) for sku, d in daily.groupby("sku", sort=True)]
    table = pd.DataFrame.from_records(records)
    ok = table[table["identifiable"]]
    summary = {
        "model": "units[day] ~ Poisson(exp(a + elasticity * log(price[day]) + weekday[day]))",
        "skus": len(table),
        "identifiable": len(ok),
        "negative": int(ok["negative"].sum()),
        "significantly_negative": int((ok["ci_high"] < 0).sum()),
        "significantly_positive": int((ok["ci_low"] > 0).sum()),
        "median_elasticity": float(ok["elasticity"].median()) if len(ok) else math.nan,
        "lines_dropped": dropped,
        "min_days": min_days,
    }
    return DemandFit(table=table, summary=to_json(summary))
