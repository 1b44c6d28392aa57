"""The nightly DAG with PRICING_CLUSTERS: one mapped group of tasks per cluster (dag.test()), on a
tiny catalogue of three clusters, one of which its fidelity gate stops."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.clusters import read_clusters
from pipeline.data.lake import Lake
from pipeline.data.synthetic import write_history
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.world import World
from tests.conftest import tiny_world_dict
from tests.dags.conftest import run_dag, task_states
from tests.dags.test_nightly_dag import TINY
from tests.faults.night import DAYS, LAST, START
from tests.test_cluster_night import _spoil_holdout


@pytest.fixture(scope="module")
def clustered_run(
    tmp_path_factory: pytest.TempPathFactory, airflow_db: None
) -> Iterator[tuple[Settings, Any, str]]:
    root = tmp_path_factory.mktemp("clustered-dag")
    world = World.model_validate(tiny_world_dict()).expand(3, seed=1)
    (root / "world.json").write_text(world.to_json())
    lake = Lake.from_uri(str(root / "lake"))
    write_history(lake, world, DAYS, 3, START)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRICING_DATA_DIR", str(root))
        mp.setenv("PRICING_WORLD_FILE", str(root / "world.json"))
        mp.setenv("PRICING_MODEL_NAME", "clustered-dag")
        for name, value in TINY.items():
            mp.setenv(name, value)
        mp.setenv("PRICING_TRAIN_DAYS", "10")
        mp.setenv("PRICING_HOLDOUT_DAYS", "3")
        mp.setenv("PRICING_ALGOS", '["planner"]')
        mp.setenv("PRICING_FIDELITY_MAX_CONVERSION_ERROR", "0.15")  # as tests/faults/night.py
        mp.setenv("PRICING_FIDELITY_MAX_DEVIANCE_RATIO", "10")
        mp.setenv("PRICING_CLUSTERS", "true")
        mp.delenv("PRICING_LAKE_URI", raising=False)
        settings = Settings()
        spoiled = world.skus[2].id
        _spoil_holdout(lake, spoiled, [LAST - dt.timedelta(days=i) for i in range(3)])
        midnight = dt.datetime.combine(LAST, dt.time(), tzinfo=dt.UTC)
        run = run_dag("pricing_nightly", logical_date=midnight)
        yield settings, run, spoiled


def test_the_night_maps_one_group_per_cluster(clustered_run: tuple[Settings, Any, str]) -> None:
    settings, run, spoiled = clustered_run
    states = task_states(run)
    lake = Lake.from_uri(settings.lake)
    snapshot = read_clusters(lake, LAST)
    assert snapshot is not None
    clusters = sorted(snapshot.members())
    assert len(clusters) == 3
    stopped = snapshot.assignment[spoiled]
    assert states["validate"] == "success" and states["features"] == "success", states
    assert states["clusters"] == "success"
    for cid in clusters:
        for step in ("refit", "fidelity"):
            want = "failed" if (cid == stopped and step == "fidelity") else "success"
            assert states[f"cluster.{step}[{cid}]"] == want, states
    ran = sorted(set(clusters) - {stopped})
    for step in ("train", "evaluate", "gate"):
        mapped = {k: v for k, v in states.items() if k.startswith(f"cluster.{step}[")}
        assert sorted(mapped.values()) == ["success", "success", "upstream_failed"], states
        # a task that never ran has no rendered label; the two that ran are the others
        assert sorted(k for k, v in mapped.items() if v == "success") == [
            f"cluster.{step}[{c}]" for c in ran
        ]
    # the catalogue's steps did not stop the night: nothing to repeat
    assert states["night_stopped"] == "skipped"


def test_each_cluster_promotes_on_its_own(clustered_run: tuple[Settings, Any, str]) -> None:
    settings, _, spoiled = clustered_run
    lake = Lake.from_uri(settings.lake)
    snapshot = read_clusters(lake, LAST)
    assert snapshot is not None
    for cid in snapshot.members():
        view = lake.for_cluster(cid)
        registry = Registry(settings.for_cluster(cid), view)
        if cid == snapshot.assignment[spoiled]:
            assert registry.champion_version() is None  # stopped: kept (no) champion
            assert not view.exists(f"reports/gate/date={LAST}/decision.json")
            continue
        decision = json.loads(view.read_bytes(f"reports/gate/date={LAST}/decision.json"))
        assert decision["moved"], decision
        assert registry.champion_version() == decision["champion"]
        assert [e.to_version for e in registry.ledger.entries()] == [decision["champion"]]
        assert Path(lake.uri(f"reports/cluster={cid}/promotions/ledger.jsonl")).is_file()
