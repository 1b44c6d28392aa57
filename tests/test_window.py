"""A window of raw partitions validated in one GX run: what passes together passes each day, and
anything wrong sends the partitions back to be validated one by one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.lake import Lake
from pipeline.data.validation import validate_partition
from pipeline.data.window import validate_together
from sim.history import generate_history
from sim.world import World

START = dt.date(2026, 1, 5)
DAYS = [START + dt.timedelta(days=i) for i in range(4)]
NOW = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


@pytest.fixture
def lake(tmp_path: Path, tiny_world: World) -> Lake:
    lake = Lake.from_uri(str(tmp_path / "lake"))
    for day in generate_history(tiny_world, len(DAYS), 0, START):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    return lake


@pytest.mark.parametrize("feed", ["decisions", "transactions"])
def test_a_clean_window_passes_every_day_in_one_run(lake: Lake, feed: str) -> None:
    results = validate_together(lake, feed, DAYS, NOW, n_actions=5)
    assert [r.date for r in results] == DAYS and all(r.success for r in results)
    rows = [len(lake.read_partition("raw", feed, d)) for d in DAYS]
    assert [r.statistics["rows"] for r in results] == rows
    assert all(r.statistics["validated_with"].startswith("4 partitions") for r in results)
    assert "passed validation" in results[0].message()


def _rewrite(lake: Lake, feed: str, day: dt.date, change: object) -> None:
    frame = lake.read_partition("raw", feed, day)
    lake.write_partition("raw", feed, day, change(frame))  # type: ignore[operator]


def test_a_row_of_the_next_day_fails_the_window_and_only_its_partition(lake: Lake) -> None:
    def shift(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[0, "ts"] = frame.loc[0, "ts"] + pd.Timedelta(days=1)
        return frame

    _rewrite(lake, "decisions", DAYS[1], shift)
    assert validate_together(lake, "decisions", DAYS, NOW, n_actions=5) == []
    alone = [
        validate_partition("decisions", lake.read_partition("raw", "decisions", d), d, NOW)
        for d in DAYS
    ]
    assert [r.success for r in alone] == [True, False, True, True]
    assert "outside the partition's UTC day 2026-01-06" in alone[1].message()


def test_a_price_off_its_days_median_fails_the_window(lake: Lake) -> None:
    def cents(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[0, "unit_price"] = frame.loc[0, "unit_price"] * 100
        return frame

    _rewrite(lake, "transactions", DAYS[2], cents)
    assert validate_together(lake, "transactions", DAYS, NOW, n_actions=5) == []


def test_a_partition_that_drifted_is_left_to_be_validated_alone(lake: Lake) -> None:
    _rewrite(lake, "decisions", DAYS[0], lambda f: f.assign(extra=1))
    _rewrite(lake, "decisions", DAYS[3], lambda f: f.assign(inventory=f["inventory"] * 1.0))
    passed = validate_together(lake, "decisions", DAYS, NOW, n_actions=5)
    assert [r.date for r in passed] == DAYS[1:3]  # the drifted ones go through the usual path


def test_event_ids_repeated_across_days_are_left_to_the_partitions(lake: Lake) -> None:
    first = lake.read_partition("raw", "decisions", DAYS[0])
    _rewrite(
        lake, "decisions", DAYS[1], lambda f: f.assign(event_id=first["event_id"][: len(f)].values)
    )
    # together they look duplicated; each partition alone is fine, and decides
    assert validate_together(lake, "decisions", DAYS[:2], NOW, n_actions=5) == []
