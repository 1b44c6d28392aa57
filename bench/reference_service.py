"""The reference the pricing service is measured against: a pricing endpoint built the way the
field report's team built theirs — one uvicorn worker, FastAPI, SB3 ``model.predict`` per request.

It takes the same ``POST /v1/price`` body and computes the same observation (`sim.market.observe`),
but keeps no state, holds no price, explores not, applies no guardrail and logs nothing: it does
less work per request than the service it is compared with.

    PRICING_REFERENCE_AGENT=agent.zip PRICING_REFERENCE_WORLD=world.json \\
        uvicorn bench.reference_service:app --port 8001
"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from pipeline.model.artifacts import load_agent
from sim.market import observe
from sim.world import load_world

world = load_world(os.environ["PRICING_REFERENCE_WORLD"])
params = world.compile()
index = {s.id: i for i, s in enumerate(world.skus)}
model = load_agent(os.environ["PRICING_REFERENCE_AGENT"])
app = FastAPI()


class Request(BaseModel):
    sku: str
    customer_id: str
    inventory: int
    ts: dt.datetime | None = None
    competitor_price: float | None = None


@app.post("/v1/price")
def price(req: Request) -> dict[str, object]:
    k = np.array([index[req.sku]])
    ts = req.ts or dt.datetime.now(dt.UTC)
    t = np.array([(ts.hour + 24 * ts.weekday()) % params.T])
    comp = (req.competitor_price or params.ref_price[k[0]]) / params.ref_price[k[0]]
    zero = np.zeros(1)
    obs = observe(
        params,
        k,
        t,
        np.array([req.inventory]),
        params.ratios[[params.initial_level]],
        np.array([comp]),
        zero,
        zero,
        zero,
    )
    action, _ = model.predict(obs, deterministic=True)
    level = int(np.clip(params.initial_level + params.moves[int(action[0])], 0, params.L - 1))
    return {"sku": req.sku, "price": float(params.ref_price[k[0]] * params.ratios[level])}
