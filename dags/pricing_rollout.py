"""
### Pricing: the staged rollout, one step a day

Every day after midnight (UTC; `PRICING_ROLLOUT_CRON`, default `45 0 * * *`: the decisions of the
day before are in the lake once their outcome window has closed), the pricing service's treatment
share takes one step of its schedule, 5 → 10 → 25 → 50 %, judged on the decisions the service
served the day before (`pipeline.ops.rollout`):

- it **advances** while every guardrail holds: no sample-ratio mismatch (chi-squared,
  p < 0.001), no significant conversion loss of treatment against control (one-sided, p < 0.05),
  the treatment's margin not below `PRICING_MARGIN_FLOOR`;
- it **holds** with fewer than `PRICING_ROLLOUT_MIN_VISITORS` visitors in an arm, at the last
  stage, and at 0 %: a stopped rollout starts again only when an operator resumes it
  (`pricing rollout --resume`), never on the next day's traffic;
- it **stops** at 0 % when a guardrail trips, and the task fails with the evidence, so the run is
  red in the grid and alerting on failed runs fires.

Every step, holds included, is appended to the rollout ledger in the lake
(`reports/rollout/ledger.jsonl`). The service is called at `PRICING_SERVICE_URL` with the admin
token `PRICING_ADMIN_TOKEN`. Trigger it by hand with `days` (a longer window) or `dry_run`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

SCHEDULE = os.environ.get("PRICING_ROLLOUT_CRON", "45 0 * * *")


@dag(
    dag_id="pricing_rollout",
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=30),
    default_args={
        "owner": "pricing",
        "retries": 2,  # the service may be restarting; a tripped guardrail is not retried
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
    },
    params={
        "days": Param(1, type="integer", minimum=1, maximum=90, title="Days judged"),
        "dry_run": Param(False, type="boolean", title="Judge only, move nothing"),
    },
    tags=["pricing", "serving"],
    doc_md=__doc__,
)
def pricing_rollout() -> None:
    @task
    def step() -> dict[str, Any]:
        """One rollout step on the days before the run; fails when a guardrail stopped it."""
        from dataclasses import asdict

        from pipeline.orchestration.staged_rollout import step as take_step
        from pipeline.orchestration.staged_rollout import window
        from pipeline.settings import Settings

        context = get_current_context()
        params = context["params"]
        # a manual run may have no logical date: then the time it was asked to run
        when = context.get("logical_date") or context["dag_run"].run_after
        last = dt.datetime.fromtimestamp(when.timestamp(), tz=dt.UTC).date()
        last -= dt.timedelta(days=1)
        settings = Settings()
        decision = take_step(
            settings,
            settings.service_url,
            window(last, int(params["days"])),
            "airflow:pricing_rollout",
            settings.rollout_min_visitors,
            bool(params["dry_run"]),
            say=log.info,
        )
        if decision.action == "stop" and not params["dry_run"]:
            raise AirflowFailException(
                f"rollout stopped at 0 %: {'; '.join(decision.reasons)} (resume with "
                "`pricing rollout --resume` once the cause is fixed)"
            )
        return asdict(decision)

    step()


pricing_rollout()
