"""The lake: date-partitioned Parquet, ``{root}/{zone}/{feed}/date=YYYY-MM-DD/part-0000.parquet``.

Writes are atomic: a partition is written to a temporary file beside its final place and renamed,
so a crash never leaves half a partition, and re-writing a date replaces it (idempotent nights).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pandas as pd

ZONES = ("raw", "quarantine", "features", "reports")


class LakeError(ValueError):
    """A lake path or partition is missing or invalid."""


def partition_dir(root: str | Path, zone: str, feed: str, date: dt.date) -> Path:
    if zone not in ZONES:
        raise LakeError(f"zone must be one of {ZONES} (got {zone!r})")
    return Path(root) / zone / feed / f"date={date.isoformat()}"


def write_partition(
    root: str | Path, zone: str, feed: str, date: dt.date, frame: pd.DataFrame
) -> Path:
    """Write one day of one feed, replacing what was there, atomically."""
    target = partition_dir(root, zone, feed, date)
    target.mkdir(parents=True, exist_ok=True)
    final = target / "part-0000.parquet"
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".parquet.tmp", dir=target)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in target.glob("part-*.parquet"):
        if stale != final:
            stale.unlink()
    return final


def read_partition(root: str | Path, zone: str, feed: str, date: dt.date) -> pd.DataFrame:
    target = partition_dir(root, zone, feed, date)
    parts = sorted(target.glob("part-*.parquet"))
    if not parts:
        raise LakeError(f"no partition {target}; generate it with `pricing history` or ingest logs")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def list_dates(root: str | Path, zone: str, feed: str) -> list[dt.date]:
    base = Path(root) / zone / feed
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.glob("date=*")):
        try:
            out.append(dt.date.fromisoformat(d.name.removeprefix("date=")))
        except ValueError:
            continue
    return out
