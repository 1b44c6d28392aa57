"""The production configuration end to end: the nightly DAG triggered through Airflow's REST API,
run by the CeleryExecutor (Redis broker, PostgreSQL metadata and results), registering models in
an MLflow tracking server on PostgreSQL, on a tiny world's lake with tiny budgets; then a manual
champion move through the `pricing_promote` DAG, under the PostgreSQL advisory lock."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.data.lake import Lake
from pipeline.release.ledger import Ledger
from pipeline.release.registry import CHALLENGER, CHAMPION
from pipeline.settings import Settings
from tests.dags.test_nightly_dag import GOOD_NIGHT
from tests.integration.conftest import NIGHT
from tests.integration.stack import (
    ADMIN_USER,
    AIRFLOW_DB,
    API_URL,
    MLFLOW_URL,
    REDIS_DB,
    Stack,
    StackError,
    http,
    pg_query,
    redis_keys,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

API = f"{API_URL}/api/v2"
PARSE_DEADLINE_S = 180
RUN_DEADLINE_S = 720
TERMINAL = {"success", "failed"}
MODEL_NAME = str(Settings.model_fields["model_name"].default)


@dataclass(frozen=True)
class Run:
    dag_id: str
    run: dict[str, Any]
    task_instances: list[dict[str, Any]]

    @property
    def run_id(self) -> str:
        return str(self.run["dag_run_id"])

    def states(self) -> dict[str, str | None]:
        return {_label(ti): ti["state"] for ti in self.task_instances}


@dataclass(frozen=True)
class Night:
    run: Run
    champion: str | None  # the `champion` alias in the tracking server when the run ended
    token: str


def _label(ti: dict[str, Any]) -> str:
    if ti["map_index"] < 0:
        return str(ti["task_id"])
    return f"{ti['task_id']}[{ti.get('rendered_map_index') or ti['map_index']}]"


def _api(
    stack: Stack, token: str, method: str, path: str, body: Any = None, timeout: float = 30.0
) -> Any:
    status, answer = http(method, f"{API}{path}", body, token=token, timeout=timeout)
    if status >= 300:
        stack.fail(f"{method} {path} answered {status}: {answer}")
    return answer


def _wait_for_dag(stack: Stack, token: str, dag_id: str) -> None:
    """The dag-processor has parsed the DAG file and stored the DAG (no import error)."""
    errors: list[Any] = []

    def parsed() -> bool:
        status, _ = http("GET", f"{API}/dags/{dag_id}", token=token, timeout=10)
        if status == 200:
            return True
        _, found = http("GET", f"{API}/importErrors", token=token, timeout=10)
        errors[:] = found.get("import_errors", []) if isinstance(found, dict) else [found]
        return False

    try:
        stack.wait_for(f"the DAG {dag_id}", parsed, deadline_s=PARSE_DEADLINE_S, every_s=2)
    except StackError as err:
        raise StackError(f"import errors: {json.dumps(errors, indent=1)}\n{err}") from None


def trigger_and_wait(
    stack: Stack,
    token: str,
    dag_id: str,
    body: dict[str, Any],
    watch: Callable[[Run], None] | None = None,
    every_s: float = 5.0,
    deadline_s: float = RUN_DEADLINE_S,
) -> Run:
    """Un-pause ``dag_id``, trigger a run through the REST API and poll it to its end, every
    ``every_s`` seconds, showing each poll to ``watch``."""
    started = time.monotonic()
    _wait_for_dag(stack, token, dag_id)
    _api(stack, token, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
    run = _api(stack, token, "POST", f"/dags/{dag_id}/dagRuns", body)
    run_id = run["dag_run_id"]
    print(f"\ntriggered {dag_id} run {run_id}")
    end = time.monotonic() + deadline_s
    shown: dict[str, Any] = {}
    slow_answers = 0
    while True:
        stack.check_alive()
        try:
            run = _api(stack, token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}", timeout=60)
            tis = _api(
                stack, token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", timeout=60
            )
        except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
            # A loaded machine (training tasks on the worker, tests on other workers) can keep the
            # api-server from answering one poll in time; the run goes on, so poll again until the
            # run's deadline. A dead api-server is caught by check_alive.
            slow_answers += 1
            print(f"poll {dag_id} {run_id}: no answer ({err!r}), {slow_answers} so far", flush=True)
            if time.monotonic() > end:
                stack.fail(f"{dag_id} run {run_id}: the api-server stopped answering ({err!r})")
            time.sleep(5)
            continue
        result = Run(dag_id, run, tis["task_instances"])
        if watch is not None:
            watch(result)
        if result.states() != shown or run["state"] in TERMINAL:
            elapsed = time.monotonic() - started
            print(f"[{elapsed:4.0f} s] {dag_id} {run['state']}: {result.states()}", flush=True)
            shown = result.states()
        if run["state"] in TERMINAL:
            print(f"{dag_id} run {run_id} ended {run['state']} after {elapsed:.0f} s")
            return result
        if time.monotonic() > end:
            stack.fail(f"{dag_id} run {run_id} still {run['state']} after {deadline_s:.0f} s")
        time.sleep(every_s)


def _xcom(stack: Stack, token: str, run: Run, task_id: str) -> Any:
    path = (
        f"/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    )
    value = _api(stack, token, "GET", path)["value"]
    return json.loads(value) if isinstance(value, str) else value


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=MLFLOW_URL, registry_uri=MLFLOW_URL)


def _alias(name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(MODEL_NAME, name).version)
    except MlflowException:
        return None


def _ran_on_celery(stack: Stack, run: Run) -> None:
    """Every task instance that ran went through the Celery worker."""
    ran = [ti for ti in run.task_instances if ti["state"] == "success"]
    assert ran
    # what the API shows: the Celery queue, and a worker host and process for each task
    assert {ti["queue"] for ti in ran} == {"default"}
    assert all(ti["hostname"] and ti["pid"] for ti in ran)
    assert all(ti["executor"] in (None, "CeleryExecutor") for ti in ran)
    # what only Celery leaves behind: each task instance's Celery task id, and its result
    # stored by the worker in the PostgreSQL result backend (written once the task process has
    # reported to Airflow, so the last task's may lag its state by a moment)
    query = (
        "SELECT ti.task_id, ti.map_index, ti.external_executor_id, m.status "
        "FROM task_instance ti LEFT JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id "
        f"WHERE ti.dag_id = '{run.dag_id}' AND ti.run_id = '{run.run_id}' "
        "AND ti.state = 'success'"
    )
    end = time.monotonic() + 60
    while True:
        rows = pg_query(stack.pg_user, AIRFLOW_DB, query)
        done = all(external and status == "SUCCESS" for _, _, external, status in rows)
        if done or time.monotonic() > end:
            break
        time.sleep(1)
    assert len(rows) == len(ran)
    assert done, rows


@pytest.fixture(scope="module")
def night(stack: Stack) -> Night:
    """One night for the last history day, triggered through the REST API and polled to its end."""
    try:
        token = stack.token()
        run = trigger_and_wait(
            stack,
            token,
            "pricing_nightly",
            {"dag_run_id": f"it__{NIGHT}", "logical_date": f"{NIGHT}T00:00:00Z"},
        )
    except StackError as err:
        pytest.fail(str(err), pytrace=False)
    return Night(run=run, champion=_alias(CHAMPION), token=token)


def test_the_night_succeeds_with_every_task(stack: Stack, night: Night) -> None:
    states = night.run.states()
    assert night.run.run["state"] == "success", f"{states}\n{stack.report()}"
    assert night.run.run["logical_date"].startswith(NIGHT.isoformat())
    assert states == GOOD_NIGHT
    gate = [ti for ti in night.run.task_instances if ti["task_id"] == "gate"]
    assert [ti["pool"] for ti in gate] == ["pricing_promotion"]


def test_every_task_ran_on_the_celery_worker(stack: Stack, night: Night) -> None:
    assert len([ti for ti in night.run.task_instances if ti["state"] == "success"]) == 9
    _ran_on_celery(stack, night.run)
    keys = redis_keys()
    assert any(k.startswith("_kombu") for k in keys), f"Redis DB {REDIS_DB} keys: {keys}"


def test_models_are_registered_in_the_tracking_server(stack: Stack, night: Night) -> None:
    versions = _client().search_model_versions(f"name = '{MODEL_NAME}'")
    assert {mv.tags["algo"] for mv in versions} == {"planner", "ppo"}
    assert all(mv.tags["logical_date"] == NIGHT.isoformat() for mv in versions)
    evaluation = _xcom(stack, night.token, night.run, "evaluate")
    assert _alias(CHALLENGER) == str(evaluation["challenger"])
    # the artifacts went through the server's proxy into its artifact store
    assert any(p.is_file() for p in (stack.root / "mlartifacts").rglob("*"))


def test_the_gate_decision_matches_the_champion_alias(stack: Stack, night: Night) -> None:
    decision = _xcom(stack, night.token, night.run, "gate")
    # None: the tiny night kept the rule-based incumbent, and no version is champion
    assert decision["champion"] == night.champion
    if decision["moved"]:
        assert night.champion == str(decision["evidence"]["candidate_version"])
    lake = Lake.from_uri(str(stack.data_dir / "lake"))
    assert json.loads(lake.read_bytes(f"reports/gate/date={NIGHT}/decision.json")) == decision


def test_a_manual_promotion_moves_the_champion_under_the_lock(stack: Stack, night: Night) -> None:
    """`pricing_promote` on the worker: the registry's lock is the PostgreSQL advisory lock of
    PRICING_LOCK_URI, the alias moves in the tracking server, the ledger names the Airflow user."""
    champion = _alias(CHAMPION)
    versions = _client().search_model_versions(f"name = '{MODEL_NAME}'")
    challenger = _alias(CHALLENGER)
    others = [str(mv.version) for mv in versions if str(mv.version) not in (champion, challenger)]
    # the challenger, unless the night already made it the champion
    target = challenger if challenger != champion else others[0]
    lake = Lake.from_uri(str(stack.data_dir / "lake"))
    before = Ledger(lake).entries()
    try:
        run = trigger_and_wait(
            stack,
            night.token,
            "pricing_promote",
            {
                "logical_date": None,
                "conf": {
                    "action": "promote",
                    "version": target,
                    "reason": "integration test: promote a candidate by hand",
                },
            },
        )
    except StackError as err:
        pytest.fail(str(err), pytrace=False)

    assert run.run["state"] == "success", f"{run.states()}\n{stack.report()}"
    _ran_on_celery(stack, run)
    assert _alias(CHAMPION) == target
    after = Ledger(lake).entries()
    assert len(after) == len(before) + 1
    assert (after[-1].from_version, after[-1].to_version) == (champion, target)
    assert after[-1].who == f"airflow:{ADMIN_USER}"
    # the lock was PostgreSQL's: the file lock of a single-host set-up was never created
    assert not list(stack.data_dir.glob("run/promotion-*.lock"))
    moved = _xcom(stack, night.token, run, "move_champion")
    assert (moved["from"], moved["to"], moved["dry_run"]) == (champion, target, False)


def test_a_killed_train_task_is_retried_by_airflow(
    stack: Stack, night: Night, fault_row: Any
) -> None:
    """The next night's `train[ppo]` task process SIGKILLed on the Celery worker while it runs:
    Airflow marks the try failed and retries it (PRICING_NIGHTLY_RETRY_DELAY_S), the retry
    registers exactly one version for the night, and the night completes with the champion
    moved at most once."""
    from sim.history import generate_history
    from sim.world import World
    from tests.conftest import tiny_world_dict
    from tests.integration.conftest import HISTORY_DAYS, START

    lake = Lake.from_uri(str(stack.data_dir / "lake"))
    world = World.model_validate(tiny_world_dict())
    *_, last = generate_history(world, HISTORY_DAYS + 1, 3, START)
    nxt = last.date
    lake.write_partition("raw", "decisions", nxt, last.decisions)
    lake.write_partition("raw", "transactions", nxt, last.transactions)
    before = Ledger(lake).entries()
    killed: list[int] = []
    ppo: list[int] = []  # the map index of train[ppo] (labelled by index until rendered)

    def kill_training(run: Run) -> None:
        states = run.states()
        if not ppo and states.get("algorithms") == "success":
            ppo.append(list(_xcom(stack, night.token, run, "algorithms")).index("ppo"))
        for ti in run.task_instances:
            if killed or not ppo or ti["task_id"] != "train" or ti["map_index"] != ppo[0]:
                continue
            if ti["state"] != "running" or not ti["pid"]:
                continue
            try:
                os.kill(int(ti["pid"]), signal.SIGKILL)
            except ProcessLookupError:  # not started yet, or already done: the next poll
                continue
            killed.append(int(ti["pid"]))
            print(f"SIGKILL to train[ppo] (pid {ti['pid']}, try {ti['try_number']})", flush=True)

    try:
        run = trigger_and_wait(
            stack,
            night.token,
            "pricing_nightly",
            {"dag_run_id": f"it__killed__{nxt}", "logical_date": f"{nxt}T00:00:00Z"},
            watch=kill_training,
            every_s=0.3,
        )
    except StackError as err:
        pytest.fail(str(err), pytrace=False)

    assert killed, "train[ppo] was never seen running"
    assert run.run["state"] == "success", f"{run.states()}\n{stack.report()}"
    [train] = [ti for ti in run.task_instances if _label(ti) == "train[ppo]"]
    assert train["try_number"] == 2, train  # the killed try, then Airflow's retry
    versions = [
        mv
        for mv in _client().search_model_versions(f"name = '{MODEL_NAME}'")
        if mv.tags.get("logical_date") == nxt.isoformat() and mv.tags.get("algo") == "ppo"
    ]
    assert len(versions) == 1, [mv.version for mv in versions]
    after = Ledger(lake).entries()
    assert len(after) - len(before) <= 1
    if len(after) > len(before):
        assert _alias(CHAMPION) == after[-1].to_version
    fault_row(
        "training task SIGKILLed on a Celery worker, retried by Airflow",
        "SIGKILL to the running train[ppo] task process (the pid Airflow's API shows)",
        True,
        0,
        "the try fails; Airflow retries it after PRICING_NIGHTLY_RETRY_DELAY_S and the night "
        "completes with one version",
    )
