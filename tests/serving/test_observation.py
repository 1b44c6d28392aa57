"""No training/serving skew: the service, fed the simulator's states as requests, computes the
simulator's observation bit for bit."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from serving.config import ServeSettings
from serving.decide import Batch, Pricer
from serving.schemas import SkuState
from serving.service import build_world
from serving.store import Store
from sim.market import Market
from tests.serving.conftest import ANCHOR, Env


def test_the_service_observes_what_the_simulator_does(env: Env, tmp_path: Path) -> None:
    serve = ServeSettings(control_epsilon=0.3)
    live = build_world(env.settings, serve, env.lake, None)
    pricer = Pricer(serve, Store(tmp_path / "state.sqlite"), live)
    start = dt.datetime.combine(ANCHOR, dt.time(0), tzinfo=dt.UTC)
    # the simulator's season, compiled on its own from the world and the season's start
    world = live.world  # the world the service prices in (here: no champion, the base world)
    assert [s.id for s in world.skus] == [s.id for s in env.world.skus]
    horizon = world.horizon.model_copy(
        update={"start_weekday": start.weekday(), "start_hour": start.hour}
    )
    params = world.model_copy(update={"horizon": horizon}).compile()
    n = len(world.skus)
    market = Market(params, n)
    market.reset(np.arange(n), np.arange(n))
    exo, endo = np.random.default_rng(7), np.random.default_rng(8)
    keep = int(np.flatnonzero(params.moves == 0)[0])
    counts: list[dict[str, int]] = [{} for _ in range(n)]
    checked = 0
    for t in range(params.T):
        ts = start + dt.timedelta(hours=t, minutes=17)
        items = Batch.of_rows(
            [
                SkuState(
                    sku=s.id,
                    inventory=int(market.inventory[j]),
                    competitor_price=float(market.competitor_price[j]),
                    **counts[j],
                )
                for j, s in enumerate(world.skus)
            ]
        )
        period = live.clock.period(ts)
        assert live.clock.season_and_step(period) == (0, t)
        got = pricer.observation("control", period, items).obs
        assert np.array_equal(got, market.observe()), f"step {t}"
        checked += 1
        # the service decides; the simulator follows its prices
        _, decisions = pricer.price("control", ts, items)
        market.level = np.array([d.level for d in decisions], dtype=np.int64)
        out = market.step(np.full(n, keep), exo, endo)
        counts = [
            {
                "views": int(out.views[j].sum()),
                "carts": int(out.carts[j].sum()),
                "sales": int(out.sold[j]),
            }
            for j in range(n)
        ]
    assert checked == params.T
    assert len({d.level for d in decisions}) >= 1


def test_a_switchback_is_set_in_whole_periods_and_its_washout_leaves_some_block(
    env: Env, tmp_path: Path
) -> None:
    serve = ServeSettings(experiment="switchback", switchback_hours=8, washout_hours=5)
    live = build_world(env.settings, serve, env.lake, None)
    pricer = Pricer(serve, Store(tmp_path / "state.sqlite"), live)
    live.clock = dataclasses.replace(live.clock, step_hours=4)  # a world of 4-hour periods
    # 8 hours are two periods; 5 hours of washout round up to two: nothing left of a block
    with pytest.raises(ValueError, match="PRICING_SERVE_WASHOUT_HOURS=5 leaves nothing"):
        pricer._blocks()
    pricer.serve = serve.model_copy(update={"switchback_hours": 6, "washout_hours": 0})
    with pytest.raises(ValueError, match="not a whole number of the world's 4-hour"):
        pricer._blocks()
    pricer.serve = serve.model_copy(update={"switchback_hours": 12, "washout_hours": 4})
    pricer._blocks()
    assert (pricer.arms.block_periods, pricer.arms.washout_periods) == (3, 1)
