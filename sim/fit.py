"""Refit the market from logs, check the refit on held-out days, and fit demand from sales alone.

Three entry points:

- `fit_world` estimates a world's demand side from the *decisions* feed: per-segment purchase logits,
  segment shares, arrival seasonality and per-SKU traffic, cart abandonment and the competitor's
  price process. The catalogue, costs, stock, price ladder, rewards and horizon come from a base
  world, since a retailer knows those from its own systems rather than from customer behaviour.
- `fidelity_check` is the fidelity gate: a refit world must reproduce held-out days, both the
  conversion rate by price bucket and the daily units per SKU.
- `fit_demand_transactions` fits a per-SKU Poisson demand curve to a plain point-of-sale export
  (no impressions), for retailers who have no decision log yet.

Every estimate is a maximum-likelihood fit with `scipy.optimize`; standard errors come from the
inverse of the observed information (the negative Hessian of the log-likelihood at the optimum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from sim.feeds import ABANDON, CARTED, DECISIONS, OUTCOMES, TRANSACTIONS, WOULD_BUY
from sim.stats import Z95
from sim.world import World

# The columns of the feeds the refit reads (a subset of each feed's contract).
DECISION_FIELDS = DECISIONS.subset(
    "ts", "sku", "segment", "base_price", "price_shown", "competitor_price", "inventory", "outcome"
)
TRANSACTION_FIELDS = TRANSACTIONS.subset("ts", "sku", "quantity")
BUCKET_EDGES: tuple[float, ...] = tuple(round(0.6 + 0.1 * i, 10) for i in range(10))
COMPETITOR_SMOOTHING = 0.5  # Dirichlet pseudo-count per transition cell
MIN_SEGMENT_ROWS = 50  # below this many visitors (or 5 carts) a segment keeps its base values
_PRICE_TOL = 0.011  # two prices that each round to the cent can differ by this much


class FitError(ValueError):
    """The logs cannot be fitted or checked; the message names the column, SKU or segment."""


# --------------------------------------------------------------------------------------------------
# small helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def _clean(x: Any) -> Any:
    """JSON-able copy: numpy scalars to Python, NaN and inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_clean(v) for v in x.tolist()]
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, pd.Timestamp):
        return x.isoformat()
    return x


def _estimate(value: float, se: float) -> dict[str, float]:
    """An estimate with its standard error and normal-approximation 95 % interval."""
    return {
        "estimate": float(value),
        "se": float(se),
        "ci_low": float(value - Z95 * se),
        "ci_high": float(value + Z95 * se),
    }


def _require(df: pd.DataFrame, fields: Sequence[str], feed: str) -> None:
    missing = [c for c in fields if c not in df.columns]
    if missing:
        raise FitError(f"{feed} log lacks column(s) {missing}; expected at least {list(fields)}")
    if df.empty:
        raise FitError(f"{feed} log is empty; nothing to fit")


def _inverse(h: np.ndarray) -> np.ndarray:
    """Inverse of an information matrix; NaN where it is singular (a parameter not identified)."""
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return np.full_like(h, np.nan)
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return np.full_like(h, np.nan)
    return np.asarray(cov)


def _stationary(p: np.ndarray) -> np.ndarray:
    n = p.shape[0]
    a = np.vstack([p.T - np.eye(n), np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.asarray(np.clip(pi, 0.0, None))


# --------------------------------------------------------------------------------------------------
# maximum-likelihood fits


@dataclass(frozen=True)
class _Mle:
    coef: np.ndarray
    cov: np.ndarray
    loglik: float
    converged: bool

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


def _binomial_logit(
    x: np.ndarray, n: np.ndarray, y: np.ndarray, start: np.ndarray, offset: np.ndarray
) -> _Mle:
    """Logistic regression on grouped data: ``y`` successes of ``n`` trials, logit ``x b + offset``."""

    def nll(b: np.ndarray) -> float:
        eta = x @ b + offset
        return float(-(y @ eta) + n @ np.logaddexp(0.0, eta))

    def grad(b: np.ndarray) -> np.ndarray:
        return np.asarray(-(x.T @ (y - n * _sigmoid(x @ b + offset))))

    def hess(b: np.ndarray) -> np.ndarray:
        p = _sigmoid(x @ b + offset)
        return np.asarray((x * (n * p * (1.0 - p))[:, None]).T @ x)

    res = optimize.minimize(nll, start, jac=grad, hess=hess, method="trust-exact")
    cov = _inverse(hess(res.x))
    ok = bool(res.success) and bool(np.all(np.isfinite(cov)))
    return _Mle(coef=np.asarray(res.x), cov=cov, loglik=-float(res.fun), converged=ok)


def _poisson_glm(x: np.ndarray, y: np.ndarray) -> _Mle:
    """Poisson regression with log link."""
    start = np.zeros(x.shape[1])
    start[0] = math.log(max(float(y.mean()), 1e-3))

    def nll(b: np.ndarray) -> float:
        eta = x @ b
        return float(np.exp(eta).sum() - y @ eta)

    def grad(b: np.ndarray) -> np.ndarray:
        return np.asarray(x.T @ (np.exp(x @ b) - y))

    def hess(b: np.ndarray) -> np.ndarray:
        return np.asarray((x * np.exp(x @ b)[:, None]).T @ x)

    res = optimize.minimize(nll, start, jac=grad, hess=hess, method="trust-exact")
    cov = _inverse(hess(res.x))
    ok = bool(res.success) and bool(np.all(np.isfinite(cov)))
    return _Mle(coef=np.asarray(res.x), cov=cov, loglik=-float(res.fun), converged=ok)


def _linear_probability(
    r: np.ndarray, n: np.ndarray, y: np.ndarray, fit_slope: bool, slope0: float
) -> _Mle:
    """Binomial MLE of p = clip(a + b * r, 0, 1) from ``y`` events in ``n`` trials at ``r``.

    This is the abandonment model; with ``fit_slope`` False the slope stays at ``slope0``.
    Probabilities are kept a hair inside (0, 1) so one observation the line calls impossible
    cannot make the likelihood -inf; the bounds keep ``a`` a probability and ``b`` within the
    world's range.
    """
    eps = 1e-9

    def line(theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta[0] + (theta[1] if fit_slope else slope0) * r)

    def nll(theta: np.ndarray) -> float:
        p = np.clip(line(theta), eps, 1.0 - eps)
        return float(-(y @ np.log(p) + (n - y) @ np.log1p(-p)))

    def grad(theta: np.ndarray) -> np.ndarray:
        raw = line(theta)
        p = np.clip(raw, eps, 1.0 - eps)
        # where the line is clipped the likelihood is flat in the parameters
        d = np.where((raw > eps) & (raw < 1.0 - eps), y / p - (n - y) / (1.0 - p), 0.0)
        return np.array([-d.sum(), -(d @ r)] if fit_slope else [-d.sum()])

    at_zero = r == 0
    rate0 = float(y[at_zero].sum() / n[at_zero].sum()) if at_zero.any() else 0.1
    start = np.array([min(max(rate0, 0.01), 0.9), *([1.0] if fit_slope else [])])
    bounds = [(1e-6, 1.0 - 1e-6), *([(0.0, 50.0)] if fit_slope else [])]
    res = optimize.minimize(nll, start, jac=grad, method="L-BFGS-B", bounds=bounds)
    p = np.clip(line(res.x), eps, 1.0 - eps)
    # observed information of a binomial in p, chained through the linear p(a, b)
    w = y / p**2 + (n - y) / (1.0 - p) ** 2
    design = np.stack([np.ones_like(r), r], axis=1) if fit_slope else np.ones((len(r), 1))
    cov = _inverse((design * w[:, None]).T @ design)
    return _Mle(
        coef=np.asarray(res.x), cov=cov, loglik=-float(res.fun), converged=bool(res.success)
    )


# --------------------------------------------------------------------------------------------------
# the hourly panel both the fit and the gate read


@dataclass(frozen=True)
class _Panel:
    """A decisions log lined up on the world's decision clock.

    ``rows``: one per visitor, with the SKU index ``k``, segment index ``s``, the period, the
    reference price, the price before this period's move (``prev_price``) and whether that is known.
    ``grid``: one per SKU and period over every whole day the log touches, periods without visitors
    included (their prices carried over from the nearest logged period).
    """

    rows: pd.DataFrame
    grid: pd.DataFrame
    sku_ids: tuple[str, ...]
    n_days: int
    first_day: pd.Timestamp
    resets: int


def _panel(world: World, decisions: pd.DataFrame) -> _Panel:
    _require(decisions, DECISION_FIELDS, "decisions")
    df = decisions[list(DECISION_FIELDS)].copy()
    # unique() before any per-element Python work: logs run to tens of millions of rows
    bad = sorted(set(df["outcome"].astype(str).unique()) - set(OUTCOMES))
    if bad:
        raise FitError(f"decisions.outcome has unknown value(s) {bad}; expected {list(OUTCOMES)}")
    seg_names = [s.name for s in world.segments]
    unknown_seg = sorted(set(df["segment"].astype(str).unique()) - set(seg_names))
    if unknown_seg:
        raise FitError(
            f"decisions.segment has segment(s) {unknown_seg} that the world lacks "
            f"(world segments: {seg_names}); add them to the base world"
        )
    catalogue = {s.id: i for i, s in enumerate(world.skus)}
    unknown_sku = sorted(set(df["sku"].astype(str).unique()) - set(catalogue))
    if unknown_sku:
        shown = unknown_sku[:10]
        more = f" and {len(unknown_sku) - 10} more" if len(unknown_sku) > 10 else ""
        raise FitError(
            f"decisions has SKU(s) {shown}{more} that are not in the world's catalogue; add them "
            "to the base world (costs, stock and price ladder cannot be learned from logs)"
        )
    step = world.horizon.step_hours
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["sku"] = df["sku"].astype(str)
    df["period"] = df["ts"].dt.floor(f"{step}h")
    seg_codes = pd.Categorical(df["segment"].astype(str), categories=seg_names).codes
    df["s"] = seg_codes.astype(np.int64)
    codes, uniques = pd.factorize(df["sku"], sort=True)
    ids = tuple(str(u) for u in uniques)
    df["k"] = codes
    ref_of = {s.id: s.ref_price for s in world.skus}
    df["ref"] = np.array([ref_of[i] for i in ids], dtype=float)[codes]
    for col in ("price_shown", "competitor_price", "base_price"):
        df[col] = df[col].astype(float)
    if (df[["price_shown", "competitor_price", "ref"]] <= 0).any().any():
        raise FitError("decisions: price_shown and competitor_price must be positive")
    df["carted"] = df["outcome"].isin(CARTED)
    df["would_buy"] = df["outcome"].isin(WOULD_BUY)
    df = df.sort_values(["k", "ts"], kind="stable").reset_index(drop=True)

    first_day = df["period"].min().floor("D")
    n_days = int((df["period"].max().floor("D") - first_day) / pd.Timedelta(days=1)) + 1
    periods = pd.date_range(first_day, periods=n_days * 24 // step, freq=f"{step}h")
    hourly = df.groupby(["k", "period"]).agg(
        visitors=("k", "size"),
        would_buy=("would_buy", "sum"),
        price=("price_shown", "last"),
        competitor=("competitor_price", "last"),
        inventory=("inventory", "last"),
    )
    index = pd.MultiIndex.from_product([range(len(ids)), periods], names=["k", "period"])
    grid = hourly.reindex(index).reset_index()
    grid["observed"] = grid["visitors"].notna()
    grid[["visitors", "would_buy"]] = grid[["visitors", "would_buy"]].fillna(0).astype(np.int64)
    by = grid.groupby("k")
    last_seen = by["price"].ffill()
    grid["prev_logged"] = by["price"].shift(1)  # NaN unless the previous period had visitors
    grid["prev_seen"] = last_seen.groupby(grid["k"]).shift(1)  # last logged price before now
    for col in ("price", "competitor", "inventory"):
        grid[col] = by[col].ffill()
        grid[col] = grid.groupby("k")[col].bfill()
    ref_by_k = np.array([world.skus[catalogue[sku]].ref_price for sku in ids])
    grid["ref"] = ref_by_k[grid["k"].to_numpy()]

    prev, known, resets = _previous_prices(world, grid)
    grid["prev_price"] = prev
    grid["prev_known"] = known
    grid["hour"] = grid["period"].dt.hour
    grid["weekday"] = grid["period"].dt.day_of_week
    grid["day"] = grid["period"].dt.floor("D")
    rows = df.merge(
        grid[["k", "period", "prev_price", "prev_known"]], on=["k", "period"], how="left"
    )
    return _Panel(
        rows=rows, grid=grid, sku_ids=ids, n_days=n_days, first_day=first_day, resets=resets
    )


def _previous_prices(world: World, grid: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """The price each period's move started from, and whether the log pins it down.

    - First logged period of a SKU: no previous price, so no rise.
    - Previous period logged: its price, unless the step between them is larger than any one action
      can make. Such a jump is a season start (the world resets to its initial price) or a manual
      override; if the initial price is one move away it is taken as the start, else unknown.
    - Previous period without visitors: the price is unknown (the log holds no row for it); the last
      logged price stands in where a value is needed, but the fit leaves such rows out.
    """
    now = grid["price"].to_numpy(dtype=float)
    ref = grid["ref"].to_numpy(dtype=float)
    logged = grid["prev_logged"].to_numpy(dtype=float)
    seen = grid["prev_seen"].to_numpy(dtype=float)
    max_move = max(abs(a) for a in world.pricing.actions) * ref + _PRICE_TOL
    start = world.pricing.initial_price * ref
    first = np.isnan(seen)
    has_logged = ~np.isnan(logged)
    jump = has_logged & (np.abs(now - logged) > max_move)
    reset = jump & (np.abs(now - start) <= max_move)
    prev = np.where(first, now, np.where(has_logged, logged, seen))
    prev = np.where(reset, start, np.where(jump, now, prev))
    known = first | (has_logged & ~jump) | reset
    # a period without visitors carries its neighbour's price: no evidence of a move there
    observed = grid["observed"].to_numpy()
    prev = np.where(observed, prev, now)
    return prev, known & observed, int((reset & observed).sum())


# --------------------------------------------------------------------------------------------------
# world refit


@dataclass(frozen=True)
class WorldFit:
    """A world refit from logs and the report of every estimate behind it (JSON-able)."""

    world: World
    report: dict[str, Any]


def _fit_segments(
    base: World, rows: pd.DataFrame
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Purchase logit, share and weekend multiplier of every segment."""
    notes: list[str] = []
    weekend = rows["ts"].dt.day_of_week.to_numpy() >= 5
    seg = rows["s"].to_numpy()
    S = len(base.segments)
    n_wd, n_we = int((~weekend).sum()), int(weekend.sum())
    c_wd = np.bincount(seg[~weekend], minlength=S).astype(float)
    c_we = np.bincount(seg[weekend], minlength=S).astype(float)
    base_share = np.array([s.share for s in base.segments])
    if n_wd:
        share = c_wd / n_wd
    else:
        share = base_share.copy()
        notes.append("no weekday visitors: segment shares kept from the base world")
    floor = 1e-6  # a segment absent from the logs keeps a sliver so the world stays valid
    share = np.maximum(share, floor)
    share = share / share.sum()
    base_wk = np.array([s.weekend_multiplier for s in base.segments])
    if n_we and n_wd:
        we_share = np.maximum(c_we / n_we, floor)
        we_share = we_share / we_share.sum()
        # with Σ share·wk = 1 the world's renormalisation leaves the weekend mix exactly we_share
        wk = np.clip(we_share / share, 1e-3, 10.0)
    else:
        we_share = base_share * base_wk / (base_share * base_wk).sum()
        wk = base_wk.copy()
        notes.append("logs lack weekend or weekday visitors: weekend multipliers kept from base")

    segments: list[dict[str, Any]] = []
    entries: dict[str, Any] = {}
    carted = rows["carted"].to_numpy()
    for i, sg in enumerate(base.segments):
        sub = rows[seg == i]
        entry: dict[str, Any] = {"visitors": len(sub), "carts": int(carted[seg == i].sum())}
        p_wd = c_wd[i] / n_wd if n_wd else math.nan
        p_we = c_we[i] / n_we if n_we else math.nan
        entry["share"] = _estimate(share[i], math.sqrt(p_wd * (1 - p_wd) / max(n_wd, 1)))
        entry["weekend_share"] = _estimate(we_share[i], math.sqrt(p_we * (1 - p_we) / max(n_we, 1)))
        se_log_wk = math.sqrt(
            (1 - p_we) / max(c_we[i], 1) + (1 - p_wd) / max(c_wd[i], 1)
        )  # delta method on log(p_we / p_wd)
        entry["weekend_multiplier"] = _estimate(wk[i], wk[i] * se_log_wk)
        values = {
            "intent": sg.intent,
            "price_sensitivity": sg.price_sensitivity,
            "competitor_sensitivity": sg.competitor_sensitivity,
        }
        if len(sub) < MIN_SEGMENT_ROWS or entry["carts"] < 5:
            entry["logit"] = "not identifiable: too few visitors or carts; base values kept"
            notes.append(f"segment {sg.name}: too few visitors or carts, logit kept from base")
        else:
            values, logit = _fit_logit(sg.name, values, sub, notes)
            entry.update(logit)
        entries[sg.name] = entry
        segments.append(
            {
                "name": sg.name,
                "share": float(share[i]),
                "weekend_multiplier": float(wk[i]),
                **values,
            }
        )
    return segments, entries, notes


def _resid_sd(col: np.ndarray, others: list[np.ndarray], w: np.ndarray) -> float:
    """Weighted spread of ``col`` left after regressing it on ``others``: ~0 means collinear."""
    a = np.stack(others, axis=1) * np.sqrt(w)[:, None]
    b = col * np.sqrt(w)
    coef = np.linalg.lstsq(a, b, rcond=None)[0]
    resid = b - a @ coef
    return float(np.sqrt(resid @ resid / w.sum()))


def _fit_logit(
    name: str, values: dict[str, float], sub: pd.DataFrame, notes: list[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """MLE of intent, price sensitivity and competitor sensitivity for one segment."""
    # the likelihood depends on a visitor only through the (price, reference, competitor) cell
    g = sub.groupby(["price_shown", "ref", "competitor_price"], sort=False)["carted"].agg(
        ["size", "sum"]
    )
    price = g.index.get_level_values(0).to_numpy(dtype=float)
    ref = g.index.get_level_values(1).to_numpy(dtype=float)
    comp = g.index.get_level_values(2).to_numpy(dtype=float)
    n = g["size"].to_numpy(dtype=float)
    y = g["sum"].to_numpy(dtype=float)
    cols = {
        "intent": np.ones_like(n),
        "price_sensitivity": -np.log(price / ref),
        "competitor_sensitivity": -np.log(price / comp),
    }
    # a slope is identified only if its regressor moves independently of the ones already in
    tol = 1e-4
    names = ["intent"]
    fixed: list[str] = []
    for c in ("price_sensitivity", "competitor_sensitivity"):
        if _resid_sd(cols[c], [cols[m] for m in names], n) > tol:
            names.append(c)
        else:
            fixed.append(c)
    x = np.stack([cols[c] for c in names], axis=1)
    offset = np.zeros_like(n)
    for c in fixed:
        offset = offset + values[c] * cols[c]  # a fixed slope enters at its base value
    res = _binomial_logit(x, n, y, np.array([values[c] for c in names]), offset)
    out: dict[str, Any] = {"logit_converged": res.converged, "logit_cells": len(g)}
    bounds = {
        "intent": (-10.0, 10.0),
        "price_sensitivity": (0.0, 20.0),
        "competitor_sensitivity": (0.0, 20.0),
    }
    new = dict(values)
    for j, c in enumerate(names):
        est = float(res.coef[j])
        out[c] = _estimate(est, float(res.se[j]))
        lo, hi = bounds[c]
        if not lo <= est <= hi:
            notes.append(f"segment {name}: {c} estimate {est:.3f} clipped to [{lo}, {hi}]")
        new[c] = float(np.clip(est, lo, hi))
    for c in fixed:
        out[c] = "not identifiable: no independent variation in the logs; base value kept"
        notes.append(f"segment {name}: {c} not identifiable, base value kept")
    if not res.converged:
        notes.append(f"segment {name}: purchase logit did not converge")
    return new, out


def _fit_arrivals(
    base: World, panel: _Panel
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any], list[str]]:
    """Hour-of-day and day-of-week seasonality and per-SKU arrival rates.

    Visitors per SKU and period are Poisson with mean rate_k x step x hod[hour] x dow[weekday]. On
    the complete SKU x period grid the MLE of this log-linear model is closed-form: the hour and
    SKU factors are proportional to their visitor totals, the weekday factor to visitors per
    logged day of that weekday (weekdays can occur unequally often in the window).
    """
    notes: list[str] = []
    grid = panel.grid
    step = base.horizon.step_hours
    visitors = grid["visitors"].to_numpy(dtype=float)
    total = visitors.sum()
    per_day = 24 // step
    slot = grid["hour"].to_numpy() // step
    y_slot = np.bincount(slot, weights=visitors, minlength=per_day)
    slot_f = per_day * y_slot / total  # mean 1 over the day's periods
    slot_se = per_day * np.sqrt(y_slot * (total - y_slot) / total**3)
    hod = np.repeat(slot_f, step)
    hod_se = np.repeat(slot_se, step)

    wd = grid["weekday"].to_numpy()
    y_wd = np.bincount(wd, weights=visitors, minlength=7)
    day_wd = pd.date_range(panel.first_day, periods=panel.n_days, freq="D").day_of_week
    n_wd = np.bincount(np.asarray(day_wd), minlength=7).astype(float)
    seen = n_wd > 0
    rate_wd = np.where(seen, y_wd / np.maximum(n_wd, 1.0), 0.0)
    base_dow = np.array(base.seasonality.day_of_week, dtype=float)
    if not seen.all():
        # weekdays the window never covers keep their base weight relative to the covered ones
        scale = rate_wd[seen].sum() / max(base_dow[seen].sum(), 1e-12)
        rate_wd = np.where(seen, rate_wd, base_dow * scale)
        missing = [d for d in range(7) if not seen[d]]
        notes.append(f"weekdays {missing} not in the logs: their traffic kept relative to base")
    dow = rate_wd / rate_wd.mean()
    dow_se = np.where(seen & (y_wd > 0), dow / np.sqrt(np.maximum(y_wd, 1.0)), np.nan)
    if dow.max() <= 0:
        raise FitError("decisions: no visitors on any weekday; cannot fit seasonality")

    hours = grid["hour"].to_numpy()
    exposure = step * (hod / hod.mean())[hours] * (dow / dow.mean())[wd]
    k = grid["k"].to_numpy()
    y_k = np.bincount(k, weights=visitors, minlength=len(panel.sku_ids))
    e_k = np.bincount(k, weights=exposure, minlength=len(panel.sku_ids))
    rates = y_k / e_k
    seasonality = {
        "hour_of_day": tuple(float(v) for v in np.maximum(hod, 0.0)),
        "day_of_week": tuple(float(v) for v in np.maximum(dow, 0.0)),
    }
    report = {
        "model": "visitors ~ Poisson(rate[sku] * step_hours * hod[hour] * dow[weekday])",
        "hour_of_day": [_estimate(v, s) for v, s in zip(hod, hod_se, strict=True)],
        "day_of_week": [
            _estimate(v, s) if seen[d] else {"estimate": float(v), "note": "not in logs"}
            for d, (v, s) in enumerate(zip(dow, dow_se, strict=True))
        ],
        "days_per_weekday": [int(v) for v in n_wd],
        "visitors": int(total),
        "sku_periods": len(grid),
        "sku_periods_with_visitors": int(grid["observed"].sum()),
    }
    return seasonality, rates, report, notes


def _fit_abandonment(base: World, rows: pd.DataFrame) -> tuple[dict[str, float], dict[str, Any]]:
    """Cart abandonment: p = clip(base + per_price_increase * max(0, log(p_now / p_prev)), 0, 1).

    Only carts with stock on hand count (with none the market records no abandonment) and only
    those whose previous price the log pins down.
    """
    ab = base.abandonment
    use = rows["carted"] & (rows["inventory"] > 0) & rows["prev_known"].astype(bool)
    sub = rows[use]
    report: dict[str, Any] = {
        "model": "abandon ~ Bernoulli(clip(base + per_price_increase * rise, 0, 1))",
        "carts": int(rows["carted"].sum()),
        "carts_used": len(sub),
        "carts_without_stock": int((rows["carted"] & (rows["inventory"] <= 0)).sum()),
        "carts_previous_price_unknown": int(
            (rows["carted"] & (rows["inventory"] > 0) & ~rows["prev_known"].astype(bool)).sum()
        ),
    }
    if len(sub) < 20:
        report["note"] = "not identifiable: fewer than 20 usable carts; base values kept"
        return {"base": ab.base, "per_price_increase": ab.per_price_increase}, report
    rise = np.maximum(0.0, np.log(sub["price_shown"].to_numpy() / sub["prev_price"].to_numpy()))
    key = np.round(rise, 9)
    y_all = (sub["outcome"] == ABANDON).to_numpy(dtype=float)
    levels, inv = np.unique(key, return_inverse=True)
    n = np.bincount(inv).astype(float)
    y = np.bincount(inv, weights=y_all)
    fit_slope = bool((levels > 0).any())
    res = _linear_probability(levels, n, y, fit_slope, ab.per_price_increase)
    report["abandons"] = int(y.sum())
    report["carts_after_rise"] = int(n[levels > 0].sum())
    report["converged"] = res.converged
    report["base"] = _estimate(res.coef[0], res.se[0])
    values = {"base": float(np.clip(res.coef[0], 0.0, 1.0))}
    if fit_slope:
        report["per_price_increase"] = _estimate(res.coef[1], res.se[1])
        values["per_price_increase"] = float(np.clip(res.coef[1], 0.0, 50.0))
    else:
        report["per_price_increase"] = "not identifiable: no price rise in the logs; base kept"
        values["per_price_increase"] = ab.per_price_increase
    return values, report


def _fit_competitor(
    base: World, panel: _Panel
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """The competitor's reference price per SKU and its Markov chain over the base world's states.

    The reference is the SKU's modal hourly competitor price, read as the chain's most visited
    state (by the base chain's stationary distribution; "normal" at ratio 1.0 in the default).
    """
    comp = base.competitor
    ratios = np.array([s.price_ratio for s in comp.states])
    C = len(ratios)
    modal_state = int(np.argmax(_stationary(np.array(comp.transition, dtype=float))))
    grid = panel.grid
    obs = grid[grid["observed"]]
    freq = obs.groupby(["k", "competitor"]).size().rename("n").reset_index()
    freq = freq.sort_values(["k", "n", "competitor"], ascending=[True, False, True])
    modes = freq.drop_duplicates("k").set_index("k")["competitor"]
    refs = modes.reindex(range(len(panel.sku_ids))).to_numpy(dtype=float) / ratios[modal_state]

    k = grid["k"].to_numpy()
    ratio = grid["competitor"].to_numpy(dtype=float) / refs[k]
    dist = np.abs(np.log(ratio)[:, None] - np.log(ratios)[None, :])
    state = dist.argmin(axis=1)
    observed = grid["observed"].to_numpy()
    off = observed & (np.abs(ratio - ratios[state]) > 0.05)
    # grid rows are sorted by SKU then period: a transition links consecutive logged periods
    pair = observed[:-1] & observed[1:] & (k[:-1] == k[1:])
    counts = np.zeros((C, C))
    np.add.at(counts, (state[:-1][pair], state[1:][pair]), 1.0)
    smoothed = counts + COMPETITOR_SMOOTHING
    trans = smoothed / smoothed.sum(axis=1, keepdims=True)
    se = np.sqrt(trans * (1 - trans) / smoothed.sum(axis=1, keepdims=True))
    visits = np.bincount(state[observed], minlength=C)
    chain = {
        "states": [s.model_dump() for s in comp.states],
        "transition": tuple(tuple(float(v) for v in row) for row in trans),
        "initial_state": comp.initial_state,
    }
    report = {
        "model": "state = nearest base ratio of competitor_price / competitor_ref; Markov chain",
        "modal_state": comp.states[modal_state].name,
        "smoothing": COMPETITOR_SMOOTHING,
        "transitions": int(pair.sum()),
        "counts": counts.astype(int).tolist(),
        "transition": [
            [_estimate(p, s) for p, s in zip(r1, r2, strict=True)]
            for r1, r2 in zip(trans, se, strict=True)
        ],
        "periods_per_state": {comp.states[c].name: int(visits[c]) for c in range(C)},
        "periods_off_grid": int(off.sum()),
    }
    return chain, refs, report


def fit_world(base: World, decisions: pd.DataFrame) -> WorldFit:
    """Refit ``base``'s demand side (segments, seasonality, traffic, abandonment, competitor)
    from a decisions log.

    Every SKU in the log must be in ``base``'s catalogue (a `FitError` names the others, since costs,
    stock and the ladder cannot be learned from behaviour); catalogue SKUs absent from the log keep
    their base traffic and competitor reference. Prices are read relative to the catalogue's
    reference price. The report holds every estimate with its standard error and 95 % interval,
    the sample sizes, and both fingerprints.
    """
    panel = _panel(base, decisions)
    segments, seg_report, notes = _fit_segments(base, panel.rows)
    seasonality, rates, arrivals_report, arrival_notes = _fit_arrivals(base, panel)
    abandonment, ab_report = _fit_abandonment(base, panel.rows)
    competitor, comp_refs, comp_report = _fit_competitor(base, panel)
    notes += arrival_notes

    index = {sku: i for i, sku in enumerate(panel.sku_ids)}
    per_sku: dict[str, Any] = {}
    skus = []
    visitors = panel.grid.groupby("k")["visitors"].sum()
    base_seen = panel.rows.groupby("k")["base_price"].agg(["min", "max"])
    for sku in base.skus:
        d = sku.model_dump()
        if sku.id in index:
            i = index[sku.id]
            d["arrival_rate"] = float(np.clip(rates[i], 1e-6, 500.0))
            d["competitor_ref"] = float(comp_refs[i])
            lo, hi = base_seen.loc[i, "min"], base_seen.loc[i, "max"]
            per_sku[sku.id] = {
                "visitors": int(visitors.loc[i]),
                "arrival_rate": _estimate(
                    rates[i], rates[i] / math.sqrt(max(float(visitors.loc[i]), 1.0))
                ),
                "competitor_ref": float(comp_refs[i]),
                "base_price_in_logs": [float(lo), float(hi)],
                "base_price_matches_catalogue": bool(
                    abs(lo - sku.ref_price) <= 0.005 and abs(hi - sku.ref_price) <= 0.005
                ),
            }
        else:
            per_sku[sku.id] = {"visitors": 0, "note": "not in the logs: base traffic kept"}
        skus.append(d)
    absent = [s.id for s in base.skus if s.id not in index]
    if absent:
        notes.append(f"{len(absent)} catalogue SKU(s) not in the logs kept their base traffic")

    data = base.model_dump(mode="json")
    first = panel.first_day.date()
    last = (panel.first_day + pd.Timedelta(days=panel.n_days - 1)).date()
    data.update(
        name=f"{base.name}-fit"[:80],
        description=(
            f"{base.name} refit from {len(panel.rows)} decisions logged {first}..{last}; "
            f"base world {base.fingerprint()[:12]}"
        ),
        segments=segments,
        seasonality=seasonality,
        abandonment=abandonment,
        competitor=competitor,
        skus=skus,
    )
    try:
        world = World.model_validate(data)
    except ValueError as err:
        raise FitError(f"the refit world does not validate: {err}") from None
    report = {
        "world_fingerprint": world.fingerprint(),
        "base_fingerprint": base.fingerprint(),
        "sample": {
            "decisions": len(panel.rows),
            "carts": int(panel.rows["carted"].sum()),
            "first_day": str(first),
            "last_day": str(last),
            "days": panel.n_days,
            "skus": len(panel.sku_ids),
            "season_resets_detected": panel.resets,
        },
        "segments": seg_report,
        "arrivals": arrivals_report,
        "skus": per_sku,
        "abandonment": ab_report,
        "competitor": comp_report,
        "notes": notes,
    }
    return WorldFit(world=world, report=_clean(report))


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
            _clean(
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
    q = _sigmoid(intent - beta * np.log(price / ref) - gamma * np.log(price / comp))
    ab = world.abandonment
    rise = np.maximum(0.0, np.log(price / prev))
    a = np.clip(ab.base + ab.per_price_increase * rise, 0.0, 1.0) * (inventory > 0)
    return np.asarray(q * (1.0 - a))


def _poisson_deviance(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, 1e-12)
    ylog = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return np.asarray(2.0 * (ylog - (y - mu)))


def _deviance_moments(mu: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the Poisson deviance of one count with mean ``mu``, exactly (summed
    over the count's support); for small means the mean is well below 1."""
    mean = np.zeros_like(mu)
    var = np.zeros_like(mu)
    order = np.argsort(mu)
    for lo in range(0, len(mu), chunk):
        idx = order[lo : lo + chunk]
        m = np.maximum(mu[idx], 1e-12)
        y_lo = max(0, math.floor(m.min() - 12 * math.sqrt(m.min()) - 10))
        y_hi = math.ceil(m.max() + 12 * math.sqrt(m.max()) + 20)
        y = np.arange(y_lo, y_hi + 1, dtype=float)[None, :]
        pmf = stats.poisson.pmf(y, m[:, None])
        d = _poisson_deviance(y, m[:, None])
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
    panel = _panel(world, heldout)
    rows, grid = panel.rows, panel.grid

    # conversion by price bucket
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
    conversion_error = abs_err / len(rows)
    conversion_noise = noise / len(rows)

    # daily units per SKU
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
    dev = _poisson_deviance(y, mu)
    e_dev, v_dev = _deviance_moments(mu)
    deviance_ratio = float(dev.sum() / e_dev.sum()) if e_dev.sum() > 0 else math.inf
    z = (dev.sum() - e_dev.sum()) / math.sqrt(v_dev.sum()) if v_dev.sum() > 0 else math.inf
    p_value = float(stats.norm.sf(z))
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

    failed: list[str] = []
    if not conversion_error <= max_conversion_error:
        worst = max(buckets, key=lambda r: r["views"] * abs(r["error"]))
        failed.append(
            f"conversion error {conversion_error:.4f} > {max_conversion_error} (sampling noise "
            f"~{conversion_noise:.4f}; worst bucket {worst['bucket']}: observed "
            f"{worst['observed']:.3f} vs predicted {worst['predicted']:.3f} over "
            f"{worst['views']} views)"
        )
    if not deviance_ratio <= max_deviance_ratio:
        worst_i = int(np.argmax(dev))
        w = sku_days[worst_i]
        failed.append(
            f"daily-units deviance ratio {deviance_ratio:.2f} > {max_deviance_ratio} over "
            f"{len(sku_days)} SKU-days (worst {w['sku']} on {w['day']}: observed "
            f"{w['observed']} vs expected {w['expected']:.1f})"
        )
    if failed:
        message = "fidelity gate failed: " + "; ".join(failed)
    else:
        message = (
            f"fidelity gate passed: conversion error {conversion_error:.4f} <= "
            f"{max_conversion_error} (sampling noise ~{conversion_noise:.4f}); deviance ratio "
            f"{deviance_ratio:.2f} <= {max_deviance_ratio} over {len(sku_days)} SKU-days"
        )
    return FidelityReport(
        passed=not failed,
        conversion_error=float(conversion_error),
        deviance_ratio=deviance_ratio,
        buckets=_clean(buckets),
        sku_days=_clean(sku_days),
        message=message,
        conversion_noise=float(conversion_noise),
        deviance_p_value=p_value,
    )


# --------------------------------------------------------------------------------------------------
# transactions-only demand


@dataclass(frozen=True)
class DemandFit:
    """Per-SKU price elasticities fitted to a transactions log, and a summary of their signs."""

    table: pd.DataFrame
    summary: dict[str, Any]

    def report(self) -> dict[str, Any]:
        return dict(_clean({"summary": self.summary, "skus": self.table.to_dict(orient="records")}))


def _daily_sales(transactions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    _require(transactions, TRANSACTION_FIELDS, "transactions")
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


def fit_demand_transactions(transactions: pd.DataFrame, min_days: int = 14) -> DemandFit:
    """Per SKU, a Poisson regression of daily units on log(daily mean unit price) and weekday.

    The elasticity is the log-price coefficient. Days without sales carry no price and are left
    out, so each fit uses the SKU's selling days only. Standard errors come from the inverse
    Fisher information, widened by sqrt(Pearson chi2 / dof) where the daily counts are
    over-dispersed (quasi-Poisson). A SKU with fewer than ``min_days`` selling days or without
    price variation is reported as not identifiable. Caution: prices set by a pricer that reacts
    to demand (stock, competitor) are endogenous, so these are associations, not causal effects.
    """
    if min_days < 3:
        raise ValueError(f"min_days must be >= 3 (got {min_days})")
    daily, dropped = _daily_sales(transactions)
    records: list[dict[str, Any]] = []
    for sku, d in daily.groupby("sku", sort=True):
        y = d["units"].to_numpy(dtype=float)
        log_p = np.log(d["price"].to_numpy(dtype=float))
        rec: dict[str, Any] = {
            "sku": sku,
            "days": len(d),
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
        if len(d) < min_days:
            rec["reason"] = f"only {len(d)} selling days (< {min_days})"
            records.append(rec)
            continue
        if np.std(log_p) < 1e-3:
            rec["reason"] = "no price variation"
            records.append(rec)
            continue
        weekday = d["day"].dt.day_of_week.to_numpy()
        present = sorted(set(weekday.tolist()))
        dummies = [(weekday == w).astype(float) for w in present[1:]]
        x = np.column_stack([np.ones_like(y), log_p - log_p.mean(), *dummies])
        if len(y) <= x.shape[1]:
            rec["reason"] = f"{len(y)} selling days for {x.shape[1]} parameters"
            records.append(rec)
            continue
        res = _poisson_glm(x, y)
        mu = np.exp(x @ res.coef)
        dispersion = float(((y - mu) ** 2 / mu).sum() / (len(y) - x.shape[1]))
        se = float(res.se[1]) * math.sqrt(max(1.0, dispersion))
        est = float(res.coef[1])
        ci = _estimate(est, se)
        rec.update(
            elasticity=est,
            se=se,
            ci_low=ci["ci_low"],
            ci_high=ci["ci_high"],
            dispersion=dispersion,
            negative=est < 0,
            significant=bool(ci["ci_high"] < 0 or ci["ci_low"] > 0),
            converged=res.converged,
            identifiable=res.converged and math.isfinite(se),
            reason="" if res.converged else "the likelihood maximisation did not converge",
        )
        records.append(rec)
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
    return DemandFit(table=table, summary=_clean(summary))
