"""Many raw partitions through one Great Expectations run.

A first night validates every day of its window (28 days by default, 90 at scale), and GX's cost
is mostly per run (about a second for a day of the default world), hardly per row. Partitions
that carry exactly the contract's columns, all with the same dtypes, are therefore validated
together, in chunks of at most `MAX_ROWS` rows, each row checked against its own partition's day
(`pipeline.data.suites.WINDOW_COLUMN`) and each SKU's prices against its median of that day.

A chunk that passes, passes each of its partitions. A chunk that fails says nothing about which
partition is at fault, so its partitions are left to `validate_partition`, one at a time, which
finds the bad one and writes its report: failures read exactly as they always do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from pipeline.data.gx import quiet_gx
from pipeline.data.lake import Lake
from pipeline.data.suites import CONTRACTS, build_suite, frame_for_gx, utc_datetime
from pipeline.data.validation import ValidationResult, run_gx

MAX_ROWS = 1_000_000  # rows validated in one run, at the most


def _chunks(frames: Mapping[dt.date, pd.DataFrame]) -> Iterator[list[dt.date]]:
    chunk: list[dt.date] = []
    rows = 0
    for day, frame in frames.items():
        if chunk and rows + len(frame) > MAX_ROWS:
            yield chunk
            chunk, rows = [], 0
        chunk.append(day)
        rows += len(frame)
    if chunk:
        yield chunk


def _uniform(frames: Mapping[dt.date, pd.DataFrame], feed: str) -> dict[dt.date, pd.DataFrame]:
    """The non-empty partitions with exactly the contract's columns and the first one's dtypes:
    concatenating them changes no value and hides no schema drift."""
    names = list(CONTRACTS[feed].names)
    usable = {d: f for d, f in frames.items() if len(f) and list(f.columns) == names}
    if not usable:
        return {}
    dtypes = next(iter(usable.values())).dtypes
    return {d: f for d, f in usable.items() if f.dtypes.equals(dtypes)}


def validate_together(
    lake: Lake, feed: str, days: list[dt.date], now: dt.datetime, n_actions: int
) -> list[ValidationResult]:
    """Validate the raw ``feed`` partitions of ``days`` in as few GX runs as possible; returns
    a passing result for each day that passed. The other days are for `validate_partition`."""
    frames: dict[dt.date, pd.DataFrame] = {}
    for day in days:
        try:
            frames[day] = lake.read_partition("raw", feed, day)
        # bandit: an unreadable partition is validated alone, and its report says why
        except Exception:  # nosec B112
            continue
    now = utc_datetime(now)
    passed: list[ValidationResult] = []
    for chunk in _chunks(_uniform(frames, feed)):
        if len(chunk) < 2:
            continue
        parts = [frames[d] for d in chunk]
        window = pd.concat(parts, ignore_index=True)
        day_of_row = pd.Series(
            np.repeat(np.array(chunk, dtype="datetime64[D]"), [len(f) for f in parts])
        )
        with quiet_gx():
            suite = build_suite(feed, None, now, n_actions)
            result, _ = run_gx(
                feed, frame_for_gx(feed, window, day_of_row), suite, chunk[-1], now, False
            )
        if not result.success:
            continue
        stats = dict(result.statistics)
        for day, frame in zip(chunk, parts, strict=True):
            statistics = {
                **stats,
                "rows": len(frame),
                "columns": len(frame.columns),
                "validated_with": f"{len(chunk)} partitions, {len(window)} rows, in one run",
            }
            passed.append(ValidationResult(feed, day, True, [], statistics))
    return passed
