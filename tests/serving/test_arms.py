"""The experiment designs' assignment (`serving.arms`) and their analysis on their own unit
(`pipeline.ops.experiment`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.ops.experiment import effect
from serving.arms import Arms, van_der_corput

CATALOGUE = tuple(f"{cat}-{i:03d}" for cat in ("tee", "mug", "bag", "hat") for i in range(24))


def _arms(design: str, salt: str = "s", block: int = 168, washout: int = 0) -> Arms:
    return Arms(design, salt, block_periods=block, washout_periods=washout)


def _sku_arms(arms: Arms, share: float) -> dict[str, str]:
    got = arms.assign(share, "c-1", list(CATALOGUE), 0, CATALOGUE, {})
    return {s: a.arm for s, a in zip(CATALOGUE, got, strict=True)}


def test_van_der_corput_mirrors_the_bits() -> None:
    assert van_der_corput(np.arange(8)).tolist() == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


@pytest.mark.parametrize("share", [0.05, 0.25, 0.5])
def test_the_sku_design_is_stratified_by_category(share: float) -> None:
    """The catalogue and every category hold the share of treatment SKUs to within two,
    whatever the salt (hashing each SKU alone, a category of 24 at 50 % is off by more than
    two about one time in four)."""
    for salt in ("a", "b", "c", "d", "e"):
        arms = _sku_arms(_arms("sku", salt), share)
        total = sum(a == "treatment" for a in arms.values())
        assert abs(total - share * len(CATALOGUE)) <= 2.0, (salt, total)
        for cat in ("tee", "mug", "bag", "hat"):
            treated = sum(arms[s] == "treatment" for s in CATALOGUE if s.startswith(cat))
            assert abs(treated - share * 24) <= 2.0, (salt, cat, treated)


def test_raising_the_share_only_moves_units_into_treatment() -> None:
    skus = list(CATALOGUE[:8])

    def treated(arms: Arms, share: float) -> set[tuple[int, str]]:
        return {
            (period, a.unit)
            for period in range(0, 40 * 168, 168)
            for a in arms.assign(share, f"c{period}", skus, period, CATALOGUE, {})
            if a.arm == "treatment"
        }

    for design in ("sku", "switchback", "visitor"):
        arms = _arms(design)
        before, after = treated(arms, 0.25), treated(arms, 0.5)
        assert before and before <= after and len(after) > len(before), design


def test_each_sku_is_treated_with_the_probability_of_the_share() -> None:
    """Over salts, a SKU's chance of treatment is the share (the design is randomised)."""
    hits = np.mean([_sku_arms(_arms("sku", f"salt-{i}"), 0.3)["mug-007"] == "treatment"
                    for i in range(400)])  # fmt: skip
    assert abs(hits - 0.3) < 0.08


def test_switchback_pairs_balance_the_arms_and_washout_follows_a_switch() -> None:
    arms = _arms("switchback", block=24, washout=2)
    per_block = [arms.block_arm(b, 0.5) for b in range(200)]
    for pair in range(100):  # at 50 %: one block of each arm in every pair
        assert {per_block[2 * pair], per_block[2 * pair + 1]} == {"treatment", "control"}
    for block in range(1, 40):
        first, third = (arms.assign(0.5, "c", ["tee-000"], block * 24 + h, CATALOGUE, {})[0]
                        for h in (0, 2))  # fmt: skip
        assert first.unit == f"block:{block}"
        assert first.washout == (per_block[block] != per_block[block - 1])
        assert not third.washout  # past the washout hours
    quarter = [arms.block_arm(b, 0.25) for b in range(4000)]
    assert abs(quarter.count("treatment") / 4000 - 0.25) < 0.03


def _visits(units: int, per_unit: int, lift: float, seed: int) -> pd.DataFrame:
    """Visitors of ``units`` units per arm; a unit's profit per visitor varies (its own level)
    and treatment multiplies it by 1 + ``lift``."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm, mult in (("control", 1.0), ("treatment", 1.0 + lift)):
        for u in range(units):
            level = rng.lognormal(0, 0.8)  # units differ a lot (a jacket and a mug)
            profit = rng.exponential(level * mult, size=per_unit)
            for x in profit:
                rows.append((arm, f"{arm}-{u}", x, float(x > level), x, 2 * x, False, False))
    return pd.DataFrame(
        rows,
        columns=["arm", "unit", "profit", "bought", "margin", "revenue", "explored", "washout"],
    )


def test_the_effect_is_judged_on_units_not_visitors() -> None:
    """With few heterogeneous units, an interval over visitors would be far too narrow: the
    unit-level interval covers the true lift about 95 % of the time, and washout rows are left
    out."""
    covered = []
    for seed in range(200):
        e = effect(_visits(8, 200, 0.2, seed), "sku")
        assert e is not None and e["units"] == {"treatment": 8, "control": 8}
        lo, hi = e["ci95"]
        covered.append(lo <= 0.2 <= hi)
    assert 0.88 <= np.mean(covered) <= 0.99
    v = _visits(4, 50, 0.0, 1)
    v.loc[v["arm"] == "treatment", "washout"] = True
    assert effect(v, "switchback") is None  # treatment only in washout: nothing to compare


def test_a_treatment_that_sells_nothing_is_a_certain_loss_and_one_unit_has_no_interval() -> None:
    v = _visits(6, 50, 0.0, 3)
    v.loc[v["arm"] == "treatment", "bought"] = 0.0
    loss = effect(v, "sku", "bought")
    assert loss is not None and loss["effect"] == -1.0 and loss["p_lower"] == 0.0
    one = effect(_visits(1, 50, 0.2, 3), "switchback")
    assert one is not None and one["ci95"] is None and one["p_lower"] is None
