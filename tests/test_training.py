from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.model.artifacts import ModelIntegrityError, load_agent, save_agent
from pipeline.model.evaluation import evaluate_policies
from pipeline.model.train import TrainConfig, train_agent
from sim.world import World, default_world

runner = CliRunner()


def test_short_real_training_then_evaluation(tmp_path: Path, tiny_world_file: Path) -> None:
    """A real PPO run with a tiny budget, saved with its hash and evaluated through the CLI."""
    model = tmp_path / "agent.zip"
    res = runner.invoke(
        app,
        [
            "train",
            "--world",
            str(tiny_world_file),
            "--timesteps",
            "3000",
            "--n-envs",
            "8",
            "--seed",
            "1",
            "--out",
            str(model),
        ],
    )
    assert res.exit_code == 0, res.output
    assert model.is_file() and Path(f"{model}.sha256").is_file()
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--world",
            str(tiny_world_file),
            "--policies",
            f"dp,random,{model}",
            "--episodes",
            "20",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    agent = report["policies"]["agent"]
    assert agent["pct_of_optimal"] is not None and agent["mean_profit"] > 0


def test_training_is_seeded(tiny_world: World) -> None:
    cfg = TrainConfig(
        timesteps=768, n_envs=8, n_steps=48, batch_size=96, n_epochs=1, seed=3, net_arch=(16,)
    )
    a, b = train_agent(tiny_world, cfg), train_agent(tiny_world, cfg)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        assert (pa == pb).all()


def test_dqn_trains_too(tiny_world: World, tmp_path: Path) -> None:
    cfg = TrainConfig(algo="dqn", timesteps=1000, n_envs=8, seed=0, net_arch=(16,))
    model = train_agent(tiny_world, cfg)
    save_agent(model, tmp_path / "dqn.zip")
    report = evaluate_policies(tiny_world, [str(tmp_path / "dqn.zip")], 10, 0)
    assert report["policies"]["dqn"]["mean_profit"] != 0


def test_corrupted_model_is_refused_before_unpickling(tmp_path: Path, tiny_world: World) -> None:
    cfg = TrainConfig(
        timesteps=384, n_envs=8, n_steps=48, batch_size=96, n_epochs=1, net_arch=(16,)
    )
    path = tmp_path / "m.zip"
    save_agent(train_agent(tiny_world, cfg), path)
    load_agent(path)  # intact: loads
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match"):
        load_agent(path)
    Path(f"{path}.sha256").unlink()
    with pytest.raises(ModelIntegrityError, match=r"no m\.zip\.sha256"):
        load_agent(path)


def test_bad_train_config() -> None:
    with pytest.raises(ValueError, match="algo"):
        TrainConfig(algo="sac")
    res = runner.invoke(app, ["train", "--algo", "sac", "--timesteps", "10"])
    assert res.exit_code == 1 and "algo must be one of" in res.output


@pytest.mark.slow
def test_ppo_reaches_95_percent_of_the_optimum(tmp_path: Path) -> None:
    """The learnability claim of the README, at the budget the README states."""
    world = default_world()
    model = train_agent(world, TrainConfig(timesteps=2_000_000, seed=0))
    save_agent(model, tmp_path / "ppo.zip")
    report = evaluate_policies(world, [str(tmp_path / "ppo.zip"), "rule", "static"], 600, 7)
    pol = report["policies"]
    assert pol["ppo"]["pct_of_optimal"] >= 95.0
    assert pol["ppo"]["mean_profit"] > pol["static"]["mean_profit"] > pol["rule"]["mean_profit"]
