"""The paired bootstrap: coverage on distributions with a known mean, and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from sim.stats import paired_bootstrap_ci


@pytest.mark.parametrize(
    ("name", "draw", "true_mean"),
    [
        ("normal", lambda rng, n: rng.normal(0.3, 1.0, n), 0.3),
        ("skewed", lambda rng, n: rng.exponential(2.0, n) - 1.0, 1.0),
        ("paired", lambda rng, n: rng.poisson(5.0, n) - rng.poisson(4.0, n), 1.0),
    ],
)
def test_coverage_on_known_distributions(name: str, draw, true_mean: float) -> None:
    """Over many samples, the 95 % interval holds the true mean about 95 % of the time."""
    rng = np.random.default_rng(42)
    reps, n = 500, 60
    hits = 0
    for i in range(reps):
        m, lo, hi = paired_bootstrap_ci(draw(rng, n), n_boot=400, seed=i)
        assert lo <= m <= hi
        hits += lo <= true_mean <= hi
    # binomial sd of the hit rate at 500 reps is 1 %; the percentile bootstrap runs a bit short
    assert 0.89 <= hits / reps <= 0.99, name


def test_interval_width_follows_the_confidence_level() -> None:
    x = np.random.default_rng(0).normal(size=200)
    _, lo95, hi95 = paired_bootstrap_ci(x, alpha=0.05)
    _, lo80, hi80 = paired_bootstrap_ci(x, alpha=0.20)
    assert lo95 < lo80 < hi80 < hi95
    # close to the normal interval for a well-behaved sample
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert hi95 - lo95 == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_deterministic_for_a_seed() -> None:
    x = np.random.default_rng(1).normal(size=50)
    assert paired_bootstrap_ci(x, seed=7) == paired_bootstrap_ci(x, seed=7)
    assert paired_bootstrap_ci(x, seed=7) != paired_bootstrap_ci(x, seed=8)
    m, _, _ = paired_bootstrap_ci(x)
    assert m == pytest.approx(x.mean())


def test_long_inputs_are_resampled_in_blocks() -> None:
    """Large inputs take the blocked path and still give the right interval."""
    x = np.random.default_rng(2).normal(1.0, 2.0, size=5000)
    m, lo, hi = paired_bootstrap_ci(x, n_boot=1000, seed=0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert lo < m < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_edge_cases_and_bad_arguments() -> None:
    assert paired_bootstrap_ci(np.array([2.5])) == (2.5, 2.5, 2.5)
    assert paired_bootstrap_ci(np.full(10, -1.0)) == (-1.0, -1.0, -1.0)
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap_ci(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap_ci(np.ones(3), n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap_ci(np.ones(3), alpha=1.5)
