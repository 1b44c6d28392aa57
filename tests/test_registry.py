from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.lake import Lake
from pipeline.model.artifacts import ModelIntegrityError
from pipeline.release.registry import CHAMPION, PromotionConflict, Registry, RegistryError
from pipeline.settings import Settings
from tests.conftest import register_tiny_version


def _settings(tmp: Path) -> Settings:
    return Settings(data_dir=tmp, model_name="test-agent", mlflow_tracking_uri="")


@pytest.fixture(scope="module")
def registry_env(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Settings, list[str]]:
    tmp = tmp_path_factory.mktemp("reg")
    settings = _settings(tmp)
    reg = Registry(settings, Lake.from_uri(settings.lake))
    versions = [register_tiny_version(reg, s, f"2026-01-0{s + 1}", "test") for s in range(3)]
    return settings, versions


def _reg(settings: Settings) -> Registry:
    return Registry(settings, Lake.from_uri(settings.lake))


def test_versions_carry_lineage_and_load_verified(registry_env: tuple) -> None:
    settings, versions = registry_env
    reg = _reg(settings)
    mv = reg.version(versions[0])
    for tag in ("model_sha256", "agent_sha256", "logical_date", "algo", "git_commit"):
        assert mv.tags[tag]
    assert reg.find_version("2026-01-01", "ppo").version == mv.version
    assert reg.find_version("2026-01-01", "dqn") is None
    loaded = reg.load(versions[0])
    assert loaded.world.name == "tiny"
    obs = np.zeros((2, loaded.world.compile().obs_dim), dtype=np.float32)
    assert loaded.model.predict(obs, deterministic=True)[0].shape == (2,)


def test_pyfunc_predicts_actions_and_prices(registry_env: tuple, tmp_path: Path) -> None:
    settings, versions = registry_env
    reg = _reg(settings)
    model = reg.load_pyfunc(versions[0], tmp_path)
    from sim.market import observation_columns

    loaded = reg.load(versions[0])
    cols = observation_columns(loaded.world)
    frame = pd.DataFrame(np.full((3, len(cols)), 0.2), columns=cols)
    frame["current_price"] = [20.0, 20.0, 50.0]
    frame["ref_price"] = [20.0, 20.0, 50.0]
    out = model.predict(frame)
    assert list(out.columns) == ["action", "move", "price"]
    assert (
        (out["price"] >= 0.6 * frame["ref_price"]) & (out["price"] <= 1.5 * frame["ref_price"])
    ).all()


def test_promote_rollback_and_ledger(registry_env: tuple) -> None:
    settings, versions = registry_env
    reg = _reg(settings)
    v1, v2, _ = versions
    with pytest.raises(RegistryError, match="no champion"):
        reg.rollback("nothing yet")
    reg.promote(v1, None, "first champion", who="tester")
    with pytest.raises(PromotionConflict):
        reg.promote(v2, None, "stale decision")  # champion moved since the decision
    reg.promote(v2, v1, "better on the gate", who="tester", decision={"promote": True})
    assert reg.champion_version() == v2
    entry = reg.rollback("v2 misbehaves in production", who="oncall")
    assert entry.action == "rollback" and entry.from_version == v2 and entry.to_version == v1
    assert reg.champion_version() == v1
    with pytest.raises(RegistryError, match="first champion"):
        reg.rollback("again")
    ledger = reg.ledger.entries()
    assert [(e.from_version, e.to_version) for e in ledger] == [(None, v1), (v1, v2), (v2, v1)]
    assert all(e.when and e.who and e.reason for e in ledger)
    with pytest.raises(RegistryError, match="reason"):
        reg.promote(v2, v1, "  ")


def _race(settings: Settings, version: str, expected: str | None, barrier, results) -> None:
    reg = _reg(settings)
    barrier.wait()
    try:
        reg.promote(version, expected, f"race for v{version}", who=f"proc-{version}")
        results.put(("won", version))
    except PromotionConflict as err:
        results.put(("lost", str(err)))


def test_two_concurrent_promotions_exactly_one_wins(registry_env: tuple) -> None:
    settings, versions = registry_env
    reg = _reg(settings)
    before = reg.champion_version()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    contenders = [v for v in versions if v != before][:2]
    procs = [
        ctx.Process(target=_race, args=(settings, v, before, barrier, results)) for v in contenders
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = sorted(results.get(timeout=5)[0] for _ in procs)
    assert outcomes == ["lost", "won"]
    assert reg.champion_version() in contenders
    assert len(reg.ledger.entries()) == 4


def test_corrupted_artifact_refused_before_unpickling(registry_env: tuple, tmp_path: Path) -> None:
    settings, versions = registry_env
    reg = _reg(settings)
    v3 = versions[2]
    root = settings.artifacts_dir if settings.artifacts_dir.exists() else settings.data_dir
    zips = [p for p in Path(settings.data_dir).rglob("agent.zip")]
    assert zips, "artifact store holds the agent files"
    mv = reg.version(v3)
    target = [
        p
        for p in zips
        if mv.tags["agent_sha256"] == __import__("hashlib").sha256(p.read_bytes()).hexdigest()
    ]
    assert target
    backup = tmp_path / "backup.zip"
    shutil.copy(target[0], backup)
    data = bytearray(target[0].read_bytes())
    data[100] ^= 0xFF
    target[0].write_bytes(bytes(data))
    try:
        with pytest.raises(ModelIntegrityError, match="refusing to load"):
            reg.load(v3)
    finally:
        shutil.copy(backup, target[0])
    assert reg.load(v3).version == v3
    del root
    assert CHAMPION == "champion"
