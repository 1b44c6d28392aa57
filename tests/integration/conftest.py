"""The production stack for the integration tests: Airflow on PostgreSQL with the CeleryExecutor
and Redis, an MLflow tracking server on PostgreSQL, and a tiny world's lake on local disk.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running: when they are not, the
tests fail with the reason, they do not skip.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.data.lake import Lake
from sim.history import generate_history
from sim.world import World
from tests.conftest import tiny_world_dict
from tests.dags.test_nightly_dag import TINY
from tests.integration.stack import Stack, StackError, production_stack

START = dt.date(2026, 1, 5)
HISTORY_DAYS = 7
NIGHT = START + dt.timedelta(days=HISTORY_DAYS - 1)  # the last day of the history


def write_lake(root: Path) -> dict[str, str]:
    """The tiny world and its history in a local lake; returns the tasks' ``PRICING_*`` env."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "world.json").write_text(json.dumps(tiny_world_dict()))
    lake = Lake.from_uri(str(root / "lake"))
    for day in generate_history(World.model_validate(tiny_world_dict()), HISTORY_DAYS, 3, START):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    return {
        "PRICING_DATA_DIR": str(root),
        "PRICING_WORLD_FILE": str(root / "world.json"),
        **TINY,
        # a killed task is retried in seconds, not minutes (test_a_killed_train_task_is_retried)
        "PRICING_NIGHTLY_RETRY_DELAY_S": "2",
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    pricing = write_lake(root / "pricing")
    try:
        with production_stack(root, pricing) as running:
            yield running
    except StackError as err:
        pytest.fail(str(err), pytrace=False)
