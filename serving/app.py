"""The FastAPI application: `create_app` (uvicorn factory: ``serving.app:create_app``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.data.catalogue import catalogue_dates, read_catalogue
from pipeline.data.lake import Lake, open_lake
from pipeline.settings import Settings
from serving import metrics
from serving.champion import Champion, ChampionHolder
from serving.config import ServeSettings
from serving.decide import Decision, Knobs, Pricer, UnknownSku
from serving.decision_log import DecisionLog
from serving.market import DEFAULT_ANCHOR, LiveWorld
from serving.schemas import (
    AbSettings,
    Arm,
    ExplorationSettings,
    OutcomeReport,
    PriceAnswer,
    PriceRequest,
    PricesAnswer,
    PricesRequest,
    SkuState,
)
from serving.store import Store
from sim.catalogue import apply_catalogue
from sim.world import World

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

    today = dt.datetime.now(dt.UTC).date()
    dates = catalogue_dates(lake)
    if champion is not None:
        world: World = champion.world
        source = f"the world of v{champion.version}"
    else:
        world, source = base_world(settings, lake, today)
    snapshot = read_catalogue(lake, max(dates)) if dates else None
    if snapshot is not None and settings.world_file is None:
        world = apply_catalogue(world, snapshot[0])
        source = f"{source}, catalogue {snapshot[1]}"
    anchor = serve.season_start or (
        dt.datetime.combine(dates[0], dt.time(0), tzinfo=dt.UTC) if dates else DEFAULT_ANCHOR
    )
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=dt.UTC)
    return LiveWorld(world, anchor, source)


def _fits(champion: Champion, live: LiveWorld) -> str | None:
    """Why the champion cannot price in this world, or None."""
    params = live.params(0)
    n_obs = params.obs_dim
    inputs = champion.policy.weights[0].shape[0]
    outputs = champion.policy.weights[-1].shape[1]
    if inputs != n_obs or outputs != params.A:
        return (
            f"v{champion.version} takes {inputs} inputs and {outputs} actions; the live world "
            f"has {n_obs} and {params.A} (a change of segments or of the price moves): "
            "serving the fallback until a champion trained on this world is promoted"
        )
    return None


def _adopt(svc: Service) -> None:
    """Serve the holder's champion if it fits the live world (rebuilt around it)."""
    champion = svc.holder.current
    if champion is not None:
        live = build_world(svc.settings, svc.serve, svc.lake, champion)
        why = _fits(champion, live)
        if why is None:
            svc.pricer.live, svc.pricer.champion = live, champion
            svc.pricer.forget_cache()
            svc.reason = svc.holder.reason
            metrics.CHAMPION.set(int(champion.version))
            return
        svc.reason = why
    else:
        svc.reason = svc.holder.reason
    svc.pricer.champion = None
    metrics.CHAMPION.set(0)


async def _refresh(svc: Service) -> None:
    changed = await asyncio.to_thread(svc.holder.refresh)
    if svc.holder.failed_loads:
        svc.reason = svc.holder.reason if svc.pricer.champion is None else svc.reason
    key = _catalogue_key(svc.lake)
    if changed:
        metrics.RELOADS.labels("ok").inc()
        _adopt(svc)
    elif key != svc.catalogue_key:
        svc.pricer.live = build_world(svc.settings, svc.serve, svc.lake, svc.pricer.champion)
        svc.pricer.forget_cache()
    svc.catalogue_key = key


def _apply_knobs(svc: Service) -> None:
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


async def _background(svc: Service) -> None:
    next_poll = time.monotonic() + svc.serve.poll_seconds
    while True:
        await asyncio.sleep(min(svc.serve.flush_seconds, 1.0))
        try:
            _apply_knobs(svc)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + svc.serve.poll_seconds
                failed = svc.holder.failed_loads
                await _refresh(svc)
                if svc.holder.failed_loads > failed:
                    metrics.RELOADS.labels("failed").inc()
            svc.decisions.flush()
            metrics.WAITING.set(svc.store.waiting())
        except Exception:
            log.exception("background round failed; retrying")


def start_service(settings: Settings, serve: ServeSettings) -> Service:
    lake = open_lake(settings)
    store = Store(settings.runtime_dir / "serving.sqlite")
    holder = ChampionHolder(settings)
    holder.refresh()
    live = build_world(settings, serve, lake, None)
    decisions = DecisionLog(store, lake, serve.writer_id, serve.outcome_window_seconds)
    svc = Service(settings, serve, lake, store, holder, Pricer(serve, store, live), decisions)
    svc.catalogue_key = _catalogue_key(lake)
    _adopt(svc)
    if holder.failed_loads:
        metrics.RELOADS.labels("failed").inc(holder.failed_loads)
    elif holder.current is not None:
        metrics.RELOADS.labels("ok").inc()
    _apply_knobs(svc)
    decisions.flush()  # what an earlier process stamped but did not write
    return svc


def create_app(settings: Settings | None = None, serve: ServeSettings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = await asyncio.to_thread(
            start_service, settings or Settings(), serve or ServeSettings()
        )
        app.state.svc = svc
        svc.tasks.append(asyncio.create_task(_background(svc)))
        log.info("pricing service ready: %s", svc.reason)
        try:
            yield
        finally:
            for task in svc.tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*svc.tasks)
            written = svc.decisions.flush(everything=True)
            log.info("pricing service stopped; %d decisions written at shutdown", written)
            svc.store.close()

    app = FastAPI(
        title="Pricing service",
        version="1",
        description="Prices from the champion policy, with guardrails, a staged A/B split and a "
        "decision log the nightly loop learns from.",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _invalid)
    _routes(app)
    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with one message per field. The input is left out: it may hold NaN, which JSON
    cannot carry, and the client has it anyway."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _svc(app: FastAPI) -> Service:
    svc: Service = app.state.svc
    return svc


def _now(ts: dt.datetime | None) -> dt.datetime:
    return ts.astimezone(dt.UTC) if ts is not None else dt.datetime.now(dt.UTC)


def _answer(
    svc: Service,
    arm: Arm,
    ts: dt.datetime,
    customer_id: str,
    segment: str | None,
    items: list[SkuState],
) -> tuple[int, list[Decision], list[str]]:
    try:
        period, decisions = svc.pricer.price(arm, ts, items)
    except UnknownSku as err:
        raise HTTPException(
            404,
            f"unknown sku(s) {err.skus[:5]}{' …' if len(err.skus) > 5 else ''}: not in the "
            "catalogue the service reads (the lake's catalogue/date=D/catalogue.json)",
        ) from None
    ids = svc.decisions.event_ids(len(items))
    live = svc.pricer.live
    stamp = ts.isoformat()
    rows = []
    for item, d, event_id in zip(items, decisions, ids, strict=True):
        sku = live.world.skus[live.index[item.sku]]
        comp = item.competitor_price or float(sku.competitor_ref or sku.ref_price)
        rows.append(
            (
                event_id,
                stamp,
                item.sku,
                segment,
                customer_id,
                float(sku.ref_price),
                d.price,
                comp,
                item.inventory,
                d.action,
                d.propensity,
                d.policy if d.version is None else f"{d.policy}-v{d.version}",
                arm,
                "view",
                0,
                float(sku.unit_cost),
            )
        )
    svc.decisions.record(rows)
    metrics.ANSWERS.labels(decisions[0].policy, arm).inc(len(decisions))
    if decisions[0].policy == "fallback":
        metrics.FALLBACKS.inc(len(decisions))
    actions, counts = np.unique([d.action for d in decisions], return_counts=True)
    for a, c in zip(actions, counts, strict=True):
        metrics.ACTIONS.labels(arm, str(a)).inc(int(c))
    explored = sum(d.explored for d in decisions)
    if explored:
        metrics.EXPLORED.labels(arm).inc(explored)
    clipped = sum(d.clipped for d in decisions)
    if clipped:
        metrics.CLIPS.labels(arm).inc(clipped)
    return period, decisions, ids


def _price_answer(d: Decision, arm: Arm, event_id: str, until: dt.datetime) -> dict[str, Any]:
    return {
        "sku": d.sku,
        "price": round(d.price, 4),
        "action": d.action,
        "propensity": d.propensity,
        "arm": arm,
        "policy": d.policy,
        "model_version": d.version,
        "explored": d.explored,
        "clipped": d.clipped,
        "event_id": event_id,
        "valid_until": until,
    }


def _admin(app: FastAPI) -> Any:
    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        token = _svc(app).settings.admin_token
        if not token:
            raise HTTPException(503, "admin actions are off: set PRICING_ADMIN_TOKEN to use them")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "admin actions need the header 'Authorization: Bearer <PRICING_ADMIN_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return Depends(check)


def _routes(app: FastAPI) -> None:

    @app.post("/v1/price", response_model=PriceAnswer)
    async def price(req: PriceRequest, response: Response) -> dict[str, Any]:
        started = time.perf_counter()
        svc = _svc(app)
        ts = _now(req.ts)
        arm = svc.pricer.arm(req.customer_id)
        period, (d,), (event_id,) = _answer(svc, arm, ts, req.customer_id, req.segment, [req])
        response.headers["X-Pricing-Policy"] = d.policy
        until = svc.pricer.live.clock.period_start(period + 1)
        metrics.LATENCY.labels("price").observe(time.perf_counter() - started)
        return _price_answer(d, arm, event_id, until)

    @app.post("/v1/prices", response_model=PricesAnswer)
    async def prices(req: PricesRequest, response: Response) -> dict[str, Any]:
        started = time.perf_counter()
        svc = _svc(app)
        ts = _now(req.ts)
        arm = svc.pricer.arm(req.customer_id)
        period, decisions, ids = _answer(svc, arm, ts, req.customer_id, req.segment, req.items)
        until = svc.pricer.live.clock.period_start(period + 1)
        response.headers["X-Pricing-Policy"] = decisions[0].policy
        metrics.LATENCY.labels("prices").observe(time.perf_counter() - started)
        return {
            "arm": arm,
            "policy": decisions[0].policy,
            "model_version": decisions[0].version,
            "prices": [
                _price_answer(d, arm, i, until) for d, i in zip(decisions, ids, strict=True)
            ],
        }

    @app.post("/v1/outcomes")
    async def outcome(report: OutcomeReport) -> dict[str, str]:
        svc = _svc(app)
        status, row = svc.decisions.report(report.event_id, report.outcome, report.quantity)
        if status == "unknown":
            raise HTTPException(
                404,
                f"unknown event_id {report.event_id!r}, or its outcome window "
                f"({svc.serve.outcome_window_seconds:g} s) has passed and it was logged as a view",
            )
        if status == "late":
            raise HTTPException(409, f"event {report.event_id!r} already has its outcome")
        assert row is not None
        arm, price_shown, cost = row
        metrics.OUTCOMES.labels(arm, report.outcome).inc()
        if report.outcome == "purchase" and report.quantity:
            metrics.REVENUE.labels(arm).inc(price_shown * report.quantity)
            metrics.MARGIN.labels(arm).inc((price_shown - cost) * report.quantity)
        return {"status": "recorded"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        svc = _svc(app)
        champion = svc.pricer.champion
        body = {
            "ready": True,
            "policy": svc.policy,
            "model_version": champion.version if champion else None,
            "reason": svc.reason,
            "world": svc.pricer.live.source,
            "skus": len(svc.pricer.live.index),
            "treatment_share": svc.pricer.knobs.treatment_share,
            "failed_loads": svc.holder.failed_loads,
        }
        return JSONResponse(body, headers={"X-Pricing-Policy": svc.policy})

    @app.get("/metrics")
    async def prometheus() -> Response:
        data, kind = metrics.render()
        return Response(data, media_type=kind)

    _admin_routes(app)


def _admin_routes(app: FastAPI) -> None:
    admin = _admin(app)

    @app.post("/admin/reload", dependencies=[admin])
    async def reload() -> dict[str, Any]:
        svc = _svc(app)
        await _refresh(svc)
        return {"policy": svc.policy, "reason": svc.reason}

    @app.post("/admin/ab", dependencies=[admin])
    async def ab(body: AbSettings) -> dict[str, Any]:
        svc = _svc(app)
        svc.store.set_runtime({"treatment_share": repr(body.treatment_share)})
        _apply_knobs(svc)
        return {"treatment_share": svc.pricer.knobs.treatment_share}

    @app.post("/admin/exploration", dependencies=[admin])
    async def exploration(body: ExplorationSettings) -> dict[str, Any]:
        svc = _svc(app)
        values = {
            k: repr(v) for k, v in body.model_dump(exclude_none=True).items() if k != "explore_skus"
        }
        if body.explore_skus is not None:
            values["explore_skus"] = ",".join(body.explore_skus)
        svc.store.set_runtime(values)
        _apply_knobs(svc)
        k: Knobs = svc.pricer.knobs
        return {
            "epsilon": k.epsilon,
            "epsilon_now": svc.pricer.epsilon_now(),
            "control_epsilon": k.control_epsilon,
            "explore_skus": list(k.explore_skus),
        }
