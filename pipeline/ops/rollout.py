"""The staged rollout: the treatment share moves up a schedule (5 → 10 → 25 → 50 %) only while
the guardrails hold on the served decision log, and back to 0 % when one trips.

Guardrails, on the decisions the service logged in a window (rows with an A/B arm):

- **sample-ratio mismatch**: the arms' visitor counts against the share, chi-squared with one
  degree of freedom, p < 0.001 — the split itself is broken (a hash change, a lost log), so no
  comparison between the arms can be trusted;
- **conversion loss**: treatment converts less than control, one-sided two-proportion z-test,
  p < 0.05;
- **margin floor**: the treatment's margin on what it sold, (revenue − cost) / revenue, below
  ``PRICING_MARGIN_FLOOR``.

With fewer than ``min_visitors`` visitors in an arm, the share holds (not enough evidence either
way). At 0 % the rollout holds until an operator resumes it: a stop is not undone by the next
day's traffic. Every move, hold included, is appended to the rollout ledger in the lake
(`pipeline.contracts.ROLLOUT_LEDGER_PATH`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from scipy import stats

from pipeline.contracts import ROLLOUT_LEDGER_PATH, ROLLOUT_STAGES
from pipeline.data.lake import Lake
from pipeline.release.ledger import Ledger, LedgerEntry
from sim.feeds import DECISIONS, PURCHASE

SRM_ALPHA = 0.001
CONVERSION_ALPHA = 0.05
COLUMNS = DECISIONS.subset("ab_arm", "outcome", "quantity", "price_shown", "unit_cost")


@dataclass(frozen=True)
class ArmStats:
    visitors: int
    purchases: int
    revenue: float
    margin: float

    @property
    def conversion(self) -> float:
        return self.purchases / self.visitors if self.visitors else 0.0

    @property
    def margin_rate(self) -> float | None:
        return self.margin / self.revenue if self.revenue > 0 else None


def arm_stats(decisions: pd.DataFrame) -> dict[str, ArmStats]:
    out = {}
    for arm in ("control", "treatment"):
        rows = decisions[decisions["ab_arm"] == arm]
        bought = rows["outcome"] == PURCHASE
        qty = rows["quantity"].where(bought, 0)
        out[arm] = ArmStats(
            visitors=len(rows),
            purchases=int(bought.sum()),
            revenue=float((rows["price_shown"] * qty).sum()),
            margin=float(((rows["price_shown"] - rows["unit_cost"]) * qty).sum()),
        )
    return out


def tripped(arms: dict[str, ArmStats], share: float, margin_floor: float) -> list[str]:
    """The guardrails that trip, each with its evidence (empty: all hold)."""
    c, t = arms["control"], arms["treatment"]
    found = []
    n = c.visitors + t.visitors
    if 0.0 < share < 1.0 and n:
        expected = (n * (1 - share), n * share)
        chi2 = sum(
            (o - e) ** 2 / e for o, e in zip((c.visitors, t.visitors), expected, strict=True)
        )
        p = float(stats.chi2.sf(chi2, 1))
        if p < SRM_ALPHA:
            found.append(
                f"sample-ratio mismatch: {t.visitors} of {n} visitors in treatment at a share of "
                f"{share:.0%} (chi-squared p = {p:.2g} < {SRM_ALPHA})"
            )
    pooled = (c.purchases + t.purchases) / n if n else 0.0
    if c.visitors and t.visitors and 0.0 < pooled < 1.0:
        se = math.sqrt(pooled * (1 - pooled) * (1 / c.visitors + 1 / t.visitors))
        z = (t.conversion - c.conversion) / se
        p = float(stats.norm.cdf(z))
        if p < CONVERSION_ALPHA:
            found.append(
                f"conversion loss: treatment {t.conversion:.2%} vs control {c.conversion:.2%} "
                f"(one-sided p = {p:.3g} < {CONVERSION_ALPHA})"
            )
    if t.margin_rate is not None and t.margin_rate < margin_floor:
        found.append(f"margin: treatment {t.margin_rate:.1%} below the floor {margin_floor:.1%}")
    return found


def next_share(
    current: float, trips: list[str], stages: tuple[float, ...] = ROLLOUT_STAGES
) -> float:
    if trips:
        return 0.0
    higher = [s for s in stages if s > current + 1e-9]
    return higher[0] if higher else current


@dataclass(frozen=True)
class RolloutDecision:
    window: list[str]
    share: float
    new_share: float
    action: str  # advance | hold | stop
    reasons: list[str]
    arms: dict[str, dict[str, Any]]


def decide(
    lake: Lake,
    days: list[dt.date],
    share: float,
    margin_floor: float,
    min_visitors: int = 500,
    resume: bool = False,
) -> RolloutDecision:
    """The rollout's next step on the decisions the service logged on ``days``. At 0 % (a
    guardrail stopped it, or it never started) it moves only when told to ``resume``."""
    frames = [
        lake.read_partition("raw", "decisions", d)[list(COLUMNS)]
        for d in days
        if lake.has_partition("raw", "decisions", d)
    ]
    decisions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    arms = arm_stats(decisions)
    window = [d.isoformat() for d in days]
    summary = {
        a: {**asdict(s), "conversion": s.conversion, "margin_rate": s.margin_rate}
        for a, s in arms.items()
    }
    if share <= 0.0 and not resume:
        reason = (
            "the rollout is at 0 %: it starts again only when resumed (pricing rollout --resume)"
        )
        return RolloutDecision(window, share, share, "hold", [reason], summary)
    few = [a for a, s in arms.items() if s.visitors < min_visitors]
    if few and share > 0:
        reason = f"too few visitors in {', '.join(few)} (under {min_visitors}): holding {share:.0%}"
        return RolloutDecision(window, share, share, "hold", [reason], summary)
    trips = tripped(arms, share, margin_floor)
    new = next_share(share, trips)
    action = "stop" if trips else ("advance" if new > share else "hold")
    reasons = trips or (
        [f"guardrails hold: {share:.0%} → {new:.0%}"] if new > share else ["at the last stage"]
    )
    return RolloutDecision(window, share, new, action, reasons, summary)


def record(lake: Lake, decision: RolloutDecision, who: str) -> LedgerEntry:
    entry = LedgerEntry(
        when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        who=who,
        action=f"rollout-{decision.action}",
        from_version=f"{decision.share:g}",
        to_version=f"{decision.new_share:g}",
        reason="; ".join(decision.reasons),
        decision=asdict(decision),
    )
    Ledger(lake, ROLLOUT_LEDGER_PATH).append(entry)
    return entry
