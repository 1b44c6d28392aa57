"""The running service: what a request needs (`Service`), built at start-up and kept current
by a background loop (champion alias, catalogue, admin knobs, the decision log's exports)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.data.catalogue import catalogue_dates, read_catalogue, season_anchor
from pipeline.data.lake import Lake, open_lake
from pipeline.model.numpy_policy import NumpyPolicy
from pipeline.model.planner import Planner
from pipeline.settings import Settings
from serving import metrics
from serving.champion import Champion, ChampionHolder
from serving.config import ServeSettings
from serving.decide import Pricer
from serving.decision_log import DecisionLog
from serving.lanes import Lanes
from serving.market import LiveWorld
from serving.store import Store
from sim.catalogue import apply_catalogue
from sim.params import MarketParams

log = logging.getLogger("pricing.serve")


@dataclass
class Service:
    """Everything a request needs; built at start-up, refreshed by the background loop."""

    settings: Settings
    serve: ServeSettings
    lake: Lake
    store: Store
    holder: ChampionHolder
    pricer: Pricer
    decisions: DecisionLog
    lanes: Lanes | None = None  # PRICING_SERVE_CLUSTERS: each cluster's champion (serving.lanes)
    catalogue_key: tuple[str, ...] = ()
    reason: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def policy(self) -> str:
        return "champion" if self.pricer.champion is not None else "fallback"


def _catalogue_key(lake: Lake) -> tuple[str, ...]:
    return tuple(d.isoformat() for d in catalogue_dates(lake))


def build_world(
    settings: Settings, serve: ServeSettings, lake: Lake, champion: Champion | None
) -> LiveWorld:
    """The champion's world (else the night's base world) around the lake's latest catalogue."""
    from pipeline.nightly.steps import base_world

    dates = catalogue_dates(lake)
    snapshot = read_catalogue(lake, max(dates)) if dates else None
    if champion is None:  # the night's base world already stands around the latest catalogue
        latest = max(dates) if dates else dt.datetime.now(dt.UTC).date()
        world, source = base_world(settings, lake, latest)
    else:
        world, source = champion.world, f"the world of v{champion.version}"
        if snapshot is not None and settings.world_file is None:
            world = apply_catalogue(world, snapshot[0])
            source = f"{source}, catalogue {snapshot[1]}"
    categories = (
        {i.id: i.category for i in snapshot[0].skus if i.category} if snapshot is not None else {}
    )
    return LiveWorld(world, season_anchor(lake, serve.season_start), source, categories)


def _fits(champion: Champion, params: MarketParams) -> str | None:
    """Why the champion cannot price in this world, or None."""
    policy = champion.policy
    if isinstance(policy, Planner):
        planned = policy.params
        same = (
            [s.id for s in planned.world.skus] == [s.id for s in params.world.skus]
            and (planned.T, planned.L, planned.C, planned.A)
            == (params.T, params.L, params.C, params.A)
            and np.array_equal(planned.capacity, params.capacity)
        )
        if same:
            return None
        return (
            f"v{champion.version} is the exact plan of a world whose SKUs, capacities, horizon "
            "or ladder differ from the live one (the catalogue changed): serving the fallback "
            "until a candidate planned or trained on this world is promoted"
        )
    assert isinstance(policy, NumpyPolicy)
    n_obs = params.obs_dim
    inputs = policy.weights[0].shape[0]
    outputs = policy.weights[-1].shape[1]
    if inputs != n_obs or outputs != params.A:
        return (
            f"v{champion.version} takes {inputs} inputs and {outputs} actions; the live world "
            f"has {n_obs} and {params.A} (a change of segments or of the price moves): "
            "serving the fallback until a champion trained on this world is promoted"
        )
    return None


def _prepare(svc: Service, champion: Champion | None) -> tuple[LiveWorld, str | None]:
    """The heavy part, off the event loop: the world around ``champion`` (else the base world)
    with its current season compiled (a large catalogue takes seconds), and why the champion
    cannot price in it (None: it can)."""
    live = build_world(svc.settings, svc.serve, svc.lake, champion)
    params = _current_season(live)
    return live, (_fits(champion, params) if champion is not None else None)


def _current_season(live: LiveWorld) -> MarketParams:
    """The season in force now, compiled (and kept by ``live``)."""
    now = live.clock.period(dt.datetime.now(dt.UTC))
    return live.params(live.clock.season_and_step(now)[0])


def _swap(svc: Service, champion: Champion | None, live: LiveWorld, why: str | None) -> None:
    """The light part, on the event loop: serve ``champion`` in ``live`` if it fits."""
    if champion is not None and why is None:
        svc.pricer.live, svc.pricer.champion = live, champion
        svc.pricer.forget_cache()
        svc.reason = svc.holder.reason
        metrics.CHAMPION.set(int(champion.version))
        return
    svc.reason = why or svc.holder.reason
    svc.pricer.champion = None
    metrics.CHAMPION.set(0)


async def refresh(svc: Service) -> None:
    changed = await asyncio.to_thread(svc.holder.refresh)
    if svc.holder.failed_loads and svc.pricer.champion is None:
        svc.reason = svc.holder.reason
    elif not changed and svc.pricer.champion is svc.holder.current is not None:
        svc.reason = svc.holder.reason  # says so while a reload fails, and when it is over
    key = _catalogue_key(svc.lake)
    if changed:
        metrics.RELOADS.labels("ok").inc()
        champion = svc.holder.current
        live, why = await asyncio.to_thread(_prepare, svc, champion)
        _swap(svc, champion, live, why)
    elif key != svc.catalogue_key:
        live, _ = await asyncio.to_thread(_prepare, svc, svc.pricer.champion)
        svc.pricer.live = live
        svc.pricer.forget_cache()
    if svc.lanes is not None:
        regrouped = await asyncio.to_thread(svc.lanes.read_snapshot)
        changed_lanes = await asyncio.to_thread(
            svc.lanes.refresh, svc.pricer, key != svc.catalogue_key
        )
        if regrouped or changed_lanes:
            log.info("clusters: %d lanes serve a champion", svc.lanes.serving())
    svc.catalogue_key = key


def apply_knobs(svc: Service) -> None:
    values = svc.store.runtime()
    k = svc.pricer.knobs
    if "treatment_share" in values:
        k.treatment_share = float(values["treatment_share"])
    if "epsilon" in values:
        k.epsilon = float(values["epsilon"])
    if "control_epsilon" in values:
        k.control_epsilon = float(values["control_epsilon"])
    if "explore_skus" in values:
        k.explore_skus = tuple(s for s in values["explore_skus"].split(",") if s)
    metrics.SHARE.set(k.treatment_share)
    metrics.EPSILON.set(svc.pricer.epsilon_now())


PERSIST_SECONDS = 0.05


async def persister(svc: Service) -> None:
    """Store the prices answered since the last round, every 50 ms, in one transaction."""
    while True:
        await asyncio.sleep(PERSIST_SECONDS)
        try:
            svc.decisions.persist()
        except Exception:
            log.exception("storing decisions failed; they are kept and retried")


async def background(svc: Service) -> None:
    next_poll = time.monotonic() + svc.serve.poll_seconds
    next_flush = time.monotonic()
    while True:
        await asyncio.sleep(min(svc.serve.flush_seconds, 1.0))
        try:
            apply_knobs(svc)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + svc.serve.poll_seconds
                failed = svc.holder.failed_loads
                await refresh(svc)
                if svc.holder.failed_loads > failed:
                    metrics.RELOADS.labels("failed").inc()
            # in a thread, on the log's own connection: writing Parquet must not hold up answers
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + svc.serve.flush_seconds
                await asyncio.to_thread(svc.decisions.flush)
                # a count over every waiting chunk: on the log's connection, off the event loop
                metrics.WAITING.set(await asyncio.to_thread(svc.decisions.waiting))
        except Exception:
            log.exception("background round failed; retrying")


def start_service(settings: Settings, serve: ServeSettings) -> Service:
    lake = open_lake(settings)
    store = Store(settings.runtime_dir / "serving.sqlite")
    holder = ChampionHolder(settings)
    holder.refresh()
    live = build_world(settings, serve, lake, None)  # also the fallback if a champion won't fit
    _current_season(live)  # compiled before the first request
    decisions = DecisionLog(
        store, Store(store.path), lake, serve.writer_id, serve.outcome_window_seconds
    )
    svc = Service(settings, serve, lake, store, holder, Pricer(serve, store, live), decisions)
    svc.catalogue_key = _catalogue_key(lake)
    champion = holder.current
    if champion is not None:
        _swap(svc, champion, *_prepare(svc, champion))
    else:
        svc.reason = holder.reason
    if holder.failed_loads:
        metrics.RELOADS.labels("failed").inc(holder.failed_loads)
    elif holder.current is not None:
        metrics.RELOADS.labels("ok").inc()
    if serve.clusters:
        svc.lanes = Lanes(settings, serve, lake, store)
        svc.lanes.read_snapshot()
        svc.lanes.refresh(svc.pricer)
    apply_knobs(svc)
    decisions.flush(recover=True)  # what a process that died stamped but did not write
    return svc
