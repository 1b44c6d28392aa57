"""What is evaluated is what is served: `pricing parity` on the bundled world.

A champion trained in a world that is not the bundled one (its traffic a third lower, as a refit
from logs would get it wrong) and the rule-based pricer each serve every visitor of the bundled
world through a real pricing service for a whole season; the simulator evaluates both as served
on the same season's visitors. Any skew between the two — an observation computed another way,
a hold, a draw, a guardrail, the averages of a quiet hour — shows up as a difference here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow

from pipeline.model.train import TrainConfig, train_agent
from pipeline.release.registry import CHAMPION
from pipeline.tracking import experiment
from sim.catalogue import Catalogue
from sim.world import default_world
from tests.serving.conftest import ANCHOR, PRICING, Env


def test_the_served_champion_earns_what_its_evaluation_says(env: Env, tmp_path: Path) -> None:
    from pipeline.data.catalogue import write_catalogue

    world = default_world()
    write_catalogue(env.lake, ANCHOR, Catalogue.of_world(world))
    thinner = world.model_copy(
        update={
            "skus": tuple(
                s.model_copy(update={"arrival_rate": s.arrival_rate * 0.67}) for s in world.skus
            )
        }
    )
    model = train_agent(
        thinner,
        TrainConfig(timesteps=4096, n_envs=8, n_steps=64, batch_size=128, n_epochs=1, net_arch=(16,)),
    )
    reg = env.registry()
    with experiment(env.settings), mlflow.start_run():
        mv = reg.register_candidate(model, thinner, "ppo", {"logical_date": "2026-01-05"})
    reg.client.set_registered_model_alias(reg.name, CHAMPION, mv.version)

    out = tmp_path / "parity.json"
    cmd = [PRICING, "parity", "--seasons", "1", "--episodes", "60", "--json", str(out)]
    run = subprocess.run(
        cmd, env=env.process_env(COLUMNS="200"), capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["sku_seasons"] == len(world.skus)
    for name in ("champion", "rule"):
        p = f["policies"][name]
        # the same visitors, draws and prices: served to the cent of the evaluation
        assert abs(p["served_over_evaluated"] - 1.0) < 1e-9, (name, p)
    assert f["agree"] and abs(f["gap_points"]) < 1e-6
    # both arms really were served: a whole season of visitors each, the champion's version
    for arm in ("champion", "rule"):
        overall = f["replay"][arm]["overall"]
        side = "treatment" if arm == "champion" else "control"
        assert overall[side]["visitors"] > 5000
    assert f["champion"]["version"] == str(mv.version)
    assert "AGREE within ±3" in " ".join(run.stdout.split())
