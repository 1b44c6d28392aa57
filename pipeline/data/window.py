"""Many raw partitions through one Great Expectations run.

A first night validates every day of its window (28 days by default, 90 at scale), and GX's cost
is mostly per run (about a second for a day of the default world), hardly per row. Partitions
that carry exactly the contract's columns, all with the same dtypes, are therefore validated
together, in chunks of at most `MAX_ROWS` rows, each row checked against its own partition's day
(`pipeline.data.suites.WINDOW_COLUMN`) and each SKU's prices against its median of that day.

A chunk that passes, passes each of its partitions. A chunk that fails says nothing about which
partition is at fault, so its partitions are left to `validate_partition`, one at a time, which
finds the bad one and writes its report: failures read exactly as they always do.

A day larger than one run (a large catalogue's: 8 M decisions at 50,000 SKUs) is never read
whole while it passes: `validate_in_parts` checks it a few parts per run.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.gx import quiet_gx
from pipeline.data.lake import Lake
from pipeline.data.suites import CONTRACTS, build_suite, frame_for_gx, utc_datetime
from pipeline.data.validation import ValidationResult, run_gx

MAX_ROWS = 1_000_000  # rows validated in one run, at the most


def _let_go() -> None:
    """Hand a run's memory back to the system before the next run. GX's pandas engine leaves
    cycles for the collector and freed blocks in glibc's heap: without this a first night's
    peak grew with its window (4.9 GB at 30 days of 1,000 SKUs, 10.3 GB at 90; 2.4 GB at 30
    with it)."""
    gc.collect()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def validate_together(
    lake: Lake, feed: str, days: list[dt.date], now: dt.datetime, n_actions: int
) -> list[ValidationResult]:
    """Validate the raw ``feed`` partitions of ``days`` in as few GX runs as possible; returns
    a passing result for each day that passed. The other days are for `validate_partition`.

    The days are read one after another into chunks of at most `MAX_ROWS` rows, each chunk
    validated and let go before the next is read: memory holds one chunk, not the window. Only
    partitions with exactly the contract's columns and the first one's dtypes join a chunk
    (concatenating them changes no value and hides no schema drift)."""
    now = utc_datetime(now)
    names = list(CONTRACTS[feed].names)
    dtypes: pd.Series | None = None
    passed: list[ValidationResult] = []
    chunk: list[tuple[dt.date, pd.DataFrame]] = []
    rows = 0
    for day in days:
        try:
            frame = _read_small(lake, feed, day)
        # bandit: an unreadable partition is validated alone, and its report says why
        except Exception:  # nosec B112
            continue
        if frame is None:  # a day larger than a run: validate_in_parts
            continue
        frame = CONTRACTS[feed].conform(frame)
        if not len(frame) or list(frame.columns) != names:
            continue
        if dtypes is None:
            dtypes = frame.dtypes
        elif not frame.dtypes.equals(dtypes):
            continue
        if chunk and rows + len(frame) > MAX_ROWS:
            passed += _validate_chunk(feed, chunk, now, n_actions)
            chunk, rows = [], 0
            _let_go()
        chunk.append((day, frame))
        rows += len(frame)
        del frame
    passed += _validate_chunk(feed, chunk, now, n_actions)
    return passed


def _read_small(lake: Lake, feed: str, day: dt.date) -> pd.DataFrame | None:
    """The day's raw partition, or None as soon as its parts add up to more than `MAX_ROWS`."""
    parts, rows = [], 0
    for part in lake.iter_partition("raw", feed, day):
        rows += len(part)
        if rows > MAX_ROWS:
            return None
        parts.append(part)
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


_IDS = {"decisions": "event_id", "transactions": "transaction_id"}


def validate_in_parts(
    lake: Lake, feed: str, day: dt.date, now: dt.datetime, n_actions: int
) -> ValidationResult | None:
    """One raw partition without holding it whole: its parts in GX runs of at most `MAX_ROWS`
    rows (a larger part alone), each with the day's own suite; transactions' prices against
    each SKU's median of the whole day, and the ids unique across the runs too (by their 64-bit
    hashes). Returns a passing result when every run passes; None otherwise (the day is then
    validated whole by `validate_partition`, whose report names the failures)."""
    now = utc_datetime(now)
    names = list(CONTRACTS[feed].names)
    started = time.perf_counter()
    try:
        medians = None  # one part is one run: GX's own per-SKU medians are the day's
        if feed == "transactions" and len(lake.part_paths("raw", feed, day)) > 1:
            prices = pd.concat(
                lake.iter_partition("raw", feed, day, columns=["sku", "unit_price"]),
                ignore_index=True,
            )
            price = pd.to_numeric(prices["unit_price"], errors="coerce")
            medians = price.groupby(prices["sku"].astype(str).to_numpy()).median()
            del prices, price
        hashes: list[np.ndarray] = []
        chunk: list[pd.DataFrame] = []
        rows = runs = in_chunk = 0
        stats: dict[str, Any] | None = {}
        dtypes: pd.Series | None = None
        for part in lake.iter_partition("raw", feed, day):
            part = CONTRACTS[feed].conform(part)
            if list(part.columns) != names:
                return None
            if dtypes is None:
                dtypes = part.dtypes
            elif not part.dtypes.equals(dtypes):
                return None
            hashes.append(pd.util.hash_pandas_object(part[_IDS[feed]], index=False).to_numpy())
            if chunk and in_chunk + len(part) > MAX_ROWS:
                stats = _run_part(feed, chunk, day, now, n_actions, medians)
                if stats is None:
                    return None
                chunk, runs, in_chunk = [], runs + 1, 0
            chunk.append(part)
            rows += len(part)
            in_chunk += len(part)
        stats = _run_part(feed, chunk, day, now, n_actions, medians) if chunk else None
        if stats is None:
            return None
        runs += 1
    # bandit: whatever goes wrong here, the day is validated whole and its report says why
    except Exception:  # nosec B110
        return None
    ids = np.concatenate(hashes)
    if len(np.unique(ids)) != len(ids):
        return None
    return ValidationResult(
        feed,
        day,
        True,
        [],
        {
            **stats,  # the last run's expectation counts: every run has the same suite
            "rows": rows,
            "columns": len(names),
            "seconds": round(time.perf_counter() - started, 3),
            "validated_with": f"{runs} runs of at most {MAX_ROWS} rows",
        },
    )


def _run_part(
    feed: str,
    chunk: list[pd.DataFrame],
    day: dt.date,
    now: dt.datetime,
    n_actions: int,
    medians: pd.Series | None,
) -> dict[str, Any] | None:
    """One GX run over ``chunk`` (parts of one day): its statistics when it passes, else None."""
    frame = chunk[0] if len(chunk) == 1 else pd.concat(chunk, ignore_index=True)
    with quiet_gx():
        suite = build_suite(feed, day, now, n_actions)
        gx_frame = frame_for_gx(feed, frame, sku_median=medians)
        result, _ = run_gx(feed, gx_frame, suite, day, now, False)
    del frame, gx_frame
    _let_go()
    return dict(result.statistics) if result.success else None


def _validate_chunk(
    feed: str, chunk: list[tuple[dt.date, pd.DataFrame]], now: dt.datetime, n_actions: int
) -> list[ValidationResult]:
    """One GX run over the chunk's partitions: a pass for each, or nothing (they are then
    validated alone). A chunk of one partition is left to `validate_partition` directly."""
    if len(chunk) < 2:
        return []
    days = [d for d, _ in chunk]
    parts = [f for _, f in chunk]
    window = pd.concat(parts, ignore_index=True)
    day_of_row = pd.Series(
        np.repeat(np.array(days, dtype="datetime64[D]"), [len(f) for f in parts])
    )
    with quiet_gx():
        suite = build_suite(feed, None, now, n_actions)
        result, _ = run_gx(
            feed, frame_for_gx(feed, window, day_of_row), suite, days[-1], now, False
        )
    if not result.success:
        return []
    stats = dict(result.statistics)
    return [
        ValidationResult(
            feed,
            day,
            True,
            [],
            {
                **stats,
                "rows": len(frame),
                "columns": len(frame.columns),
                "validated_with": f"{len(chunk)} partitions, {len(window)} rows, in one run",
            },
        )
        for day, frame in chunk
    ]
