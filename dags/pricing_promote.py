"""
### Pricing: promote or roll back the champion by hand

Trigger this DAG from the UI (**Trigger** opens a form) or the REST API with:

| param | meaning |
|---|---|
| `action` | `promote` a version, or `rollback` to the champion before the current one |
| `version` | a version number (`"7"`) or `challenger` (last night's best); `rollback` ignores it |
| `reason` | why, for the promotion ledger (required, 10 characters at least) |
| `dry_run` | only log and return what would move |

The form is validated against the JSON schema of these params before a run is created: a missing
reason, an unknown action or a version that is neither a number nor `challenger` is refused.

It takes the same path as `pricing promote` / `pricing rollback` and the nightly gate:
`Registry.promote` / `Registry.rollback` (the registry's promotion lock, compare-and-set on
`champion`, a line in the append-only ledger). The ledger records the Airflow user who triggered
the run (`airflow:<user>`).

**Who may move the champion.** The CLI asks for `PRICING_ADMIN_TOKEN`. Here, triggering a DAG is
already an authenticated and authorised action: grant the trigger permission on
`pricing_promote` only to the pricing admins in your auth manager. No token travels in the run's
parameters, where it would be stored and shown with the run. As with the CLI, manual moves stay
disabled until `PRICING_ADMIN_TOKEN` is configured in the worker environment: without it the task
refuses and fails.

**One move at a time.** Besides the registry's own lock, the move runs in the Airflow pool
`pricing_promotion`, one slot shared with the nightly `gate` task. The pool must exist, or the
task waits forever in *scheduled*:
`airflow pools set pricing_promotion 1 "champion moves: pricing_promote and the nightly gate"`.

A conflict (the champion moved meanwhile), an unknown version or nothing to roll back fails the
run at once, without retries, with the reason in the log; the champion is unchanged. A real move
updates the asset `pricing://champion`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

# stdlib only: the names the DAGs share with the pipeline (parsing stays light)
from pipeline.contracts import CHAMPION_ASSET, CHAMPION_MOVES_ALIAS, PROMOTION_POOL

log = logging.getLogger(__name__)

CHAMPION = Asset(CHAMPION_ASSET)
CHAMPION_MOVES = AssetAlias(CHAMPION_MOVES_ALIAS)

PARAMS = {
    "action": Param(
        "promote",
        type="string",
        enum=["promote", "rollback"],
        title="Action",
        description="promote a version, or roll back to the previous champion",
    ),
    "version": Param(
        "challenger",
        type="string",
        pattern=r"^(challenger|[1-9][0-9]*)$",
        title="Version",
        description="a version number, or 'challenger'; ignored by rollback",
    ),
    "reason": Param(
        type="string",
        minLength=10,
        title="Reason",
        description="why, for the promotion ledger",
    ),
    "dry_run": Param(
        False, type="boolean", title="Dry run", description="only show what would move"
    ),
}


@dag(
    dag_id="pricing_promote",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args={
        "owner": "pricing",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=5),
    },
    tags=["pricing", "admin", "promotion"],
    doc_md=__doc__,
)
def pricing_promote() -> None:
    @task(pool=PROMOTION_POOL, pool_slots=1, outlets=[CHAMPION_MOVES])
    def move_champion() -> dict[str, Any]:
        """Promote or roll back through the registry's compare-and-set path."""
        from pipeline.data.lake import open_lake
        from pipeline.release.registry import PromotionConflict, Registry, RegistryError
        from pipeline.settings import Settings

        context = get_current_context()
        params = context["params"]
        settings = Settings()
        if not settings.admin_token:
            raise AirflowFailException(
                "manual champion moves are disabled: set PRICING_ADMIN_TOKEN in the worker "
                "environment to enable them"
            )
        who = f"airflow:{context['dag_run'].triggering_user_name or 'unknown'}"
        reason, action = str(params["reason"]), str(params["action"])
        registry = Registry(settings, open_lake(settings))
        try:
            move = registry.manual_move(
                action, reason, str(params["version"]), who=who, dry_run=bool(params["dry_run"])
            )
        except (RegistryError, PromotionConflict) as err:
            raise AirflowFailException(f"{action} refused: {err}") from None
        if move["dry_run"]:
            log.info(
                "dry run: champion would move v%s → v%s (%s)", move["from"], move["to"], reason
            )
            return move
        log.info("champion: v%s → v%s (%s)", move["from"], move["to"], reason)
        extra: dict[str, Any] = {"version": move["to"], "action": action, "by": who}
        context["outlet_events"][CHAMPION_MOVES].add(CHAMPION, extra=extra)
        return move

    move_champion()


pricing_promote()
