"""An experiment's answer, judged on its own unit of randomisation.

Visitors of one customer, one SKU or one block of periods share an arm and much else (a
customer's taste, a SKU's demand, a week's competitor), so they are not independent draws: each
design is analysed with the unit it randomised as the cluster (`sim.stats.ratio_ci95`):

- ``visitor`` — unit: the customer. Valid only where stock does not bind: both arms sell from
  one shelf, so a policy that keeps stock for later leaves it to the other arm's prices.
- ``sku`` — unit: the SKU (a whole shelf per arm). Valid where SKUs do not substitute for each
  other; needs many SKUs, since their spread is the noise.
- ``switchback`` — unit: a block of periods, washout periods left out. Valid where a block is
  long enough that what one arm did to the stock is over by the next (a season).

Every figure is per visitor: profit (the objective the night optimises: margin, less abandoned
carts and price changes, plus the clearance bonus), conversion, margin rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.contracts import EXPERIMENT_DESIGNS
from sim.stats import ratio_ci95, relative_effect_ci95

ARMS = ("control", "treatment")
DESIGNS = EXPERIMENT_DESIGNS
UNIT_OF_ANALYSIS = {"visitor": "customer", "sku": "SKU", "switchback": "block of periods"}
UNITS = {"visitor": "customers", "sku": "SKUs", "switchback": "blocks"}  # a count of them

# The columns an analysis reads: one row per visitor (a price shown).
VISIT_COLUMNS = ("arm", "unit", "profit", "bought", "margin", "revenue", "explored", "washout")


def _clusters(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    grouped = rows.groupby("unit", sort=False)
    return grouped[column].sum().to_numpy(float), grouped.size().to_numpy(float)


def arm_figures(visits: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per arm: visitors, units, profit per visitor and conversion with cluster-robust 95 %
    intervals, margin rate, exploration rate (washout rows left out)."""
    kept = visits[~visits["washout"].astype(bool)] if len(visits) else visits
    out: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        rows = kept[kept["arm"] == arm]
        if rows.empty:
            out[arm] = {"visitors": 0}
            continue
        ppv, lo, hi = ratio_ci95(*_clusters(rows, "profit"))
        conv, clo, chi = ratio_ci95(*_clusters(rows, "bought"))
        revenue = float(rows["revenue"].sum())
        out[arm] = {
            "visitors": len(rows),
            "units": int(rows["unit"].nunique()),
            "profit_per_visitor": ppv,
            "profit_per_visitor_ci95": [lo, hi],
            "conversion": conv,
            "conversion_ci95": [clo, chi],
            "margin": float(rows["margin"].sum()) / revenue if revenue > 0 else None,
            "exploration_rate": float(rows["explored"].mean()),
        }
    return out


def effect(visits: pd.DataFrame, design: str, metric: str = "profit") -> dict[str, Any] | None:
    """Treatment's relative uplift over control in ``metric`` per visitor (``profit`` or
    ``bought``: conversion), with a 95 % interval over the design's units; None unless both arms
    have visitors and control's total is positive (a relative effect on a loss is no uplift).
    With fewer than two units in an arm there is no interval (``ci95`` and ``p_lower`` None)."""
    if design not in DESIGNS:
        raise ValueError(f"unknown experiment design {design!r}; one of {', '.join(DESIGNS)}")
    kept = visits[~visits["washout"].astype(bool)]
    t = kept[kept["arm"] == "treatment"]
    c = kept[kept["arm"] == "control"]
    if t.empty or c.empty or float(c[metric].sum()) <= 0.0:
        return None
    mean, lo, hi = relative_effect_ci95(*_clusters(t, metric), *_clusters(c, metric))
    units = min(t["unit"].nunique(), c["unit"].nunique())
    df = max(1, units - 1)
    se = (hi - mean) / float(stats.t.ppf(0.975, df)) if hi > mean else 0.0
    # no spread (e.g. no treatment purchase at all): the sign of the effect is certain
    p_lower: float | None = float(stats.t.cdf(mean / se, df)) if se > 0 else float(mean >= 0)
    ci: list[float] | None = [lo, hi]
    if units < 2:  # one unit a side: its spread is unknown
        ci, p_lower = None, None
    return {
        "design": design,
        "metric": metric,
        "unit": UNIT_OF_ANALYSIS[design],
        "units": {"treatment": int(t["unit"].nunique()), "control": int(c["unit"].nunique())},
        "washout_visitors": int(len(visits) - len(kept)),
        "effect": mean,
        "ci95": ci,
        "p_lower": p_lower,  # one-sided: that treatment is below control
    }
