from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from sim.feeds import DECISION_COLUMNS, OUTCOMES, TRANSACTION_COLUMNS
from sim.history import Clock, generate_history
from sim.world import World

START = dt.date(2026, 3, 4)  # a Wednesday: the market's clock follows the calendar


def _days(world: World, seed: int, days: int = 3) -> list:
    return list(generate_history(world, days, seed, START))


def test_history_is_deterministic_under_seed(tiny_world: World) -> None:
    a, b, c = _days(tiny_world, 1), _days(tiny_world, 1), _days(tiny_world, 2)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x.decisions, y.decisions)
        pd.testing.assert_frame_equal(x.transactions, y.transactions)
    assert not a[0].decisions.equals(c[0].decisions)


def test_feeds_follow_the_contract(tiny_world: World) -> None:
    days = _days(tiny_world, 7)
    assert [d.date for d in days] == [START + dt.timedelta(days=i) for i in range(3)]
    ids = pd.concat([d.decisions["event_id"] for d in days])
    assert ids.is_unique
    for day in days:
        dec, tx = day.decisions, day.transactions
        assert tuple(dec.columns) == DECISION_COLUMNS
        assert tuple(tx.columns) == TRANSACTION_COLUMNS
        assert len(dec) > 100
        assert set(dec["outcome"]) <= set(OUTCOMES)
        assert dec["propensity"].between(0, 1, inclusive="right").all()
        assert (dec["ts"].dt.date == day.date).all()
        assert str(dec["ts"].dt.tz) == "UTC"
        assert dec["ts"].is_monotonic_increasing
        assert (dec["price_shown"] > 0).all() and (dec["unit_cost"] > 0).all()
        purchases = dec[dec["outcome"] == "purchase"]
        assert len(tx) == len(purchases) and tx["quantity"].sum() == purchases["quantity"].sum()
        assert np.allclose(tx["unit_price"].to_numpy(), purchases["price_shown"].to_numpy())
        # the logged action and propensity are constant within an SKU-hour
        hourly = dec.groupby(["sku", dec["ts"].dt.hour])
        assert (hourly["action"].nunique() == 1).all()
        assert (hourly["propensity"].nunique() == 1).all()


def test_exploration_shows_in_propensities(tiny_world: World) -> None:
    dec = pd.concat(d.decisions for d in _days(tiny_world, 3))
    greedy = 0.9 + 0.1 / 5
    assert set(np.round(dec["propensity"].unique(), 6)) <= {round(greedy, 6), round(0.02, 6)}
    assert (dec["propensity"] < 0.5).any()


def test_bad_arguments(tiny_world: World) -> None:
    with pytest.raises(ValueError, match="days"):
        list(generate_history(tiny_world, 0, 1, START))


def test_the_clock_counts_periods_and_seasons_from_its_anchor() -> None:
    anchor = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    clock = Clock(anchor, step_hours=2, steps=84)  # a week of two-hour periods
    for ts in (anchor, anchor + dt.timedelta(days=9, minutes=61), anchor - dt.timedelta(hours=3)):
        period = clock.period(ts)
        assert clock.period_start(period) <= ts < clock.period_start(period + 1)
        season, step = clock.season_and_step(period)
        assert 0 <= step < clock.steps
        assert clock.period_start(period) == clock.season_start(season) + dt.timedelta(
            hours=2 * step
        )
    assert clock.season_and_step(clock.period(anchor + dt.timedelta(days=9, hours=1))) == (1, 24)
    assert clock.season_and_step(clock.period(anchor - dt.timedelta(hours=3))) == (-1, 82)
