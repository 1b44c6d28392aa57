"""Each cluster's rows of a raw day cut once (`pipeline.data.slices`): a cluster's view reads
exactly the rows it would filter from the day, and never a slice that no longer matches."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipeline.data.lake import Lake
from pipeline.data.slices import slice_window

D1 = dt.date(2026, 1, 5)
D2 = dt.date(2026, 1, 6)
D3 = dt.date(2026, 1, 7)
SKUS = ["a", "b", "c", "d", "e"]
MEMBERS = {"one": ["a", "b"], "two": ["c", "d"]}  # "e" is in no cluster


def decisions(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "event_id": [f"ev-{seed}-{i}" for i in range(n)],
            "ts": pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
            "sku": rng.choice(SKUS, size=n),
            "price_shown": rng.uniform(5, 10, size=n).round(2),
            "quantity": rng.integers(0, 3, size=n),
        }
    )


def write_day(lake: Lake, day: dt.date, seed: int) -> pd.DataFrame:
    """A day of two parts (as a writer of a large day leaves it); returns the day whole, as
    the lake reads it."""
    lake.write_parts("raw", "decisions", day, [decisions(40, seed), decisions(25, seed + 100)])
    return lake.read_partition("raw", "decisions", day)


def filtered(day: pd.DataFrame, skus: list[str]) -> pd.DataFrame:
    return day[day["sku"].isin(skus)].reset_index(drop=True)


def view(lake: Lake, cluster: str, skus: list[str] | None = None) -> Lake:
    return lake.for_cluster(cluster, MEMBERS[cluster] if skus is None else skus)


def slice_files(lake: Lake) -> list[str]:
    return [k for k in lake.list("slices/") if k.endswith(".parquet")]


def test_a_clusters_slice_holds_exactly_the_rows_its_view_would_filter(lake: Lake) -> None:
    days = {D1: write_day(lake, D1, 1), D2: write_day(lake, D2, 2)}
    done = slice_window(lake, MEMBERS, [D1, D2])
    assert done.feed == "decisions" and done.cut == [D1.isoformat(), D2.isoformat()]
    assert done.rows == sum(int(d["sku"].isin(["a", "b", "c", "d"]).sum()) for d in days.values())
    assert len(slice_files(lake)) == 4  # one per cluster and day
    for cluster, skus in MEMBERS.items():
        for day, whole in days.items():
            want = filtered(whole, skus)
            got = view(lake, cluster).read_partition("raw", "decisions", day)
            pd.testing.assert_frame_equal(got, want)
            cols = list(view(lake, cluster).iter_partition("raw", "decisions", day, ["quantity"]))
            assert len(cols) == 1  # one read of the slice, not one per part
            pd.testing.assert_frame_equal(cols[0], want[["quantity"]])
    # the next night finds every slice current and cuts nothing
    again = slice_window(lake, MEMBERS, [D1, D2])
    assert again.cut == [] and again.current == [D1.isoformat(), D2.isoformat()]


def test_a_slice_that_no_longer_matches_is_never_read(lake: Lake) -> None:
    write_day(lake, D1, 1)
    slice_window(lake, MEMBERS, [D1])
    before = slice_files(lake)
    # the day is re-written (a re-ingested export): the old slices are stale at once
    rewritten = write_day(lake, D1, 7)
    got = view(lake, "one").read_partition("raw", "decisions", D1)
    pd.testing.assert_frame_equal(got, filtered(rewritten, MEMBERS["one"]))
    # a cluster whose members changed (a new SKU joined it) is filtered, not sliced
    grown = ["a", "b", "e"]
    got = view(lake, "one", grown).read_partition("raw", "decisions", D1)
    pd.testing.assert_frame_equal(got, filtered(rewritten, grown))
    # cutting again replaces the day's slices and deletes the old ones
    done = slice_window(lake, {"one": grown, "two": MEMBERS["two"]}, [D1])
    assert done.cut == [D1.isoformat()]
    after = slice_files(lake)
    assert len(after) == 2 and not set(before) & set(after)
    got = view(lake, "one", grown).read_partition("raw", "decisions", D1)
    pd.testing.assert_frame_equal(got, filtered(rewritten, grown))


def test_a_damaged_slice_is_left_for_the_raw_partition(tmp_path: pytest.TempPathFactory) -> None:
    lake = Lake.from_uri(str(tmp_path))
    whole = write_day(lake, D1, 3)
    slice_window(lake, MEMBERS, [D1])
    for key in slice_files(lake):
        lake.store.put(key, b"not parquet")
    got = view(lake, "two").read_partition("raw", "decisions", D1)
    pd.testing.assert_frame_equal(got, filtered(whole, MEMBERS["two"]))


def test_the_slices_of_days_before_the_window_are_deleted(lake: Lake) -> None:
    for i, day in enumerate((D1, D2, D3)):
        write_day(lake, day, i)
    slice_window(lake, MEMBERS, [D1, D2])
    slice_window(lake, MEMBERS, [D2, D3])
    assert {k.split("/")[2] for k in lake.list("slices/")} == {"date=2026-01-06", "date=2026-01-07"}


def test_parts_of_different_column_orders_are_cut_to_the_first_parts_schema(
    tmp_path: pytest.TempPathFactory,
) -> None:
    lake = Lake.from_uri(str(tmp_path))
    first = decisions(30, 1)
    second = decisions(20, 2)[list(reversed(first.columns))]
    lake.write_parts("raw", "decisions", D1, [first, second])
    assert slice_window(lake, MEMBERS, [D1]).cut == [D1.isoformat()]
    whole = lake.read_partition("raw", "decisions", D1)  # as the lake reads it: parts concatenated
    got = view(lake, "two").read_partition("raw", "decisions", D1)
    pd.testing.assert_frame_equal(got, filtered(whole, MEMBERS["two"]))


def test_a_day_whose_parts_cannot_be_joined_is_left_to_the_raw_partition(
    tmp_path: pytest.TempPathFactory,
) -> None:
    lake = Lake.from_uri(str(tmp_path))
    first = decisions(30, 1)
    other = decisions(20, 2).drop(columns=["price_shown"])  # a writer without a column
    lake.write_parts("raw", "decisions", D1, [first, other])
    done = slice_window(lake, MEMBERS, [D1])
    assert done.cut == [] and D1.isoformat() in done.skipped
    assert slice_files(lake) == []
    got = view(lake, "one").read_partition("raw", "decisions", D1)
    whole = lake.read_partition("raw", "decisions", D1)
    pd.testing.assert_frame_equal(got, filtered(whole, MEMBERS["one"]))


def test_no_logs_no_slices(lake: Lake) -> None:
    done = slice_window(lake, MEMBERS, [D1])
    assert done.feed is None and done.cut == [] and lake.list("slices/") == []
