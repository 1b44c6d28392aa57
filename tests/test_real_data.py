"""A night on real demand: four public scanner panels (real shelf prices and real brand choices,
`pipeline.data.scanner`) as a POS export, through `pricing ingest`, the refit, the fidelity gate at
its default threshold, and the promotion of a champion."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.ingest import ingest_transactions
from pipeline.data.lake import Lake
from pipeline.data.scanner import SCANNER_MAPPING, scanner_export
from pipeline.nightly.steps import fitted_world, read_days, refit_simulator, window
from pipeline.settings import Settings
from sim.fit import transactions_fidelity_check

LAST = dt.date(2026, 5, 4)  # the export's last day (120 days from 2026-01-05)
DEFAULT_GATE = Settings.model_fields["fidelity_max_deviance_ratio"].default


@pytest.fixture(scope="module")
def real_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    source = root / "scanner.csv"
    scanner_export().to_csv(source, index=False)
    report = ingest_transactions(source, SCANNER_MAPPING, Lake.from_uri(str(root / "lake")))
    assert report.rows_written > 22_000
    return root


def test_the_export_from_the_command_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["scanner-export", "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    mapping = json.loads((tmp_path / "s.json").read_text())
    assert mapping == SCANNER_MAPPING
    assert "22,181 lines (17 SKUs, 4 categories)" in " ".join(res.output.split())


def test_the_export_is_the_real_panels() -> None:
    tx = scanner_export()
    assert len(tx) == 22_181  # 22,207 occasions less 26 recording errors
    assert tx["Sku"].nunique() == 17 and tx["Category"].nunique() == 4
    assert tx.groupby("Sku")["UnitPrice"].nunique().min() > 5  # shelf prices that move


def test_real_demand_passes_the_gate_and_a_poisson_world_does_not(real_lake: Path) -> None:
    # the export's whole period: 112 days to fit, the last 7 held out
    settings = Settings(data_dir=real_lake, train_days=119)
    refit_simulator(settings, LAST)
    lake = Lake.from_uri(str(real_lake / "lake"))
    world = fitted_world(lake, LAST)
    report = json.loads((real_lake / f"lake/reports/sim/date={LAST}/fit_report.json").read_text())
    groups = {row["group"] for row in report["elasticities"]["skus"]}
    assert groups == {"catsup", "cracker", "tuna", "yogurt"}  # pooled by the export's categories
    assert all(row["elasticity"] < 0 for row in report["elasticities"]["skus"])
    assert report["dispersion"]["median_alpha"] > 0

    heldout = read_days(lake, "transactions", window(settings, LAST)[1])
    assert heldout is not None
    fit = transactions_fidelity_check(world, heldout, DEFAULT_GATE)
    assert fit.passed, fit.message
    # the same world without its over-dispersion calls real day-to-day swings a misfit (a
    # deviance ratio of 7.1: what a Poisson refit of a real export gets) ...
    poisson = world.with_skus([s.model_copy(update={"demand_dispersion": 0.0}) for s in world.skus])
    assert not transactions_fidelity_check(poisson, heldout, DEFAULT_GATE).passed
    # ... and the dispersion does not let a wrong world through: demand 60 % too high is stopped
    high = world.with_skus(
        [s.model_copy(update={"arrival_rate": s.arrival_rate * 1.6}) for s in world.skus]
    )
    assert not transactions_fidelity_check(high, heldout, DEFAULT_GATE).passed


def test_a_night_on_real_demand_promotes_a_champion(
    real_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "PRICING_DATA_DIR": str(real_lake),
        "PRICING_ALGOS": '["planner"]',  # PPO's night is covered elsewhere; the data is the point
        "PRICING_PPO_TIMESTEPS": "2048",
        "PRICING_N_ENVS": "8",
        "PRICING_EVAL_EPISODES": "30",
        "PRICING_BOOTSTRAP_SAMPLES": "200",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["nightly", "--date", LAST.isoformat()])
    assert res.exit_code == 0, res.output
    assert "PROMOTED" in res.output
    decision = json.loads((real_lake / f"lake/reports/gate/date={LAST}/decision.json").read_text())
    assert decision["promote"] is True and decision["moved"] is True


JOURNEY_LAST = dt.date(2017, 12, 31)  # the Complete Journey's last whole day


def test_a_grocery_chains_export_of_tens_of_thousands_of_skus_gets_a_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Complete Journey (`pipeline.data.journey`): 120 days of a grocery chain's receipt lines,
    # ~42,000 SKUs, most selling a few units a month; Christmas in the held-out week
    source = tmp_path / "journey.csv"
    res = CliRunner().invoke(app, ["journey-export", "--out", str(source)])
    assert res.exit_code == 0, res.output
    lake = Lake.from_uri(str(tmp_path / "lake"))
    report = ingest_transactions(source, json.loads(source.with_suffix(".json").read_text()), lake)
    assert len(report.skus) > 40_000 and report.rows_written > 450_000
    assert report.dates[-1] == JOURNEY_LAST
    assert len(report.dates) == 119 and dt.date(2017, 12, 25) not in report.dates  # closed
    assert set(report.rejected) <= {"zero_quantity", "zero_price", "price_outlier"}

    env = {
        "PRICING_DATA_DIR": str(tmp_path),
        "PRICING_ALGOS": '["planner"]',
        "PRICING_POS_MAX_SKUS": "100",  # the 100 best sellers (the planner's cost grows per SKU)
        "PRICING_POS_HOLIDAYS": "US",
        "PRICING_EVAL_EPISODES": "60",
        "PRICING_BOOTSTRAP_SAMPLES": "200",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["nightly", "--date", JOURNEY_LAST.isoformat()])
    assert res.exit_code == 0, res.output
    reports = tmp_path / "lake/reports"
    fidelity = json.loads((reports / f"sim/date={JOURNEY_LAST}/fidelity.json").read_text())
    assert fidelity["passed"] and fidelity["deviance_ratio"] <= DEFAULT_GATE
    fit = json.loads((reports / f"sim/date={JOURNEY_LAST}/fit_report.json").read_text())
    assert len(fit["elasticities"]["skus"]) == 100
    assert fit["unpriced"]["skus"] > 20_000  # the rest keep their price, and are reported
    decision = json.loads((reports / f"gate/date={JOURNEY_LAST}/decision.json").read_text())
    assert decision["promote"] is True and decision["moved"] is True
