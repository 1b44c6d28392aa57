"""Each cluster's rows of the window's raw logs, cut once a night: ``slices/<feed>/date=D/``.

A cluster's night reads its SKUs' rows of the window's raw partitions four times over (refit,
fidelity, the evaluation's behavioural clone and its off-policy estimates). Filtering the
catalogue's whole day each time makes every cluster pay for the whole catalogue: at 50,000 SKUs
a day of decisions is 10.6 M rows, and those reads were half of a cluster's night. So once the
night's clusters are known, `slice_window` reads each day of the window once and writes every
cluster's rows to an object of its own; a cluster's view of the lake (`Lake.for_cluster`) reads
that instead of the day (`read_slice`).

A slice is a copy for speed, never the record. A day's index (``_slices.json``) names the raw
parts it was cut from and, for each cluster, a hash of its SKUs; a view uses its cluster's slice
only when both still match — the partition not rewritten, grown or quarantined since, the
cluster's members unchanged — and otherwise filters the raw partition itself, as it would with
no slices at all. A day is cut again only where a slice is missing or stale, so a night after
the first cuts its own day, and the days whose clusters changed.

Layout: ``slices/<feed>/date=D/_slices.json`` and ``slices/<feed>/date=D/<cluster>-<hash>.parquet``
(named after its content: the index, written last, switches a day to new files in one step).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contracts import SLICES_PREFIX
from pipeline.data.stores import Store

if TYPE_CHECKING:
    from pipeline.data.lake import Lake

log = logging.getLogger("pricing.slices")

INDEX = "_slices.json"


def skus_key(skus: Iterable[str]) -> str:
    """The hash a slice records of its cluster's SKUs (order-free)."""
    return hashlib.sha256("\n".join(sorted(skus)).encode()).hexdigest()


def _folder(feed: str, day: dt.date) -> str:
    return f"{SLICES_PREFIX}{feed}/date={day.isoformat()}/"


def _index(store: Store, feed: str, day: dt.date) -> dict[str, Any] | None:
    try:
        index = json.loads(store.get(_folder(feed, day) + INDEX))
    except (FileNotFoundError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def read_slice(
    store: Store,
    cluster: str,
    key: str,
    feed: str,
    day: dt.date,
    parts: list[str],
    columns: list[str] | None,
) -> pd.DataFrame | None:
    """The cluster's rows of the raw partition ``feed``/``day`` from its slice, or None when
    there is no slice that matches the partition's ``parts`` (names) and the cluster's SKUs
    (``key``, `skus_key`): the caller then filters the partition itself."""
    index = _index(store, feed, day)
    if index is None or index.get("parts") != parts:
        return None
    entry = index.get("clusters", {}).get(cluster)
    if not isinstance(entry, dict) or entry.get("skus") != key:
        return None
    try:
        data = store.get(_folder(feed, day) + str(entry["file"]))
    except FileNotFoundError:  # replaced by a cut running now: the raw partition answers
        return None
    try:
        return pd.read_parquet(io.BytesIO(data), columns=columns)
    except Exception as err:  # a damaged copy: the raw partition is the record
        log.warning(
            "slice %s%s unreadable (%s); reading the raw partition",
            _folder(feed, day),
            entry["file"],
            err,
        )
        return None


@dataclass
class Sliced:
    """What `slice_window` did: days cut, days already up to date, days left to the raw
    partitions (a reason each), and the rows it wrote."""

    feed: str | None
    cut: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rows: int = 0


def slice_feed(lake: Lake, days: list[dt.date]) -> str | None:
    """The feed a cluster's night reads over ``days``: decisions where any are logged (as the
    refit reads them), else transactions; None when neither is."""
    for feed in ("decisions", "transactions"):
        if any(lake.has_partition("raw", feed, d) for d in days):
            return feed
    return None


def slice_window(
    lake: Lake,
    members: Mapping[str, list[str]],
    days: list[dt.date],
    say: Callable[[str], None] | None = None,
) -> Sliced:
    """Cut every day of ``days`` whose slices are missing or stale into one object per cluster
    (``members``: cluster -> its SKUs), for the feed a cluster's night reads (`slice_feed`);
    slices of days before ``days`` are deleted. ``say`` hears of each day cut."""
    feed = slice_feed(lake, days)
    done = Sliced(feed)
    if feed is None or not members:
        return done
    keys = {c: skus_key(s) for c, s in members.items()}
    for day in days:
        paths = lake.part_paths("raw", feed, day)
        parts = [p.rsplit("/", 1)[1] for p in paths]
        if not parts:
            continue
        index = _index(lake.store, feed, day)
        if (
            index is not None
            and index.get("parts") == parts
            and {c: e.get("skus") for c, e in index.get("clusters", {}).items()} == keys
        ):
            done.current.append(day.isoformat())
            continue
        try:
            done.rows += _cut_day(lake, feed, day, paths, members, keys, index)
        except (pa.ArrowException, KeyError, ValueError) as err:
            # parts of different schemas, say: the clusters filter this day's partition
            done.skipped[day.isoformat()] = str(err)
            log.warning("slices of %s %s not cut (%s); clusters read the partition", feed, day, err)
            continue
        done.cut.append(day.isoformat())
        if say is not None:
            say(f"slices: {feed} {day} cut for {len(members)} clusters")
    _prune(lake.store, feed, days[0] if days else None)
    return done


def _cut_day(
    lake: Lake,
    feed: str,
    day: dt.date,
    paths: list[str],
    members: Mapping[str, list[str]],
    keys: Mapping[str, str],
    old: dict[str, Any] | None,
) -> int:
    """One day of ``feed`` read part by part (``paths``: its parts, each read once) into one
    Parquet object per cluster, then the day's index; returns the rows written."""
    clusters = list(members)
    skus = [s for c in clusters for s in members[c]]
    code_of_sku = np.repeat(np.arange(len(clusters)), [len(members[c]) for c in clusters])
    value_set = pa.array(skus, pa.string())
    sinks: list[io.BytesIO] = []
    writers: list[pq.ParquetWriter] = []
    schema: pa.Schema | None = None
    rows = 0
    for path in paths:
        table = pq.read_table(io.BytesIO(lake.store.get(path)))
        if schema is None:
            schema = table.schema
            sinks = [io.BytesIO() for _ in clusters]
            writers = [pq.ParquetWriter(s, schema) for s in sinks]
        elif not table.schema.equals(schema, check_metadata=False):
            table = table.select(schema.names).cast(schema)
        else:
            table = table.replace_schema_metadata(schema.metadata)
        at = pc.fill_null(pc.index_in(pc.cast(table["sku"], pa.string()), value_set), -1)
        where = at.to_numpy(zero_copy_only=False)
        code = np.where(where >= 0, code_of_sku[np.maximum(where, 0)], -1)
        order = np.argsort(code, kind="stable")  # each cluster's rows keep their order
        bounds = np.searchsorted(code[order], np.arange(len(clusters) + 1))
        for i, writer in enumerate(writers):
            if bounds[i + 1] > bounds[i]:
                writer.write_table(table.take(pa.array(order[bounds[i] : bounds[i + 1]])))
        rows += int(bounds[-1] - bounds[0])
    parts = [p.rsplit("/", 1)[1] for p in paths]
    index: dict[str, Any] = {"feed": feed, "date": day.isoformat(), "parts": parts, "clusters": {}}
    out = _folder(feed, day)
    for cluster, writer, sink in zip(clusters, writers, sinks, strict=True):
        writer.close()
        data = sink.getvalue()
        name = f"{cluster}-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        lake.store.put(out + name, data)
        index["clusters"][cluster] = {"skus": keys[cluster], "file": name}
    lake.store.put(out + INDEX, json.dumps(index, indent=1).encode())
    kept = {e["file"] for e in index["clusters"].values()}
    for stale in (old or {}).get("clusters", {}).values():
        if isinstance(stale, dict) and stale.get("file") not in kept:
            lake.store.delete(out + str(stale["file"]))
    return rows


def _prune(store: Store, feed: str, first: dt.date | None) -> None:
    """Delete the slices of days before ``first`` (outside every window a night reads now)."""
    if first is None:
        return
    prefix = f"{SLICES_PREFIX}{feed}/date="
    for key in store.list(prefix):
        folder = key.removeprefix(prefix).split("/", 1)[0]
        try:
            day = dt.date.fromisoformat(folder)
        except ValueError:
            continue
        if day < first:
            store.delete(key)
