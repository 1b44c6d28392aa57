"""`pricing promote`, `pricing rollback` (admin token) and `pricing nightly` exit codes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.lake import Lake
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.history import generate_history
from sim.world import World
from tests.conftest import register_tiny_version, tiny_world_dict

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "world.json").write_text(json.dumps(tiny_world_dict()))
    monkeypatch.setenv("PRICING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PRICING_WORLD_FILE", str(tmp_path / "world.json"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PRICING_TOKEN", raising=False)
    return tmp_path


def _two_versions(root: Path) -> list[str]:
    settings = Settings(data_dir=root)
    reg = Registry(settings, Lake.from_uri(settings.lake))
    return [register_tiny_version(reg, seed, f"2026-01-0{seed + 1}") for seed in (0, 1)]


def test_promote_and_rollback_need_the_admin_token(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _two_versions(env)
    res = runner.invoke(app, ["promote", "--version", v1, "--reason", "first"])
    assert res.exit_code == 1 and "PRICING_ADMIN_TOKEN" in res.output
    monkeypatch.setenv("PRICING_ADMIN_TOKEN", "s3cret-token")
    res = runner.invoke(app, ["promote", "--version", v1, "--reason", "first", "--token", "nope"])
    assert res.exit_code == 3 and "token" in res.output
    ok = ["--token", "s3cret-token"]
    res = runner.invoke(app, ["promote", "--version", v1, "--reason", "first", *ok])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["promote", "--version", v2, "--reason", "trial", "--dry-run", *ok])
    assert res.exit_code == 0 and "dry run" in res.output
    settings = Settings(data_dir=env)
    reg = Registry(settings, Lake.from_uri(settings.lake))
    assert reg.champion_version() == v1
    res = runner.invoke(
        app, ["promote", "--version", v2, "--reason", "better", "--who", "ana", *ok]
    )
    assert res.exit_code == 0 and reg.champion_version() == v2
    res = runner.invoke(app, ["rollback", "--reason", "conversion dropped", *ok])
    assert res.exit_code == 0, res.output
    assert reg.champion_version() == v1
    assert [e.who for e in reg.ledger.entries()][1] == "ana"
    res = runner.invoke(app, ["promote", "--version", "99", "--reason", "x", *ok])
    assert res.exit_code == 1 and "no version 99" in res.output


def test_nightly_exits_2_when_validation_stops_it(env: Path) -> None:
    world = World.model_validate(tiny_world_dict())
    lake = Lake.from_uri(str(env / "lake"))
    start = dt.date(2026, 1, 5)
    for day in generate_history(world, 3, 1, start):
        dec = day.decisions
        if day.date == start + dt.timedelta(days=2):
            dec = dec.assign(propensity=dec["propensity"] * 20)
        lake.write_partition("raw", "decisions", day.date, dec)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    res = runner.invoke(
        app,
        ["nightly", "--date", "2026-01-07"],
        env={"PRICING_TRAIN_DAYS": "3", "PRICING_HOLDOUT_DAYS": "1"},
    )
    assert res.exit_code == 2, res.output
    assert "stopped at validate" in res.output and "propensity" in res.output
    assert lake.has_partition("quarantine", "decisions", start + dt.timedelta(days=2))
    res = runner.invoke(app, ["nightly", "--date", "07/01/2026"])
    assert res.exit_code == 1 and "YYYY-MM-DD" in res.output


def test_doctor_reports_then_repairs_behind_the_token(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _two_versions(env)
    settings = Settings(data_dir=env)
    reg = Registry(settings, Lake.from_uri(settings.lake))
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0 and "healthy" in res.output and "no champion yet" in res.output
    reg.promote(v1, None, "first", who="test")
    reg.client.set_registered_model_alias(reg.name, "champion", v2)  # moved outside pricing
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 2, res.output
    assert "PROBLEM" in res.output and "--repair" in res.output
    res = runner.invoke(app, ["doctor", "--repair"])
    assert res.exit_code == 1 and "PRICING_ADMIN_TOKEN" in res.output
    monkeypatch.setenv("PRICING_ADMIN_TOKEN", "s3cret-token")
    res = runner.invoke(app, ["doctor", "--repair", "--token", "nope"])
    assert res.exit_code == 3
    res = runner.invoke(app, ["doctor", "--repair", "--token", "s3cret-token"])
    assert res.exit_code == 0 and "repaired" in res.output, res.output
    assert [(e.action, e.to_version) for e in reg.ledger.entries()] == [
        ("promote", v1),
        ("reconcile", v2),
    ]
    assert reg.champion_version() == v2
    assert runner.invoke(app, ["doctor"]).exit_code == 0


def test_a_ledger_of_ten_thousand_moves(tmp_path: Path) -> None:
    """Appends stay whole and the rollback target right at 10,000 entries (the time an append
    takes there is printed by bench/ledger.py, not asserted)."""
    from pipeline.release.ledger import Ledger, LedgerEntry, champion_stack, encode

    lake = Lake.from_uri(str(tmp_path / "lake"))
    ledger = Ledger(lake)
    entries = [
        LedgerEntry("2026-01-01T00:00:00+00:00", "n", "promote", str(i), str(i + 1), "r")
        for i in range(10_000)
    ]
    lake.write_bytes(ledger.path, b"".join(encode(e) for e in entries))
    ledger.append(LedgerEntry("2026-01-02T00:00:00+00:00", "n", "rollback", "10001", "10000", "r"))
    got = ledger.entries()
    assert len(got) == 10_001 and got[-1].action == "rollback"
    assert champion_stack(got)[-2:] == ["9998", "9999"]  # the rollback popped v10000
