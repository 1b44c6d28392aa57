"""SKUs grouped into clusters, one agent each: ``clusters/date=D/clusters.json`` in the lake.

A catalogue of tens of thousands of SKUs is not priced by one agent: the night fans out over
clusters of SKUs that sell alike. A cluster holds SKUs of one category (the catalogue's
``category``; the SKU itself when it has none) with a similar price level and demand, measured
on the features of the last ``days`` days:

- ``log_price``: log of the SKU's reference price (the catalogue's);
- ``log_demand``: log(1 + mean daily views), or of mean daily units where only POS data exists.

Both are standardised over the catalogue, and each category is cut by k-means (seeded, with a
deterministic start: reproducible) into ``ceil(n / skus_per_cluster)`` clusters.

**Stable across nights.** Once a snapshot exists, a night keeps every known SKU in its cluster:
only SKUs new to the catalogue are placed, in the nearest cluster of their category (by the
stored centroids and scaling), or in a new cluster when their category has none or its clusters
are full (``2 x skus_per_cluster``). SKUs gone from the catalogue leave their cluster. So a
cluster's agent keeps the SKUs it learned on; re-clustering from scratch is an explicit choice
(``recluster``), for example after a catalogue re-organisation.

Cluster ids are ``<category>-<n>``, lower case with ``[a-z0-9-]`` only: they name registered
models, ledger folders and Airflow map indexes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts import CLUSTERS_NAME, CLUSTERS_PREFIX
from pipeline.data.catalogue import read_catalogue
from pipeline.data.lake import Lake, LakeError, open_lake
from pipeline.settings import Settings
from sim.catalogue import Catalogue
from sim.world import load_world

FEATURES = ("log_price", "log_demand")
KMEANS_ITERATIONS = 50


def clusters_path(date: dt.date) -> str:
    return f"{CLUSTERS_PREFIX}date={date.isoformat()}/{CLUSTERS_NAME}"


class ClusterError(LakeError):
    """Nothing to cluster, or a stored snapshot is unreadable."""


@dataclass
class Clusters:
    """One night's clusters: which SKU is in which, and what placing a new SKU needs."""

    date: dt.date
    assignment: dict[str, str]  # SKU -> cluster id
    category: dict[str, str]  # cluster id -> category
    centroid: dict[str, list[float]]  # cluster id -> standardised (log_price, log_demand)
    mean: list[float]  # the standardisation of FEATURES
    scale: list[float]
    skus_per_cluster: int
    notes: list[str] = field(default_factory=list)

    def members(self) -> dict[str, list[str]]:
        """Cluster id -> its SKUs (sorted), for every cluster with at least one SKU."""
        out: dict[str, list[str]] = {}
        for sku, cluster in sorted(self.assignment.items()):
            out.setdefault(cluster, []).append(sku)
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        members = self.members()
        return json.dumps(
            {
                "date": self.date.isoformat(),
                "features": list(FEATURES),
                "mean": self.mean,
                "scale": self.scale,
                "skus_per_cluster": self.skus_per_cluster,
                "clusters": {
                    c: {
                        "category": self.category[c],
                        "centroid": self.centroid[c],
                        "skus": len(members.get(c, [])),
                    }
                    for c in sorted(self.category)
                },
                "assignment": dict(sorted(self.assignment.items())),
                "notes": self.notes,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Clusters:
        clusters = data["clusters"]
        return cls(
            date=dt.date.fromisoformat(data["date"]),
            assignment={str(k): str(v) for k, v in data["assignment"].items()},
            category={c: str(v["category"]) for c, v in clusters.items()},
            centroid={c: [float(x) for x in v["centroid"]] for c, v in clusters.items()},
            mean=[float(x) for x in data["mean"]],
            scale=[float(x) for x in data["scale"]],
            skus_per_cluster=int(data["skus_per_cluster"]),
            notes=list(data.get("notes", [])),
        )


def _slug(category: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")[:40]
    return slug or "sku"


def sku_features(catalogue: Catalogue, features: pd.DataFrame | None) -> pd.DataFrame:
    """Per catalogue SKU: its category and the raw (unstandardised) clustering features.

    ``features``: the feature table (`pipeline.data.features`) of the last days, or None. A SKU
    without features takes its category's median demand (or the catalogue's)."""
    items = pd.DataFrame(
        {
            "sku": [s.id for s in catalogue.skus],
            "category": [s.category or s.id for s in catalogue.skus],
            "log_price": [math.log(s.ref_price) for s in catalogue.skus],
        }
    ).set_index("sku")
    demand = pd.Series(np.nan, index=items.index)
    if features is not None and len(features):
        f = features.assign(sku=features["sku"].astype(str))
        views = f.groupby("sku")["views"].mean()
        units = f.groupby("sku")["units"].mean()
        per_sku = views.where(views.notna(), units)
        demand = np.log1p(per_sku.reindex(items.index).astype(float))
    by_category = demand.groupby(items["category"]).transform("median")
    fallback = float(demand.median()) if demand.notna().any() else 0.0
    items["log_demand"] = demand.fillna(by_category).fillna(fallback)
    return items


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from a deterministic start (points at evenly spaced ranks of the first
    principal direction), so a night re-run gives the same clusters."""
    n = len(x)
    if k >= n:
        return np.arange(n), x.copy()
    centred = x - x.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0] if n > 1 else np.ones(x.shape[1])
    order = np.argsort(centred @ direction, kind="stable")
    centres = x[order[((np.arange(k) + 0.5) * n / k).astype(int)]].copy()
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    for iteration in range(KMEANS_ITERATIONS):
        dist = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        new = dist.argmin(axis=1)
        for j in range(k):  # an emptied cluster restarts at a random point: k stays k
            if not (new == j).any():
                new[rng.integers(n)] = j
        if iteration > 0 and (new == labels).all():
            break
        labels = new
        centres = np.stack([x[labels == j].mean(axis=0) for j in range(k)])
    return labels, centres


def assign_clusters(
    catalogue: Catalogue,
    features: pd.DataFrame | None,
    date: dt.date,
    skus_per_cluster: int,
    previous: Clusters | None = None,
    seed: int = 0,
) -> Clusters:
    """The clusters of ``catalogue`` for night ``date`` (see the module docstring).

    Args:
        catalogue: the SKUs to cluster (their category and reference price).
        features: the feature table of the last days (None: prices and categories only).
        skus_per_cluster: the target size of a cluster.
        previous: the latest earlier snapshot; its SKUs keep their clusters (None: cluster anew).
        seed: k-means' seed (only an emptied cluster's restart draws from it).
    """
    if skus_per_cluster < 1:
        raise ClusterError(f"skus_per_cluster must be >= 1 (got {skus_per_cluster})")
    if not catalogue.skus:
        raise ClusterError("the catalogue has no SKU to cluster")
    raw = sku_features(catalogue, features)
    if previous is None:
        return _fresh(raw, date, skus_per_cluster, seed)
    return _extend(raw, date, previous)


def _fresh(raw: pd.DataFrame, date: dt.date, size: int, seed: int) -> Clusters:
    x = raw[list(FEATURES)].to_numpy(dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    assignment: dict[str, str] = {}
    category: dict[str, str] = {}
    centroid: dict[str, list[float]] = {}
    skus = raw.index.to_numpy()
    cats = raw["category"].to_numpy()
    slugs: dict[str, str] = {}
    for cat in sorted(set(cats)):
        slug = _slug(cat)
        while slug in slugs.values():  # two categories that slug alike stay apart
            slug += "-x"
        slugs[cat] = slug
        rows = np.flatnonzero(cats == cat)
        k = max(1, math.ceil(len(rows) / size))
        labels, centres = _kmeans(z[rows], k, seed)
        for j in range(len(centres)):
            cid = f"{slug}-{j}"
            category[cid] = cat
            centroid[cid] = [round(float(v), 6) for v in centres[j]]
        for i, label in zip(rows, labels, strict=True):
            assignment[str(skus[i])] = f"{slug}-{label}"
    return Clusters(
        date, assignment, category, centroid, mean.tolist(), scale.tolist(), size, ["clustered anew"]
    )


def _extend(raw: pd.DataFrame, date: dt.date, previous: Clusters) -> Clusters:
    size = previous.skus_per_cluster
    mean, scale = np.asarray(previous.mean), np.asarray(previous.scale)
    category = dict(previous.category)
    centroid = dict(previous.centroid)
    assignment = {s: c for s, c in previous.assignment.items() if s in raw.index}
    gone = len(previous.assignment) - len(assignment)
    counts: dict[str, int] = {}
    for c in assignment.values():
        counts[c] = counts.get(c, 0) + 1
    new = [s for s in raw.index if s not in assignment]
    opened: list[str] = []
    for sku in new:
        cat = str(raw.at[sku, "category"])
        z = (raw.loc[sku, list(FEATURES)].to_numpy(dtype=float) - mean) / scale
        open_ = [c for c, k in category.items() if k == cat and counts.get(c, 0) < 2 * size]
        if open_:
            best = min(open_, key=lambda c: (float(((np.asarray(centroid[c]) - z) ** 2).sum()), c))
        else:
            slug = _slug(cat)
            taken = [c for c in category if c.rsplit("-", 1)[0] == slug]
            best = f"{slug}-{len(taken)}"
            while best in category:
                best += "x"
            category[best] = cat
            centroid[best] = [round(float(v), 6) for v in z]
            opened.append(best)
        assignment[sku] = best
        counts[best] = counts.get(best, 0) + 1
    notes = [
        f"kept {len(assignment) - len(new)} SKUs in their clusters of {previous.date}; placed "
        f"{len(new)} new; {gone} left the catalogue"
    ]
    if opened:
        notes.append(f"opened {len(opened)} cluster(s): {', '.join(opened[:10])}")
    return Clusters(date, assignment, category, centroid, list(mean), list(scale), size, notes)


def read_clusters(lake: Lake, date: dt.date) -> Clusters | None:
    """The latest snapshot dated ``date`` or earlier, or None."""
    usable = [d for d in lake.snapshot_dates(CLUSTERS_PREFIX, CLUSTERS_NAME) if d <= date]
    if not usable:
        return None
    path = clusters_path(usable[-1])
    try:
        return Clusters.from_json(json.loads(lake.read_bytes(path)))
    except (ValueError, KeyError, TypeError) as err:
        raise ClusterError(
            f"clusters {lake.uri(path)} are unreadable ({err}); delete the snapshot and run "
            "`pricing clusters --recluster` for its date"
        ) from None


def write_clusters(lake: Lake, clusters: Clusters) -> str:
    """Write the snapshot (one object: whole or absent); return its URI."""
    path = clusters_path(clusters.date)
    lake.write_bytes(path, clusters.to_json().encode())
    return lake.uri(path)


def cluster_catalogue(settings: Settings, date: dt.date, recluster: bool = False) -> Clusters:
    """The night's clustering step: group the catalogue in force on ``date`` (the world file's
    with ``PRICING_WORLD_FILE``), measured on the features of the last ``cluster_days`` days,
    and write the snapshot; known SKUs keep the clusters of the latest earlier snapshot unless
    ``recluster``."""
    lake = open_lake(settings)
    if settings.world_file is not None:
        catalogue = Catalogue.of_world(load_world(settings.world_file))
    else:
        snapshot = read_catalogue(lake, date)
        catalogue = snapshot[0] if snapshot else Catalogue.of_world(load_world(None))
    days = [date - dt.timedelta(days=i) for i in range(settings.cluster_days)]
    frames = [
        frame
        for d in days
        if lake.has_partition("features", "features", d)
        for frame in lake.iter_partition(
            "features", "features", d, columns=["sku", "views", "units"]
        )
    ]
    features = pd.concat(frames, ignore_index=True) if frames else None
    catalogue, thin = _priced_pos(settings, lake, catalogue, days)
    previous = None if recluster else read_clusters(lake, date - dt.timedelta(days=1))
    clusters = assign_clusters(catalogue, features, date, settings.skus_per_cluster, previous)
    if thin:
        clusters.notes.append(thin)
    write_clusters(lake, clusters)
    return clusters


def _priced_pos(
    settings: Settings, lake: Lake, catalogue: Catalogue, days: list[dt.date]
) -> tuple[Catalogue, str | None]:
    """On point-of-sale data (transactions, no decision log), the catalogue's SKUs a night
    prices: those selling ``PRICING_POS_MIN_UNITS_PER_DAY`` a day over ``days`` (the refit's
    threshold, here over the clustering window; a thinner SKU keeps its price), and what is left
    out. Other lakes: all of them."""
    if any(lake.has_partition("raw", "decisions", d) for d in days):
        return catalogue, None
    seen = [d for d in days if lake.has_partition("raw", "transactions", d)]
    if not seen:
        return catalogue, None
    units: pd.Series = pd.Series(dtype=float)
    for d in seen:
        for part in lake.iter_partition("raw", "transactions", d, columns=["sku", "quantity"]):
            day = part.groupby(part["sku"].astype(str))["quantity"].sum()
            units = units.add(day, fill_value=0.0)
    floor = settings.pos_min_units_per_day
    keep = set(units[units / len(seen) >= floor].index)
    items = [s for s in catalogue.skus if s.id in keep]
    left = len(catalogue.skus) - len(items)
    if not left:
        return catalogue, None
    if not items:
        raise ClusterError(
            f"no SKU sells {floor:g} units a day over the {len(seen)} days of transactions "
            "ending on the night: nothing to price; lower PRICING_POS_MIN_UNITS_PER_DAY"
        )
    note = (
        f"{left:,} SKUs sell under {floor:g} units a day over {len(seen)} days: not clustered, "
        "they keep their price (PRICING_POS_MIN_UNITS_PER_DAY)"
    )
    return catalogue.model_copy(update={"skus": tuple(items)}), note
