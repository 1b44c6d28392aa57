"""Parity in production: does the served champion do and earn what its evaluation says?

Every night, on the day's decisions of the treatment arm served by a champion (``policy_id``
``champion-vN``), rebuilt as decision units (`pipeline.model.logged`: one per SKU and period, in
the state the service acted in, on the service's season clock):

- **Decisions.** In each unit's state, the champion as served (`sim.served`: its greedy action
  through the guardrails) names a price; a unit served without exploring (propensity ≥ 1/2) must
  show that price. Mismatches beyond ``MAX_MISMATCH`` of them mean the service computes
  something the evaluation does not — a clock off by an hour, an observation built another way,
  a guardrail of its own.
- **Earnings.** The off-policy estimate (self-normalised importance sampling, the logged
  propensities) of the champion as served on those units, against the simulator's expected
  reward of the same policy in the same states (`sim.dp.expected_step_reward` in the champion's
  world, per unit): a gap whose 95 % interval lies beyond ±``tolerance`` of the simulator's
  figure means the served champion does not earn what its evaluation says.

Either is an alarm: the night's report says so (``reports/parity/date=D/parity.json``), the
promotion gate states it and keeps the champion (every offline figure rests on parity), the
monitor DAG fails its ``parity_alarm`` task, and gauges ``pricing_parity_*`` go to the
Pushgateway for Grafana's panel and the ``PricingServedParity`` alert.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts import parity_report_path
from pipeline.data.catalogue import read_catalogue, season_anchor
from pipeline.data.lake import Lake
from pipeline.model.agents import agent_policy
from pipeline.model.evaluation import as_served
from pipeline.model.logged import logged_market, served_decision_units
from pipeline.model.ope import snips
from pipeline.release.registry import LoadedVersion, Registry
from pipeline.settings import ServedAs, Settings
from sim.catalogue import apply_catalogue
from sim.dp import expected_step_reward
from sim.feeds import DECISIONS
from sim.history import Clock, episode_world
from sim.params import MarketParams
from sim.world import World

log = logging.getLogger("pricing.parity")

MAX_MISMATCH = 0.01  # share of unexplored served decisions the champion would not have made
MIN_UNITS = 30  # decision units under which a day is not judged
TOLERANCE = 0.15  # relative gap between served and simulated earnings that is an alarm


@dataclass(frozen=True)
class ServedParity:
    date: str
    version: str | None
    units: int
    judged: bool
    unexplored: int = 0
    mismatches: int = 0
    observed: float | None = None  # the off-policy estimate of the champion: reward per unit
    observed_ci95: tuple[float, float] | None = None
    simulated: float | None = None  # the simulator's expected reward per unit, same states
    gap: float | None = None  # (observed − simulated) / |simulated|
    gap_ci95: tuple[float, float] | None = None
    alarm: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.unexplored if self.unexplored else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As JSON takes it (an estimate without support is null, not NaN)."""

        def finite(v: Any) -> Any:
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, tuple | list):
                return [finite(x) for x in v]
            return v

        data = {**asdict(self), "mismatch_rate": self.mismatch_rate}
        return {k: finite(v) for k, v in data.items()}

    @property
    def summary(self) -> str:
        if not self.judged or self.gap is None or not np.isfinite(self.gap):
            return "; ".join(self.reasons) or "not judged"
        lo, hi = self.gap_ci95 or (0.0, 0.0)
        return (
            f"v{self.version} served {self.units} decision units: {self.mismatches} of "
            f"{self.unexplored} unexplored ones differ from the champion's own decision "
            f"({self.mismatch_rate:.1%}, alarm above {MAX_MISMATCH:.0%}); earned "
            f"{self.observed:.2f}/unit vs {self.simulated:.2f} simulated "
            f"({self.gap:+.1%}, 95% CI [{lo:+.1%}, {hi:+.1%}], alarm beyond ±{TOLERANCE:.0%})"
        )


def _served_world(champion_world: World, lake: Lake, day: dt.date, settings: Settings) -> World:
    """The world the service priced in: the champion's around the lake's catalogue."""
    snapshot = read_catalogue(lake, day)
    if snapshot is None or settings.world_file is not None:
        return champion_world
    return apply_catalogue(champion_world, snapshot[0])


def _decisions(lake: Lake, first: dt.date, day: dt.date) -> pd.DataFrame | None:
    """The decisions from ``first`` (the start of ``day``'s season: a unit's price before, and
    the season's averages, are rebuilt from the season's log) to ``day``."""
    days = [first + dt.timedelta(days=i) for i in range((day - first).days + 1)]
    frames = [
        DECISIONS.conform(lake.read_partition("raw", "decisions", d))
        for d in days
        if lake.has_partition("raw", "decisions", d)
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def _season_start(lake: Lake, anchor: dt.datetime, day: dt.date) -> dt.date:
    """The first day of the selling season ``day``'s first hour belongs to."""
    snapshot = read_catalogue(lake, day)
    horizon = snapshot[0].horizon if snapshot is not None else None
    if horizon is None:
        return day - dt.timedelta(days=1)
    clock = Clock(anchor, horizon.step_hours, horizon.steps)
    period = clock.period(dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC))
    start = clock.period_start(period - clock.season_and_step(period)[1])
    return min(start.date(), day)


def served_parity(
    settings: Settings,
    lake: Lake,
    day: dt.date,
    served: ServedAs | None = None,
    simulator: World | None = None,
) -> ServedParity:
    """The champion's served decisions of ``day`` against its evaluation (see the module): its
    earnings against ``simulator``'s expectation (the night's refit world; default: the world
    the champion was trained and evaluated in)."""
    served = served or ServedAs()
    anchor = season_anchor(lake, served.season_start)
    decisions = _decisions(lake, _season_start(lake, anchor, day), day)
    if decisions is None:
        return ServedParity(day.isoformat(), None, 0, False, reasons=["no decisions logged"])
    # champion-vN, or champion-vN@cluster where a cluster's champion priced the SKU
    found = decisions["policy_id"].astype(str).str.extract(r"^champion-v(\d+)(?:@(.+))?$")
    ours = found[1].isna() if settings.cluster is None else found[1] == settings.cluster
    champions = found[0].where(ours)
    mine = decisions[(decisions["ab_arm"] == "treatment") & champions.notna()]
    on_day = pd.to_datetime(mine["ts"], utc=True).dt.date == day
    versions = champions[mine.index[on_day]].value_counts()
    if versions.empty:
        return ServedParity(
            day.isoformat(), None, 0, False, reasons=["no decision served by a champion"]
        )
    version = str(versions.index[0])  # the day's main champion (a promotion may split a day)
    mine = mine[champions[mine.index] == version]
    registry = Registry(settings, lake)
    loaded = registry.load(version)
    # the service's season clock: seasons start at the anchor's weekday and hour
    world = episode_world(_served_world(loaded.world, lake, day, settings), anchor)
    # every arm's visitors of the champion's SKUs: the averages the service kept are the SKU's
    shelf = decisions[decisions["sku"].astype(str).isin(set(mine["sku"].astype(str)))]
    every = served_decision_units(shelf, world, season_start=pd.Timestamp(anchor))
    visitors = every.groupby(["sku", "decision_ts"])["views"].transform("sum")
    ours = every["policy_id"].astype(str).isin(set(mine["policy_id"].astype(str)))
    keep = ours & (every["ab_arm"] == "treatment") & (every["decision_ts"].dt.date == day)
    units = every[keep].reset_index(drop=True)
    # the champion earns on its arm's visitors only: the simulator's expectation is for that
    # share of each SKU-step's traffic (1 where it priced every visitor: sku, switchback, 100 %)
    traffic = (units["views"] / visitors[keep].to_numpy()).to_numpy(dtype=float)
    if len(units) < MIN_UNITS:
        reason = f"{len(units)} decision units of v{version} (fewer than {MIN_UNITS}): not judged"
        return ServedParity(day.isoformat(), version, len(units), False, reasons=[reason])
    sim_world = world if simulator is None else episode_world(simulator, anchor)
    return _judge(day, version, units, world, loaded, served, sim_world, traffic)


def _judge(
    day: dt.date,
    version: str,
    units: pd.DataFrame,
    world: World,
    loaded: LoadedVersion,
    served: ServedAs,
    simulator: World,
    traffic: np.ndarray,
) -> ServedParity:
    market = logged_market(units, world)
    market.comp_ratio_given = (units["competitor_price"] / units["base_price"]).to_numpy(float)
    p = market.p
    policy = as_served(world, agent_policy(loaded.model, "champion", loaded.world), served,
                       "treatment", "champion")  # fmt: skip
    probs = policy.probs(market, market.observe())  # as served: greedy, then exploration
    levels, _ = served.guardrails.levels(p, market.sku, market.level)  # (N, A)
    greedy_level = levels[np.arange(len(units)), probs.argmax(axis=1)]
    unexplored = units["propensity"].to_numpy(float) >= 0.5
    mismatched = unexplored & (units["level"].to_numpy() != greedy_level)
    # what the simulator expects the champion as served to earn in each state
    q = p if simulator is world else _aligned(simulator, world)
    k, t = market.sku, market.t
    simulated = sum(
        probs[:, a]
        * expected_step_reward(
            q, k, t, market.inventory, market.level, levels[:, a], market.comp, traffic
        )
        for a in range(p.A)
    )
    # the served probability of the logged action (guardrails may turn several into one price)
    same = levels == units["level"].to_numpy()[:, None]
    target = np.zeros_like(probs)
    target[np.arange(len(units)), units["action"].to_numpy()] = (probs * same).sum(axis=1)
    ope = snips(units, target)
    sim = float(np.mean(simulated))
    gap = (ope.value - sim) / abs(sim) if sim else 0.0
    lo, hi = ((ope.ci95[0] - sim) / abs(sim), (ope.ci95[1] - sim) / abs(sim)) if sim else (0, 0)
    reasons = []
    rate = mismatched.sum() / max(unexplored.sum(), 1)
    if rate > MAX_MISMATCH:
        reasons.append(
            f"{rate:.1%} of the unexplored served decisions are not the champion's own in their "
            f"state (at most {MAX_MISMATCH:.0%}): the service decides on something else"
        )
    if not np.isfinite(ope.value):
        reasons.append(
            "the champion gives no probability to any action the service logged: it cannot "
            "have served them"
        )
    elif lo > TOLERANCE or hi < -TOLERANCE:
        reasons.append(
            f"the champion earned {gap:+.1%} against what the simulator expects in the same "
            f"states (95% CI [{lo:+.1%}, {hi:+.1%}], beyond ±{TOLERANCE:.0%})"
        )
    return ServedParity(
        day.isoformat(),
        version,
        len(units),
        True,
        int(unexplored.sum()),
        int(mismatched.sum()),
        ope.value,
        (ope.ci95[0], ope.ci95[1]),
        sim,
        gap,
        (lo, hi),
        bool(reasons),
        reasons,
    )


def _aligned(simulator: World, served: World) -> MarketParams:
    """The simulator's arrays over the served world's SKUs, in its order."""
    ids = [s.id for s in served.skus]
    have = {s.id: s for s in simulator.skus}
    missing = [i for i in ids if i not in have]
    if missing:
        raise ValueError(f"the simulator's world lacks SKU(s) {missing[:3]} the service priced")
    return simulator.with_skus([have[i] for i in ids]).compile()


def write_parity(lake: Lake, result: ServedParity) -> str:
    path = parity_report_path(dt.date.fromisoformat(result.date))
    lake.write_bytes(path, json.dumps(result.to_dict(), indent=1).encode())
    return lake.uri(path)


def latest_parity(lake: Lake, day: dt.date) -> dict[str, Any] | None:
    """The parity report of ``day``, else of the day before (a night may not have run yet)."""
    for d in (day, day - dt.timedelta(days=1)):
        if lake.exists(parity_report_path(d)):
            data: dict[str, Any] = json.loads(lake.read_bytes(parity_report_path(d)))
            return data
    return None
