"""A simulator fitted to a transactions-only log (a retailer's point-of-sale export).

Without impressions, only what sells at which price is observed: the visitor count and the
conversion rate are not separately identifiable, nor are segments or the competitor. The world
built here therefore keeps what a POS log can identify and states its assumptions:

- one customer segment, whose price sensitivity comes from the units-weighted median of the
  per-SKU elasticities (Poisson regression of daily units on log price and weekday,
  `sim.fit.fit_demand_transactions`), using the logit relation ε ≈ −β (1 − q);
- an assumed conversion at the reference price ``q0`` (default 15 %): arrivals per SKU are then
  calibrated so the expected units at the observed prices match the observed units;
- hour-of-day and day-of-week seasonality from the timestamps and daily units;
- no competitor effect (a single competitor state);
- catalogue facts (cost, capacity, restocks, clearance target) from the base world where the SKU
  is in it; otherwise reference price = median price, cost = median known unit cost or
  ``assumed_cost_ratio`` x reference price, capacity = 1.2 x the mean units of a horizon, no
  restocks;
- which SKUs are priced: the highest-volume ones first, those selling at least
  ``min_units_per_day`` on average and at most ``max_skus`` of them. A thin SKU's daily sales are
  mostly zeros and ones: no demand curve can be fitted or checked on them, so the others keep
  their shelf price and are listed in the report (``unpriced``), with their share of the units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.catalogue import derive_item
from sim.fit.demand import fit_demand_transactions
from sim.fit.fidelity import deviance_moments, poisson_deviance
from sim.fit.mle import FitError
from sim.world import Sku, World


def _logit(q: float) -> float:
    return math.log(q / (1 - q))


def fit_transactions_world(
    base: World,
    transactions: pd.DataFrame,
    q0: float = 0.15,
    assumed_cost_ratio: float = 0.6,
    default_elasticity: float = -2.5,
    min_units_per_day: float = 0.0,
    max_skus: int | None = None,
) -> tuple[World, dict[str, Any]]:
    """Build a simulator from POS transactions; returns the world and a JSON-able report."""
    tx = transactions.copy()
    tx["ts"] = pd.to_datetime(tx["ts"], utc=True)
    tx = tx[(pd.to_numeric(tx["quantity"], errors="coerce") > 0)]
    tx["quantity"] = tx["quantity"].astype(float)
    tx, unpriced = _priced(tx, min_units_per_day, max_skus)
    demand = fit_demand_transactions(tx)
    elasticity, source = _pooled_elasticity(demand.table, default_elasticity)
    beta = float(np.clip(-elasticity / (1 - q0), 0.1, 20.0))
    skus, notes = _skus(base, tx, q0, beta, assumed_cost_ratio)
    hod, dow = _seasonality(tx)
    world = base.model_copy(
        update={
            "name": f"{base.name}-pos-fit",
            "segments": (
                base.segments[0].model_copy(
                    update={
                        "name": "all",
                        "share": 1.0,
                        "intent": round(_logit(q0), 4),
                        "price_sensitivity": round(beta, 4),
                        "competitor_sensitivity": 0.0,
                        "weekend_multiplier": 1.0,
                    }
                ),
            ),
            "seasonality": base.seasonality.model_copy(
                update={
                    "hour_of_day": tuple(float(x) for x in hod / hod.mean()),
                    "day_of_week": tuple(float(x) for x in dow / dow.mean()),
                }
            ),
            "competitor": base.competitor.model_copy(
                update={
                    "states": (
                        base.competitor.states[0].model_copy(
                            update={"name": "none", "price_ratio": 1.0}
                        ),
                    ),
                    "transition": ((1.0,),),
                    "initial_state": 0,
                }
            ),
            "skus": tuple(skus),
        }
    )
    world = World.model_validate(world.model_dump())
    report = {
        "mode": "transactions",
        "demand": demand.report(),
        "segment": {
            "price_sensitivity": beta,
            "elasticity_used": elasticity,
            "source": source,
            "assumed_conversion_at_reference": q0,
        },
        "assumptions": notes,
        "unpriced": unpriced,
    }
    return world, report


def _priced(
    tx: pd.DataFrame, min_units_per_day: float, max_skus: int | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The lines of the SKUs the world prices (highest volume first), and what is left out."""
    n_days = max(1, int(tx["ts"].dt.floor("D").nunique()))
    units = tx.groupby(tx["sku"].astype(str))["quantity"].sum().sort_values(ascending=False)
    keep = units[units / n_days >= min_units_per_day]
    if max_skus is not None:
        keep = keep.head(max_skus)
    if keep.empty:
        raise FitError(
            f"no SKU sells {min_units_per_day:g} units a day on average (the best sells "
            f"{units.iloc[0] / n_days:.2f}): lower PRICING_POS_MIN_UNITS_PER_DAY"
        )
    left = units.drop(keep.index)
    unpriced = {
        "skus": len(left),
        "units_share": float(left.sum() / units.sum()) if len(units) else 0.0,
        "rule": f"at least {min_units_per_day:g} units a day, at most {max_skus or 'all'} SKUs",
        "examples": [str(x) for x in left.index[:10]],
    }
    return tx[tx["sku"].astype(str).isin(keep.index)], unpriced


def _pooled_elasticity(table: pd.DataFrame, default: float) -> tuple[float, str]:
    """The units-weighted median of the negative identifiable elasticities, and what it is."""
    ok = table[table["identifiable"] & table["negative"]]
    if not len(ok):
        return default, "no negative identifiable elasticity: assumed default"
    order = np.argsort(ok["elasticity"].to_numpy())
    weights = ok["units"].to_numpy()[order]
    cum = np.cumsum(weights) / weights.sum()
    elasticity = float(ok["elasticity"].to_numpy()[order][np.searchsorted(cum, 0.5)])
    return elasticity, f"units-weighted median of {len(ok)} negative elasticities"


def _seasonality(tx: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Relative sales by hour of day and by weekday (weekdays without sales get the mean)."""
    hod = np.bincount(tx["ts"].dt.hour, weights=tx["quantity"], minlength=24) + 1e-3
    daily = tx.groupby(tx["ts"].dt.floor("D"))["quantity"].sum()
    dow = np.array(
        [
            daily[daily.index.day_of_week == d].mean()
            if (daily.index.day_of_week == d).any()
            else 0.0
            for d in range(7)
        ]
    )
    dow = np.where(dow > 0, dow, dow[dow > 0].mean() if (dow > 0).any() else 1.0)
    return hod, dow


def _skus(
    base: World, tx: pd.DataFrame, q0: float, beta: float, assumed_cost_ratio: float
) -> tuple[list[Sku], list[str]]:
    """Each SKU's catalogue facts (the base world's, else derived from its sales) and the traffic
    that makes the expected units at its median price match the observed ones."""
    n_days = max(1, int(tx["ts"].dt.floor("D").nunique()))
    base_skus = {s.id: s for s in base.skus}
    horizon_hours = base.horizon.steps * base.horizon.step_hours
    skus: list[Sku] = []
    notes: list[str] = []
    for sku, g in tx.groupby("sku", sort=True):
        sku = str(sku)
        price = float(np.median(g["unit_price"].astype(float)))
        units_per_hour = float(g["quantity"].sum()) / (24.0 * n_days)
        if sku in base_skus:
            s = base_skus[sku]
        else:
            costs = (
                pd.to_numeric(g["unit_cost"], errors="coerce").to_numpy(dtype=float)
                if "unit_cost" in g
                else np.array([])
            )
            item = derive_item(
                sku,
                g["unit_price"].to_numpy(dtype=float),
                costs,
                units_per_hour,
                horizon_hours,
                assumed_cost_ratio,
            )
            if "unit_cost" in item.assumed:
                notes.append(f"{sku}: unit cost unknown, assumed {assumed_cost_ratio:.0%} of price")
            s = item.to_sku(arrival_rate=1.0)
        q_at_price = 1 / (1 + math.exp(-(_logit(q0) - beta * math.log(price / s.ref_price))))
        rate = float(np.clip(units_per_hour / max(q_at_price, 1e-6), 1e-3, 500.0))
        skus.append(s.model_copy(update={"arrival_rate": round(rate, 4), "competitor_ref": None}))
    return skus, notes


@dataclass(frozen=True)
class TransactionsFidelity:
    passed: bool
    deviance_ratio: float
    sku_days: list[dict[str, Any]]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "deviance_ratio": self.deviance_ratio,
            "message": self.message,
            "sku_days": self.sku_days,
        }


def expected_daily_units(world: World, sku: str, day: pd.Timestamp, price: float) -> float:
    """Expected units of ``sku`` on ``day`` at ``price`` under a fitted world's single segment."""
    s = next(x for x in world.skus if x.id == sku)
    seg = world.segments[0]
    dow = np.asarray(world.seasonality.day_of_week)
    q = 1 / (1 + math.exp(-(seg.intent - seg.price_sensitivity * math.log(price / s.ref_price))))
    return float(s.arrival_rate * 24.0 * dow[day.day_of_week] / dow.mean() * q)


def transactions_fidelity_check(
    world: World, heldout: pd.DataFrame, max_deviance_ratio: float
) -> TransactionsFidelity:
    """Held-out daily units per SKU vs the world's expectation at the day's observed price: the
    Poisson deviance over the deviance expected if the world were exact."""
    tx = heldout.copy()
    tx["ts"] = pd.to_datetime(tx["ts"], utc=True)
    tx = tx[pd.to_numeric(tx["quantity"], errors="coerce") > 0]
    known = {s.id for s in world.skus}
    tx = tx[tx["sku"].astype(str).isin(known)]
    if tx.empty:
        return TransactionsFidelity(False, math.inf, [], "no held-out sales of known SKUs")
    tx["day"] = tx["ts"].dt.floor("D")
    tx["revenue"] = tx["quantity"] * tx["unit_price"]
    g = tx.groupby(["sku", "day"]).agg(units=("quantity", "sum"), revenue=("revenue", "sum"))
    g = g.reset_index()
    g["price"] = g["revenue"] / g["units"]
    mu = np.array([expected_daily_units(world, str(r.sku), r.day, r.price) for r in g.itertuples()])
    y = g["units"].to_numpy(dtype=float)
    dev = poisson_deviance(y, mu)
    expected, _ = deviance_moments(mu)
    ratio = float(dev.sum() / max(expected.sum(), 1e-9))
    passed = ratio <= max_deviance_ratio
    rows = [
        {
            "sku": str(r.sku),
            "day": r.day.date().isoformat(),
            "units": float(u),
            "expected": float(m),
        }
        for r, u, m in zip(g.itertuples(), y, mu, strict=True)
    ]
    msg = f"daily-sales deviance ratio {ratio:.2f} {'≤' if passed else '>'} {max_deviance_ratio:g}"
    return TransactionsFidelity(passed, ratio, rows, msg)
