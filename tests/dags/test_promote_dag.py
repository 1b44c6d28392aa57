"""The manual promotion DAG: promote, dry run, rollback through the registry's path; refused
without PRICING_ADMIN_TOKEN on the worker; invalid trigger parameters rejected by the schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.data.lake import Lake
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.conftest import register_tiny_version, tiny_world_dict
from tests.dags.conftest import asset_events, run_dag, task_states, xcom


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, airflow_db: None) -> Iterator[Registry]:
    """A registry with two tiny registered versions and no champion yet."""
    root = tmp_path_factory.mktemp("promote")
    (root / "world.json").write_text(json.dumps(tiny_world_dict()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRICING_DATA_DIR", str(root))
        mp.setenv("PRICING_WORLD_FILE", str(root / "world.json"))
        mp.delenv("PRICING_LAKE_URI", raising=False)
        mp.delenv("PRICING_ADMIN_TOKEN", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings()
        registry = Registry(settings, Lake.from_uri(settings.lake))
        for seed in (0, 1):
            register_tiny_version(registry, seed, f"2026-01-0{seed + 1}")
        yield registry


def _trigger(**conf: Any) -> Any:
    # no logical date: a manual trigger from the form, a fresh run id each time
    return run_dag("pricing_promote", logical_date=None, run_conf=conf)


def test_promote_dry_run_and_rollback(
    two_versions: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = two_versions
    monkeypatch.setenv("PRICING_ADMIN_TOKEN", "configured-on-the-worker")

    run = _trigger(action="promote", version="1", reason="first champion by hand")
    assert run.state == "success", task_states(run)
    assert registry.champion_version() == "1"

    registry.set_challenger("2")
    run = _trigger(
        action="promote", version="challenger", reason="try the challenger", dry_run=True
    )
    assert run.state == "success"
    assert xcom(run, "move_champion") == {
        "action": "promote",
        "from": "1",
        "to": "2",
        "reason": "try the challenger",
        "who": "airflow:dag_test",
        "dry_run": True,
    }
    assert registry.champion_version() == "1"

    run = _trigger(action="promote", version="challenger", reason="challenger is better")
    assert run.state == "success" and registry.champion_version() == "2"

    run = _trigger(action="rollback", reason="conversion dropped", dry_run=True)
    assert run.state == "success" and xcom(run, "move_champion")["to"] == "1"
    assert registry.champion_version() == "2"

    run = _trigger(action="rollback", reason="conversion dropped")
    assert run.state == "success" and registry.champion_version() == "1"
    entries = registry.ledger.entries()
    assert [(e.action, e.to_version, e.who) for e in entries] == [
        ("promote", "1", "airflow:dag_test"),
        ("promote", "2", "airflow:dag_test"),
        ("rollback", "1", "airflow:dag_test"),
    ]
    moves = [e for e in asset_events("pricing://champion") if e.get("by") == "airflow:dag_test"]
    assert [(e["action"], e["version"]) for e in moves] == [
        ("promote", "1"),
        ("promote", "2"),
        ("rollback", "1"),
    ]

    run = _trigger(action="promote", version="99", reason="no such version here")
    assert run.state == "failed" and task_states(run) == {"move_champion": "failed"}
    assert registry.champion_version() == "1"


def test_refused_without_the_admin_token_on_the_worker(
    two_versions: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRICING_ADMIN_TOKEN", raising=False)
    before = two_versions.champion_version()
    run = _trigger(action="promote", version="2", reason="should not happen")
    assert run.state == "failed"
    assert two_versions.champion_version() == before


@pytest.mark.parametrize(
    "conf",
    [
        {"action": "promote", "version": "1"},  # no reason
        {"action": "promote", "version": "1", "reason": "short"},
        {"action": "delete", "version": "1", "reason": "remove that version"},
        {"action": "promote", "version": "latest", "reason": "the newest one please"},
        {"action": "promote", "version": "1", "reason": "a good reason", "dry_run": "yes"},
    ],
    ids=["missing-reason", "short-reason", "unknown-action", "bad-version", "dry-run-not-bool"],
)
def test_invalid_params_are_rejected(airflow_db: None, conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _trigger(**conf)
