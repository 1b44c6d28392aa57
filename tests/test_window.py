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


# A large catalogue's day: more rows than one run takes, validated part by part.


def _in_parts(lake: Lake, feed: str, day: dt.date, n: int, change: object = None) -> int:
    """Rewrite the day as ``n`` parts (``change`` applied to the whole day first); its rows."""
    frame = lake.read_partition("raw", feed, day)
    if change is not None:
        frame = change(frame)  # type: ignore[operator]
    size = -(-len(frame) // n)
    lake.write_parts(
        "raw", feed, day, [frame.iloc[i : i + size] for i in range(0, len(frame), size)]
    )
    return len(frame)


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.data import window

    monkeypatch.setattr(window, "MAX_ROWS", 20)  # a tiny day's parts go to separate runs


@pytest.mark.parametrize("feed", ["decisions", "transactions"])
def test_a_day_larger_than_a_run_passes_part_by_part(
    lake: Lake, feed: str, small_runs: None
) -> None:
    from pipeline.data.window import validate_in_parts

    rows = _in_parts(lake, feed, DAYS[0], 4)
    assert rows > 20  # the day alone is larger than a run
    assert validate_together(lake, feed, DAYS[:2], NOW, n_actions=5) == []  # not read whole
    result = validate_in_parts(lake, feed, DAYS[0], NOW, n_actions=5)
    assert result is not None and result.success
    assert result.statistics["rows"] == rows
    assert result.statistics["validated_with"].endswith("runs of at most 20 rows")
    assert int(result.statistics["validated_with"].split()[0]) > 1


def test_an_id_repeated_in_another_part_of_the_day_is_caught(lake: Lake, small_runs: None) -> None:
    """Each run sees its own parts only: ids repeated across runs are found by their hashes, and
    the day goes to be validated whole (which names the duplicates)."""
    from pipeline.data.window import validate_in_parts

    def repeat(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[len(frame) - 1, "event_id"] = frame.loc[0, "event_id"]
        return frame

    _in_parts(lake, "decisions", DAYS[0], 4, repeat)
    assert validate_in_parts(lake, "decisions", DAYS[0], NOW, n_actions=5) is None
    whole = validate_partition(
        "decisions", lake.read_partition("raw", "decisions", DAYS[0]), DAYS[0], NOW
    )
    assert not whole.success and "duplicated event ids" in whole.message()


def test_a_price_off_the_whole_days_median_is_caught_in_its_part(
    lake: Lake, small_runs: None
) -> None:
    """A part's prices are checked against the SKU's median of the whole day, not of the part:
    a part whose sales of a SKU are all at 100x (its own median too) is still found."""
    from pipeline.data.window import validate_in_parts

    def cents_at_the_end(frame: pd.DataFrame) -> pd.DataFrame:
        top = frame["sku"].value_counts().index[0]
        mine = frame[frame["sku"] == top]
        off = mine.iloc[: len(mine) // 3].assign(unit_price=lambda f: f["unit_price"] * 100)
        rest = frame[frame["sku"] != top]
        return pd.concat([mine.iloc[len(mine) // 3 :], rest, off], ignore_index=True)

    _in_parts(lake, "transactions", DAYS[0], 4, cents_at_the_end)
    parts = list(lake.iter_partition("raw", "transactions", DAYS[0]))
    [part] = [p for p in parts if p["unit_price"].max() > 1000]
    theirs = part[part["sku"] == part.loc[part["unit_price"].idxmax(), "sku"]]
    assert theirs["unit_price"].min() > 1000  # alone, the part's median for that SKU is 100x
    assert validate_in_parts(lake, "transactions", DAYS[0], NOW, n_actions=5) is None
    whole = lake.read_partition("raw", "transactions", DAYS[0])
    assert not validate_partition("transactions", whole, DAYS[0], NOW).success
