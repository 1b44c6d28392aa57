"""Airflow for the DAG tests: a fresh ``AIRFLOW_HOME`` with a SQLite metadata DB, once a session.

Airflow reads its home and database at import, so every test imports it inside a fixture or a
test body, after `airflow_env` has pointed the environment at the session's temporary home.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.contracts import PROMOTION_POOL

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
__all__ = ["DAGS", "PROMOTION_POOL", "REPO", "airflow_env"]


def airflow_env(home: Path) -> dict[str, str]:
    """The variables that make an Airflow of its own under ``home``, reading the repo's DAGs."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("airflow")
    if "airflow" in sys.modules:
        from airflow import settings

        if str(home) not in str(settings.SQL_ALCHEMY_CONN):
            pytest.fail("airflow was imported before the DAG tests set AIRFLOW_HOME")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in airflow_env(home).items():
            mp.setenv(name, value)
        yield home


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> None:
    """The metadata DB migrated, and the promotion pool the DAGs use."""
    from pipeline.orchestration.airflow_run import prepare_db

    prepare_db()


def run_dag(dag_id: str, **kwargs: Any) -> DagRun:
    """``dag.test()`` with retries off: a failing task ends the run instead of waiting to retry."""
    from pipeline.orchestration.airflow_run import dag_test

    return dag_test(dag_id, **kwargs)


def task_states(run: DagRun) -> dict[str, str]:
    from pipeline.orchestration.airflow_run import task_states as states

    return states(run)


def xcom(run: DagRun, task_id: str, key: str = "return_value") -> Any:
    from pipeline.orchestration.airflow_run import xcom as pull

    return pull(run, task_id, key)


def asset_events(name: str) -> list[dict[str, Any]]:
    """The ``extra`` of every event of the asset named ``name``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.extra)
            .join(AssetEvent.asset)
            .where(AssetModel.name == name)
            .order_by(AssetEvent.id)
        )
        return [dict(extra) for extra in session.scalars(query)]
