"""A simulator fitted to a transactions-only log (a retailer's point-of-sale export).

Without impressions, only what sells at which price is observed: the visitor count and the
conversion rate are not separately identifiable, nor are segments or the competitor. The world
built here therefore keeps what a POS log can identify and states its assumptions:

- one customer segment, whose price sensitivity comes from the units-weighted median of the
  per-SKU elasticities (Poisson regression of daily units on log price and weekday,
  `sim.fit.fit_demand_transactions`), using the logit relation ε ≈ −β (1 − q); each SKU scales it
  by its own elasticity, pooled with its category's (`pool_elasticities`: a thin or rarely
  repriced SKU takes its category's value);
- over-dispersed daily demand: each SKU's negative-binomial dispersion, pooled by category
  (`_with_dispersion`), which the simulator draws as a Gamma shock to each step's traffic;
- an assumed conversion at the reference price ``q0`` (default 15 %): arrivals per SKU are then
  calibrated so the expected units at the observed prices match the observed units;
- hour-of-day seasonality from the timestamps, and weekday traffic net of price;
- public holidays (given by the caller) left out of every estimate, with their traffic relative to a
  regular day reported as a calendar effect the fidelity gate applies to held-out holidays (the
  simulator's weeks have no holidays);
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

import datetime as dt
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.catalogue import derive_item
from sim.fit.demand import daily_panel, daily_sales, fit_demand_transactions
from sim.fit.fidelity import deviance_moments, nb_deviance
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
    categories: dict[str, str] | None = None,
    holidays: Collection[dt.date] = (),
) -> tuple[World, dict[str, Any]]:
    """Build a simulator from POS transactions; returns the world and a JSON-able report.
    ``categories`` (SKU -> category, e.g. the catalogue's) are the groups estimates pool within;
    without them the whole catalogue is one group. Days in ``holidays`` (public holidays) are
    left out of every estimate; their traffic relative to a regular day is the report's
    ``calendar.multiplier``, which the fidelity gate applies to held-out holidays."""
    tx = transactions.copy()
    tx["ts"] = pd.to_datetime(tx["ts"], utc=True)
    tx = tx[(pd.to_numeric(tx["quantity"], errors="coerce") > 0)]
    tx["quantity"] = tx["quantity"].astype(float)
    tx, unpriced = _priced(tx, min_units_per_day, max_skus)
    on_holiday = tx["ts"].dt.date.isin(set(holidays))
    special, tx = tx[on_holiday], tx[~on_holiday]
    demand = fit_demand_transactions(tx)
    elasticity, source = _pooled_elasticity(demand.table, default_elasticity)
    beta = float(np.clip(-elasticity / (1 - q0), 0.1, 20.0))
    groups = {str(k): (categories or {}).get(str(k)) or "all" for k in tx["sku"].unique()}
    pooled = pool_elasticities(demand.table, groups, elasticity)
    scale = {
        sku: float(np.clip(-e / (1 - q0) / beta, 0.05, 20.0))
        for sku, e in pooled["elasticity"].items()
    }
    panel = daily_panel(daily_sales(tx)[0])
    skus, traffic, notes = _skus(base, panel, tx, q0, beta, assumed_cost_ratio, scale)
    hod, dow = _seasonality(tx, traffic)
    world = _pos_world(base, q0, beta, skus, hod, dow)
    world, dispersion = _with_dispersion(world, tx, groups)
    calendar = holiday_effect(world, special)
    report = {
        "mode": "transactions",
        "demand": demand.report(),
        "segment": {
            "price_sensitivity": beta,
            "elasticity_used": elasticity,
            "source": source,
            "assumed_conversion_at_reference": q0,
        },
        "elasticities": {
            "rule": "per SKU, shrunk towards its category's precision-weighted mean by how well "
            "its own series pins it down (empirical Bayes); clipped to [-8, -0.2]",
            "skus": pooled.reset_index().to_dict(orient="records"),
        },
        "dispersion": dispersion,
        "calendar": calendar,
        "assumptions": notes,
        "unpriced": unpriced,
    }
    return world, report


def holiday_effect(world: World, special: pd.DataFrame) -> dict[str, Any]:
    """Traffic on the holidays of the training window relative to the world's regular days: the
    units sold over the units the world expects on those days at their prices."""
    if special.empty:
        return {"days": [], "multiplier": 1.0, "note": "no holiday in the training window"}
    known = {s.id for s in world.skus}
    panel = daily_panel(daily_sales(special)[0])
    panel = panel[panel["sku"].isin(known)]
    mu = sum(
        float(expected_units(world, str(k), d["day"], d["price"].to_numpy(float)).sum())
        for k, d in panel.groupby("sku")
    )
    units = float(panel["units"].sum())
    return {
        "days": sorted({d.date().isoformat() for d in panel["day"]}),
        "multiplier": float(np.clip(units / mu, 0.05, 20.0)) if mu > 0 else 1.0,
        "units": units,
        "expected_as_a_regular_day": mu,
    }


def _pos_world(
    base: World, q0: float, beta: float, skus: list[Sku], hod: np.ndarray, dow: np.ndarray
) -> World:
    """The base world's market with one segment, the fitted seasonality, no competitor effect and
    the fitted SKUs."""
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
    return world


def pool_elasticities(table: pd.DataFrame, groups: dict[str, str], fallback: float) -> pd.DataFrame:
    """Per-SKU elasticities pooled within their group (empirical Bayes).

    A group's mean is the precision-weighted mean of its identifiable estimates and its spread
    ``tau^2`` the variance of those estimates beyond their sampling variance (at least 0.01). Each
    SKU's estimate is shrunk towards the mean with weight ``tau^2 / (tau^2 + se^2)``: a SKU whose
    price barely moved (a wide interval) takes its category's value, a well-measured one keeps its
    own. SKUs without an estimate take the group's mean, and a group without one ``fallback``.
    """
    t = table.set_index(table["sku"].astype(str))
    ok = t["identifiable"] & np.isfinite(t["se"]) & (t["se"] > 0)
    rows = []
    for group in sorted(set(groups.values())):
        members = sorted(k for k, g in groups.items() if g == group and k in t.index)
        est = t.loc[[m for m in members if ok[m]]]
        if len(est):
            prec = 1.0 / est["se"].to_numpy() ** 2
            mean = float((prec * est["elasticity"]).sum() / prec.sum())
            tau2 = (
                max(float(est["elasticity"].var()) - float((est["se"] ** 2).mean()), 0.01)
                if len(est) > 1
                else 0.25
            )
        if not len(est) or mean >= -0.2:
            mean, tau2 = fallback, 0.25
        for m in members:
            raw = float(t.at[m, "elasticity"]) if ok[m] else math.nan
            w = tau2 / (tau2 + float(t.at[m, "se"]) ** 2) if ok[m] else 0.0
            post = w * raw + (1 - w) * mean if ok[m] else mean
            rows.append(
                {
                    "sku": m,
                    "group": group,
                    "own": raw,
                    "group_mean": mean,
                    "weight_own": w,
                    "elasticity": float(np.clip(post, -8.0, -0.2)),
                }
            )
    return pd.DataFrame.from_records(rows).set_index("sku")


def _with_dispersion(
    world: World, tx: pd.DataFrame, groups: dict[str, str], prior_days: float = 30.0
) -> tuple[World, dict[str, Any]]:
    """Each SKU's over-dispersion of daily units against the world's own expectation.

    Method of moments, ``alpha = sum((y - mu)^2 - mu) / sum(mu^2)`` over the SKU's days
    (including those without a sale), shrunk towards its group's value with weight
    ``days / (days + prior_days)``. Real demand moves from day to day for reasons no log records
    (weather, local events, a neighbour's promotion); a Poisson world would call every such day a
    misfit and the fidelity gate would refuse it.
    """
    panel = daily_panel(daily_sales(tx)[0])
    stats_by_sku: dict[str, tuple[float, float, int]] = {}
    for sku, d in panel.groupby("sku", sort=True):
        mu = expected_units(world, str(sku), d["day"], d["price"].to_numpy(dtype=float))
        y = d["units"].to_numpy(dtype=float)
        stats_by_sku[str(sku)] = (float(((y - mu) ** 2 - mu).sum()), float((mu**2).sum()), len(y))
    by_group: dict[str, list[float]] = {}
    for sku, (num, den, _) in stats_by_sku.items():
        acc = by_group.setdefault(groups.get(sku, "all"), [0.0, 0.0])
        acc[0] += num
        acc[1] += den
    rows, skus = {}, []
    for s in world.skus:
        num, den, n = stats_by_sku.get(s.id, (0.0, 0.0, 0))
        g_num, g_den = by_group.get(groups.get(s.id, "all"), [0.0, 0.0])
        own = max(num / den, 0.0) if den > 0 else 0.0
        pooled = max(g_num / g_den, 0.0) if g_den > 0 else 0.0
        w = n / (n + prior_days)
        alpha = round(float(np.clip(w * own + (1 - w) * pooled, 0.0, 10.0)), 4)
        rows[s.id] = {"own": own, "group": pooled, "days": n, "alpha": alpha}
        skus.append(s.model_copy(update={"demand_dispersion": alpha}))
    report = {
        "model": "daily units ~ negative binomial, variance = mean + alpha x mean^2",
        "median_alpha": float(np.median([r["alpha"] for r in rows.values()])),
        "skus": rows,
    }
    return world.with_skus(skus), report


def _priced(
    tx: pd.DataFrame, min_units_per_day: float, max_skus: int | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The lines of the SKUs the world prices (highest volume first), and what is left out."""
    n_days = max(1, int(tx["ts"].dt.floor("D").nunique()))
    units = tx.groupby(tx["sku"].astype(str))["quantity"].sum().sort_values(ascending=False)
    if units.empty or units.iloc[0] <= 0:
        raise FitError("none of these SKUs sold anything in the training window: nothing to fit")
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


def _seasonality(tx: pd.DataFrame, traffic: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Relative sales by hour of day, and relative traffic by weekday: the day's units divided by
    the conversion at the day's prices, so a pricer that discounts on some weekdays does not read
    as more customers on those days (weekdays without data get the mean)."""
    hod = np.bincount(tx["ts"].dt.hour, weights=tx["quantity"], minlength=24) + 1e-3
    weekday = pd.DatetimeIndex(traffic.index).day_of_week
    dow = np.array(
        [traffic[weekday == d].mean() if (weekday == d).any() else 0.0 for d in range(7)]
    )
    dow = np.where(dow > 0, dow, dow[dow > 0].mean() if (dow > 0).any() else 1.0)
    return hod, dow


def _skus(
    base: World,
    panel: pd.DataFrame,
    tx: pd.DataFrame,
    q0: float,
    beta: float,
    assumed_cost_ratio: float,
    scale: dict[str, float],
) -> tuple[list[Sku], pd.Series, list[str]]:
    """Each SKU's catalogue facts (the base world's, else derived from its sales) and its traffic:
    the mean over its days of the units divided by the conversion at the day's price. Also the
    catalogue's traffic per day (the sum over SKUs), for the weekday profile."""
    n_days = max(1, int(tx["ts"].dt.floor("D").nunique()))
    base_skus = {s.id: s for s in base.skus}
    horizon_hours = base.horizon.steps * base.horizon.step_hours
    skus: list[Sku] = []
    notes: list[str] = []
    traffic: list[pd.Series] = []
    for sku, g in tx.groupby("sku", sort=True):
        sku = str(sku)
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
        b = beta * scale.get(sku, 1.0)
        days = panel[panel["sku"] == sku]
        q_day = 1 / (
            1 + np.exp(-(_logit(q0) - b * np.log(days["price"].to_numpy(float) / s.ref_price)))
        )
        visitors = pd.Series(days["units"].to_numpy(float) / np.maximum(q_day, 1e-6), days["day"])
        traffic.append(visitors)
        rate = float(np.clip(visitors.mean() / 24.0, 1e-3, 500.0))
        update = {
            "arrival_rate": round(rate, 4),
            "competitor_ref": None,
            "price_sensitivity_scale": round(scale.get(sku, 1.0), 4),
        }
        skus.append(s.model_copy(update=update))
    per_day = pd.concat(traffic).groupby(level=0).sum()
    return skus, per_day, notes


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


def expected_units(world: World, sku: str, days: pd.Series, prices: np.ndarray) -> np.ndarray:
    """Expected units of ``sku`` on each of ``days`` at that day's price, under a fitted world's
    single segment (the SKU's own price sensitivity, the weekday's traffic)."""
    s = next(x for x in world.skus if x.id == sku)
    seg = world.segments[0]
    dow = np.asarray(world.seasonality.day_of_week)
    weekday = pd.DatetimeIndex(days).day_of_week.to_numpy()
    beta = seg.price_sensitivity * s.price_sensitivity_scale
    q = 1 / (1 + np.exp(-(seg.intent - beta * np.log(np.asarray(prices) / s.ref_price))))
    return np.asarray(s.arrival_rate * 24.0 * dow[weekday] / dow.mean() * q)


def expected_daily_units(world: World, sku: str, day: pd.Timestamp, price: float) -> float:
    """Expected units of ``sku`` on ``day`` at ``price`` under a fitted world's single segment."""
    return float(expected_units(world, sku, pd.Series([day]), np.array([price]))[0])


def transactions_fidelity_check(
    world: World,
    heldout: pd.DataFrame,
    max_deviance_ratio: float,
    holidays: Mapping[dt.date, float] | None = None,
) -> TransactionsFidelity:
    """Held-out daily units per SKU vs the world's expectation at the day's price: the deviance
    (negative binomial with the SKU's dispersion, Poisson where it has none) over the deviance
    expected if the world were exact. Every trading day of the held-out window counts, those
    without a sale of the SKU as 0 units at its last price; on a day in ``holidays`` the
    expectation is scaled by its multiplier (`holiday_effect`)."""
    tx = heldout.copy()
    tx = tx[pd.to_numeric(tx["quantity"], errors="coerce") > 0]
    known = {s.id: s for s in world.skus}
    tx = tx[tx["sku"].astype(str).isin(known)]
    if tx.empty:
        return TransactionsFidelity(False, math.inf, [], "no held-out sales of known SKUs")
    daily, _ = daily_sales(tx)
    days = pd.DatetimeIndex(sorted(pd.to_datetime(heldout["ts"], utc=True).dt.floor("D").unique()))
    g = daily_panel(daily, days)
    mu = np.concatenate(
        [
            expected_units(world, str(sku), d["day"], d["price"].to_numpy(dtype=float))
            for sku, d in g.groupby("sku", sort=True)
        ]
    )
    g = pd.concat([d for _, d in g.groupby("sku", sort=True)], ignore_index=True)
    if holidays:
        mu = mu * g["day"].dt.date.map(lambda d: holidays.get(d, 1.0)).to_numpy(dtype=float)
    alpha = np.array([known[str(k)].demand_dispersion for k in g["sku"]])
    y = g["units"].to_numpy(dtype=float)
    dev = nb_deviance(y, mu, alpha)
    expected, _ = deviance_moments(mu, alpha=alpha)
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
    msg = (
        f"daily-sales deviance ratio {ratio:.2f} {'≤' if passed else '>'} {max_deviance_ratio:g} "
        f"over {len(g)} SKU-days"
    )
    return TransactionsFidelity(passed, ratio, rows, msg)
