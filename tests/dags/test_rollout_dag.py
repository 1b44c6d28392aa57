"""The rollout DAG with ``dag.test()`` against a real `pricing serve` process: a day whose
guardrails hold advances the share, a day that trips one stops it at 0 % and fails the run, and a
stopped rollout stays at 0 % on the next day's traffic."""

from __future__ import annotations

import datetime as dt
import http.client
import json

import pytest

from pipeline.contracts import ROLLOUT_LEDGER_PATH
from tests.dags.conftest import run_dag, task_states, xcom
from tests.serving.conftest import TOKEN, Env, Served, env, served  # noqa: F401 (fixtures)
from tests.serving.test_rollout import DAY, _served_log

RUN = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(0, 45), tzinfo=dt.UTC)


def _share(service: Served, new: float | None = None) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    if new is not None:
        conn.request(
            "POST",
            "/admin/ab",
            json.dumps({"treatment_share": new}),
            {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
    conn.request("GET", "/readyz")
    return float(json.loads(conn.getresponse().read())["treatment_share"])


def test_the_rollout_dag_advances_stops_and_stays_stopped(
    env: Env,  # noqa: F811
    served: Served,  # noqa: F811
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.process_env(
        PRICING_SERVICE_URL=f"http://127.0.0.1:{served.port}"
    ).items():
        if name.startswith("PRICING_"):
            monkeypatch.setenv(name, value)
    assert _share(served, 0.25) == 0.25
    # seed 0 would draw a chance conversion "loss" (p = 0.027): a one-sided test at 5 % stops
    # about one good day in twenty
    env.lake.write_partition(
        "raw", "decisions", DAY, _served_log(20_000, 0.25, (0.1, 0.1), (6, 6), seed=1)
    )
    run = run_dag("pricing_rollout", logical_date=RUN)
    assert run.state == "success", task_states(run)
    step = xcom(run, "step")
    assert step["action"] == "advance" and _share(served) == 0.5, step

    sold_at_a_loss = _served_log(20_000, 0.5, (0.1, 0.1), (6, 10.5))
    env.lake.write_partition("raw", "decisions", DAY, sold_at_a_loss)
    run = run_dag("pricing_rollout", logical_date=RUN + dt.timedelta(minutes=1))
    assert task_states(run) == {"step": "failed"} and _share(served) == 0.0

    good = _served_log(20_000, 0.0, (0.1, 0.1), (6, 6))
    env.lake.write_partition("raw", "decisions", DAY, good)
    run = run_dag("pricing_rollout", logical_date=RUN + dt.timedelta(minutes=2))
    assert run.state == "success" and _share(served) == 0.0
    assert "resumed" in xcom(run, "step")["reasons"][0]
    entries = [json.loads(e) for e in env.lake.read_bytes(ROLLOUT_LEDGER_PATH).splitlines()]
    assert [e["action"] for e in entries] == ["rollout-advance", "rollout-stop", "rollout-hold"]
    assert {e["who"] for e in entries} == {"airflow:pricing_rollout"}
