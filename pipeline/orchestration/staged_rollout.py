"""One step of the staged rollout against the running service, as `pricing rollout` and the
`pricing_rollout` DAG take it: read the service's treatment share, judge the served decisions of
the window (`pipeline.ops.rollout`), move the share through the admin API, append the step to the
rollout ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pipeline.data.lake import open_lake
from pipeline.ops.rollout import RolloutDecision, decide, record
from pipeline.orchestration.service_client import ServiceClient
from pipeline.settings import Settings


def window(last: dt.date, days: int) -> list[dt.date]:
    """``days`` days ending with ``last``, oldest first."""
    return [last - dt.timedelta(days=i) for i in range(days - 1, -1, -1)]


def step(
    settings: Settings,
    url: str,
    days: list[dt.date],
    who: str,
    min_visitors: int = 500,
    dry_run: bool = False,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> RolloutDecision:
    """Judge ``days`` of served decisions and move the share (not with ``dry_run``); from 0 %
    only with ``resume``."""
    client = ServiceClient(url.rstrip("/"), settings.admin_token)
    share = float(client.call("GET", "/readyz")["treatment_share"])
    lake = open_lake(settings)
    decision = decide(lake, days, share, settings.margin_floor, min_visitors, resume)
    for reason in decision.reasons:
        say(f"{decision.action}: {reason}")
    if dry_run:
        say(f"dry run: the share would go {share:.0%} → {decision.new_share:.0%}")
        return decision
    if decision.new_share != share:
        client.call("POST", "/admin/ab", {"treatment_share": decision.new_share})
    record(lake, decision, who)
    say(f"treatment share {share:.0%} → {decision.new_share:.0%} (in the rollout ledger)")
    return decision
