"""The monitor DAG with ``dag.test()``: a drifted hour fails the alarm and emits the drift asset
event that schedules the nightly retrain; a normal hour is green and emits nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.dags.conftest import asset_events, run_dag, task_states, xcom
from tests.test_monitor import LIVE, MONITOR_ENV, at, monitored_lake


@pytest.fixture(scope="module")
def monitored_env(tmp_path_factory: pytest.TempPathFactory, airflow_db: None) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("monitor-dag")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**MONITOR_ENV, "PRICING_DATA_DIR": str(root)}.items():
            mp.setenv(k, v)
        for name in ("PRICING_PUSHGATEWAY_URL", "PRICING_LAKE_URI", "PRICING_WORLD_FILE"):
            mp.delenv(name, raising=False)
        monitored_lake(Settings())
        yield root


def test_a_drifted_hour_fails_loudly_and_requests_a_retrain(monitored_env: Path) -> None:
    before = len(asset_events("pricing://drift"))
    day = LIVE + dt.timedelta(days=1)
    run = run_dag("pricing_monitor", logical_date=at(day, 9))
    states = task_states(run)
    assert states == {
        "measure": "success",
        "retrain_signal": "success",
        "drift_alarm": "failed",
        "parity_alarm": "success",  # no night has judged served parity yet
    }
    assert run.state == "failed"
    report = xcom(run, "measure")
    # a manual run at 09:00 covers the last complete hour
    assert report["window"] == {"start": at(day, 8).isoformat(), "end": at(day, 9).isoformat()}
    assert (
        report["drift"]["status"] == "drift" and report["drift"]["max_feature"] == "competitor_rel"
    )
    events = asset_events("pricing://drift")
    assert len(events) == before + 1
    assert events[-1]["max_feature"] == "competitor_rel"
    assert events[-1]["window_start"] == at(day, 8).isoformat()


def test_a_normal_hour_is_green_and_emits_nothing(monitored_env: Path) -> None:
    before = len(asset_events("pricing://drift"))
    run = run_dag("pricing_monitor", logical_date=at(LIVE, 9))
    assert run.state == "success", task_states(run)
    report = xcom(run, "measure")
    assert report["drift"]["status"] == "ok", report["drift"]
    assert xcom(run, "retrain_signal") is False
    assert len(asset_events("pricing://drift")) == before
    assert (monitored_env / "lake/reports/monitor/date=2026-03-09/hour=08.json").exists()


def test_a_night_in_served_parity_alarm_fails_every_hour_until_fixed(monitored_env: Path) -> None:
    """The last night's served-parity verdict reaches the monitor: its alarm fails
    ``parity_alarm`` (red in the grid, and the gauge the alert rule watches)."""
    import json

    from pipeline.contracts import parity_report_path
    from pipeline.data.lake import open_lake

    lake = open_lake(Settings())
    verdict = {
        "date": (LIVE - dt.timedelta(days=1)).isoformat(),
        "version": "1",
        "units": 126,
        "judged": True,
        "alarm": True,
        "mismatch_rate": 0.052,
        "gap": 0.03,
        "gap_ci95": [-0.2, 0.26],
        "reasons": ["5.2% of the unexplored served decisions are not the champion's own"],
    }
    path = parity_report_path(LIVE - dt.timedelta(days=1))
    lake.write_bytes(path, json.dumps(verdict).encode())
    try:
        run = run_dag("pricing_monitor", logical_date=at(LIVE, 9))
        states = task_states(run)
        assert states["parity_alarm"] == "failed" and states["drift_alarm"] == "success", states
        assert xcom(run, "measure")["parity"]["mismatch_rate"] == 0.052
    finally:
        (monitored_env / "lake" / path).unlink()
