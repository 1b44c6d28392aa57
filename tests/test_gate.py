from __future__ import annotations

import dataclasses

import pytest

from pipeline.release.gate import GateEvidence, GateThresholds, promotion_decision

GOOD = GateEvidence(
    candidate_version="3",
    incumbent="champion v2",
    champion_version="2",
    diff_mean=120.0,
    diff_ci95=(40.0, 200.0),
    candidate_margin_rate=0.35,
    candidate_changes_per_day=3.0,
    ope_diff=0.4,
    ope_ci95=(-0.1, 0.9),
    ope_ess=250.0,
    served_parity_alarm=False,
    served_parity_detail="v2 served 126 decision units: 0 of 119 differ",
)
TH = GateThresholds(
    promotion_margin=10.0, margin_floor=0.2, max_price_changes_per_day=6, min_ope_support=50
)


def test_clear_win_promotes() -> None:
    d = promotion_decision(GOOD, TH)
    assert d.promote
    assert all(c["status"] == "pass" for c in d.checks.values())
    assert d.reason.startswith("all checks passed")


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"diff_ci95": (5.0, 200.0)}, "profit"),  # lower bound under the margin
        ({"diff_mean": -3.0, "diff_ci95": (-20.0, 14.0)}, "profit"),
        ({"candidate_margin_rate": 0.1}, "margin_floor"),
        ({"candidate_changes_per_day": 9.5}, "price_change_rate"),
        ({"ope_diff": -0.5, "ope_ci95": (-0.9, -0.1)}, "off_policy"),
        ({"served_parity_alarm": True}, "served_parity"),
    ],
)
def test_each_check_can_block(change: dict, failed: str) -> None:
    d = promotion_decision(dataclasses.replace(GOOD, **change), TH)
    assert not d.promote
    assert d.checks[failed]["status"] == "fail"
    assert failed in d.reason and d.reason.startswith("kept the champion")


def test_off_policy_without_support_is_skipped_not_passed() -> None:
    d = promotion_decision(dataclasses.replace(GOOD, ope_ess=12.0, ope_ci95=(-9, -8)), TH)
    assert d.promote and d.checks["off_policy"]["status"] == "skipped"
    d = promotion_decision(
        dataclasses.replace(GOOD, ope_diff=None, ope_ci95=None, ope_ess=None), TH
    )
    assert d.checks["off_policy"]["status"] == "skipped"


def test_an_off_policy_estimate_that_failed_never_passes() -> None:
    """Logs were there and the estimate raised (bad rows, a bug): the check fails, it is not
    skipped, and the candidate is kept."""
    broken = dataclasses.replace(
        GOOD, ope_diff=None, ope_ci95=None, ope_ess=None, ope_error="KeyError: 'propensity'"
    )
    d = promotion_decision(broken, TH)
    assert not d.promote and d.checks["off_policy"]["status"] == "fail"
    assert "KeyError: 'propensity'" in d.reason


def test_a_day_without_a_served_champion_skips_served_parity() -> None:
    d = promotion_decision(
        dataclasses.replace(GOOD, served_parity_alarm=None, served_parity_detail=None), TH
    )
    assert d.promote and d.checks["served_parity"]["status"] == "skipped"


def test_boundary_is_strict() -> None:
    d = promotion_decision(dataclasses.replace(GOOD, diff_ci95=(10.0, 30.0)), TH)
    assert not d.promote  # the lower bound must clear the margin, not touch it
    assert d.to_dict()["evidence"]["candidate_version"] == "3"


@pytest.mark.parametrize("sim_diff", [-50.0, -1.0, 0.0, 1.0, 50.0])
@pytest.mark.parametrize("ope_ci", [(-0.9, -0.1), (-0.5, 0.5), (0.1, 0.9)])
def test_the_gate_uses_the_one_agreement_rule(sim_diff: float, ope_ci: tuple) -> None:
    """The gate's off-policy check is `ope_agrees`, including a simulator difference of 0."""
    from pipeline.model.ope import ope_agrees

    ev = dataclasses.replace(
        GOOD,
        diff_mean=sim_diff,
        diff_ci95=(sim_diff - 10, sim_diff + 10),
        ope_diff=sum(ope_ci) / 2,
        ope_ci95=ope_ci,
    )
    status = promotion_decision(ev, TH).checks["off_policy"]["status"]
    compare = {"diff": ev.ope_diff, "ci95": ope_ci, "min_ess": ev.ope_ess}
    agrees = ope_agrees(compare, sim_diff, TH.min_ope_support)
    assert (status == "fail") == (agrees is False)


def test_a_zero_simulator_difference_is_contradicted_by_confidently_worse_logs() -> None:
    """0 counts with the positive side: the promotion claims 'at least as good'."""
    from pipeline.model.ope import ope_agrees

    worse = {"diff": -0.5, "ci95": (-0.9, -0.1), "min_ess": 500}
    better = {"diff": 0.5, "ci95": (0.1, 0.9), "min_ess": 500}
    assert ope_agrees(worse, 0.0, 100) is False
    assert ope_agrees(better, 0.0, 100) is True
    ev = dataclasses.replace(GOOD, diff_mean=0.0, ope_diff=-0.5, ope_ci95=(-0.9, -0.1))
    assert promotion_decision(ev, TH).checks["off_policy"]["status"] == "fail"


def test_evidence_round_trips_through_the_report_json() -> None:
    import json

    full = dataclasses.replace(GOOD, candidate_label="v3 ppo", ope_dr_ci95=(-0.2, 0.8), ope_n=40)
    again = GateEvidence.from_dict(json.loads(json.dumps(full.to_dict())))
    assert again == full
