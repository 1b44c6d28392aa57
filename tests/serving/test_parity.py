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
import pytest

from pipeline.data.catalogue import write_catalogue
from pipeline.model.train import TrainConfig, train_agent
from pipeline.release.registry import CHAMPION
from pipeline.tracking import experiment
from sim.catalogue import Catalogue
from sim.world import World, default_world
from tests.serving.conftest import ANCHOR, PRICING, Env


def _thinner(world: World) -> World:
    """``world`` with a third less traffic and the competitor's undercut and flash sale a little
    off: a refit that got the market wrong, as refits do."""
    skus = tuple(s.model_copy(update={"arrival_rate": s.arrival_rate * 0.67}) for s in world.skus)
    states = tuple(
        s.model_copy(update={"price_ratio": round(s.price_ratio * (1.0 if i == 0 else 0.97), 4)})
        for i, s in enumerate(world.competitor.states)
    )
    competitor = world.competitor.model_copy(update={"states": states})
    return world.model_copy(update={"skus": skus, "competitor": competitor})


def _bundled_with_a_champion(env: Env) -> tuple[World, str]:
    """The bundled world's catalogue in the lake, and a champion trained in a world of thinner
    traffic (a refit that got demand wrong): its observation must be its own world's."""
    world = default_world()
    write_catalogue(env.lake, ANCHOR, Catalogue.of_world(world))
    thinner = _thinner(world)
    model = train_agent(
        thinner,
        TrainConfig(
            timesteps=4096, n_envs=8, n_steps=64, batch_size=128, n_epochs=1, net_arch=(16,)
        ),
    )
    reg = env.registry()
    with experiment(env.settings), mlflow.start_run():
        mv = reg.register_candidate(model, thinner, "ppo", {"logical_date": "2026-01-05"})
    reg.client.set_registered_model_alias(reg.name, CHAMPION, mv.version)
    return world, str(mv.version)


def test_the_served_champion_earns_what_its_evaluation_says(env: Env, tmp_path: Path) -> None:
    world, version = _bundled_with_a_champion(env)

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
    assert f["champion"]["version"] == version
    assert "AGREE within ±3" in " ".join(run.stdout.split())


def test_the_nightly_parity_alarm_catches_a_service_whose_clock_is_an_hour_off(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three services price two days of the bundled world with its exact plan as the champion:
    one on the season clock the pipeline keeps, one whose seasons start an hour late, one that
    gives the champion half the visitors. The night's served-parity check is silent on the
    first and the third (every unexplored decision is the
    champion's own in its state, and it earns what the simulator expects) and raises its alarm
    on the second. Judged in a simulator whose traffic is a third too thin, the first service's
    earnings are well above that world's expectation (two days of six SKUs are too few for that
    alone to clear the ±15 % alarm band)."""
    import datetime as dt

    from pipeline.data.lake import open_lake
    from pipeline.model.planner import plan
    from pipeline.orchestration.parity import served_replays
    from pipeline.release.parity import ServedParity, served_parity
    from pipeline.settings import Settings

    world = default_world()
    write_catalogue(env.lake, ANCHOR, Catalogue.of_world(world))
    reg = env.registry()
    with experiment(env.settings), mlflow.start_run():
        mv = reg.register_candidate(plan(world), world, "planner", {"logical_date": "2026-01-05"})
    reg.client.set_registered_model_alias(reg.name, CHAMPION, mv.version)
    version = str(mv.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.settings.tracking_uri)
    late = dt.datetime.combine(ANCHOR, dt.time(1), tzinfo=dt.UTC).isoformat()
    runs = {
        "right": {"PRICING_SERVE_TREATMENT_SHARE": "1.0"},
        "late": {"PRICING_SERVE_TREATMENT_SHARE": "1.0", "PRICING_SERVE_SEASON_START": late},
        # half the visitors, the other half the rule's on the same shelf (the visitor design)
        "half": {"PRICING_SERVE_TREATMENT_SHARE": "0.5"},
    }
    served_replays(env.settings, world, runs, 1, seed=5, say=lambda m: None, days=2, keep=tmp_path)
    day = ANCHOR + dt.timedelta(days=1)

    def verdict(name: str, simulator: World | None) -> ServedParity:
        root = tmp_path / name
        settings = Settings(
            data_dir=root,
            lake_uri=str(root / "lake"),
            model_name=env.settings.model_name,
            mlflow_tracking_uri=env.settings.tracking_uri,
        )
        return served_parity(settings, open_lake(settings), day, simulator=simulator)

    right, late = verdict("right", world), verdict("late", world)
    assert right.judged and right.version == version and right.units >= 100
    assert right.mismatches == 0 and not right.alarm, right.summary
    assert late.judged and late.alarm and late.mismatches > 0, late.summary
    assert "not the champion's own" in " ".join(late.reasons)
    # sharing each SKU's visitors (and its averages) with the rule is no alarm: the champion is
    # judged on the state the service kept, and on its arm's share of the traffic
    half = verdict("half", world)
    assert half.judged and half.mismatches == 0 and not half.alarm, half.summary
    assert half.gap_ci95 is not None and half.gap_ci95[0] < 0 < half.gap_ci95[1], half.summary
    thin = verdict("right", _thinner(world))
    assert thin.mismatches == 0 and thin.gap > 0.15 and thin.gap_ci95[0] > 0, thin.summary
