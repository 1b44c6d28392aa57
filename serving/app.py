"""The FastAPI application: `create_app` (uvicorn factory: ``serving.app:create_app``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.settings import Settings
from serving import metrics
from serving.arms import Assignment
from serving.config import ServeSettings
from serving.decide import Batch, Decision, Knobs, UnknownSku
from serving.lanes import price_routed
from serving.market import LiveWorld
from serving.schemas import (
    AbSettings,
    Arm,
    ExplorationSettings,
    OutcomeReport,
    PriceAnswer,
    PriceRequest,
    PricesAnswer,
    PricesRequest,
)
from serving.service import (
    PERSIST_SECONDS,
    Service,
    apply_knobs,
    background,
    persister,
    refresh,
    start_service,
)

log = logging.getLogger("pricing.serve")


def create_app(settings: Settings | None = None, serve: ServeSettings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = await asyncio.to_thread(
            start_service, settings or Settings(), serve or ServeSettings()
        )
        app.state.svc = svc
        svc.tasks.append(asyncio.create_task(background(svc)))
        svc.tasks.append(asyncio.create_task(persister(svc)))
        log.info("pricing service ready: %s", svc.reason)
        try:
            yield
        finally:
            for task in svc.tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*svc.tasks)
            svc.decisions.persist()
            written = svc.decisions.flush(everything=True)
            log.info("pricing service stopped; %d decisions written at shutdown", written)
            svc.store.close()
            svc.decisions.store.close()

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
    customer_id: str,
    when: dt.datetime | None,
    segment: str | None,
    batch: Batch,
) -> tuple[list[Assignment], list[Decision], list[str], str]:
    """Each SKU's arm (`serving.arms`: one for every SKU, except in the ``sku`` design), its
    decision, its event id (logged), and when the prices stop holding."""
    ts = _now(when)
    unknown = [s for s in batch.sku if s not in svc.pricer.live.index]
    if unknown:
        raise _unknown(unknown)
    arms = svc.pricer.assign(customer_id, ts, batch.sku)
    rows_of: dict[Arm, list[int]] = {}
    for j, a in enumerate(arms):
        rows_of.setdefault(a.arm, []).append(j)
    decisions: list[Decision | None] = [None] * len(batch)
    lives: list[LiveWorld | None] = [None] * len(batch)
    period = 0
    for arm, rows in rows_of.items():
        part = batch if len(rows) == len(batch) else batch.take(np.array(rows))
        try:
            period, mine, live = price_routed(svc.pricer, svc.lanes, arm, ts, part)
        except UnknownSku as err:
            raise _unknown(err.skus) from None
        for j, d, lv in zip(rows, mine, live, strict=True):
            decisions[j], lives[j] = d, lv
    done = cast(list[Decision], decisions)
    first, ids = svc.decisions.event_ids(len(batch))
    lived = cast(list[LiveWorld], lives)
    _log(svc, first, ids, ts, period, segment, customer_id, batch, arms, done, lived)
    _count(svc, arms, done)
    return arms, done, ids, svc.pricer.live.clock.period_start(period + 1).isoformat()


def _unknown(skus: list[str]) -> HTTPException:
    return HTTPException(
        404,
        f"unknown sku(s) {skus[:5]}{' …' if len(skus) > 5 else ''}: not in the "
        "catalogue the service reads (the lake's catalogue/date=D/catalogue.json)",
    )


def _same_or_list(values: list[Any]) -> Any:
    """One value for the whole chunk when every row has it (the usual case), else the list."""
    return values[0] if values.count(values[0]) == len(values) else values


def _log(
    svc: Service,
    first: int,
    ids: list[str],
    ts: dt.datetime,
    period: int,
    segment: str | None,
    customer_id: str,
    batch: Batch,
    arms: list[Assignment],
    decisions: list[Decision],
    lives: list[LiveWorld],
) -> None:
    """The request's prices into the decision log, in the decisions feed's columns."""
    k = [live.index[s] for live, s in zip(lives, batch.sku, strict=True)]
    prices = [d.price for d in decisions]
    costs = [live.unit_cost[j] for live, j in zip(lives, k, strict=True)]
    given = batch.competitor_price.tolist()  # NaN where the request gave none: the reference
    competitor = [
        live.competitor_ref[j] if math.isnan(c) else c
        for c, live, j in zip(given, lives, k, strict=True)
    ]
    columns = {
        "event_id": ids,
        "ts": ts.isoformat(),
        "sku": batch.sku,
        "segment": segment,
        "customer_id": customer_id,
        "base_price": [live.ref_price[j] for live, j in zip(lives, k, strict=True)],
        "price_shown": prices,
        "competitor_price": competitor,
        "inventory": batch.inventory.tolist(),
        "action": [d.action for d in decisions],
        "propensity": [d.propensity for d in decisions],
        "policy_id": [
            d.policy if d.version is None else f"{d.policy}-v{d.version}" for d in decisions
        ],
        "ab_arm": _same_or_list([a.arm for a in arms]),
        "unit_cost": costs,
        "experiment": svc.serve.experiment,
        "unit": _same_or_list([a.unit for a in arms]),
        "washout": _same_or_list([int(a.washout) for a in arms]),
    }
    svc.decisions.record(first, columns["ab_arm"], columns, prices, costs, period)


def _count(svc: Service, arms: list[Assignment], decisions: list[Decision]) -> None:
    """The answer's metrics: answers by policy and arm, actions, explorations, clips."""
    for (policy, arm), count in Counter(
        (d.policy, a.arm) for d, a in zip(decisions, arms, strict=True)
    ).items():
        metrics.ANSWERS.labels(policy, arm).inc(count)
        if policy == "fallback":
            metrics.FALLBACKS.inc(count)
    for (arm, action), count in Counter(
        (a.arm, d.action) for d, a in zip(decisions, arms, strict=True)
    ).items():
        metrics.ACTIONS.labels(arm, str(action)).inc(count)
    for arm, count in Counter(
        a.arm for d, a in zip(decisions, arms, strict=True) if d.explored
    ).items():
        metrics.EXPLORED.labels(arm).inc(count)
    for arm, count in Counter(
        a.arm for d, a in zip(decisions, arms, strict=True) if d.clipped
    ).items():
        metrics.CLIPS.labels(arm).inc(count)


def _json(answer: dict[str, Any], policy: str, endpoint: str, started: float) -> Response:
    body = orjson.dumps(answer)
    metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    return Response(body, media_type="application/json", headers={"X-Pricing-Policy": policy})


def _rounded(decisions: list[Decision]) -> list[float]:
    return list(np.round([d.price for d in decisions], 4).tolist())


def _price_answer(
    d: Decision, price: float, a: Assignment, event_id: str, until: str
) -> dict[str, Any]:
    return {
        "sku": d.sku,
        "price": price,
        "action": d.action,
        "propensity": d.propensity,
        "arm": a.arm,
        "unit": a.unit,
        "washout": a.washout,
        "policy": d.policy,
        "model_version": d.version,
        "explored": d.explored,
        "clipped": d.clipped,
        "event_id": event_id,
        "valid_until": until,
    }


def _price_columns(
    decisions: list[Decision], ids: list[str], arms: list[Assignment]
) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        "sku": [d.sku for d in decisions],
        "price": _rounded(decisions),
        "action": [d.action for d in decisions],
        "propensity": [d.propensity for d in decisions],
        "explored": [d.explored for d in decisions],
        "clipped": [d.clipped for d in decisions],
        "event_id": ids,
    }
    versions = [d.version for d in decisions]
    if versions.count(versions[0]) != len(versions):  # priced by several clusters' lanes
        columns["policy"] = [d.policy for d in decisions]
        columns["model_version"] = versions
    arm = [a.arm for a in arms]
    if arm.count(arm[0]) != len(arm):  # the sku design: each SKU in its own arm
        columns["arm"] = arm
    if any(a.washout for a in arms):
        columns["washout"] = [a.washout for a in arms]
    return columns


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

    # The answers are serialised here (orjson, of plain values) rather than validated again
    # against their response models, which only document them: for a 10,000-SKU answer that
    # second validation cost 25 times the pricing itself.
    @app.post("/v1/price", response_model=PriceAnswer)
    async def price(req: PriceRequest) -> Response:
        started = time.perf_counter()
        (a,), (d,), (event_id,), until = _answer(
            _svc(app), req.customer_id, req.ts, req.segment, Batch.of_rows([req])
        )
        answer = _price_answer(d, round(d.price, 4), a, event_id, until)
        return _json(answer, d.policy, "price", started)

    @app.post("/v1/prices", response_model=PricesAnswer)
    async def prices(req: PricesRequest) -> Response:
        started = time.perf_counter()
        batch = Batch.of_rows(req.items) if req.items else Batch.of_columns(req.columns_())
        arms, decisions, ids, until = _answer(
            _svc(app), req.customer_id, req.ts, req.segment, batch
        )
        answer: dict[str, Any] = {
            "arm": arms[0].arm,
            "policy": decisions[0].policy,
            "model_version": decisions[0].version,
            "valid_until": until,
        }
        if req.items:
            answer["prices"] = [
                _price_answer(d, price, a, i, until)
                for d, price, i, a in zip(decisions, _rounded(decisions), ids, arms, strict=True)
            ]
        else:
            answer["columns"] = _price_columns(decisions, ids, arms)
        return _json(answer, decisions[0].policy, "prices", started)

    _status_routes(app)
    _admin_routes(app)


def _status_routes(app: FastAPI) -> None:
    @app.post("/v1/outcomes")
    async def outcome(report: OutcomeReport) -> dict[str, str]:
        svc = _svc(app)
        status, row = svc.decisions.report(report.event_id, report.outcome, report.quantity)
        for _ in range(4):  # another worker may hold the decision for up to PERSIST_SECONDS
            if status != "unknown":
                break
            await asyncio.sleep(PERSIST_SECONDS * 1.5)
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
        apply_knobs(svc)  # what an admin call to another worker set: the store holds it
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
            "season_start": svc.pricer.live.anchor.isoformat(),
            "experiment": svc.serve.experiment,
            "decision_period_hours": svc.pricer.live.clock.step_hours,
        }
        if svc.lanes is not None:
            lanes = svc.lanes
            body["clusters"] = {
                "snapshot": lanes.snapshot.isoformat() if lanes.snapshot else None,
                "clusters": len(lanes.lanes),
                "serving": lanes.serving(),
                "lanes": {c: lane.reason for c, lane in sorted(lanes.lanes.items())},
            }
        return JSONResponse(body, headers={"X-Pricing-Policy": svc.policy})

    @app.get("/metrics")
    async def prometheus() -> Response:
        data, kind = metrics.render()
        return Response(data, media_type=kind)


def _admin_routes(app: FastAPI) -> None:
    admin = _admin(app)

    @app.post("/admin/reload", dependencies=[admin])
    async def reload() -> dict[str, Any]:
        svc = _svc(app)
        await refresh(svc)
        return {"policy": svc.policy, "reason": svc.reason}

    @app.post("/admin/flush", dependencies=[admin])
    async def flush() -> dict[str, int]:
        """Write every waiting decision to the lake now (outcomes not reported yet: views)."""
        svc = _svc(app)
        svc.decisions.persist()
        return {"written": await asyncio.to_thread(svc.decisions.flush, True)}

    @app.post("/admin/ab", dependencies=[admin])
    async def ab(body: AbSettings) -> dict[str, Any]:
        svc = _svc(app)
        svc.store.set_runtime({"treatment_share": repr(body.treatment_share)})
        apply_knobs(svc)
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
        apply_knobs(svc)
        k: Knobs = svc.pricer.knobs
        return {
            "epsilon": k.epsilon,
            "epsilon_now": svc.pricer.epsilon_now(),
            "control_epsilon": k.control_epsilon,
            "explore_skus": list(k.explore_skus),
        }
