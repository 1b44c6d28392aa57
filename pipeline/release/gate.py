"""The promotion gate: a pure function from the night's evidence to promote / keep.

Promote only if all hold:

1. **Profit**: the lower bound of the paired-bootstrap 95 % CI of (candidate − incumbent) profit per
   episode on the refit simulator, common random numbers, is above ``promotion_margin``. The
   incumbent is the champion, or the rule-based pricer while there is no champion yet.
2. **Guardrails**: the candidate's gross margin rate is at least ``margin_floor`` and its price
   changes per SKU-day at most ``max_price_changes_per_day``.
3. **Off-policy agreement**: where the logged decisions give support (effective sample size of
   the importance weights at least ``min_ope_support``), the off-policy estimate of (candidate −
   incumbent) must not contradict the simulator, by the one rule `pipeline.model.ope.ope_agrees`
   defines (an interval that excludes zero on the other side of the simulator's difference).
   Without support the check is reported as skipped, not passed silently; an estimate that
   failed on logs that exist (bad rows, a bug) fails the check: it never passes on an error.
4. **Served parity**: the champion's served day does and earns what its evaluation says
   (`pipeline.release.parity`); when it does not, every figure above rests on sand and the
   champion is kept until the service is fixed. A day without a served champion is skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.model.ope import ope_agrees


@dataclass(frozen=True)
class GateThresholds:
    promotion_margin: float = 0.0
    margin_floor: float = 0.0
    max_price_changes_per_day: float = 12.0
    min_ope_support: float = 30.0


@dataclass(frozen=True)
class GateEvidence:
    """What the night's evaluation found, as the gate reads it (and the report stores it)."""

    candidate_version: str
    incumbent: str  # "champion vN algo" or "rule"
    champion_version: str | None  # what `champion` pointed at when the evidence was computed
    diff_mean: float  # candidate − incumbent, profit per episode
    diff_ci95: tuple[float, float]
    candidate_margin_rate: float  # (revenue − cost of goods) / revenue
    candidate_changes_per_day: float
    candidate_label: str = ""  # "v3 ppo"
    ope_diff: float | None = None  # off-policy estimate of candidate − incumbent (per decision)
    ope_ci95: tuple[float, float] | None = None
    ope_ess: float | None = None
    ope_estimator: str | None = None
    ope_n: int | None = None
    ope_dr_diff: float | None = None  # the doubly robust estimate, reported beside
    ope_dr_ci95: tuple[float, float] | None = None
    ope_error: str | None = None  # why there is no off-policy estimate
    served_parity_alarm: bool | None = None  # the champion's served day against its evaluation
    served_parity_detail: str | None = None  # (`pipeline.release.parity`); None: not judged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateEvidence:
        """Back from the JSON of the evaluation report (intervals come back as lists)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("diff_ci95", "ope_ci95", "ope_dr_ci95"):
            if values.get(key) is not None:
                values[key] = (float(values[key][0]), float(values[key][1]))
        values["candidate_version"] = str(values["candidate_version"])
        return cls(**values)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        failed = [f"{k}: {v['detail']}" for k, v in self.checks.items() if v["status"] == "fail"]
        if self.promote:
            return "all checks passed: " + "; ".join(
                f"{k}: {v['detail']}" for k, v in self.checks.items()
            )
        return "kept the champion: " + "; ".join(failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "checks": self.checks,
            "evidence": self.evidence,
        }


def promotion_decision(ev: GateEvidence, th: GateThresholds) -> GateDecision:
    """Decide from evidence and thresholds alone (no I/O), so it is easy to test and to audit."""
    checks: dict[str, dict[str, Any]] = {}
    lo, hi = ev.diff_ci95
    checks["profit"] = {
        "status": "pass" if lo > th.promotion_margin else "fail",
        "detail": (
            f"candidate − {ev.incumbent} = {ev.diff_mean:+.1f}/episode, 95% CI "
            f"[{lo:+.1f}, {hi:+.1f}], needs lower bound > {th.promotion_margin:g}"
        ),
    }
    checks["margin_floor"] = {
        "status": "pass" if ev.candidate_margin_rate >= th.margin_floor else "fail",
        "detail": f"margin rate {ev.candidate_margin_rate:.3f} vs floor {th.margin_floor:.3f}",
    }
    checks["price_change_rate"] = {
        "status": "pass"
        if ev.candidate_changes_per_day <= th.max_price_changes_per_day
        else "fail",
        "detail": (
            f"{ev.candidate_changes_per_day:.1f} changes per SKU-day vs at most "
            f"{th.max_price_changes_per_day:g}"
        ),
    }
    if ev.ope_error is not None:  # logs were there, the estimate broke: never a pass
        checks["off_policy"] = {
            "status": "fail",
            "detail": f"the off-policy estimate failed ({ev.ope_error}); fix it or the logs",
        }
    elif ev.ope_diff is None or ev.ope_ess is None or ev.ope_ci95 is None:
        checks["off_policy"] = {
            "status": "skipped",
            "detail": "no logged decisions in the held-out days to estimate on",
        }
    elif ev.ope_ess < th.min_ope_support:
        checks["off_policy"] = {
            "status": "skipped",
            "detail": f"effective sample size {ev.ope_ess:.0f} < {th.min_ope_support:g}: no support",
        }
    else:
        olo, ohi = ev.ope_ci95
        compare = {"diff": ev.ope_diff, "ci95": ev.ope_ci95, "min_ess": ev.ope_ess}
        contradicts = ope_agrees(compare, ev.diff_mean, th.min_ope_support) is False
        checks["off_policy"] = {
            "status": "fail" if contradicts else "pass",
            "detail": (
                f"off-policy candidate − {ev.incumbent} = {ev.ope_diff:+.3f}/decision, 95% CI "
                f"[{olo:+.3f}, {ohi:+.3f}], ESS {ev.ope_ess:.0f}"
                + (" contradicts the simulator" if contradicts else "")
            ),
        }
    if ev.served_parity_alarm is None:
        checks["served_parity"] = {
            "status": "skipped",
            "detail": ev.served_parity_detail or "no served day of a champion to judge",
        }
    else:
        checks["served_parity"] = {
            "status": "fail" if ev.served_parity_alarm else "pass",
            "detail": (
                "the served champion does not do or earn what its evaluation says, so no "
                "offline figure can be trusted until the service is fixed: "
                if ev.served_parity_alarm
                else ""
            )
            + (ev.served_parity_detail or ""),
        }
    promote = all(c["status"] != "fail" for c in checks.values())
    return GateDecision(promote=promote, checks=checks, evidence=asdict(ev))
