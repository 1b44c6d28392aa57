"""A short `pricing replay` on the tiny world: the service's own decision log passes the night's
validation and trains the next candidate; the figures come out per arm."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

from pipeline.release.registry import Registry
from sim.history import generate_history
from tests.dags.test_nightly_dag import TINY
from tests.serving.conftest import ANCHOR, PRICING, Env, Served

HISTORY_DAYS = 6


def test_a_replayed_day_trains_the_next_candidate(env: Env, served: Served, tmp_path: Path) -> None:
    for day in generate_history(env.world, HISTORY_DAYS, 3, ANCHOR):
        env.lake.write_partition("raw", "decisions", day.date, day.decisions)
        env.lake.write_partition("raw", "transactions", day.date, day.transactions)
    world = tmp_path / "tiny.json"
    world.write_text(env.world.to_json())
    out = tmp_path / "replay.json"
    cmd = [
        PRICING,
        "replay",
        "--world",
        str(world),
        "--url",
        f"http://127.0.0.1:{served.port}",
        "--days",
        "1",
        "--json",
        str(out),
    ]
    run_env = env.process_env(**TINY, COLUMNS="200")
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    replayed = ANCHOR + dt.timedelta(days=HISTORY_DAYS)
    (day,) = figures["days"]
    assert day["date"] == replayed.isoformat()
    assert day["night"]["status"] == "completed", day["night"]
    for arm in ("control", "treatment"):
        a = figures["overall"][arm]
        assert a["visitors"] > 0 and a["profit_per_visitor"] >= 0
        assert set(a) >= {"profit_per_visitor", "conversion", "margin"}
    assert "treatment profit per visitor vs control" in done.stdout
    # the served log is in the lake, with the propensities the service logged, and the night
    # registered its candidates from it
    served_log = env.lake.read_partition("raw", "decisions", replayed)
    assert set(served_log["ab_arm"]) == {"control", "treatment"}
    assert served_log["policy_id"].str.startswith("champion-v").any()
    reg = Registry(env.settings, env.lake)
    assert reg.find_version(replayed.isoformat(), "ppo") is not None


def test_a_replay_goes_on_from_the_shelf_the_last_one_left(env: Env) -> None:
    """Stock, the competitor's state, the arms' last prices and the season's random streams
    carry over to the next day's replay; another day or another world starts from a fresh
    shelf."""
    import numpy as np

    from pipeline.orchestration.replay import Shelf, load_shelf, save_shelf

    anchor = dt.datetime.combine(ANCHOR, dt.time(0), tzinfo=dt.UTC)
    shelf = Shelf.new(env.world, anchor, 0, seed=5)
    shelf.market.inventory = shelf.market.inventory - 3
    shelf.market.comp = np.ones_like(shelf.market.comp)
    shelf.market.t[:] = 24
    shelf.last["treatment"][1] = 7
    nxt = ANCHOR + dt.timedelta(days=2)
    save_shelf(env.lake, env.world, nxt, 5, shelf)
    loaded = load_shelf(env.lake, env.world, nxt, anchor)
    assert loaded is not None
    assert loaded.season == 0 and (loaded.market.t == 24).all()
    assert (loaded.market.inventory == shelf.market.inventory).all()
    assert (loaded.market.comp == 1).all() and loaded.last["treatment"][1] == 7
    assert np.array_equal(loaded.exo.random(3), shelf.exo.random(3))
    assert load_shelf(env.lake, env.world, nxt + dt.timedelta(days=1), anchor) is None
    other = env.world.model_copy(update={"name": "other"})
    assert load_shelf(env.lake, other, nxt, anchor) is None
