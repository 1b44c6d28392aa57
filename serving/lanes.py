"""Each SKU priced by the champion of its cluster (``PRICING_SERVE_CLUSTERS``).

A night run with ``PRICING_CLUSTERS`` trains one agent per cluster of SKUs and promotes each on
its own registered model, ``<model_name>--<cluster>`` (`pipeline.data.clusters`). The service then
keeps one *lane* per cluster of the lake's latest clusters snapshot: the cluster's champion (its
own `ChampionHolder`, followed like the catalogue's) and a `Pricer` over that champion's world,
restricted to the SKUs the champion was built for, around the latest catalogue.

A SKU is priced in its cluster's lane when that lane serves a champion and its world holds the
SKU; otherwise — no champion yet for the cluster, a SKU new since the champion was trained, a
champion that no longer fits the catalogue — in the service's own lane (the catalogue-wide
champion of ``<model_name>``, usually none in this mode: the rule-based fallback). Every lane
shares the store (a SKU's held price is one row whatever priced it) and the admin knobs. A lane
champion's decisions carry its version as ``<n>@<cluster>``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np

from pipeline.data.clusters import Clusters, read_clusters
from pipeline.data.lake import Lake
from pipeline.settings import Settings
from serving.champion import Champion, ChampionHolder
from serving.config import ServeSettings
from serving.decide import Batch, Decision, Pricer, UnknownSku
from serving.market import LiveWorld
from serving.schemas import Arm
from serving.store import Store

log = logging.getLogger("pricing.serve")


@dataclass
class Lane:
    cluster: str
    holder: ChampionHolder
    pricer: Pricer | None = None  # None until its champion is loaded and fits
    reason: str = "not loaded yet"


class Lanes:
    """The clusters' lanes and the SKU -> cluster routing of the latest snapshot."""

    def __init__(self, settings: Settings, serve: ServeSettings, lake: Lake, store: Store) -> None:
        self.settings = settings
        self.serve = serve
        self.lake = lake
        self.store = store
        self.snapshot: dt.date | None = None
        self.route: dict[str, str] = {}
        self.lanes: dict[str, Lane] = {}

    def read_snapshot(self) -> bool:
        """Follow the lake's latest clusters snapshot; True when it changed (new lanes have no
        champion until `refresh`)."""
        clusters: Clusters | None = read_clusters(self.lake, dt.date.max)
        date = clusters.date if clusters is not None else None
        if date == self.snapshot:
            return False
        self.snapshot = date
        self.route = dict(clusters.assignment) if clusters is not None else {}
        wanted = set(self.route.values())
        for gone in set(self.lanes) - wanted:
            del self.lanes[gone]
        for cluster in sorted(wanted - set(self.lanes)):
            self.lanes[cluster] = Lane(cluster, ChampionHolder(self.settings.for_cluster(cluster)))
        return True

    def refresh(self, knobs_from: Pricer, catalogue_changed: bool = False) -> list[str]:
        """Follow every lane's champion alias (blocking: run it off the event loop); rebuild the
        lanes whose champion changed (all of them when the catalogue did). Returns the clusters
        whose lane changed. Never raises."""
        changed = []
        for lane in self.lanes.values():
            moved = lane.holder.refresh()
            if not (moved or catalogue_changed) or lane.holder.current is None:
                if lane.holder.current is None:
                    lane.reason = lane.holder.reason
                continue
            try:
                lane.pricer, lane.reason = self._build(
                    lane.cluster, lane.holder.current, knobs_from
                )
            except Exception as err:  # a lane that cannot be built leaves its SKUs to the fallback
                lane.pricer = None
                lane.reason = f"cluster {lane.cluster}: {err.__class__.__name__}: {err}"
                log.exception("lane %s could not be built", lane.cluster)
            changed.append(lane.cluster)
        return changed

    def _build(self, cluster: str, champion: Champion, shared: Pricer) -> tuple[Pricer | None, str]:
        from serving.service import _current_season, _fits, build_world

        live = build_world(self.settings, self.serve, self.lake, champion)
        own = {s.id for s in champion.world.skus}
        world = live.world.with_skus([s for s in live.world.skus if s.id in own])
        live = LiveWorld(world, live.anchor, f"{live.source} (cluster {cluster})")
        why = _fits(champion, _current_season(live))
        if why is not None:
            return None, f"cluster {cluster}: {why}"
        pricer = Pricer(self.serve, self.store, live, tag=cluster)
        pricer.champion = champion
        pricer.knobs = shared.knobs  # one set of admin knobs for every lane
        pricer.started = shared.started
        return pricer, f"cluster {cluster}: serving {champion.label}"

    def serving(self) -> int:
        return sum(lane.pricer is not None for lane in self.lanes.values())

    def split(self, default: Pricer, skus: list[str]) -> list[tuple[Pricer, np.ndarray]]:
        """The rows of ``skus`` each pricer prices: a SKU's cluster lane when it serves a
        champion whose world holds the SKU, else ``default``."""
        rows: dict[int, list[int]] = {}
        pricers: dict[int, Pricer] = {id(default): default}
        for j, sku in enumerate(skus):
            lane = self.lanes.get(self.route.get(sku, ""))
            pricer = lane.pricer if lane is not None else None
            if pricer is None or sku not in pricer.live.index:
                pricer = default
            pricers.setdefault(id(pricer), pricer)
            rows.setdefault(id(pricer), []).append(j)
        return [(pricers[key], np.array(r, dtype=np.int64)) for key, r in rows.items()]


def price_routed(
    default: Pricer, lanes: Lanes | None, arm: Arm, ts: dt.datetime, batch: Batch
) -> tuple[int, list[Decision], list[LiveWorld]]:
    """Each SKU's decision from its lane (see the module), the period, and the live world each
    SKU was priced in (for the facts the log records)."""
    if lanes is None or not lanes.lanes:
        period, decisions = default.price(arm, ts, batch)
        return period, decisions, [default.live] * len(batch)
    unknown = [s for s in batch.sku if s not in default.live.index]  # every lane's are in it
    if unknown:  # before any lane stores a hold
        raise UnknownSku(unknown)
    groups = lanes.split(default, batch.sku)
    if len(groups) == 1:
        pricer = groups[0][0]
        period, decisions = pricer.price(arm, ts, batch)
        return period, decisions, [pricer.live] * len(batch)
    out: list[Decision | None] = [None] * len(batch)
    lives: list[LiveWorld | None] = [None] * len(batch)
    periods = set()
    for pricer, rows in groups:
        period, decisions = pricer.price(arm, ts, batch.take(rows))
        periods.add(period)
        for j, d in zip(rows.tolist(), decisions, strict=True):
            out[j], lives[j] = d, pricer.live
    assert len(periods) == 1, "every lane runs on the catalogue's clock"
    return periods.pop(), out, lives  # type: ignore[return-value]
