"""Monitoring of the live pricing: drift and business KPIs from the decisions feed, per window.

One call of `monitor_window` covers the prices shown in ``[start, end)`` (the hourly monitor DAG's
data interval, or everything since its last successful run). It computes:

* **KPIs**: prices shown, conversion (purchases per price shown), revenue, gross profit, margin
  (gross profit / revenue), exploration rate (share of prices shown through an action the logging
  policy did not favour, i.e. logged with propensity < 0.5 — under ε-greedy that is ε·(A−1)/A),
  and the action mix.
* **Drift**: the population stability index (PSI) of each monitored feature against the
  champion's *training data* — the decisions logged in the window the champion's night trained on
  (its ``logical_date`` tag, ``PRICING_TRAIN_DAYS`` days back). Demand, the customer mix and
  prices follow the hour of the day and the day of the week, so the window is compared with the
  reference rows *of the same hours of the same weekdays* (a training window of at least a week
  covers every slot); the time features themselves are therefore not scored.

  Two kinds of features are scored. *Market* features — the competitor's price relative to the
  reference price, visitors per SKU-hour, the customer-segment mix and unit cost relative to the
  reference price — move only when the market does: any of them above
  ``PRICING_DRIFT_PSI_THRESHOLD`` (0.2 by default, the usual "significant shift") is drift.
  *Policy* features — price shown relative to the reference price, and stock on hand — are
  reported too, but move by design whenever a new champion prices differently from the policy
  that logged its training data, so they do not raise the alarm.
  A window with fewer than ``PRICING_MONITOR_MIN_ROWS`` prices shown is not judged. PSI treats
  the rows as independent, while a SKU's competitor price and stock persist for hours: it is
  meaningful across a catalogue (tens of SKUs or more); for a handful of SKUs, monitor longer
  windows.

It also carries the last night's *served parity* (`pipeline.release.parity`: does the served
champion decide and earn what its evaluation says?), so that its alarm reaches the same places.

The result is written three ways (`pipeline.ops.publish`): ``reports/monitor/date=D/hour=HH.json``
in the lake; metrics of the MLflow run "monitor D" in the experiment ``pricing-monitor`` (step =
hour of the window start);
and, when ``PRICING_PUSHGATEWAY_URL`` is set, gauges ``pricing_monitor_*`` pushed to a Prometheus
Pushgateway that Grafana reads; ``reports/monitor/watermark.json`` keeps the end of the last
published window, where the next hourly run starts. The reference histograms are computed once per
champion and kept under ``reports/monitor/reference/``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts import MONITOR_PREFIX
from pipeline.data.lake import Lake, open_lake
from pipeline.errors import PricingError
from pipeline.ops.publish import publish_window
from pipeline.release.parity import latest_parity
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.feeds import DECISIONS, PURCHASE

log = logging.getLogger("pricing.monitor")

REFERENCE_FORMAT = 2
N_BINS = 10
EPS = 1e-4  # floor of a bin's share in the PSI (an empty bin would make it infinite)
#: exogenous: a shift here means the market changed
MARKET_FEATURES = ("competitor_rel", "views_per_sku_hour", "segment", "cost_rel")
#: endogenous: a new champion shifts them by design
POLICY_FEATURES = ("price_rel", "inventory")
CATEGORICAL = ("segment",)
#: the decisions feed's columns the monitor reads (ids, policy and A/B arm are not needed)
NEEDED_COLUMNS = DECISIONS.without("event_id", "customer_id", "policy_id", "ab_arm")


class MonitorError(PricingError, RuntimeError):
    """The window cannot be monitored (bad window, unreadable or malformed decisions)."""


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise MonitorError(f"window bound {value.isoformat()} has no time zone; pass a UTC time")
    return value.astimezone(dt.UTC)


def _days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    last = (end - dt.timedelta(microseconds=1)).date()
    return [start.date() + dt.timedelta(days=i) for i in range((last - start.date()).days + 1)]


def read_decisions(lake: Lake, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The decisions logged in ``[start, end)`` (UTC), from the raw partitions of those days.

    A day without a partition contributes nothing (a quiet or quarantined day)."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise MonitorError(f"empty window: end {end.isoformat()} is not after {start.isoformat()}")
    frames = []
    for day in _days(start, end):
        if not lake.has_partition("raw", "decisions", day):
            continue
        df = lake.read_partition("raw", "decisions", day)
        missing = [c for c in NEEDED_COLUMNS if c not in df.columns]
        if missing:
            raise MonitorError(
                f"decisions partition {lake.partition_prefix('raw', 'decisions', day)} lacks "
                f"column(s) {missing}; the feed contract is in pipeline/data/validation.py"
            )
        ts = pd.to_datetime(df["ts"], utc=True)
        keep = (ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))
        frames.append(df.loc[keep, list(NEEDED_COLUMNS)].assign(ts=ts[keep]))
    if not frames:
        return pd.DataFrame(columns=list(NEEDED_COLUMNS))
    return pd.concat(frames, ignore_index=True)


# -- features -------------------------------------------------------------------------------------


N_SLOTS = 7 * 24  # hour-of-week slots: Monday 00:00 is slot 0


def _slot(ts: pd.Series) -> np.ndarray:
    return np.asarray((ts.dt.day_of_week * 24 + ts.dt.hour).to_numpy(dtype=np.int64))


def feature_values(
    decisions: pd.DataFrame, complete_hours: tuple[dt.datetime, dt.datetime] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each monitored feature as (values, hour-of-week slot of each value).

    Per-price features have one value per price shown; ``views_per_sku_hour`` has one per
    SKU-hour with at least one view, counting only the clock hours wholly inside
    ``complete_hours`` when given (a window cut mid-hour would otherwise look like a drop in
    traffic)."""
    ts = pd.to_datetime(decisions["ts"], utc=True)
    slot = _slot(ts)
    base = pd.to_numeric(decisions["base_price"], errors="coerce").to_numpy(dtype=float)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["price_rel"] = (decisions["price_shown"].to_numpy(dtype=float) / base, slot)
        out["competitor_rel"] = (decisions["competitor_price"].to_numpy(dtype=float) / base, slot)
        out["cost_rel"] = (decisions["unit_cost"].to_numpy(dtype=float) / base, slot)
    out["inventory"] = (decisions["inventory"].to_numpy(dtype=float), slot)
    out["segment"] = (decisions["segment"].astype(str).to_numpy(), slot)
    cells = (
        pd.DataFrame({"sku": decisions["sku"].to_numpy(), "slot": ts.dt.floor("h")})
        .value_counts()
        .reset_index(name="views")
    )
    if complete_hours is not None:
        lo, hi = (pd.Timestamp(t) for t in complete_hours)
        whole = (cells["slot"] >= lo) & (cells["slot"] + pd.Timedelta(hours=1) <= hi)
        cells = cells[whole]
    out["views_per_sku_hour"] = (cells["views"].to_numpy(dtype=float), _slot(cells["slot"]))
    return {k: _finite(v, h) for k, (v, h) in out.items()}


def _finite(values: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype.kind == "f":
        ok = np.isfinite(values)
        return values[ok], slots[ok]
    return values, slots


@dataclass(frozen=True)
class Histogram:
    """Bins of one feature and the reference counts per hour-of-week slot (168 rows)."""

    edges: list[float] | None  # inner bin edges of a numeric feature
    categories: list[str] | None  # categories of a categorical one (plus one "other" bin)
    counts: np.ndarray  # shape (N_SLOTS, bins)

    def bin(self, values: np.ndarray) -> np.ndarray:
        if self.edges is not None:
            return np.searchsorted(np.asarray(self.edges), values.astype(float), side="right")
        assert self.categories is not None
        index = {c: i for i, c in enumerate(self.categories)}
        other = len(self.categories)
        return np.array([index.get(str(v), other) for v in values], dtype=np.int64)

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges,
            "categories": self.categories,
            "counts": self.counts.astype(int).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        return cls(d["edges"], d["categories"], np.asarray(d["counts"], dtype=np.int64))


def _histogram(name: str, values: np.ndarray, slots: np.ndarray) -> Histogram:
    if name in CATEGORICAL:
        categories = sorted({str(v) for v in values})
        hist = Histogram(None, categories, np.zeros((N_SLOTS, len(categories) + 1), dtype=np.int64))
    else:
        qs = np.quantile(values.astype(float), np.linspace(0, 1, N_BINS + 1)) if len(values) else []
        inner = sorted({float(q) for q in qs[1:-1]})
        hist = Histogram(inner, None, np.zeros((N_SLOTS, len(inner) + 1), dtype=np.int64))
    np.add.at(hist.counts, (slots, hist.bin(values)), 1)
    return hist


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> float:
    """Population stability index Σ (a − e)·ln(a / e) of two count vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs counts in both distributions")
    e = np.clip(e / e.sum(), eps, None)
    a = np.clip(a / a.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


# -- the champion's reference ---------------------------------------------------------------------


def _reference_path(model: str, version: str, night: dt.date, first: dt.date) -> str:
    return (
        f"{MONITOR_PREFIX}/reference/model={model}/version={version}/"
        f"{first.isoformat()}_{night.isoformat()}.json"
    )


def reference(settings: Settings, lake: Lake, version: str, logical_date: str) -> dict[str, Any]:
    """Histograms of the decisions in the champion's training window, per hour-of-week slot
    (cached per model, version and window; an empty one is not cached)."""
    try:
        night = dt.date.fromisoformat(logical_date)
    except ValueError:
        raise MonitorError(
            f"champion v{version} has logical_date tag {logical_date!r}, not a date YYYY-MM-DD"
        ) from None
    first = night - dt.timedelta(days=settings.train_days - 1)
    path = _reference_path(settings.model_name, version, night, first)
    if lake.exists(path):
        cached: dict[str, Any] = json.loads(lake.read_bytes(path))
        if cached.get("format") == REFERENCE_FORMAT:
            return cached
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(night + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    decisions = read_decisions(lake, start, end)
    hists = {
        name: _histogram(name, values, slots).to_dict()
        for name, (values, slots) in feature_values(decisions).items()
    }
    ref = {
        "format": REFERENCE_FORMAT,
        "version": version,
        "start": first.isoformat(),
        "end": night.isoformat(),
        "rows": len(decisions),
        "features": hists,
    }
    if len(decisions):
        lake.write_bytes(path, json.dumps(ref).encode())
    log.info(
        "reference for champion v%s: %d decisions %s..%s", version, len(decisions), first, night
    )
    return ref


def _window_slots(start: dt.datetime, end: dt.datetime) -> list[int]:
    slots: set[int] = set()
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end and len(slots) < N_SLOTS:
        slots.add(hour.weekday() * 24 + hour.hour)
        hour += dt.timedelta(hours=1)
    return sorted(slots)


def drift(
    ref: dict[str, Any],
    decisions: pd.DataFrame,
    start: dt.datetime,
    end: dt.datetime,
    settings: Settings,
) -> dict[str, Any]:
    """PSI per feature of the window against the reference rows of the same hours of the week."""
    out: dict[str, Any] = {
        "threshold": settings.drift_psi_threshold,
        "alarm_features": list(MARKET_FEATURES),
        "reference": {k: ref[k] for k in ("version", "start", "end", "rows")},
        "psi": {},
    }
    if len(decisions) < settings.monitor_min_rows:
        out["status"] = "insufficient"
        out["message"] = (
            f"{len(decisions)} prices shown, under PRICING_MONITOR_MIN_ROWS="
            f"{settings.monitor_min_rows}: drift not judged"
        )
        return out
    if not ref["rows"]:
        out["status"] = "no_reference"
        out["message"] = (
            f"no decisions in the lake for champion v{ref['version']}'s training window "
            f"{ref['start']}..{ref['end']} (raw/decisions): drift not judged"
        )
        return out
    slots = _window_slots(start, end)
    values = feature_values(decisions, complete_hours=(start, end))
    for name, spec in ref["features"].items():
        hist = Histogram.from_dict(spec)
        expected = hist.counts[slots].sum(axis=0)
        vals, _ = values[name]
        if expected.sum() == 0 or len(vals) == 0:
            continue
        actual = np.bincount(hist.bin(vals), minlength=hist.n_bins)
        out["psi"][name] = round(psi(expected, actual), 6)
    scored = {k: v for k, v in out["psi"].items() if k in MARKET_FEATURES}
    if not scored:
        out["status"] = "no_reference"
        out["message"] = (
            f"champion v{ref['version']}'s training window {ref['start']}..{ref['end']} has no "
            f"decisions at the window's hours of the week: drift not judged (a training window "
            "of at least 7 days covers them all)"
        )
        return out
    worst = max(scored, key=lambda k: scored[k])
    out["max_feature"], out["max_psi"] = worst, scored[worst]
    over = {k: v for k, v in scored.items() if v > settings.drift_psi_threshold}
    out["status"] = "drift" if over else "ok"
    if over:
        listed = ", ".join(f"{k} PSI {v:.3f}" for k, v in sorted(over.items(), key=lambda x: -x[1]))
        out["message"] = (
            f"drift against champion v{ref['version']}'s training data: {listed} "
            f"(threshold {settings.drift_psi_threshold})"
        )
    else:
        out["message"] = (
            f"no drift: largest market-feature PSI {scored[worst]:.3f} ({worst}) ≤ "
            f"{settings.drift_psi_threshold}"
        )
    return out


# -- KPIs -----------------------------------------------------------------------------------------


def kpis(decisions: pd.DataFrame) -> dict[str, Any]:
    """Business KPIs of the prices shown in the window. The raw feed of the current day is not
    validated yet: rows without a price, action or propensity are counted in ``bad_rows`` and
    left out; an unknown unit cost counts as no cost."""
    price_ok = pd.to_numeric(decisions["price_shown"], errors="coerce").notna()
    action_ok = pd.to_numeric(decisions["action"], errors="coerce").notna()
    prop_ok = pd.to_numeric(decisions["propensity"], errors="coerce").notna()
    usable = price_ok & action_ok & prop_ok
    bad = int((~usable).sum())
    decisions = decisions[usable]
    n = len(decisions)
    if n == 0:
        return {"decisions": 0, "bad_rows": bad}
    bought = (decisions["outcome"].astype(str) == PURCHASE).to_numpy()
    qty = pd.to_numeric(decisions["quantity"], errors="coerce").fillna(0).to_numpy(dtype=float)
    qty = np.where(bought, qty, 0.0)
    price = pd.to_numeric(decisions["price_shown"]).to_numpy(dtype=float)
    cost = pd.to_numeric(decisions["unit_cost"], errors="coerce").fillna(0).to_numpy(dtype=float)
    revenue = float(np.sum(qty * price))
    gross = float(np.sum(qty * (price - cost)))
    actions = (
        pd.to_numeric(decisions["action"]).astype(int).value_counts(normalize=True).sort_index()
    )
    prop = pd.to_numeric(decisions["propensity"], errors="coerce").to_numpy(dtype=float)
    return {
        "decisions": n,
        "bad_rows": bad,
        "purchases": int(bought.sum()),
        "conversion": float(bought.mean()),
        "revenue": round(revenue, 2),
        "gross_profit": round(gross, 2),
        "margin": round(gross / revenue, 6) if revenue > 0 else None,
        "exploration_rate": float(np.mean(prop < 0.5)),
        "action_share": {str(k): round(float(v), 6) for k, v in actions.items()},
    }


def _champion(settings: Settings, lake: Lake) -> tuple[str, str] | None:
    """(version, logical_date) of the champion, or None before the first promotion."""
    reg = Registry(settings, lake)
    mv = reg.alias("champion")
    if mv is None:
        return None
    return str(mv.version), mv.tags.get("logical_date", "")


def monitor_window(
    settings: Settings, start: dt.datetime, end: dt.datetime, publish: bool = True
) -> dict[str, Any]:
    """Monitor ``[start, end)``: KPIs and drift; with ``publish``, written to the lake, MLflow
    and the Pushgateway, and the watermark moved to ``end``.

    Returns the report; ``report["drift"]["status"]`` is ``drift`` when a market feature crossed
    the threshold and ``report["retrain"]`` whether that should start a retrain."""
    start, end = _utc(start), _utc(end)
    lake = open_lake(settings)
    decisions = read_decisions(lake, start, end)
    champion = _champion(settings, lake)
    if champion is None:
        drift_report: dict[str, Any] = {
            "status": "no_champion",
            "psi": {},
            "message": "no champion yet: nothing to compare the live traffic with",
        }
    elif not champion[1]:
        drift_report = {
            "status": "no_reference",
            "psi": {},
            "message": f"champion v{champion[0]} has no logical_date tag, so its training data "
            "is unknown: drift not judged (promote a version the nightly pipeline registered)",
        }
    else:
        ref = reference(settings, lake, *champion)
        drift_report = drift(ref, decisions, start, end, settings)
    report: dict[str, Any] = {
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "champion": champion[0] if champion else None,
        "kpis": kpis(decisions),
        "drift": drift_report,
        "retrain": drift_report["status"] == "drift" and settings.retrain_on_drift,
        # the last night's served parity (pipeline.release.parity): its alarm stays on until a
        # night finds the service doing and earning what the champion's evaluation says
        "parity": latest_parity(lake, end.date() - dt.timedelta(days=1)),
    }
    if publish:
        report.update(publish_window(settings, lake, report, start, end))
    log.info(
        "monitor %s..%s: %d prices shown; %s",
        start.isoformat(),
        end.isoformat(),
        report["kpis"]["decisions"],
        drift_report["message"],
    )
    return report
