"""The nightly DAG end to end with ``dag.test()``: a tiny world, tiny budgets, a local lake and
SQLite MLflow; then a night whose raw partition fails validation."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.lake import Lake
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.history import generate_history
from sim.world import World
from tests.conftest import tiny_world_dict
from tests.dags.conftest import asset_events, run_dag, task_states, xcom

START = dt.date(2026, 1, 5)
DAYS = 6
LAST = START + dt.timedelta(days=DAYS - 1)
TINY = {
    "PRICING_TRAIN_DAYS": "5",
    "PRICING_HOLDOUT_DAYS": "2",
    "PRICING_PPO_TIMESTEPS": "2048",
    "PRICING_DQN_TIMESTEPS": "1000",
    "PRICING_N_ENVS": "8",
    "PRICING_EVAL_EPISODES": "20",
    "PRICING_BOOTSTRAP_SAMPLES": "200",
    "PRICING_FIDELITY_MAX_CONVERSION_ERROR": "0.2",
    "PRICING_FIDELITY_MAX_DEVIANCE_RATIO": "20",
}
#: every task of a night that completed, whatever the gate decided
GOOD_NIGHT = {
    "validate": "success",
    "features": "success",
    "refit": "success",
    "fidelity": "success",
    "algorithms": "success",
    "train[planner]": "success",
    "train[ppo]": "success",
    "evaluate": "success",
    "gate": "success",
    "night_stopped": "skipped",
}


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory, airflow_db: None) -> Iterator[Path]:
    """Six days of logs plus the next day's, and the worker's PRICING_* environment."""
    root = tmp_path_factory.mktemp("pricing")
    (root / "world.json").write_text(json.dumps(tiny_world_dict()))
    lake = Lake.from_uri(str(root / "lake"))
    for day in generate_history(World.model_validate(tiny_world_dict()), DAYS + 1, 3, START):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRICING_DATA_DIR", str(root))
        mp.setenv("PRICING_WORLD_FILE", str(root / "world.json"))
        for name, value in TINY.items():
            mp.setenv(name, value)
        mp.delenv("PRICING_LAKE_URI", raising=False)
        yield root


@pytest.fixture(scope="module")
def good_night(lake_root: Path) -> tuple[Settings, Any]:
    return Settings(), run_dag("pricing_nightly", logical_date=_midnight(LAST))


def test_a_good_night_runs_every_step_and_writes_the_decision(
    good_night: tuple[Settings, Any],
) -> None:
    settings, run = good_night
    states = task_states(run)
    assert run.state == "success", states
    assert states == GOOD_NIGHT
    lake = Lake.from_uri(settings.lake)
    assert lake.has_partition("features", "features", LAST)
    decision = json.loads(lake.read_bytes(f"reports/gate/date={LAST}/decision.json"))
    assert xcom(run, "gate") == decision
    champion = Registry(settings, lake).champion_version()
    assert champion == decision["champion"]
    if decision["moved"]:
        assert champion == decision["evidence"]["candidate_version"]
    fitted = xcom(run, "refit")
    assert fitted["validation_report"].endswith(f"date={LAST}/validation.json")
    versions = Registry(settings, lake).client.search_model_versions(
        f"name = '{settings.model_name}'"
    )
    assert {mv.tags["algo"] for mv in versions} == {"planner", "ppo"}
    assert all(mv.tags["logical_date"] == LAST.isoformat() for mv in versions)
    assert all(mv.tags["validation_report"] == fitted["validation_report"] for mv in versions)


def test_rerunning_the_night_duplicates_nothing(good_night: tuple[Settings, Any]) -> None:
    settings, _ = good_night
    registry = Registry(settings, Lake.from_uri(settings.lake))
    versions = registry.client.search_model_versions(f"name = '{settings.model_name}'")
    ledger = registry.ledger.entries()

    run = run_dag("pricing_nightly", logical_date=_midnight(LAST))

    assert run.state == "success", task_states(run)
    assert task_states(run)["night_stopped"] == "skipped"
    assert xcom(run, "train")["reused"]
    again = registry.client.search_model_versions(f"name = '{settings.model_name}'")
    assert sorted(mv.version for mv in again) == sorted(mv.version for mv in versions)
    assert registry.ledger.entries() == ledger


def test_assets_get_events(good_night: tuple[Settings, Any]) -> None:
    settings, _ = good_night
    # this module's nights only (another module's nights may share the session's Airflow)
    features = [
        e for e in asset_events("pricing://features") if e["features_uri"].startswith(settings.lake)
    ]
    assert features and {e["date"] for e in features} == {LAST.isoformat()}
    candidates = [e for e in asset_events("pricing://candidate-model") if "cluster" not in e]
    assert {e["algo"] for e in candidates} == {"planner", "ppo"}
    ledger = Registry(settings, Lake.from_uri(settings.lake)).ledger.entries()
    moves = [e.to_version for e in ledger if e.who == "nightly"]
    champion = [
        e
        for e in asset_events("pricing://champion")
        if e.get("by") == "nightly" and "cluster" not in e
    ]
    assert [e["version"] for e in champion] == moves


def test_a_bad_partition_stops_the_night_and_keeps_the_champion(
    good_night: tuple[Settings, Any],
) -> None:
    settings, _ = good_night
    lake = Lake.from_uri(settings.lake)
    registry = Registry(settings, lake)
    if registry.champion_version() is None:  # the tiny first night may have kept the rule
        registry.promote("1", None, "a champion to keep", who="test")
    champion = registry.champion_version()
    ledger = len(registry.ledger.entries())
    day = LAST + dt.timedelta(days=1)
    bad = lake.read_partition("raw", "decisions", day)
    bad.loc[bad.index[:5], "event_id"] = bad["event_id"].iloc[0]
    lake.write_partition("raw", "decisions", day, bad)

    run = run_dag("pricing_nightly", logical_date=_midnight(day))

    states = task_states(run)
    assert run.state == "failed", states
    assert states == {
        "validate": "failed",
        "features": "upstream_failed",
        "refit": "upstream_failed",
        "fidelity": "upstream_failed",
        "algorithms": "upstream_failed",
        "train": "upstream_failed",
        "evaluate": "upstream_failed",
        "gate": "upstream_failed",
        "night_stopped": "success",
    }
    stop = xcom(run, "night_stopped")
    assert stop["step"] == "validate" and stop["date"] == day.isoformat()
    assert "quarantine" in stop["reason"] and stop["details"]["feed"] == "decisions"
    assert xcom(run, "validate", key="night_stopped") == stop
    assert registry.champion_version() == champion
    assert len(registry.ledger.entries()) == ledger
    assert not lake.has_partition("raw", "decisions", day)
    moved = lake.list(lake.partition_prefix("quarantine", "decisions", day))
    assert any(p.endswith(".parquet") for p in moved)
    assert any(p.endswith("validation.json") for p in moved)
    assert not lake.exists(f"reports/gate/date={day}/decision.json")
