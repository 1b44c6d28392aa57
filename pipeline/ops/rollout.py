"""The staged rollout: the treatment share moves up a schedule (5 → 10 → 25 → 50 %) only while
the guardrails hold on the served decision log, and back to 0 % when one trips.

Guardrails, on the decisions the service logged in a window (rows with an A/B arm), each judged
on the unit the experiment's design randomised (the log's ``experiment`` and ``unit``;
`pipeline.ops.experiment`): customers in the ``visitor`` design, SKUs in the ``sku`` design,
blocks of periods (washout left out) in the ``switchback`` design:

- **sample-ratio mismatch**: the arms' distinct units against the share, an exact binomial test,
  p < 0.001 — the split itself is broken (a hash change, a lost log), so no comparison between
  the arms can be trusted (visitors per arm are no measure of it outside the visitor design);
- **conversion loss**: treatment converts less than control, one-sided, with a cluster-robust
  interval over the design's units, p < 0.05;
- **margin floor**: the treatment's margin on what it sold, (revenue − cost) / revenue, below
  ``PRICING_MARGIN_FLOOR``.

With fewer than ``min_visitors`` visitors in an arm, the share holds (not enough evidence either
way). At 0 % the rollout holds until an operator resumes it: a stop is not undone by the next
day's traffic. Every move, hold included, is appended to the rollout ledger in the lake
(`pipeline.contracts.ROLLOUT_LEDGER_PATH`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from scipy import stats

from pipeline.contracts import ROLLOUT_LEDGER_PATH, ROLLOUT_STAGES
from pipeline.data.lake import Lake
from pipeline.ops.experiment import UNITS, effect
from pipeline.release.ledger import Ledger, LedgerEntry
from sim.feeds import DECISIONS, PURCHASE

SRM_ALPHA = 0.001
CONVERSION_ALPHA = 0.05
COLUMNS = DECISIONS.subset("ab_arm", "outcome", "quantity", "price_shown", "unit_cost")
# read where the log has them (a log written before experiments were logged has none)
DESIGN_COLUMNS = DECISIONS.subset("customer_id", *DECISIONS.late)


@dataclass(frozen=True)
class ArmStats:
    visitors: int
    purchases: int
    revenue: float
    margin: float
    units: int = 0  # distinct units of randomisation (customers, SKUs, blocks)

    @property
    def conversion(self) -> float:
        return self.purchases / self.visitors if self.visitors else 0.0

    @property
    def margin_rate(self) -> float | None:
        return self.margin / self.revenue if self.revenue > 0 else None


def visits(decisions: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The log as the experiment's visits (`pipeline.ops.experiment.VISIT_COLUMNS`) and its
    design: the latest logged one (``visitor`` for a log that names none). A row without a
    unit (a log without customer ids) is a unit of its own."""
    d = decisions
    logged = d["experiment"].dropna() if "experiment" in d else pd.Series(dtype=object)
    design = str(logged.iloc[-1]) if len(logged) else "visitor"
    unit = d["unit"] if "unit" in d else pd.Series(None, index=d.index, dtype=object)
    if "customer_id" in d:
        unit = unit.fillna(d["customer_id"])
    unit = unit.astype(object).where(
        unit.notna(), "row:" + pd.Series(d.index, index=d.index).astype(str)
    )
    bought = (d["outcome"] == PURCHASE).astype(int)
    qty = d["quantity"].where(bought.astype(bool), 0)
    revenue = d["price_shown"] * qty
    margin = (d["price_shown"] - d["unit_cost"]) * qty
    washout = d["washout"].fillna(0).astype(bool) if "washout" in d else False
    frame = pd.DataFrame(
        {
            "arm": d["ab_arm"],
            "unit": unit,
            "profit": margin,
            "bought": bought,
            "margin": margin,
            "revenue": revenue,
            "explored": False,
            "washout": washout,
        }
    )
    return frame, design


def arm_stats(v: pd.DataFrame) -> dict[str, ArmStats]:
    out = {}
    kept = v[~v["washout"]]
    for arm in ("control", "treatment"):
        rows = kept[kept["arm"] == arm]
        out[arm] = ArmStats(
            visitors=len(rows),
            purchases=int(rows["bought"].sum()),
            revenue=float(rows["revenue"].sum()),
            margin=float(rows["margin"].sum()),
            units=int(rows["unit"].nunique()),
        )
    return out


def tripped(
    arms: dict[str, ArmStats],
    share: float,
    margin_floor: float,
    v: pd.DataFrame | None = None,
    design: str = "visitor",
) -> list[str]:
    """The guardrails that trip, each with its evidence (empty: all hold)."""
    c, t = arms["control"], arms["treatment"]
    found = []
    n = c.units + t.units
    if 0.0 < share < 1.0 and n:
        p = float(stats.binomtest(t.units, n, share).pvalue)
        if p < SRM_ALPHA:
            found.append(
                f"sample-ratio mismatch: {t.units} of {n} {UNITS[design]} in "
                f"treatment at a share of {share:.0%} (exact binomial p = {p:.2g} < {SRM_ALPHA})"
            )
    loss = conversion_loss(v, design) if v is not None else None
    if loss is not None and loss["p_lower"] < CONVERSION_ALPHA:
        lo, hi = loss["ci95"]
        found.append(
            f"conversion loss: treatment {t.conversion:.2%} vs control {c.conversion:.2%}, "
            f"{loss['effect']:+.1%} [{lo:+.1%}, {hi:+.1%}] over {n} "
            f"{UNITS[design]} (one-sided p = {loss['p_lower']:.3g} < "
            f"{CONVERSION_ALPHA})"
        )
    if t.margin_rate is not None and t.margin_rate < margin_floor:
        found.append(f"margin: treatment {t.margin_rate:.1%} below the floor {margin_floor:.1%}")
    return found


def conversion_loss(v: pd.DataFrame, design: str) -> dict[str, Any] | None:
    """Treatment's relative conversion change on the design's units, with the one-sided
    p-value that treatment converts less (None: an arm without purchases or units)."""
    e = effect(v, design, "bought")
    if e is None or e["p_lower"] is None:
        return None
    return e


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
    frames = []
    for d in days:
        if lake.has_partition("raw", "decisions", d):
            frame = lake.read_partition("raw", "decisions", d)
            frames.append(frame[[c for c in (*COLUMNS, *DESIGN_COLUMNS) if c in frame]])
    decisions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    v, design = visits(decisions)
    arms = arm_stats(v)
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
    few = [a for a, s in arms.items() if s.visitors < min_visitors or s.units < 2]
    if few and share > 0:
        reason = (
            f"too few visitors in {', '.join(few)} (under {min_visitors}, or fewer than two "
            f"{UNITS[design]}): holding {share:.0%}"
        )
        return RolloutDecision(window, share, share, "hold", [reason], summary)
    trips = tripped(arms, share, margin_floor, v, design)
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
