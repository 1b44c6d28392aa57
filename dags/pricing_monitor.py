"""
### Pricing: the hourly monitor

Every hour, what the pricing service did since the monitor last succeeded:

```text
measure ─► retrain_signal   (pricing://drift event when a market feature drifted)
        ├► drift_alarm      (fails, loudly, on drift)
        └► parity_alarm     (fails while the last night's served parity is in alarm)
```

**Served parity.** Each night checks the champion's served decisions of the day against its
evaluation (`pipeline.release.parity`): the decisions it would have taken in the same states, and
what it earned against what the simulator expects there. While that night's verdict is an alarm,
`parity_alarm` fails every hour and the gauges `pricing_parity_*` (alarm, mismatch rate, reward
gap) say why; the promotion gate keeps the champion until a night finds parity again.

**What it measures** (`pipeline.ops.monitor`): from the decisions feed (`raw/decisions/`), the prices
shown in the window — conversion, revenue, gross profit, margin, exploration rate and the action
mix — and the drift of the market against the champion's training data: the population stability
index (PSI) of the competitor's price, visitors per SKU-hour, the segment mix and unit costs,
each compared with the champion's training days *at the same hours of the day*. Prices shown and
stock on hand are reported too but do not raise the alarm: a new champion moves them by design.

**Where it goes.** `reports/monitor/date=D/hour=HH.json` in the lake; the MLflow run "monitor D"
in the experiment `pricing-monitor` (one point per hour); Prometheus gauges `pricing_monitor_*`
through the Pushgateway at `PRICING_PUSHGATEWAY_URL`, charted by the Grafana dashboard
"Pricing monitor".

**Drift.** When a market feature's PSI exceeds `PRICING_DRIFT_PSI_THRESHOLD` (0.2), `drift_alarm`
fails with the features and values in its log, so the run is red in the grid and alerting on
failed runs fires. With `PRICING_RETRAIN_ON_DRIFT` (on by default) `retrain_signal` also emits an
event on the asset `pricing://drift`, which the `pricing_nightly` DAG is scheduled on besides its
cron: the nightly loop then runs at once for the latest complete day (a day whose night already
ran re-uses its registered versions, so the retrain adds the evaluation against the current
champion). Windows with fewer than `PRICING_MONITOR_MIN_ROWS` prices shown, or before the first
champion, are measured but not judged.

**Window.** A run covers its data interval (one hour; the schedule is `PRICING_MONITOR_CRON`,
default `0 * * * *`, UTC), stretched back to the end of the last published window (the watermark
in `reports/monitor/watermark.json`) when runs were missed, by at most a day; a drifted hour is
published like any other, so it does not hold the alarm on. Re-runs overwrite the window's report.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, CronDataIntervalTimetable, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

# stdlib only: the names the DAGs share with the pipeline (parsing stays light)
from pipeline.contracts import DRIFT_ALIAS, DRIFT_ASSET

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

SCHEDULE = os.environ.get("PRICING_MONITOR_CRON", "0 * * * *")
DRIFT = Asset(DRIFT_ASSET)
# An event on pricing://drift only when the window drifted: an alias lets the task decide.
DRIFT_EVENTS = AssetAlias(DRIFT_ALIAS)
MAX_CATCH_UP = dt.timedelta(days=1)


def _window(settings: Settings) -> tuple[dt.datetime, dt.datetime]:
    """The run's data interval, stretched back to the end of the last published window (the
    monitor's watermark in the lake) when runs were missed, by at most a day."""
    from pipeline.ops.publish import watermark

    context = get_current_context()
    # Airflow leaves the interval out of the context of a run triggered without a logical date
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:  # then: the last full hour
        end = context["dag_run"].run_after.replace(minute=0, second=0, microsecond=0)
        start = end - dt.timedelta(hours=1)
    # plain UTC datetimes (the context holds pendulum ones)
    start, end = (dt.datetime.fromtimestamp(t.timestamp(), tz=dt.UTC) for t in (start, end))
    last = watermark(settings)
    if last is not None and end - MAX_CATCH_UP <= last < start:
        start = last
    return start, end


@dag(
    dag_id="pricing_monitor",
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=50),
    default_args={
        "owner": "pricing",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
    },
    tags=["pricing", "monitoring"],
    doc_md=__doc__,
)
def pricing_monitor() -> None:
    @task
    def measure() -> dict[str, Any]:
        """KPIs and drift of the window, written to the lake, MLflow and the Pushgateway."""
        from pipeline.ops.monitor import monitor_window
        from pipeline.settings import Settings

        settings = Settings()
        start, end = _window(settings)
        report = monitor_window(settings, start, end)
        kpis = report["kpis"]
        log.info("window %s .. %s: %d prices shown", start, end, kpis["decisions"])
        if kpis["decisions"]:
            log.info(
                "conversion %.4f, revenue %.2f, margin %s, exploration %.3f, actions %s",
                kpis["conversion"],
                kpis["revenue"],
                kpis["margin"],
                kpis["exploration_rate"],
                kpis["action_share"],
            )
        log.info("drift: %s", report["drift"]["message"])
        return report

    @task(outlets=[DRIFT_EVENTS])
    def retrain_signal(report: dict[str, Any]) -> bool:
        """Emits a pricing://drift event (which starts the nightly retrain) on drift."""
        if not report["retrain"]:
            return False
        extra = {
            "window_start": report["window"]["start"],
            "window_end": report["window"]["end"],
            "champion": report["champion"],
            "max_feature": report["drift"]["max_feature"],
            "max_psi": report["drift"]["max_psi"],
        }
        get_current_context()["outlet_events"][DRIFT_EVENTS].add(DRIFT, extra=extra)
        log.warning("drift: requested a retrain through %s", DRIFT.uri)
        return True

    @task(retries=0)
    def parity_alarm(report: dict[str, Any]) -> str:
        """Fails when the last night found the served champion not doing or earning what its
        evaluation says (served parity)."""
        parity = report.get("parity") or {}
        if parity.get("judged") and parity["alarm"]:
            raise AirflowFailException("served parity: " + "; ".join(parity["reasons"]))
        return "served parity holds" if parity.get("judged") else "served parity not judged"

    @task(retries=0)
    def drift_alarm(report: dict[str, Any]) -> str:
        """Fails when a market feature drifted beyond the threshold."""
        message: str = report["drift"]["message"]
        if report["drift"]["status"] == "drift":
            raise AirflowFailException(message)
        return message

    report = measure()
    retrain_signal(report)
    drift_alarm(report)
    parity_alarm(report)


pricing_monitor()
