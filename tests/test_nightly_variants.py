"""The same night on an S3 lake (moto's server, over the wire) and on a retailer's POS export
(transactions only, through `pricing ingest`)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.lake import Lake
from pipeline.nightly.run import run_night
from pipeline.settings import Settings
from sim.history import generate_history
from sim.world import World
from tests.conftest import tiny_world_dict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_BUDGET = {
    "ppo_timesteps": 2048,
    "dqn_timesteps": 1000,
    "n_envs": 8,
    "eval_episodes": 20,
    "bootstrap_samples": 200,
}


def test_night_on_an_s3_lake(tmp_path: Path, s3_lake_uri: str, s3_endpoint: str) -> None:
    (tmp_path / "world.json").write_text(json.dumps(tiny_world_dict()))
    settings = Settings(
        data_dir=tmp_path,
        lake_uri=s3_lake_uri,
        s3_endpoint_url=s3_endpoint,
        world_file=tmp_path / "world.json",
        train_days=8,
        holdout_days=2,
        fidelity_max_conversion_error=0.2,
        fidelity_max_deviance_ratio=20,
        **TINY_BUDGET,
    )
    lake = Lake.from_uri(s3_lake_uri, s3_endpoint)
    start = dt.date(2026, 1, 5)
    for day in generate_history(World.model_validate(tiny_world_dict()), 8, 5, start):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    last = start + dt.timedelta(days=7)
    result = run_night(settings, last)
    assert result.status == "completed", result.to_dict()
    assert lake.exists(f"reports/gate/date={last}/decision.json")
    assert lake.has_partition("features", "features", last)
    assert not (tmp_path / "lake").exists()  # nothing of the lake went to local disk


def test_pos_export_runs_through_ingest_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "ingest",
            "--source",
            str(EXAMPLES / "pos_sample.csv"),
            "--mapping",
            str(EXAMPLES / "pos_mapping.json"),
            "--lake",
            str(lake),
        ],
    )
    assert res.exit_code == 0, res.output
    dates = Lake.from_uri(str(lake)).list_dates("raw", "transactions")
    assert not Lake.from_uri(str(lake)).list_dates("raw", "decisions")
    env = {
        "PRICING_DATA_DIR": str(tmp_path),
        "PRICING_TRAIN_DAYS": str(len(dates)),
        "PRICING_HOLDOUT_DAYS": "7",
        "PRICING_FIDELITY_MAX_DEVIANCE_RATIO": "50",
        **{f"PRICING_{k.upper()}": str(v) for k, v in TINY_BUDGET.items()},
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = runner.invoke(app, ["nightly", "--date", dates[-1].isoformat()])
    assert res.exit_code == 0, res.output
    assert "fitted demand" in res.output.lower()
    assert "elasticity" in res.output.lower()
    report = json.loads((lake / f"reports/sim/date={dates[-1]}/fit_report.json").read_text())
    assert report["mode"] == "transactions"
    skus = report["demand"]["skus"]
    assert len(skus) == 5 and all("elasticity" in s and "ci_low" in s for s in skus)
