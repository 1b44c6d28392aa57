"""
### Pricing: the nightly retrain

One run per night, one task per step of `pipeline.nightly` (in the order `pipeline.contracts.NIGHT_STEPS`
gives, which `pricing nightly` follows too):

```text
validate ─► features ─► refit ─► fidelity ─► algorithms ─► train[planner] ─┐
   (GX gate)  (asset)   (simulator)  (gate)                 train[ppo] ─────┴► evaluate ─► gate
                                                                                       (champion move)
validate / features / refit / fidelity ──(one failed)──► night_stopped
```

**Which day.** The run whose *logical date* is day `D` processes the raw logs of the UTC day `D`
(`raw/<feed>/date=D/`), and its reports land under `reports/*/date=D/`. The schedule
(`PRICING_NIGHTLY_CRON`, default `0 2 * * *`, UTC) is a data-interval timetable: the run for `D`
starts at the end of its interval, at 02:00 on `D+1`, when the day's logs are complete. A manual
run takes the logical date picked in the trigger form; a run triggered without one processes the
night of the latest complete interval. An invalid cron expression shows as an import error of
this file.

**Drift.** Besides the cron, an event on the asset `pricing://drift` (emitted by the hourly
`pricing_monitor` DAG when the market drifted away from the champion's training data) starts a
run at once. Like a manual run without a date, it processes the night of the latest *complete*
interval of the schedule (at 01:00 that is the day before yesterday: yesterday's logs are not
complete until 02:00); if that night's gate has already decided, the run is skipped with the
reason in `validate`'s log — the drifted hours are in the next scheduled night's window.

**Gates.** A step that stops the night (bad raw partition, bad features, no logs, a refit simulator
that does not reproduce the held-out days) fails *without retries*, with the reason as the last
line of its log; every later step is `upstream_failed`, so nothing is trained or promoted and the
champion is untouched; the run is marked failed. The `night_stopped` task then runs and repeats
the reason (step, message, quarantine path) in its log and as its XCom, so the grid shows in one
place that a gate, not an error, ended the night. A bad partition is already in `quarantine/`
with its validation report beside it: fix the export, put it back under `raw/` and clear the run.
`night_stopped` is skipped on a good night, and on a night that failed for an error (its retries
spent), which is not a gate decision.

**Promotion.** `gate` promotes the challenger only when the lower CI bound of (candidate −
champion) profit clears the margin and the guardrails hold; the move is compare-and-set under the
registry's lock and runs in the Airflow pool `pricing_promotion` (one slot, shared with the
`pricing_promote` DAG). Create it once: `airflow pools set pricing_promotion 1 "champion moves"`.
A "keep the champion" decision is a successful run: the decision is in
`reports/gate/date=D/decision.json` and in the task's XCom.

**Candidates.** One mapped `train` task per algorithm of `PRICING_ALGOS` (default `planner`,
`ppo`): `planner` solves the refit simulator exactly (seconds; skipped, with the reason in its
log and XCom, when the world is too large for the solver), `ppo`/`dqn` train in it, from scratch
or from the champion's weights (`PRICING_TRAIN_INIT=champion`). `evaluate` puts them beside the
champion, the rule, the best fixed price and the behavioural clone of the window's logs.

**Assets.** `features` updates `pricing://features`, each `train` task `pricing://candidate-model`;
`pricing://champion` gets an event only when the champion actually moves.

**Errors** that are not gate decisions (S3 or the MLflow server out of reach, a killed worker)
are retried twice, at least 5 then 10 minutes later (exponential back-off). A night still
running after 20 hours is failed, so that it cannot hold back the next one (one active run at a
time).

**Re-runs.** Every step overwrites its own outputs for `D` and reuses a model version already
registered for `(D, algo)`: clearing a run never duplicates rows, versions or champion moves.
XCom carries URIs, versions and metrics only.

Configuration comes from the worker's `PRICING_*` environment (see `pipeline.settings`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import (
    Asset,
    AssetAlias,
    AssetOrTimeSchedule,
    CronDataIntervalTimetable,
    TriggerRule,
    chain,
    dag,
    get_current_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# stdlib only: the names the DAGs share with the pipeline (parsing stays light)
from pipeline.contracts import (
    CANDIDATE_MODEL_ASSET,
    CHAMPION_ASSET,
    CHAMPION_MOVES_ALIAS,
    DRIFT_ASSET,
    FEATURES_ASSET,
    GATED_STEPS,
    NIGHT_STEPS,
    PROMOTION_POOL,
    STOP_TASK,
    STOP_XCOM_KEY,
)

if TYPE_CHECKING:
    from pipeline.nightly.results import StepResult
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

SCHEDULE = os.environ.get("PRICING_NIGHTLY_CRON", "0 2 * * *")
# The first retry's delay (then doubled, at most an hour): a failed task (an outage, a worker
# killed mid-training) is retried for the same night, and re-running a task changes nothing done.
RETRY_DELAY = dt.timedelta(seconds=float(os.environ.get("PRICING_NIGHTLY_RETRY_DELAY_S", "300")))
# PRICING_CLUSTERS: fan the night out over clusters of SKUs (pipeline.data.clusters), one
# mapped group of tasks each, instead of one night for the whole catalogue.
CLUSTERED = os.environ.get("PRICING_CLUSTERS", "").strip().lower() in {"1", "true", "yes", "on"}
FEATURES = Asset(FEATURES_ASSET)
CANDIDATE_MODEL = Asset(CANDIDATE_MODEL_ASSET)
CHAMPION = Asset(CHAMPION_ASSET)
# The hourly monitor's drift alarm (dags/pricing_monitor.py) starts a night outside the cron too.
DRIFT = Asset(DRIFT_ASSET)
# Events on the champion only when it moves: an alias lets the task decide at run time.
CHAMPION_MOVES = AssetAlias(CHAMPION_MOVES_ALIAS)
_MAX_DETAILS_CHARS = 4000  # stop details beyond this stay in the lake's reports, not in XCom


def latest_complete_night(schedule: str, after: dt.datetime) -> dt.date:
    """The day of the latest data interval of ``schedule`` (UTC) that had ended by ``after``:
    the night a scheduled run would have processed last."""
    from croniter import croniter

    fires = croniter(schedule, after.astimezone(dt.UTC))
    fires.get_prev(dt.datetime)  # the end of that interval
    start: dt.datetime = fires.get_prev(dt.datetime)
    return start.date()


def _night() -> dt.date:
    """The UTC day whose logs this run processes (see the DAG's documentation)."""
    context = get_current_context()
    logical = context.get("logical_date")
    if logical is not None:
        return logical.astimezone(dt.UTC).date()
    return latest_complete_night(SCHEDULE, context["dag_run"].run_after)


def _settings(cluster: str | None = None) -> Settings:
    """The settings of tonight's night, or of one cluster's night (`Settings.for_cluster`)."""
    from pipeline.settings import Settings

    settings = Settings()
    return settings if cluster is None else settings.for_cluster(cluster)


def _small(details: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe stop details, trimmed to scalars when the whole would bloat XCom."""
    safe: dict[str, Any] = json.loads(json.dumps(details, default=str))
    if len(json.dumps(safe)) <= _MAX_DETAILS_CHARS:
        return safe
    return {k: v for k, v in safe.items() if isinstance(v, str | int | float | bool)}


def _gated(
    step: Callable[[Settings, dt.date], StepResult], cluster: str | None = None
) -> dict[str, Any]:
    """Run one pipeline step for tonight (for one cluster's night when ``cluster`` is given). A
    gate that says no fails the task for good: a retry would meet a quarantined partition
    instead of the bad one, and the reason must stay visible."""
    from pipeline.nightly.results import NightStopped

    night = _night()
    try:
        return step(_settings(cluster), night).to_dict()
    except NightStopped as stop:
        record = {
            "date": night.isoformat(),
            "step": stop.step,
            "reason": str(stop),
            "details": _small(stop.details),
        }
        get_current_context()["ti"].xcom_push(key=STOP_XCOM_KEY, value=record)
        log.error("night %s stopped at %s: %s", night, stop.step, stop)
        raise AirflowFailException(f"night {night} stopped at {stop.step}: {stop}") from None


def _promote(cluster: str | None = None) -> dict[str, Any]:
    """The promotion gate of tonight's night (or of one cluster's): moves its `champion` when the
    evidence holds, and emits the champion-moves event when it did."""
    from pipeline.nightly.steps import promotion_gate

    night = _night()
    decision = promotion_gate(_settings(cluster), night)
    where = "" if cluster is None else f", cluster {cluster}"
    log.info("gate for %s%s: %s", night, where, decision.reason)
    if decision.moved:
        extra: dict[str, Any] = {"version": decision.champion, "date": night.isoformat()}
        if cluster is not None:
            extra["cluster"] = cluster
        extra["by"] = "nightly"
        get_current_context()["outlet_events"][CHAMPION_MOVES].add(CHAMPION, extra=extra)
    out: dict[str, Any] = json.loads(json.dumps(decision.to_dict(), default=str))
    return out


def _skip_if_decided(night: dt.date) -> None:
    """A drift event for a night whose gate already decided: nothing new to learn from."""
    from pipeline.nightly.steps import gate_decided

    path = gate_decided(_settings(), night)
    if path is not None:
        raise AirflowSkipException(
            f"drift event: night {night} was already trained and gated ({path}); the drifted "
            "hours are in the window of the next scheduled night"
        )


def _training_progress(algo: str) -> Callable[[int, int, float | None], None]:
    """Log training progress about every tenth of the budget."""
    next_share = [0.1]

    def report(done: int, total: int, profit: float | None) -> None:
        if done >= next_share[0] * total:
            shown = "n/a" if profit is None else f"{profit:.1f}"
            log.info("%s: %d/%d SKU-steps, recent episode profit %s", algo, done, total, shown)
            next_share[0] = done / total + 0.1

    return report


@dag(
    dag_id="pricing_nightly",
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"), assets=DRIFT
    ),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=20),
    default_args={
        "owner": "pricing",
        "retries": 2,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(hours=1),
    },
    tags=["pricing", "nightly", "training"],
    doc_md=__doc__,
)
def pricing_nightly() -> None:
    @task
    def validate() -> dict[str, Any]:
        """Great Expectations on the night's raw feeds; a bad partition goes to quarantine."""
        from pipeline.nightly.steps import validate_raw

        context = get_current_context()
        run_type = context["dag_run"].run_type
        if getattr(run_type, "value", run_type) == "asset_triggered":
            _skip_if_decided(_night())
        return _gated(validate_raw)

    @task(outlets=[FEATURES])
    def features() -> dict[str, Any]:
        """Features per SKU-day for the night, validated, written to the lake."""
        from pipeline.nightly.steps import extract_features

        out = _gated(extract_features)
        get_current_context()["outlet_events"][FEATURES].extra = {
            "date": _night().isoformat(),
            **out,
        }
        return out

    @task
    def refit() -> dict[str, Any]:
        """Fit the market simulator to the training window; returns its lineage for training."""
        from pipeline.nightly.steps import refit_simulator

        return _gated(refit_simulator)

    @task
    def fidelity() -> dict[str, Any]:
        """The refit simulator must reproduce the held-out days."""
        from pipeline.nightly.steps import check_fidelity

        return _gated(check_fidelity)

    @task
    def algorithms() -> list[str]:
        """The algorithms trained tonight (`PRICING_ALGOS`): one mapped `train` task each."""
        return list(_settings().algos)

    # Airflow copies a docstring into doc_md for unmapped tasks only: mapped ones pass it here.
    @task(
        outlets=[CANDIDATE_MODEL],
        map_index_template="{{ algo }}",
        doc_md="Train one algorithm in the refit simulator and register it (once per night and algo).",
    )
    def train(algo: str, fitted: dict[str, Any]) -> dict[str, Any]:
        from pipeline.nightly.candidates import train_candidate
        from pipeline.nightly.results import Refitted

        context = get_current_context()
        context["algo"] = algo  # type: ignore[typeddict-unknown-key]  # labels the map index
        lineage = Refitted.from_dict(fitted).lineage()
        night = _night()
        trained = train_candidate(_settings(), night, algo, lineage, _training_progress(algo))
        out = trained.to_dict()
        context["outlet_events"][CANDIDATE_MODEL].extra = {"date": night.isoformat(), **out}
        return out

    @task
    def evaluate(trained: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Candidates vs champion vs baselines on paired seeds; picks the challenger."""
        from pipeline.nightly.evaluate import evaluate_candidates

        # one slice read: iterating the lazy sequence would probe one index past its end
        versions = [t["version"] for t in trained[:] if t["version"] is not None]
        return evaluate_candidates(_settings(), _night(), versions).to_dict()

    @task(pool=PROMOTION_POOL, outlets=[CHAMPION_MOVES])
    def gate(evaluation: dict[str, Any]) -> dict[str, Any]:
        """The promotion gate; moves `champion` (compare-and-set, ledger) when the evidence holds."""
        return _promote()

    @task(task_id=STOP_TASK, trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def night_stopped() -> dict[str, Any]:
        """Runs when a gated step failed: repeats why the night stopped, or skips on an error."""
        ti = get_current_context()["ti"]
        records = ti.xcom_pull(task_ids=list(GATED_STEPS), key=STOP_XCOM_KEY) or []
        stops = [r for r in records if r]
        if not stops:
            raise AirflowSkipException(
                "no gate stopped the night: a step failed with an error; see its log"
            )
        stop: dict[str, Any] = stops[0]
        log.warning("night %s stopped at %s: %s", stop["date"], stop["step"], stop["reason"])
        log.warning("the champion is unchanged; details: %s", json.dumps(stop["details"]))
        return stop

    if CLUSTERED:
        _cluster_nights(validate(), features(), night_stopped)
        return
    steps: dict[str, Any] = {
        "validate": validate(),
        "features": features(),
        "refit": refit(),
        "fidelity": fidelity(),
    }
    algos = algorithms()
    steps["fidelity"] >> algos
    steps["train"] = train.partial(fitted=steps["refit"]).expand(algo=algos)
    steps["evaluate"] = evaluate(steps["train"])
    steps["gate"] = gate(steps["evaluate"])
    # the one order of the night's steps (data dependencies above follow it too)
    chain(*(steps[name] for name in NIGHT_STEPS))
    [steps[name] for name in GATED_STEPS] >> night_stopped()


def _cluster_nights(validated: Any, featured: Any, night_stopped: Callable[[], Any]) -> None:
    """With PRICING_CLUSTERS: validation and features for the catalogue, then the clusters
    (`pricing.data.clusters`) and one mapped group per cluster: refit, fidelity, train (each of
    PRICING_ALGOS), evaluate, gate — each cluster with its own model, champion and ledger
    (`Settings.for_cluster`). On the Celery workers the groups run side by side; a cluster
    stopped by its gates keeps its champion while the others go on."""

    @task
    def clusters() -> list[str]:
        """The catalogue's clusters tonight; known SKUs keep theirs (pipeline.data.clusters).
        Then each cluster's rows of the window, cut once for its tasks (pipeline.data.slices)."""
        from pipeline.data.clusters import cluster_catalogue
        from pipeline.nightly.steps import slice_clusters

        made = cluster_catalogue(_settings(), _night())
        members = made.members()
        log.info("%d clusters over %d SKUs", len(members), len(made.assignment))
        sliced = slice_clusters(_settings(), _night(), members, log.info)
        log.info("slices: %d days cut, %d current", len(sliced.cut), len(sliced.current))
        return list(members)

    def _label(cluster: str) -> None:
        get_current_context()["cluster"] = cluster  # type: ignore[typeddict-unknown-key]

    @task_group(group_id="cluster")
    def cluster_night(cluster: str) -> None:
        @task(map_index_template="{{ cluster }}")
        def refit(cluster: str) -> dict[str, Any]:
            """Fit the cluster's market (its SKUs' rows of the training window)."""
            from pipeline.nightly.steps import refit_simulator

            _label(cluster)
            return _gated(refit_simulator, cluster)

        @task(map_index_template="{{ cluster }}")
        def fidelity(cluster: str) -> dict[str, Any]:
            """The cluster's refit simulator must reproduce its held-out days."""
            from pipeline.nightly.steps import check_fidelity

            _label(cluster)
            return _gated(check_fidelity, cluster)

        @task(map_index_template="{{ cluster }}", outlets=[CANDIDATE_MODEL])
        def train(cluster: str, fitted: dict[str, Any]) -> list[dict[str, Any]]:
            """Train each algorithm of PRICING_ALGOS for the cluster (once per night and algo)."""
            from pipeline.nightly.candidates import train_candidate
            from pipeline.nightly.results import Refitted

            _label(cluster)
            settings, night = _settings(cluster), _night()
            lineage = Refitted.from_dict(fitted).lineage()
            out = []
            for algo in settings.algos:
                trained = train_candidate(settings, night, algo, lineage, _training_progress(algo))
                out.append(trained.to_dict())
                extra = {"date": night.isoformat(), "cluster": cluster, **trained.to_dict()}
                get_current_context()["outlet_events"][CANDIDATE_MODEL].extra = extra
            return out

        @task(map_index_template="{{ cluster }}")
        def evaluate(cluster: str, trained: list[dict[str, Any]]) -> dict[str, Any]:
            """The cluster's candidates vs its champion and baselines."""
            from pipeline.nightly.evaluate import evaluate_candidates

            _label(cluster)
            versions = [t["version"] for t in trained if t["version"] is not None]
            return evaluate_candidates(_settings(cluster), _night(), versions).to_dict()

        @task(map_index_template="{{ cluster }}", pool=PROMOTION_POOL, outlets=[CHAMPION_MOVES])
        def gate(cluster: str, evaluation: dict[str, Any]) -> dict[str, Any]:
            """The cluster's promotion gate: moves its own `champion` when the evidence holds."""
            _label(cluster)
            return _promote(cluster)

        fitted = refit(cluster)
        checked = fidelity(cluster)
        trained = train(cluster, fitted)
        fitted >> checked >> trained
        gate(cluster, evaluate(cluster, trained))

    grouped = clusters()
    validated >> featured >> grouped
    cluster_night.expand(cluster=grouped)
    [validated, featured] >> night_stopped()


pricing_nightly()
