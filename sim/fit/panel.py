"""The hourly panel both the refit and the fidelity gate read: a decisions log lined up on the
world's decision clock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.feeds import CARTED, DECISIONS, OUTCOMES, WOULD_BUY
from sim.fit.mle import FitError, require_columns
from sim.world import World

DECISION_FIELDS = DECISIONS.subset(
    "ts", "sku", "segment", "base_price", "price_shown", "competitor_price", "inventory", "outcome"
)

PRICE_TOL = 0.011  # two prices that each round to the cent can differ by this much

# --------------------------------------------------------------------------------------------------
# the hourly panel both the fit and the gate read


@dataclass(frozen=True)
class Panel:
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


def build_panel(world: World, decisions: pd.DataFrame) -> Panel:
    require_columns(decisions, DECISION_FIELDS, "decisions")
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
    return Panel(
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
    max_move = max(abs(a) for a in world.pricing.actions) * ref + PRICE_TOL
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
