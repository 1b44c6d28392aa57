"""A complete short night on SQLite MLflow and a local lake: real GX validation, a real refit, real
SB3 training with a tiny budget, real registry aliases; and every kind of bad input stopping the
night with the champion intact and the partition in quarantine."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.lake import Lake
from pipeline.nightly.run import run_night
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.history import generate_history
from sim.world import World
from tests.conftest import tiny_world_dict

START = dt.date(2026, 1, 5)
DAYS = 12
LAST = START + dt.timedelta(days=DAYS - 1)


def _settings(root: Path, **extra: object) -> Settings:
    base = {
        "data_dir": root,
        "world_file": root / "world.json",
        "train_days": 10,
        "holdout_days": 3,
        "algos": ("planner", "ppo", "dqn"),
        "ppo_timesteps": 100_000,
        "dqn_timesteps": 2000,
        "n_envs": 8,
        "eval_episodes": 150,
        "bootstrap_samples": 200,
        "fidelity_max_conversion_error": 0.15,
        "fidelity_max_deviance_ratio": 10.0,
        "promotion_margin": 0.0,
    }
    base.update(extra)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    root = tmp_path_factory.mktemp("night")
    (root / "world.json").write_text(json.dumps(tiny_world_dict()))
    settings = _settings(root)
    world = World.model_validate(tiny_world_dict())
    lake = Lake.from_uri(settings.lake)
    for day in generate_history(world, DAYS + 1, 3, START):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    result = run_night(settings, LAST)
    return settings, result.to_dict()


def test_complete_night_promotes_over_rule(night: tuple[Settings, dict]) -> None:
    settings, result = night
    assert result["status"] == "completed", result
    assert list(result["steps"]) == [
        "validate",
        "features",
        "refit",
        "fidelity",
        "train_planner",
        "train_ppo",
        "train_dqn",
        "evaluate",
        "gate",
    ]
    gate = result["steps"]["gate"]
    assert gate["promote"] and gate["moved"], gate
    reg = Registry(settings, Lake.from_uri(settings.lake))
    champion = reg.champion_version()
    assert champion == gate["evidence"]["candidate_version"]
    assert str(reg.alias("challenger").version) == champion
    mv = reg.version(champion)
    for tag in (
        "data_sha256",
        "validation_report",
        "sim_params_sha256",
        "git_commit",
        "model_sha256",
        "logical_date",
    ):
        assert mv.tags.get(tag), tag
    assert "rule" in gate["evidence"]["incumbent"]
    ledger = reg.ledger.entries()
    assert len(ledger) == 1 and ledger[0].who == "nightly"
    lake = Lake.from_uri(settings.lake)
    for rel in (
        "reports/sim/date=2026-01-16/world.json",
        "reports/sim/date=2026-01-16/fidelity.json",
        "reports/evaluation/date=2026-01-16/report.json",
        "reports/gate/date=2026-01-16/decision.json",
    ):
        assert lake.exists(rel), rel
    assert lake.has_partition("features", "features", LAST)
    # the table holds every candidate kind and the behavioural clone of the logged decisions
    report = json.loads(lake.read_bytes("reports/evaluation/date=2026-01-16/report.json"))
    names = set(report["policies"])
    assert {"bc", "rule", "static"} <= names
    assert {n.split()[-1] for n in names if n.startswith("v")} == {"planner", "ppo", "dqn"}


def test_rerunning_a_date_duplicates_nothing(night: tuple[Settings, dict]) -> None:
    settings, _first = night
    reg = Registry(settings, Lake.from_uri(settings.lake))
    n_versions = len(reg.client.search_model_versions(f"name = '{settings.model_name}'"))
    again = run_night(settings, LAST).to_dict()
    assert again["status"] == "completed"
    assert all(again["steps"][f"train_{a}"]["reused"] for a in settings.algos)
    assert len(reg.client.search_model_versions(f"name = '{settings.model_name}'")) == n_versions
    assert len(reg.ledger.entries()) == 1  # no second champion move
    feats = Lake.from_uri(settings.lake).read_partition("features", "features", LAST)
    assert len(feats) == len(feats.drop_duplicates(["date", "sku"]))


def _corrupt(kind: str, df: pd.DataFrame) -> pd.DataFrame | bytes:
    df = df.copy()
    if kind == "duplicate_event_ids":
        df.loc[df.index[:5], "event_id"] = df["event_id"].iloc[0]
    elif kind == "negative_price":
        df.loc[df.index[3], "price_shown"] = -4.0
    elif kind == "absurd_price":
        df.loc[df.index[3], "price_shown"] = df["base_price"].iloc[3] * 500
    elif kind == "propensity_out_of_range":
        df.loc[df.index[7], "propensity"] = 1.5
    elif kind == "zero_propensity":
        df.loc[df.index[7], "propensity"] = 0.0
    elif kind == "timestamp_other_day":
        df.loc[df.index[2], "ts"] = df["ts"].iloc[2] - pd.Timedelta(days=3)
    elif kind == "timestamp_in_future":
        df.loc[df.index[2], "ts"] = pd.Timestamp("2099-01-01", tz="UTC")
    elif kind == "schema_drift":
        df = df.drop(columns=["competitor_price"]).assign(promo_flag=1)
    elif kind == "nulls":
        df.loc[df.index[:3], "sku"] = None
    elif kind == "empty":
        df = df.iloc[:0]
    elif kind == "truncated":
        return b"PAR1\x00\x01truncated"
    return df


BAD = [
    "duplicate_event_ids",
    "negative_price",
    "absurd_price",
    "propensity_out_of_range",
    "zero_propensity",
    "timestamp_other_day",
    "timestamp_in_future",
    "schema_drift",
    "nulls",
    "empty",
    "truncated",
]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_stops_the_night_and_quarantines(night: tuple[Settings, dict], kind: str) -> None:
    settings, _ = night
    lake = Lake.from_uri(settings.lake)
    reg = Registry(settings, lake)
    champion = reg.champion_version()
    day = LAST + dt.timedelta(days=1)
    clean = generate_history(World.model_validate(tiny_world_dict()), DAYS + 1, 3, START)
    original = next(d for d in clean if d.date == day).decisions
    bad = _corrupt(kind, original)
    if isinstance(bad, bytes):  # the bytes of the committed part replaced
        lake.write_partition("raw", "decisions", day, original)
        [part] = lake.part_paths("raw", "decisions", day)
        lake.write_bytes(part, bad)
    else:
        lake.write_partition("raw", "decisions", day, bad)
    try:
        result = run_night(settings, day).to_dict()
        assert result["status"] == "stopped" and result["stopped_at"] == "validate", result
        assert reg.champion_version() == champion
        assert not lake.has_partition("raw", "decisions", day)
        moved = lake.list(lake.partition_prefix("quarantine", "decisions", day))
        assert any(p.endswith(".parquet") for p in moved)
        assert any(p.endswith("validation.json") for p in moved)
        if kind != "truncated":  # an unreadable file has no rows to render Data Docs for
            assert any(p.endswith(".html") for p in moved)
        assert result["reason"]
        # re-running the date does not quietly go on without the quarantined partition
        again = run_night(settings, day).to_dict()
        assert again["status"] == "stopped" and "in quarantine" in again["reason"]
    finally:
        lake.write_partition("raw", "decisions", day, original)


def test_a_fine_tuning_night_starts_from_the_champions_weights(
    night: tuple[Settings, dict],
) -> None:
    """PRICING_TRAIN_INIT=champion: tonight's PPO starts from the PPO champion's weights, with a
    fraction of the budget, and its version, the night's result and the ledger say so."""
    import mlflow

    base, _ = night
    lake = Lake.from_uri(base.lake)
    reg = Registry(base, lake)
    ppo = reg.find_version(LAST.isoformat(), "ppo")
    assert ppo is not None
    reg.client.set_registered_model_alias(reg.name, "champion", str(ppo.version))
    settings = base.model_copy(
        update={"algos": ("ppo",), "train_init": "champion", "ppo_timesteps": 20_000}
    )
    day = LAST + dt.timedelta(days=1)
    result = run_night(settings, day).to_dict()
    assert result["status"] == "completed", result
    trained = result["steps"]["train_ppo"]
    assert trained["init"] == f"champion:v{ppo.version}"
    assert reg.version(trained["version"]).tags["init"] == f"champion:v{ppo.version}"
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(trained["run_id"])
    assert run.data.params["train/timesteps"] == str(round(20_000 * settings.finetune_fraction))
    gate = result["steps"]["gate"]
    if gate["moved"]:
        assert reg.ledger.entries()[-1].decision["candidate_init"] == trained["init"]
    # with the planner as champion there is nothing to fine-tune: scratch, and it says why
    planner = reg.find_version(LAST.isoformat(), "planner")
    assert planner is not None
    reg.client.set_registered_model_alias(reg.name, "champion", str(planner.version))
    from pipeline.nightly.candidates import _starting_point

    world = World.model_validate(tiny_world_dict())
    start = _starting_point(settings, reg, "ppo", world)
    assert not start.warm and start.init == f"scratch (the champion v{planner.version} is no ppo)"
    # PRICING_TRAIN_INIT=planner: PPO's actor imitates tonight's exact plan first
    imitating = settings.model_copy(update={"train_init": "planner"})
    start = _starting_point(imitating, reg, "ppo", world)
    assert start.init == "imitate:planner" and start.teacher is not None
    assert _starting_point(imitating, reg, "dqn", world).init.startswith("scratch (dqn has no")
