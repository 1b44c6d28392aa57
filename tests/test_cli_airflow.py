"""`pricing nightly --airflow` (what `make demo` runs): the nightly DAG through Airflow's own
``dag.test()`` on a SQLite metadata DB, in a fresh process as a user would start it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.lake import Lake
from sim.history import generate_history
from sim.world import World
from tests.conftest import tiny_world_dict
from tests.dags.test_nightly_dag import TINY

START = dt.date(2026, 1, 5)
DAYS = 6
LAST = START + dt.timedelta(days=DAYS - 1)
PRICING = Path(sys.executable).with_name("pricing")


def _night(root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PRICING_", "MLFLOW"))
    }
    env.update(TINY)
    env["PRICING_WORLD_FILE"] = str(root / "world.json")
    env["COLUMNS"] = "160"
    return subprocess.run(
        [
            str(PRICING),
            "nightly",
            "--date",
            LAST.isoformat(),
            "--data-dir",
            str(root / "data"),
            "--airflow",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "world.json").write_text(json.dumps(tiny_world_dict()))
    lake = Lake.from_uri(str(tmp_path / "data" / "lake"))
    for day in generate_history(World.model_validate(tiny_world_dict()), DAYS, 3, START):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    return tmp_path


@pytest.mark.integration
def test_the_night_runs_through_airflow_and_prints_the_table(logs: Path) -> None:
    out = _night(logs)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "pricing_nightly: success" in text
    for task in ("validate", "features", "refit", "fidelity", "train[ppo]", "train[dqn]", "gate"):
        assert task in text, task
    assert "through Airflow" in text and "% of optimal" in text and "gate:" in text
    # the run is in the metadata DB that `make up`'s Airflow UI reads
    assert (logs / "data" / "airflow" / "airflow.db").is_file()
    decision = json.loads(
        (logs / "data/lake/reports/gate" / f"date={LAST}" / "decision.json").read_text()
    )
    assert decision["reason"] in text.replace("\n", " ") or decision["reason"][:40] in text


@pytest.mark.integration
def test_a_stopped_night_exits_2_with_the_reason(logs: Path) -> None:
    lake = Lake.from_uri(str(logs / "data" / "lake"))
    bad = lake.read_partition("raw", "decisions", LAST)
    bad.loc[0, "price_shown"] = -5.0
    lake.write_partition("raw", "decisions", LAST, bad)
    out = _night(logs)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"night {LAST} stopped at validate" in out.stdout
    assert "upstream_failed" in out.stdout
    assert lake.has_partition("quarantine", "decisions", LAST)
