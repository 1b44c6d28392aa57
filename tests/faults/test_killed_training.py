"""A night SIGKILLed half-way through PPO training, then run again for the same logical date (the
retry Airflow makes): one model version, one champion move, no duplicated rows, nothing
half-written in the lake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.lake import open_lake
from pipeline.nightly.run import run_night
from pipeline.release.doctor import diagnose
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.conftest import tiny_world_dict
from tests.faults.night import LAST, write_tiny_history

# The night in a child process, printing its training progress a line at a time.
CHILD = """
import datetime as dt, sys
from pipeline.nightly.run import run_night
from pipeline.settings import Settings

def progress(algo):
    def report(done, total, profit):
        print(f"progress {done} {total}", flush=True)
    return report

run_night(Settings(), dt.date.fromisoformat(sys.argv[1]), train_progress=progress)
print("finished", flush=True)
"""


def test_training_killed_half_way_then_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_row: Any
) -> None:
    (tmp_path / "world.json").write_text(json.dumps(tiny_world_dict()))
    env = {
        "PRICING_DATA_DIR": str(tmp_path),
        "PRICING_WORLD_FILE": str(tmp_path / "world.json"),
        "PRICING_MODEL_NAME": "killed",
        "PRICING_TRAIN_DAYS": "10",
        "PRICING_HOLDOUT_DAYS": "3",
        "PRICING_ALGOS": '["ppo"]',
        "PRICING_PPO_TIMESTEPS": "30000",
        "PRICING_N_ENVS": "8",
        "PRICING_EVAL_EPISODES": "50",
        "PRICING_BOOTSTRAP_SAMPLES": "100",
        "PRICING_FIDELITY_MAX_CONVERSION_ERROR": "0.15",
        "PRICING_FIDELITY_MAX_DEVIANCE_RATIO": "10",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PRICING_LAKE_URI", raising=False)
    settings = Settings()  # the night's settings, as the child and the retry read them
    lake = open_lake(settings)
    write_tiny_history(lake)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, LAST.isoformat()],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    killed_at = None
    deadline = time.monotonic() + 300
    for line in child.stdout:
        assert time.monotonic() < deadline
        if line.startswith("progress"):
            done, total = map(int, line.split()[1:])
            if done >= total // 2:
                child.send_signal(signal.SIGKILL)
                killed_at = done / total
                break
    child.wait(30)
    assert killed_at is not None and killed_at < 1.0, "the night ended before it was killed"
    registry = Registry(settings, lake)
    search = f"name = '{settings.model_name}'"
    assert not registry.client.search_model_versions(search)  # nothing registered half-way
    assert registry.champion_version() is None

    retried = run_night(settings, LAST)
    assert retried.status == "completed", retried.reason
    assert len(registry.client.search_model_versions(search)) == 1
    assert len(registry.ledger.entries()) <= 1  # promoted at most once (the gate decides)
    feats = lake.read_partition("features", "features", LAST)
    assert len(feats) == len(feats.drop_duplicates(["date", "sku"]))
    # no half-written file (the lake's listing hides temporary files: look at the disk)
    left = [p for p in Path(settings.lake).rglob(".tmp-*") if not p.name.startswith(".tmp-lock")]
    assert not left
    assert diagnose(registry).healthy
    fault_row(
        "training task SIGKILLed half-way, then retried",
        f"SIGKILL at {killed_at:.0%} of PPO's budget; the night re-run for the same date",
        True,
        0,
        "the task fails (killed); its retry trains and registers exactly one version",
    )
