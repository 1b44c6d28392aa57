"""Two operators move the champion at once, one from the command line and one through the
``pricing_promote`` DAG (run with ``dag.test()``): both decide while a third move holds the lock,
then race for it. Exactly one moves the champion; the other is refused and told why."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.lake import Lake
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.conftest import register_tiny_version, tiny_world_dict
from tests.dags.conftest import run_dag, task_states
from tests.faults.hooks import ledger_moves

TOKEN = "race-admin-token"


@pytest.fixture
def three_versions(tmp_path: Path, airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Registry:
    (tmp_path / "world.json").write_text(json.dumps(tiny_world_dict()))
    monkeypatch.setenv("PRICING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PRICING_WORLD_FILE", str(tmp_path / "world.json"))
    monkeypatch.setenv("PRICING_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("PRICING_TOKEN", TOKEN)
    for var in ("PRICING_LAKE_URI", "MLFLOW_TRACKING_URI", "PRICING_MODEL_NAME"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    registry = Registry(settings, Lake.from_uri(settings.lake))
    for seed in range(3):
        register_tiny_version(registry, seed, f"2026-01-0{seed + 1}")
    registry.promote("1", None, "first champion", who="test")
    return registry


def _holders(lock: Path) -> Iterator[int]:
    """The pids that have ``lock`` open, once per open file."""
    target = str(lock.resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.path.realpath(fd) == target:
                    yield int(proc.name)
        except OSError:
            continue


def test_the_command_line_and_the_promote_dag_race(
    three_versions: Registry, fault_row: Any
) -> None:
    registry = three_versions
    lock = registry.settings.runtime_dir / f"promotion-{registry.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    pricing = str(Path(sys.executable).with_name("pricing"))
    held = open(lock, "a+")  # noqa: SIM115 - released by the thread below
    fcntl.flock(held, fcntl.LOCK_EX)
    cli = subprocess.Popen(
        [pricing, "promote", "--version", "2", "--reason", "operator on the command line"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def release_when_both_wait() -> None:
        # the CLI's process and this one (the DAG's task) each hold a second open of the file
        deadline = time.monotonic() + 120
        while True:
            holders = list(_holders(lock))
            if cli.pid in holders and holders.count(os.getpid()) >= 2:
                break
            if time.monotonic() > deadline or cli.poll() is not None:
                break
            time.sleep(0.1)
        fcntl.flock(held, fcntl.LOCK_UN)
        held.close()

    releaser = threading.Thread(target=release_when_both_wait)
    releaser.start()
    run = run_dag(
        "pricing_promote",
        logical_date=None,
        run_conf={"action": "promote", "version": "3", "reason": "operator in the Airflow form"},
    )
    releaser.join(150)
    code = cli.wait(150)
    _, err = cli.communicate()
    dag_won = run.state == "success"
    assert (code == 0) != dag_won, (code, err, task_states(run))
    winner = "3" if dag_won else "2"
    assert registry.champion_version() == winner
    assert ledger_moves(registry) == [
        ("promote", "1"),
        ("promote", winner),
    ]
    if not dag_won:
        assert task_states(run) == {"move_champion": "failed"}
    else:
        assert code == 1 and "but the decision assumed v1; nothing changed" in " ".join(err.split())
    fault_row(
        "the command line and the promote DAG promote at once",
        "`pricing promote` and a pricing_promote run released together at the lock",
        True,
        0,
        "the loser is refused: champion is vN but the decision assumed v1; nothing changed "
        "(exit 1, or the DAG's task failed with that reason)",
    )
