"""PRICING_SERVE_CLUSTERS: each SKU priced by its cluster's champion (`serving.lanes`), the rest
by the service's own lane; a cluster's promotion is picked up without a restart."""

from __future__ import annotations

import datetime as dt
import time

import mlflow
import numpy as np
import pytest

from pipeline.data.clusters import Clusters, write_clusters
from pipeline.model.planner import plan
from pipeline.release.registry import CHAMPION, Registry
from pipeline.tracking import experiment
from tests.conftest import register_tiny_version
from tests.serving.conftest import ANCHOR, Env

TS = "2026-01-05T10:15:00Z"
KNOBS = {"treatment_share": 1.0, "epsilon": 0.0, "epsilon_min": 0.0, "max_step_levels": 5}


def _clusters(env: Env) -> None:
    """Two clusters of the tiny world's two SKUs: 'scarce' alone, 'overstock' alone."""
    assignment = {"scarce": "food-0", "overstock": "toys-0"}
    write_clusters(
        env.lake,
        Clusters(
            date=ANCHOR,
            assignment=assignment,
            category={"food-0": "food", "toys-0": "toys"},
            centroid={"food-0": [0.0, 0.0], "toys-0": [1.0, 1.0]},
            mean=[0.0, 0.0],
            scale=[1.0, 1.0],
            skus_per_cluster=500,
        ),
    )


def _registry(env: Env, cluster: str) -> Registry:
    return Registry(env.settings.for_cluster(cluster), env.lake)


def _plan_champion(env: Env, cluster: str, sku: str) -> tuple[str, object]:
    """The exact plan of the cluster's world (its one SKU) as that cluster's champion."""
    world = env.world.with_skus([s for s in env.world.skus if s.id == sku])
    planner = plan(world)
    reg = _registry(env, cluster)
    with experiment(reg.settings, "test"), mlflow.start_run():
        mv = reg.register_candidate(planner, world, "planner", {"logical_date": "2026-01-05"})
    reg.client.set_registered_model_alias(reg.name, CHAMPION, str(mv.version))
    return str(mv.version), planner


def test_each_sku_is_priced_by_its_clusters_champion(env: Env) -> None:
    _clusters(env)
    version, planner = _plan_champion(env, "food-0", "scarce")
    body = {
        "customer_id": "c1",
        "ts": TS,
        "columns": {"sku": ["scarce", "overstock"], "inventory": [9, 30]},
    }
    with env.client(clusters=True, poll_seconds=0.2, **KNOBS) as client:
        ready = client.get("/readyz").json()
        assert ready["clusters"]["clusters"] == 2 and ready["clusters"]["serving"] == 1
        assert "no @champion" in ready["clusters"]["lanes"]["toys-0"]
        # an unknown SKU is a 404 before any lane decides (no hold stored for the others)
        bad = {**body, "columns": {"sku": ["scarce", "nope"], "inventory": [9, 1]}}
        r = client.post("/v1/prices", json=bad)
        assert r.status_code == 404 and "nope" in r.text
        svc = client.app.state.svc  # type: ignore[attr-defined]
        period = svc.pricer.live.clock.period(dt.datetime.fromisoformat(TS))
        assert svc.store.holds("treatment", period, ["scarce"]) == {}

        answer = client.post("/v1/prices", json=body).json()
        cols = answer["columns"]
        # scarce: food-0's plan (its table at the request's state); overstock: no champion for
        # toys-0 yet, so the service's own lane, the rule-based fallback
        assert cols["policy"] == ["champion", "fallback"]
        assert cols["model_version"] == [f"{version}@food-0", None]
        p = planner.params  # type: ignore[attr-defined]
        want = int(planner.table[0, 10, 9, p.initial_level, p.comp_initial])  # type: ignore[attr-defined]
        assert cols["action"][0] == want
        level = int(np.clip(p.initial_level + p.moves[want], 0, p.L - 1))
        assert cols["price"][0] == pytest.approx(p.ref_price[0] * p.ratios[level], abs=0.01)

        # toys-0 promotes a champion (a PPO agent): picked up at the next poll, no restart
        toys = register_tiny_version(_registry(env, "toys-0"), 0, "2026-01-05")
        _registry(env, "toys-0").client.set_registered_model_alias(
            "serve-agent--toys-0", CHAMPION, toys
        )
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["clusters"]["serving"] != 2:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.2)
        later = {**body, "ts": "2026-01-05T11:15:00Z"}
        answer = client.post("/v1/prices", json=later).json()
        assert answer["policy"] == "champion" and answer["columns"]["policy"] == [
            "champion",
            "champion",
        ]
        assert answer["columns"]["model_version"] == [f"{version}@food-0", f"{toys}@toys-0"]
        # items say their own version too
        items = {
            "customer_id": "c1",
            "ts": "2026-01-05T11:20:00Z",
            "items": [{"sku": "overstock", "inventory": 30}, {"sku": "scarce", "inventory": 9}],
        }
        got = client.post("/v1/prices", json=items).json()["prices"]
        assert [g["model_version"] for g in got] == [f"{toys}@toys-0", f"{version}@food-0"]

    # the decision log names each SKU's policy
    with env.client(clusters=True, **KNOBS):
        pass  # a second start-up exports what the first left waiting
    dates = env.lake.list_dates("raw", "decisions")
    logged = env.lake.read_partition("raw", "decisions", dates[0])
    ids = set(logged["policy_id"])
    assert f"champion-v{version}@food-0" in ids and f"champion-v{toys}@toys-0" in ids
    assert dates[0] == dt.date(2026, 1, 5)


def test_without_clusters_a_snapshot_changes_nothing(env: Env) -> None:
    _clusters(env)
    _plan_champion(env, "food-0", "scarce")
    with env.client(**KNOBS) as client:
        answer = client.post(
            "/v1/price", json={"sku": "scarce", "customer_id": "c1", "inventory": 9, "ts": TS}
        ).json()
        assert answer["policy"] == "fallback"
        assert "clusters" not in client.get("/readyz").json()
