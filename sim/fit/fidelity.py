"""The fidelity gate: a refit world must reproduce held-out days, both the conversion rate by
price bucket and the daily units per SKU."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sim.fit.mle import sigmoid, to_json
from sim.fit.panel import Panel, build_panel
from sim.world import World

BUCKET_EDGES: tuple[float, ...] = tuple(round(0.6 + 0.1 * i, 10) for i in range(10))

# --------------------------------------------------------------------------------------------------
# fidelity gate


@dataclass(frozen=True)
class FidelityReport:
    """Outcome of the fidelity gate.

    ``conversion_error``: visitor-weighted mean absolute error of the purchase rate over price
    buckets; ``conversion_noise`` is the value it would take on average from sampling alone if the
    world were exact, so an error near it is as good as the held-out sample can show.
    ``deviance_ratio``: the held-out Poisson deviance of daily units per SKU, divided by the
    deviance expected if the world were exact; ``deviance_p_value`` the one-sided p-value of it.
    """

    passed: bool
    conversion_error: float
    deviance_ratio: float
    buckets: list[dict[str, Any]]
    sku_days: list[dict[str, Any]]
    message: str
    conversion_noise: float
    deviance_p_value: float

    def to_dict(self) -> dict[str, Any]:
        return dict(
            to_json(
                {
                    "passed": self.passed,
                    "conversion_error": self.conversion_error,
                    "conversion_noise": self.conversion_noise,
                    "deviance_ratio": self.deviance_ratio,
                    "deviance_p_value": self.deviance_p_value,
                    "message": self.message,
                    "buckets": self.buckets,
                    "sku_days": self.sku_days,
                }
            )
        )


def _purchase_prob(
    world: World,
    seg: np.ndarray,
    price: np.ndarray,
    ref: np.ndarray,
    comp: np.ndarray,
    prev: np.ndarray,
    inventory: np.ndarray,
) -> np.ndarray:
    """P(a visitor of segment ``seg`` carts and keeps it): cart logit x (1 - abandonment)."""
    intent = np.array([s.intent for s in world.segments])[seg]
    beta = np.array([s.price_sensitivity for s in world.segments])[seg]
    gamma = np.array([s.competitor_sensitivity for s in world.segments])[seg]
    q = sigmoid(intent - beta * np.log(price / ref) - gamma * np.log(price / comp))
    ab = world.abandonment
    rise = np.maximum(0.0, np.log(price / prev))
    a = np.clip(ab.base + ab.per_price_increase * rise, 0.0, 1.0) * (inventory > 0)
    return np.asarray(q * (1.0 - a))


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, 1e-12)
    ylog = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return np.asarray(2.0 * (ylog - (y - mu)))


def nb_deviance(y: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Unit deviance of a negative binomial with variance mu + alpha mu^2 (Poisson where alpha
    is 0)."""
    y, mu, alpha = np.broadcast_arrays(
        np.asarray(y, float), np.maximum(np.asarray(mu, float), 1e-12), np.asarray(alpha, float)
    )
    a = np.maximum(alpha, 1e-12)
    ylog = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    nb = 2.0 * (ylog - (y + 1.0 / a) * np.log((1.0 + a * y) / (1.0 + a * mu)))
    return np.asarray(np.where(alpha > 0, nb, poisson_deviance(y, mu)))


def deviance_moments(
    mu: np.ndarray, chunk: int = 512, alpha: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the deviance of one count with mean ``mu`` (Poisson, or negative
    binomial with variance mu + alpha mu^2), exactly (summed over the count's support); for small
    means the mean is well below 1."""
    mean = np.zeros_like(mu)
    var = np.zeros_like(mu)
    alpha = np.zeros_like(mu) if alpha is None else np.asarray(alpha, dtype=float)
    order = np.argsort(mu)
    for lo in range(0, len(mu), chunk):
        idx = order[lo : lo + chunk]
        m = np.maximum(mu[idx], 1e-12)
        a = alpha[idx][:, None]
        sd = np.sqrt(m + alpha[idx] * m**2)
        y_lo = max(0, math.floor((m - 12 * sd).min() - 10))
        y_hi = math.ceil((m + 40 * sd).max() + 20)
        y = np.arange(y_lo, y_hi + 1, dtype=float)[None, :]
        n = 1.0 / np.maximum(a, 1e-12)
        pmf = np.where(
            a > 0, stats.nbinom.pmf(y, n, n / (n + m[:, None])), stats.poisson.pmf(y, m[:, None])
        )
        d = nb_deviance(y, m[:, None], a)
        e1 = (pmf * d).sum(axis=1)
        mean[idx] = e1
        var[idx] = np.maximum((pmf * d * d).sum(axis=1) - e1**2, 0.0)
    return mean, var


def fidelity_check(
    world: World,
    heldout: pd.DataFrame,
    max_conversion_error: float,
    max_deviance_ratio: float,
) -> FidelityReport:
    """Does ``world`` reproduce the held-out decisions log?

    Conversion: each visitor's predicted probability of buying (cart logit at the price,
    competitor price and segment shown, times one minus the abandonment of that period's price
    move; no abandonment when stock is out, as in the market) against whether they bought, in
    buckets of price / reference (edges 0.6, 0.7, ..., 1.5; prices outside fall in the end
    buckets). A "cart" outcome (carted, then stocked out) counts as a purchase: the world predicts
    demand, and the stock-out is the inventory's doing. ``max_conversion_error`` is in
    probability points of the visitor-weighted mean absolute error, e.g. 0.03.

    Daily units: per SKU and day, the expected units demanded (traffic x seasonality x segment mix x
    purchase probability, summed over the day's periods at the logged prices, carried over
    through periods without visitors) against the units bought or lost to stock-outs. The
    statistic is the total Poisson deviance divided by the total the world itself expects. The
    plain mean deviance is near 1 only for daily means above ~5, and falls towards 0 for sparse
    SKUs, so dividing by the exact expectation keeps the ratio at 1 for a correct world at any
    volume. Its sampling spread is about sqrt(2 / SKU-days), so ``max_deviance_ratio`` = 1.5
    tolerates half again the Poisson noise and needs some 30+ SKU-days to be a sharp test.
    Held-out logs must cover whole days.
    """
    if max_conversion_error <= 0 or max_deviance_ratio <= 0:
        raise ValueError("max_conversion_error and max_deviance_ratio must be positive")
    panel = build_panel(world, heldout)
    buckets, conversion_error, conversion_noise = _conversion_by_bucket(world, panel.rows)
    units = _daily_units(world, panel)
    failed: list[str] = []
    if not conversion_error <= max_conversion_error:
        worst = max(buckets, key=lambda r: r["views"] * abs(r["error"]))
        failed.append(
            f"conversion error {conversion_error:.4f} > {max_conversion_error} (sampling noise "
            f"~{conversion_noise:.4f}; worst bucket {worst['bucket']}: observed "
            f"{worst['observed']:.3f} vs predicted {worst['predicted']:.3f} over "
            f"{worst['views']} views)"
        )
    if not units.ratio <= max_deviance_ratio:
        w = units.sku_days[units.worst]
        failed.append(
            f"daily-units deviance ratio {units.ratio:.2f} > {max_deviance_ratio} over "
            f"{len(units.sku_days)} SKU-days (worst {w['sku']} on {w['day']}: observed "
            f"{w['observed']} vs expected {w['expected']:.1f})"
        )
    if failed:
        message = "fidelity gate failed: " + "; ".join(failed)
    else:
        message = (
            f"fidelity gate passed: conversion error {conversion_error:.4f} <= "
            f"{max_conversion_error} (sampling noise ~{conversion_noise:.4f}); deviance ratio "
            f"{units.ratio:.2f} <= {max_deviance_ratio} over {len(units.sku_days)} SKU-days"
        )
    return FidelityReport(
        passed=not failed,
        conversion_error=float(conversion_error),
        deviance_ratio=units.ratio,
        buckets=to_json(buckets),
        sku_days=to_json(units.sku_days),
        message=message,
        conversion_noise=float(conversion_noise),
        deviance_p_value=units.p_value,
    )


def _conversion_by_bucket(
    world: World, rows: pd.DataFrame
) -> tuple[list[dict[str, Any]], float, float]:
    """Observed vs predicted purchase rate per price bucket; the visitor-weighted mean absolute
    error and the value sampling alone would give it."""
    pred = _purchase_prob(
        world,
        rows["s"].to_numpy(),
        rows["price_shown"].to_numpy(dtype=float),
        rows["ref"].to_numpy(dtype=float),
        rows["competitor_price"].to_numpy(dtype=float),
        rows["prev_price"].to_numpy(dtype=float),
        rows["inventory"].to_numpy(),
    )
    bought = rows["would_buy"].to_numpy(dtype=float)
    ratio = rows["price_shown"].to_numpy(dtype=float) / rows["ref"].to_numpy(dtype=float)
    edges = np.array(BUCKET_EDGES)
    b = np.clip(np.searchsorted(edges, ratio + 1e-9, side="right") - 1, 0, len(edges) - 2)
    buckets: list[dict[str, Any]] = []
    abs_err = 0.0
    noise = 0.0
    for j in range(len(edges) - 1):
        m = b == j
        n = int(m.sum())
        if not n:
            continue
        obs, exp = float(bought[m].mean()), float(pred[m].mean())
        se = float(math.sqrt((pred[m] * (1 - pred[m])).sum()) / n)
        abs_err += n * abs(obs - exp)
        noise += n * math.sqrt(2 / math.pi) * se
        buckets.append(
            {
                "bucket": f"{edges[j]:.1f}-{edges[j + 1]:.1f}",
                "views": n,
                "observed": obs,
                "predicted": exp,
                "error": obs - exp,
                "se": se,
                "z": (obs - exp) / se if se > 0 else math.nan,
            }
        )
    return buckets, abs_err / len(rows), noise / len(rows)


@dataclass(frozen=True)
class _DailyUnits:
    sku_days: list[dict[str, Any]]
    ratio: float  # total deviance over the total an exact world expects
    p_value: float
    worst: int  # index of the SKU-day with the largest deviance


def _daily_units(world: World, panel: Panel) -> _DailyUnits:
    """Expected vs observed units per SKU and day, and their Poisson deviance."""
    grid = panel.grid
    step = world.horizon.step_hours
    catalogue = {s.id: s for s in world.skus}
    rate = np.array([catalogue[sku].arrival_rate for sku in panel.sku_ids])
    hod = np.array(world.seasonality.hour_of_day)
    dow = np.array(world.seasonality.day_of_week)
    hours = grid["hour"].to_numpy()
    wd = grid["weekday"].to_numpy()
    k = grid["k"].to_numpy()
    lam = rate[k] * step * (hod / hod.mean())[hours] * (dow / dow.mean())[wd]
    share = np.array([s.share for s in world.segments])
    wk = np.array([s.weekend_multiplier for s in world.segments])
    mix = np.where((wd >= 5)[:, None], share * wk, share)
    mix = mix / mix.sum(axis=1, keepdims=True)
    price, ref, comp, prev = (
        grid[c].to_numpy(dtype=float) for c in ("price", "ref", "competitor", "prev_price")
    )
    inventory = grid["inventory"].to_numpy(dtype=float)
    per_visitor = np.zeros(len(grid))
    for s in range(len(world.segments)):
        seg = np.full(len(grid), s)
        per_visitor += mix[:, s] * _purchase_prob(world, seg, price, ref, comp, prev, inventory)
    grid = grid.assign(expected=lam * per_visitor)
    daily = grid.groupby(["k", "day"]).agg(
        observed=("would_buy", "sum"), expected=("expected", "sum")
    )
    y = daily["observed"].to_numpy(dtype=float)
    mu = daily["expected"].to_numpy(dtype=float)
    dev = poisson_deviance(y, mu)
    e_dev, v_dev = deviance_moments(mu)
    ratio = float(dev.sum() / e_dev.sum()) if e_dev.sum() > 0 else math.inf
    z = (dev.sum() - e_dev.sum()) / math.sqrt(v_dev.sum()) if v_dev.sum() > 0 else math.inf
    sku_days = [
        {
            "sku": panel.sku_ids[int(kk)],
            "day": str(day.date()),
            "observed": int(o),
            "expected": float(e),
            "deviance": float(d),
            "expected_deviance": float(ed),
            "pearson": float((o - e) / math.sqrt(e)) if e > 0 else math.nan,
        }
        for (kk, day), o, e, d, ed in zip(daily.index, y, mu, dev, e_dev, strict=True)
    ]
    worst = int(np.argmax(dev)) if len(dev) else 0
    return _DailyUnits(sku_days, ratio, float(stats.norm.sf(z)), worst)
