"""Run a DAG of `dags/` through Airflow itself, in this process, on an embedded SQLite metadata DB.

This is what `pricing nightly --airflow` and `pricing demo` use on a laptop: Airflow's own
``dag.test()`` parses the DAG file, creates a DAG run for the logical date and executes every task
with the real task runner (XCom, assets, trigger rules, pools), without a scheduler or workers.
The metadata DB lives in ``$AIRFLOW_HOME`` (default ``<data_dir>/airflow``), so `make up`'s
Airflow UI shows these runs too.

Airflow reads its configuration when it is first imported: `configure` must run before anything
imports ``airflow``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.contracts import PROMOTION_POOL, PROMOTION_POOL_DOC, STOP_TASK
from pipeline.errors import PricingError


class AirflowRunError(PricingError, RuntimeError):
    """Airflow could not be set up, or the DAG could not be loaded."""


def dags_folder() -> Path:
    """The DAG folder: ``AIRFLOW__CORE__DAGS_FOLDER``, else the repository's ``dags/``."""
    configured = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    folder = Path(configured) if configured else Path(__file__).resolve().parents[2] / "dags"
    if not (folder / "pricing_nightly.py").is_file():
        raise AirflowRunError(
            f"no pricing_nightly.py in {folder}: run from a checkout of the repository or set "
            "AIRFLOW__CORE__DAGS_FOLDER to the folder holding the pricing DAGs"
        )
    return folder


def configure(data_dir: Path) -> Path:
    """Point Airflow at ``<data_dir>/airflow`` (unless AIRFLOW_HOME is set) with a SQLite DB and
    the pricing DAGs; returns AIRFLOW_HOME. Must run before ``airflow`` is imported."""
    home = Path(os.environ.get("AIRFLOW_HOME") or (data_dir / "airflow")).resolve()
    if "airflow" in sys.modules:
        from airflow import settings as af_settings

        if str(home) not in str(af_settings.SQL_ALCHEMY_CONN) and not os.environ.get(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        ):
            raise AirflowRunError("airflow was imported before its home was configured")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(dags_folder()))
    os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    return home


def prepare_db() -> None:
    """Migrate the metadata DB (idempotent) and create the promotion pool the DAGs use."""
    from airflow.models.pool import Pool
    from airflow.utils.db import initdb

    initdb()
    Pool.create_or_update_pool(PROMOTION_POOL, 1, PROMOTION_POOL_DOC, False)


@dataclass
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str] = field(default_factory=dict)  # task[map label] -> state, in run order
    stop: dict[str, Any] | None = None  # the night_stopped record, when a gate stopped the night


def xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    """The XCom ``key`` that ``task_id`` pushed in ``run``, or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run.run_id, key=key, task_ids=task_id, dag_ids=run.dag_id)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def dag_test(dag_id: str, retries: int | None = 0, **test_kwargs: Any) -> Any:
    """``dag.test(**test_kwargs)`` of ``dag_id`` from the DAG folder; returns the DagRun. Retries
    are off by default, so a failing task ends the run at once instead of waiting to retry."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(dags_folder()))
    if bag.import_errors:
        raise AirflowRunError(f"DAG files failed to import: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise AirflowRunError(f"no DAG {dag_id!r} in {dags_folder()} (found {sorted(bag.dags)})")
    dag = bag.dags[dag_id]
    if retries is not None:
        for op in dag.tasks:
            op.retries = retries
    return dag.test(**test_kwargs)


def task_states(run: Any) -> dict[str, str]:
    """``task_id`` (``task_id[label]`` for mapped ones) → state, in the order the tasks started."""
    tasks = {}
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    for ti in sorted(run.get_task_instances(), key=lambda ti: ti.start_date or far):
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index}]"
        tasks[name] = str(getattr(ti.state, "value", ti.state))
    return tasks


def run_dag(dag_id: str, logical_date: dt.datetime, **conf: Any) -> DagRunResult:
    """Run ``dag_id`` for ``logical_date`` with ``dag.test()`` (no retries) and summarise it."""
    run = dag_test(dag_id, logical_date=logical_date, run_conf=conf or None)
    tasks = task_states(run)
    state = str(getattr(run.state, "value", run.state))
    stop = xcom(run, STOP_TASK) if tasks.get(STOP_TASK) == "success" else None
    return DagRunResult(dag_id, run.run_id, state, tasks, stop)
