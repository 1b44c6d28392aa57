"""`fit_world`: a world's demand side refit from the *decisions* feed — per-segment purchase
logits, segment shares, arrival seasonality and per-SKU traffic, cart abandonment and the
competitor's price process. The catalogue, costs, stock, price ladder, rewards and horizon come from
a base world, since a retailer knows those from its own systems rather than from customer
behaviour."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.feeds import ABANDON
from sim.fit.mle import (
    FitError,
    binomial_logit,
    estimate,
    linear_probability,
    stationary,
    to_json,
)
from sim.fit.panel import Panel, build_panel
from sim.world import World

COMPETITOR_SMOOTHING = 0.5  # Dirichlet pseudo-count per transition cell
MIN_SEGMENT_ROWS = 50  # below this many visitors (or 5 carts) a segment keeps its base values

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
        entry["share"] = estimate(share[i], math.sqrt(p_wd * (1 - p_wd) / max(n_wd, 1)))
        entry["weekend_share"] = estimate(we_share[i], math.sqrt(p_we * (1 - p_we) / max(n_we, 1)))
        se_log_wk = math.sqrt(
            (1 - p_we) / max(c_we[i], 1) + (1 - p_wd) / max(c_wd[i], 1)
        )  # delta method on log(p_we / p_wd)
        entry["weekend_multiplier"] = estimate(wk[i], wk[i] * se_log_wk)
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
    res = binomial_logit(x, n, y, np.array([values[c] for c in names]), offset)
    out: dict[str, Any] = {"logit_converged": res.converged, "logit_cells": len(g)}
    bounds = {
        "intent": (-10.0, 10.0),
        "price_sensitivity": (0.0, 20.0),
        "competitor_sensitivity": (0.0, 20.0),
    }
    new = dict(values)
    for j, c in enumerate(names):
        est = float(res.coef[j])
        out[c] = estimate(est, float(res.se[j]))
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
    base: World, panel: Panel
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
        "hour_of_day": [estimate(v, s) for v, s in zip(hod, hod_se, strict=True)],
        "day_of_week": [
            estimate(v, s) if seen[d] else {"estimate": float(v), "note": "not in logs"}
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
    res = linear_probability(levels, n, y, fit_slope, ab.per_price_increase)
    report["abandons"] = int(y.sum())
    report["carts_after_rise"] = int(n[levels > 0].sum())
    report["converged"] = res.converged
    report["base"] = estimate(res.coef[0], res.se[0])
    values = {"base": float(np.clip(res.coef[0], 0.0, 1.0))}
    if fit_slope:
        report["per_price_increase"] = estimate(res.coef[1], res.se[1])
        values["per_price_increase"] = float(np.clip(res.coef[1], 0.0, 50.0))
    else:
        report["per_price_increase"] = "not identifiable: no price rise in the logs; base kept"
        values["per_price_increase"] = ab.per_price_increase
    return values, report


def _fit_competitor(base: World, panel: Panel) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """The competitor's reference price per SKU and its Markov chain over the base world's states.

    The reference is the SKU's modal hourly competitor price, read as the chain's most visited
    state (by the base chain's stationary distribution; "normal" at ratio 1.0 in the default).
    """
    comp = base.competitor
    ratios = np.array([s.price_ratio for s in comp.states])
    C = len(ratios)
    modal_state = int(np.argmax(stationary(np.array(comp.transition, dtype=float))))
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
            [estimate(p, s) for p, s in zip(r1, r2, strict=True)]
            for r1, r2 in zip(trans, se, strict=True)
        ],
        "periods_per_state": {comp.states[c].name: int(visits[c]) for c in range(C)},
        "periods_off_grid": int(off.sum()),
    }
    return chain, refs, report


def _refit_skus(
    base: World, panel: Panel, rates: np.ndarray, comp_refs: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The catalogue's SKUs with the traffic and competitor reference of the logs, and a report
    per SKU; SKUs absent from the logs keep their base values."""
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
                "arrival_rate": estimate(
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
    return skus, per_sku


def fit_world(base: World, decisions: pd.DataFrame) -> WorldFit:
    """Refit ``base``'s demand side (segments, seasonality, traffic, abandonment, competitor)
    from a decisions log.

    Every SKU in the log must be in ``base``'s catalogue (a `FitError` names the others, since costs,
    stock and the ladder cannot be learned from behaviour); catalogue SKUs absent from the log keep
    their base traffic and competitor reference. Prices are read relative to the catalogue's
    reference price. The report holds every estimate with its standard error and 95 % interval,
    the sample sizes, and both fingerprints.
    """
    panel = build_panel(base, decisions)
    segments, seg_report, notes = _fit_segments(base, panel.rows)
    seasonality, rates, arrivals_report, arrival_notes = _fit_arrivals(base, panel)
    abandonment, ab_report = _fit_abandonment(base, panel.rows)
    competitor, comp_refs, comp_report = _fit_competitor(base, panel)
    notes += arrival_notes

    skus, per_sku = _refit_skus(base, panel, rates, comp_refs)
    absent = [s.id for s in base.skus if s.id not in panel.sku_ids]
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
    return WorldFit(world=world, report=to_json(report))
