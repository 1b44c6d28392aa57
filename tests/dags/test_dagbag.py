"""Every DAG file parses, is documented and retried, and does no work at import."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.contracts import NIGHT_STEPS
from tests.dags.conftest import DAGS, PROMOTION_POOL, REPO, airflow_env

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag

EXPECTED = {"pricing_nightly", "pricing_promote", "pricing_monitor", "pricing_rollout"}
HEAVY = ("pipeline", "sim", "mlflow", "torch", "stable_baselines3", "great_expectations", "pandas")
# the one pipeline module a DAG file imports at parse time: names only, standard library only
LIGHT = ("pipeline", "pipeline.contracts")


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path) -> DagBag:
    # imported here: Airflow reads AIRFLOW_HOME at import, after `airflow_home` has set it
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED


def test_every_dag_has_tags_retries_and_docs(dagbag: DagBag) -> None:
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        assert dag.default_args.get("retries", 0) >= 1, dag_id
        assert dag.default_args.get("retry_exponential_backoff", 0) > 1, dag_id
        assert dag.max_active_runs == 1 and not dag.catchup, dag_id
        for op in dag.tasks:
            assert op.doc_md, f"{dag_id}.{op.task_id} has no docstring"


def test_nightly_wiring(dagbag: DagBag) -> None:
    dag = dagbag.dags["pricing_nightly"]
    down = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert down == {
        "validate": {"features", "night_stopped"},
        "features": {"refit", "night_stopped"},
        "refit": {"fidelity", "train", "night_stopped"},
        "fidelity": {"algorithms", "train", "night_stopped"},
        "algorithms": {"train"},
        "train": {"evaluate"},
        "evaluate": {"gate"},
        "gate": set(),
        "night_stopped": set(),
    }
    # the step order the DAG reads, the one `pricing nightly` follows
    for before, after in itertools.pairwise(NIGHT_STEPS):
        assert after in down[before], (before, after)
    tasks = dag.task_dict
    assert tasks["train"].is_mapped
    assert tasks["gate"].pool == PROMOTION_POOL
    assert tasks["night_stopped"].trigger_rule == "one_failed"
    outlets = {tid: [o.name for o in t.outlets] for tid, t in tasks.items()}
    assert outlets["features"] == ["pricing://features"]
    assert outlets["train"] == ["pricing://candidate-model"]
    assert outlets["gate"] == ["pricing-champion-moves"]
    # the cron, or an event of the monitor's drift asset
    assert dag.timetable.timetable.expression == "0 2 * * *"
    assert dag.timetable.asset_condition.name == "pricing://drift"


def test_monitor_wiring(dagbag: DagBag) -> None:
    dag = dagbag.dags["pricing_monitor"]
    down = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert down == {
        "measure": {"retrain_signal", "drift_alarm", "parity_alarm"},
        "retrain_signal": set(),
        "drift_alarm": set(),
        "parity_alarm": set(),
    }
    assert [o.name for o in dag.task_dict["retrain_signal"].outlets] == ["pricing-drift-events"]
    assert dag.task_dict["drift_alarm"].retries == 0
    assert dag.task_dict["parity_alarm"].retries == 0
    assert dag.timetable.expression == "0 * * * *"


def test_promote_params_and_pool(dagbag: DagBag) -> None:
    dag = dagbag.dags["pricing_promote"]
    assert not dag.timetable.can_be_scheduled
    schema = {k: dag.params.get_param(k).schema for k in dag.params}
    assert schema["action"]["enum"] == ["promote", "rollback"]
    assert schema["reason"]["minLength"] >= 10
    assert schema["dry_run"]["type"] == "boolean"
    (op,) = dag.tasks
    assert op.pool == PROMOTION_POOL


def _parse_in_subprocess(home: Path, extra_env: dict[str, str]) -> dict[str, object]:
    """Parse the DAG folder as the DAG processor does, in a fresh interpreter."""
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({str(DAGS)!r})
print(json.dumps({{
    "errors": bag.import_errors,
    "schedules": {{
        i: getattr(getattr(d.timetable, "timetable", d.timetable), "expression", None)
        for i, d in bag.dags.items()
    }},
    "heavy": sorted(
        m for m in sys.modules if m.split(".")[0] in {HEAVY!r} and m not in {LIGHT!r}
    ),
}}))
"""
    env = {**os.environ, **airflow_env(home), **extra_env}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parsing_imports_nothing_heavy_and_reads_the_cron(airflow_home: Path) -> None:
    """A DAG file's import pulls in no pipeline module but the contracts (standard library only),
    no MLflow, torch or GX: those load inside tasks."""
    crons = {
        "PRICING_NIGHTLY_CRON": "30 3 * * 1-5",
        "PRICING_MONITOR_CRON": "*/30 * * * *",
        "PRICING_ROLLOUT_CRON": "15 1 * * *",
    }
    got = _parse_in_subprocess(airflow_home, crons)
    assert got["errors"] == {} and got["heavy"] == [], got
    assert got["schedules"] == {
        "pricing_nightly": "30 3 * * 1-5",
        "pricing_promote": None,
        "pricing_monitor": "*/30 * * * *",
        "pricing_rollout": "15 1 * * *",
    }


@pytest.mark.parametrize(
    ("schedule", "after", "night"),
    [
        ("0 2 * * *", "2026-03-11T15:00", "2026-03-10"),  # yesterday's logs are complete
        ("0 2 * * *", "2026-03-11T01:00", "2026-03-09"),  # not yet: the night before
        ("30 3 * * 1-5", "2026-03-16T12:00", "2026-03-13"),  # Monday: Friday's interval
    ],
)
def test_a_run_without_a_date_takes_the_latest_complete_night(
    airflow_home: Path, schedule: str, after: str, night: str
) -> None:
    import datetime as dt
    import importlib.util

    spec = importlib.util.spec_from_file_location("nightly_dag", DAGS / "pricing_nightly.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    when = dt.datetime.fromisoformat(after).replace(tzinfo=dt.UTC)
    assert module.latest_complete_night(schedule, when) == dt.date.fromisoformat(night)
