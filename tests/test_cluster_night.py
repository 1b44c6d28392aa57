"""A night fanned out over clusters, in worker processes or in one (the DAG maps the same cluster
nights over Celery's workers): each cluster gets its own registered model, champion, reports and
ledger, and a cluster stopped by its gates keeps its champion while the others promote."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess  # nosec B404: this project's own CLI
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from pipeline.contracts import LEDGER_PATH, fidelity_report_path
from pipeline.data.clusters import read_clusters
from pipeline.data.lake import Lake
from pipeline.data.synthetic import write_history
from pipeline.nightly import run as night_run
from pipeline.nightly.run import run_clustered_night
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from sim.feeds import PURCHASE
from sim.world import World
from tests.conftest import tiny_world_dict
from tests.faults.night import DAYS, LAST, START, night_settings


def _spoil_holdout(lake: Lake, sku: str, days: list[dt.date]) -> None:
    """The held-out days of one SKU rewritten so that nobody buys it: its cluster's refit (on the
    training days) cannot reproduce them, and its fidelity gate stops its night."""
    for day in days:
        dec = lake.read_partition("raw", "decisions", day)
        mine = dec["sku"] == sku
        dec.loc[mine, "outcome"] = "view"
        dec.loc[mine, "quantity"] = 0
        lake.write_partition("raw", "decisions", day, dec)
        tx = lake.read_partition("raw", "transactions", day)
        lake.write_partition("raw", "transactions", day, tx[tx["sku"] != sku])


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict, Lake]:
    root = tmp_path_factory.mktemp("clustered")
    world = World.model_validate(tiny_world_dict()).expand(3, seed=1)  # 3 SKUs, 3 categories
    settings = night_settings(root, model_name="clustered")
    settings.world_file.write_text(world.to_json())  # type: ignore[union-attr]
    lake = Lake.from_uri(settings.lake)
    write_history(lake, world, DAYS, 3, START)
    spoiled = world.skus[2].id
    holdout = [LAST - dt.timedelta(days=i) for i in range(settings.holdout_days)]
    _spoil_holdout(lake, spoiled, holdout)
    timed: list[str] = []
    # a worker serves one cluster night: three nights on two workers take fresh ones (what hung
    # with ProcessPoolExecutor's max_tasks_per_child once work was left queued)
    served, night_run.TASKS_PER_WORKER = night_run.TASKS_PER_WORKER, 1
    try:
        night = run_clustered_night(
            settings, LAST, on_step=lambda name, *_: timed.append(name), workers=2
        )
    finally:
        night_run.TASKS_PER_WORKER = served
    return settings, {**night.to_dict(), "timed": timed}, lake


def _cli_env(settings: Settings) -> dict[str, str]:
    """The fixture's settings as the command line reads them."""
    return {
        "PRICING_DATA_DIR": str(settings.data_dir),
        "PRICING_WORLD_FILE": str(settings.world_file),
        "PRICING_MODEL_NAME": settings.model_name,
        "PRICING_TRAIN_DAYS": str(settings.train_days),
        "PRICING_HOLDOUT_DAYS": str(settings.holdout_days),
        "PRICING_ALGOS": '["planner"]',
        "PRICING_EVAL_EPISODES": str(settings.eval_episodes),
        "PRICING_BOOTSTRAP_SAMPLES": str(settings.bootstrap_samples),
        "PRICING_FIDELITY_MAX_CONVERSION_ERROR": str(settings.fidelity_max_conversion_error),
        "PRICING_FIDELITY_MAX_DEVIANCE_RATIO": str(settings.fidelity_max_deviance_ratio),
    }


def test_each_cluster_runs_its_own_night(clustered: tuple[Settings, dict, Lake]) -> None:
    _, night, lake = clustered
    assert night["catalogue"]["status"] == "completed", night["catalogue"]
    snapshot = read_clusters(lake, LAST)
    assert snapshot is not None
    members = snapshot.members()
    assert len(members) == 3 and set(night["clusters"]) == set(members)
    assert night["status"] == "partial"  # one cluster stopped, the others ran to their gates
    for cid in members:
        report = lake.uri(f"reports/cluster={cid}/sim/date={LAST}/fit_report.json")
        assert Path(report).is_file(), report
        fitted = json.loads(lake.read_bytes(f"reports/cluster={cid}/sim/date={LAST}/world.json"))
        assert [s["id"] for s in fitted["skus"]] == members[cid]  # priced its own SKUs only
    assert not lake.exists(fidelity_report_path(LAST))  # nothing at the catalogue's level
    # the nights ran in two worker processes; their steps' timings came back with them
    assert night["timed"].count("refit") == 3 and night["timed"].count("fidelity") == 3
    assert night["timed"].count("gate") == 2  # the stopped cluster never reached its gate


def test_a_stopped_cluster_keeps_its_champion_while_the_others_promote(
    clustered: tuple[Settings, dict, Lake],
) -> None:
    settings, night, lake = clustered
    stopped = {c: r for c, r in night["clusters"].items() if r["status"] == "stopped"}
    ran = {c: r for c, r in night["clusters"].items() if r["status"] == "completed"}
    assert len(stopped) == 1 and len(ran) == 2, {
        c: r["status"] for c, r in night["clusters"].items()
    }
    [(cid, result)] = stopped.items()
    assert result["stopped_at"] == "fidelity"
    assert f"reports/cluster={cid}/sim/date={LAST}/fidelity.json" in result["reason"]
    registry = Registry(settings.for_cluster(cid), lake.for_cluster(cid))
    assert registry.champion_version() is None  # unchanged: nothing was registered for it
    assert not lake.exists(f"reports/cluster={cid}/promotions/ledger.jsonl")
    for other, res in ran.items():
        gate = res["steps"]["gate"]
        reg = Registry(settings.for_cluster(other), lake.for_cluster(other))
        assert reg.name == f"clustered--{other}"
        assert gate["moved"] and reg.champion_version() == gate["champion"]
        ledger = reg.ledger.entries()
        assert [e.to_version for e in ledger] == [gate["champion"]]  # its own ledger, one move
    assert not lake.exists(LEDGER_PATH)  # no catalogue-wide ledger line


def test_a_cluster_view_reads_only_its_skus(clustered: tuple[Settings, dict, Lake]) -> None:
    _, _, lake = clustered
    day = lake.read_partition("raw", "decisions", LAST)
    view = lake.for_cluster("x-0", {day["sku"].iloc[0]})
    part = view.read_partition("raw", "decisions", LAST)
    assert set(part["sku"]) == {day["sku"].iloc[0]} and 0 < len(part) < len(day)
    pd.testing.assert_frame_equal(
        part, day[day["sku"] == day["sku"].iloc[0]].reset_index(drop=True)
    )
    view.write_bytes("reports/a.json", b"{}")
    assert lake.exists("reports/cluster=x-0/a.json") and not lake.exists("reports/a.json")
    assert view.list("reports/") == ["reports/a.json"]
    assert PURCHASE in set(day["outcome"])


def test_the_night_cut_each_clusters_rows_of_its_window_once(
    clustered: tuple[Settings, dict, Lake],
) -> None:
    settings, night, lake = clustered
    assert night["timed"].count("slices") == 1
    members = read_clusters(lake, LAST).members()  # type: ignore[union-attr]
    window = [LAST - dt.timedelta(days=i) for i in range(settings.train_days)]
    for day in window:
        index = json.loads(lake.read_bytes(f"slices/decisions/date={day}/_slices.json"))
        assert set(index["clusters"]) == set(members)
    for cid, skus in members.items():
        sliced = lake.for_cluster(cid, skus).read_partition("raw", "decisions", LAST)
        day = lake.read_partition("raw", "decisions", LAST)
        pd.testing.assert_frame_equal(sliced, day[day["sku"].isin(skus)].reset_index(drop=True))


def test_the_clustered_night_from_the_command_line(
    clustered: tuple[Settings, dict, Lake], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pricing nightly --clusters` runs the same night (here again: nothing is registered or
    moved twice) and prints each cluster's outcome."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    settings, night, lake = clustered
    env = _cli_env(settings)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["nightly", "--date", LAST.isoformat(), "--clusters"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "3 clusters" in out and out.count("stopped at fidelity") == 1
    assert out.count("kept") == 2  # their champions of the first run, not moved again
    for cid, result in night["clusters"].items():
        if result["status"] == "completed":
            reg = Registry(settings.for_cluster(cid), lake.for_cluster(cid))
            assert len(reg.client.search_model_versions(f"name='{reg.name}'")) == 1


def test_a_cluster_that_fails_leaves_the_others_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in one cluster's night (a bug, an outage) is that cluster's result:
    the clusters after it still run."""
    from pipeline.data.clusters import Clusters
    from pipeline.nightly.run import NightResult

    ran: list[str | None] = []

    def fake_night(settings: Settings, date: dt.date, *args: object, **kw: object) -> NightResult:
        ran.append(settings.cluster)
        if settings.cluster == "a-0":
            raise RuntimeError("boom")
        return NightResult(date=date.isoformat(), status="completed")

    snapshot = Clusters(LAST, {"x": "a-0", "y": "b-0"}, {"a-0": "a", "b-0": "b"}, {}, [], [], 9)
    monkeypatch.setattr(night_run, "run_night", fake_night)
    monkeypatch.setattr(night_run, "cluster_catalogue", lambda *a, **k: snapshot)
    night = night_run.run_clustered_night(night_settings(tmp_path), LAST)
    assert ran == [None, "a-0", "b-0"]
    assert night.clusters["a-0"].stopped_at == "error"
    assert "RuntimeError: boom" in (night.clusters["a-0"].reason or "")
    assert night.clusters["b-0"].status == "completed" and night.status == "partial"


def test_killing_the_clustered_night_stops_its_workers(
    clustered: tuple[Settings, dict, Lake], tmp_path: Path
) -> None:
    """`pricing nightly --clusters --workers 2` SIGKILLed while its cluster nights run: the
    worker processes end with it (none keeps training or holds a lock for a night that is gone),
    and the same command then runs to the end."""
    settings, _, _ = clustered
    env = {**os.environ, **_cli_env(settings), "PRICING_CLUSTERS": "true"}
    pricing = str(Path(sys.executable).with_name("pricing"))
    command = [pricing, "nightly", "--date", LAST.isoformat()]
    with (tmp_path / "out.log").open("w") as out:
        parent = subprocess.Popen([*command, "--workers", "2"], env=env, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 300
            workers: list[psutil.Process] = []
            while len(workers) < 2 and parent.poll() is None:
                assert time.monotonic() < deadline, (tmp_path / "out.log").read_text()
                time.sleep(0.2)
                children = psutil.Process(parent.pid).children(recursive=True)
                workers = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
            assert parent.poll() is None, "the night ended before it was killed"
            children = psutil.Process(parent.pid).children(recursive=True)
            parent.send_signal(signal.SIGKILL)
            parent.wait(30)
            _, alive = psutil.wait_procs(children, timeout=60)  # a busy machine imports slowly
            assert not alive, f"outlived the night: {[' '.join(p.cmdline()) for p in alive]}"
        finally:
            if parent.poll() is None:
                parent.kill()
    done = subprocess.run(  # nosec B603
        [*command, "--workers", "2"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 clusters" in " ".join((done.stdout + done.stderr).split())
