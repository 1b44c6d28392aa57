"""The hourly monitor: PSI, KPIs, drift against the champion's training data, and its outputs
(lake report, MLflow metrics, Pushgateway over HTTP)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.data.lake import Lake
from pipeline.ops.monitor import (
    MonitorError,
    feature_values,
    kpis,
    monitor_window,
    psi,
    read_decisions,
)
from pipeline.ops.publish import report_path
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.history import generate_history
from sim.world import World
from tests.conftest import register_tiny_version, tiny_world_dict

START = dt.date(2026, 3, 2)
TRAIN_DAYS = 7
CHAMPION_NIGHT = START + dt.timedelta(days=TRAIN_DAYS - 1)
LIVE = CHAMPION_NIGHT + dt.timedelta(days=1)  # the day after the champion's training window


def busy_world(copies: int = 100) -> dict[str, Any]:
    """The tiny world's two SKUs, ``copies`` times each: a catalogue, so that the share of SKUs
    in a competitor flash sale in an hour is close to its long-run share, as in a real one."""
    w = tiny_world_dict()
    skus = []
    for i in range(copies):
        for sku in w["skus"]:
            skus.append(
                {
                    **sku,
                    "id": f"{sku['id']}-{i}",
                }
            )
    w["skus"] = skus
    return w


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def write_days(lake: Lake, world: dict[str, Any], first: dt.date, days: int, seed: int) -> None:
    for day in generate_history(World.model_validate(world), days, seed, first):
        lake.write_partition("raw", "decisions", day.date, day.decisions)


MONITOR_ENV = {
    "PRICING_TRAIN_DAYS": str(TRAIN_DAYS),
    "PRICING_HOLDOUT_DAYS": "1",
    "PRICING_MONITOR_MIN_ROWS": "300",
}


def monitored_lake(settings: Settings) -> str:
    """A week of logs, a champion trained on it, the next day's logs (same market) and, the day
    after, a market whose competitor cut its prices by 30 %. Returns the champion's version."""
    lake = Lake.from_uri(settings.lake)
    write_days(lake, busy_world(), START, TRAIN_DAYS + 1, seed=1)
    drifted = busy_world()
    for sku in drifted["skus"]:
        sku["competitor_ref"] = 0.7 * sku["ref_price"]
    write_days(lake, drifted, LIVE + dt.timedelta(days=1), 1, seed=2)
    reg = Registry(settings, lake)
    version = register_tiny_version(reg, 0, CHAMPION_NIGHT.isoformat())
    reg.promote(version, None, "first champion for the monitor tests")
    return version


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Lake, str]]:
    root = tmp_path_factory.mktemp("monitor")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**MONITOR_ENV, "PRICING_DATA_DIR": str(root)}.items():
            mp.setenv(k, v)
        mp.delenv("PRICING_PUSHGATEWAY_URL", raising=False)
        settings = Settings()
        version = monitored_lake(settings)
        yield settings, Lake.from_uri(settings.lake), version


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift() -> None:
    base = np.array([100, 200, 300, 400])
    assert psi(base, base * 3) == pytest.approx(0.0)
    # hand-computed: shares .1/.2/.3/.4 vs .4/.3/.2/.1
    expected = sum(
        (a - e) * np.log(a / e)
        for a, e in zip([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], strict=True)
    )
    assert psi(base, base[::-1]) == pytest.approx(expected)
    assert psi(base, np.array([100, 200, 300, 500])) < psi(base, np.array([100, 200, 300, 2000]))
    with pytest.raises(ValueError, match="bins differ"):
        psi(base, base[:3])


def test_kpis_match_a_hand_count() -> None:
    df = pd.DataFrame(
        {
            "outcome": ["view", "purchase", "purchase", "abandon"],
            "quantity": [0, 1, 2, 0],
            "price_shown": [10.0, 10.0, 12.0, 11.0],
            "unit_cost": [6.0, 6.0, 6.0, 6.0],
            "action": [2, 2, 3, 0],
            "propensity": [0.92, 0.92, 0.02, 0.02],
        }
    )
    got = kpis(df)
    assert got["decisions"] == 4 and got["purchases"] == 2
    assert got["conversion"] == pytest.approx(0.5)
    assert got["revenue"] == pytest.approx(10 + 24)
    assert got["gross_profit"] == pytest.approx(4 + 12)
    assert got["margin"] == pytest.approx(16 / 34, abs=1e-6)
    assert got["exploration_rate"] == pytest.approx(0.5)
    assert got["action_share"] == {"0": 0.25, "2": 0.5, "3": 0.25}


def test_read_decisions_keeps_the_window_and_names_bad_bounds(
    monitored: tuple[Settings, Lake, str],
) -> None:
    _, lake, _ = monitored
    got = read_decisions(lake, at(LIVE, 22), at(LIVE + dt.timedelta(days=1), 2))
    assert len(got) > 0
    assert got["ts"].min() >= pd.Timestamp(at(LIVE, 22))
    assert got["ts"].max() < pd.Timestamp(at(LIVE + dt.timedelta(days=1), 2))
    assert set(got["ts"].dt.date) == {LIVE, LIVE + dt.timedelta(days=1)}  # across midnight
    with pytest.raises(MonitorError, match="no time zone"):
        read_decisions(lake, dt.datetime(2026, 3, 6, 1), at(LIVE, 2))
    with pytest.raises(MonitorError, match="empty window"):
        read_decisions(lake, at(LIVE, 2), at(LIVE, 2))
    assert read_decisions(lake, at(dt.date(2025, 1, 1), 0), at(dt.date(2025, 1, 1), 5)).empty


def test_same_market_is_not_drift(monitored: tuple[Settings, Lake, str]) -> None:
    settings, lake, version = monitored
    report = monitor_window(settings, at(LIVE, 8), at(LIVE, 14))
    drift = report["drift"]
    assert report["champion"] == version
    assert drift["status"] == "ok", drift
    assert drift["reference"]["start"] == START.isoformat()
    assert drift["reference"]["end"] == CHAMPION_NIGHT.isoformat()
    assert set(drift["psi"]) == set(feature_values(read_decisions(lake, at(LIVE, 8), at(LIVE, 9))))
    assert max(drift["psi"][f] for f in drift["alarm_features"]) < 0.1
    assert not report["retrain"]
    assert report["kpis"]["decisions"] >= 300
    assert 0 < report["kpis"]["conversion"] < 1
    # written where the dashboard and MLflow can see it
    stored = json.loads(lake.read_bytes(report_path(at(LIVE, 8), at(LIVE, 14))))
    assert stored["drift"]["psi"] == drift["psi"]
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(report["mlflow_run_id"])
    assert run.data.metrics["decisions"] == report["kpis"]["decisions"]
    assert run.data.metrics["drift"] == 0.0
    assert run.data.tags["champion"] == version


def test_a_competitor_price_cut_is_drift_and_asks_for_a_retrain(
    monitored: tuple[Settings, Lake, str],
) -> None:
    settings, _, _ = monitored
    day = LIVE + dt.timedelta(days=1)
    report = monitor_window(settings, at(day, 8), at(day, 14))
    drift = report["drift"]
    assert drift["status"] == "drift", drift
    assert drift["max_feature"] == "competitor_rel"
    assert drift["psi"]["competitor_rel"] > settings.drift_psi_threshold
    assert "competitor_rel PSI" in drift["message"]
    assert report["retrain"]


def test_few_rows_and_no_champion_are_reported_not_judged(
    monitored: tuple[Settings, Lake, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, _ = monitored
    quiet = monitor_window(settings, at(LIVE, 3), at(LIVE, 3) + dt.timedelta(minutes=5))
    assert quiet["drift"]["status"] == "insufficient"
    assert "PRICING_MONITOR_MIN_ROWS" in quiet["drift"]["message"]
    assert not quiet["retrain"]
    # a fresh deployment: KPIs, no drift verdict
    monkeypatch.setenv("PRICING_DATA_DIR", str(tmp_path))
    fresh = Settings()
    write_days(Lake.from_uri(fresh.lake), busy_world(), LIVE, 1, seed=3)
    report = monitor_window(fresh, at(LIVE, 8), at(LIVE, 10))
    assert report["champion"] is None and report["drift"]["status"] == "no_champion"
    assert report["kpis"]["decisions"] > 0


def test_re_running_a_window_updates_the_same_mlflow_run(
    monitored: tuple[Settings, Lake, str],
) -> None:
    settings, _, _ = monitored
    first = monitor_window(settings, at(LIVE, 15), at(LIVE, 16))
    again = monitor_window(settings, at(LIVE, 15), at(LIVE, 16))
    assert first["mlflow_run_id"] == again["mlflow_run_id"]
    history = mlflow.MlflowClient(settings.tracking_uri).get_metric_history(
        first["mlflow_run_id"], "decisions"
    )
    assert {(m.step, m.value) for m in history} >= {(15, first["kpis"]["decisions"])}


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_PUT(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_metrics_are_pushed_to_the_pushgateway_over_http(
    monitored: tuple[Settings, Lake, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, _ = monitored
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("PRICING_PUSHGATEWAY_URL", url)
        day = LIVE + dt.timedelta(days=1)
        report = monitor_window(Settings(), at(day, 8), at(day, 14))
    finally:
        server.shutdown()
    assert report["pushed_to"] == url
    path, body = _Gateway.received[-1]
    assert path == f"/metrics/job/pricing_monitor/model/{settings.model_name}"
    text = body.decode()
    assert 'pricing_monitor_psi{feature="competitor_rel"}' in text
    assert "pricing_monitor_drift 1.0" in text
    assert f"pricing_monitor_decisions {float(report['kpis']['decisions'])}" in text
    assert 'pricing_monitor_action_share{action="' in text


def test_the_cli_prints_the_window_and_exits_2_on_drift(
    monitored: tuple[Settings, Lake, str], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    day = LIVE + dt.timedelta(days=1)
    out = tmp_path / "monitor.json"
    res = runner.invoke(
        app, ["monitor", "--start", f"{day}T09:00", "--end", f"{day}T15:00", "--json", str(out)]
    )
    assert res.exit_code == 2, res.output
    assert "PSI competitor_rel (market)" in res.output and "drift" in res.output
    assert json.loads(out.read_text())["drift"]["status"] == "drift"
    res = runner.invoke(
        app, ["monitor", "--start", f"{LIVE}T08:00+00:00", "--end", f"{LIVE}T14:00"]
    )
    assert res.exit_code == 0, res.output
    assert "no drift" in res.output and "conversion" in res.output
    res = runner.invoke(app, ["monitor", "--start", "yesterday"])
    assert res.exit_code == 1 and "--start must be a time" in res.output
    # read-only unless --publish: the drifted window wrote no report
    assert not monitored[1].exists(
        f"reports/monitor/date={day}/090000-{day.strftime('%Y%m%d')}T150000.json"
    )


def test_windows_cut_mid_hour_are_not_drift(monitored: tuple[Settings, Lake, str]) -> None:
    """Only whole clock hours count for visitors per SKU-hour: a window from 08:30 would
    otherwise see half-hours as a fall in traffic."""
    settings, _, _ = monitored
    half = dt.timedelta(minutes=30)
    report = monitor_window(settings, at(LIVE, 8) + half, at(LIVE, 14) + half, publish=False)
    assert report["drift"]["status"] == "ok", report["drift"]
    assert "report_uri" not in report


def test_bad_rows_are_counted_not_fatal() -> None:
    df = pd.DataFrame(
        {
            "outcome": ["purchase", "purchase", "view"],
            "quantity": [1, 1, 0],
            "price_shown": [10.0, float("nan"), 11.0],
            "unit_cost": [6.0, 6.0, float("nan")],
            "action": [2, 2, None],
            "propensity": [0.9, 0.9, 0.9],
        }
    )
    got = kpis(df)
    assert got["decisions"] == 1 and got["bad_rows"] == 2
    assert got["revenue"] == pytest.approx(10.0) and got["margin"] == pytest.approx(0.4)


def test_the_watermark_follows_the_published_windows(monitored: tuple[Settings, Lake, str]) -> None:
    from pipeline.ops.publish import watermark

    settings, _, _ = monitored
    later = LIVE + dt.timedelta(days=5)  # after every window the other tests publish
    monitor_window(settings, at(later, 20), at(later, 21))
    assert watermark(settings) == at(later, 21)
    monitor_window(settings, at(LIVE, 3), at(LIVE, 4))  # an older window never moves it back
    assert watermark(settings) == at(later, 21)


def test_a_parity_alarm_without_an_estimate_still_goes_out() -> None:
    """The champion gave no probability to what the service logged (no off-policy estimate: the
    report says null): the alarm and the mismatch rate are the gauges, nothing fails."""
    from pipeline.ops.publish import _parity
    from pipeline.release.parity import ServedParity

    nan = float("nan")
    result = ServedParity("2026-01-06", "3", 40, True, 40, 40, nan, (nan, nan), 2.0, nan,
                          (nan, nan), True, ["no support"])  # fmt: skip
    numbers = _parity({"parity": result.to_dict()})
    assert numbers == {"alarm": 1.0, "mismatch_rate": 1.0}
    assert result.summary == "no support"
