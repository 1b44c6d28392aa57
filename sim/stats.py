"""The statistics every stage shares: one normal quantile, one interval of a mean, one paired
interval (the promotion gate's, the benchmarks' and the evaluation table's)."""

from __future__ import annotations

import numpy as np

Z95 = 1.96  # the normal distribution's 97.5 % quantile: two-sided 95 % intervals


def mean_ci95(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95 % confidence interval (zero width for one value)."""
    m = float(np.mean(x))
    half = Z95 * float(np.std(x, ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else 0.0
    return m, m - half, m + half


# Resample in blocks of at most this many draws so that memory stays bounded for long inputs;
# the block size depends on the input length only, so the result is deterministic for a seed.
_MAX_DRAWS_PER_BLOCK = 4_000_000


def paired_bootstrap_ci(
    diff: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile-bootstrap confidence interval.

    Each element of ``diff`` is one pair (e.g. candidate − champion profit on the same seed), so
    resampling whole elements keeps the pairing. The resampling is vectorised and reproducible: the
    same ``diff``, ``n_boot`` and ``seed`` always give the same interval.

    Args:
        diff: per-pair differences, shape (n,).
        n_boot: number of bootstrap resamples.
        seed: seed of the resampling generator.
        alpha: 1 − confidence level (0.05 gives a 95 % interval).

    Returns:
        ``(mean, lo, hi)``: the sample mean and the ``alpha / 2`` and ``1 − alpha / 2`` percentiles
        of the bootstrap means. A single pair gives a zero-width interval.

    Raises:
        ValueError: on an empty or non-finite ``diff``, ``n_boot < 1`` or ``alpha`` outside (0, 1).
    """
    x = np.asarray(diff, dtype=float).reshape(-1)
    if x.size == 0:
        raise ValueError("diff is empty: need at least one paired difference")
    if not np.isfinite(x).all():
        raise ValueError("diff holds NaN or infinite values; drop or fix those pairs first")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 (got {n_boot})")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    n = x.size
    mean = float(x.mean())
    if n == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_DRAWS_PER_BLOCK // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return mean, float(lo), float(hi)


def ratio_ci95(y: np.ndarray, n: np.ndarray) -> tuple[float, float, float]:
    """Σy / Σn over clusters — profit per visitor where each cluster is one unit of
    randomisation (a customer, a SKU, a block of periods) — with a cluster-robust (delta-method,
    CR1) 95 % interval and Student's t on clusters − 1 degrees of freedom: the units, not the
    visitors, are the independent draws. One cluster gives a zero-width interval."""
    from scipy import stats

    y, n = np.asarray(y, dtype=float), np.asarray(n, dtype=float)
    total = float(n.sum())
    if total <= 0:
        raise ValueError("no visitors: a ratio needs at least one")
    r = float(y.sum()) / total
    g = len(y)
    if g < 2:
        return r, r, r
    resid = y - r * n
    se = float(np.sqrt(g / (g - 1) * (resid**2).sum()) / total)
    half = float(stats.t.ppf(0.975, g - 1)) * se
    return r, r - half, r + half


def relative_effect_ci95(
    y_t: np.ndarray, n_t: np.ndarray, y_c: np.ndarray, n_c: np.ndarray
) -> tuple[float, float, float]:
    """(Σy_t/Σn_t) / (Σy_c/Σn_c) − 1 — treatment's uplift over control, each arm a ratio over its
    own clusters — with a delta-method 95 % interval (the arms independent; Student's t on the
    smaller arm's clusters − 1 degrees of freedom)."""
    from scipy import stats

    def ratio_var(y: np.ndarray, n: np.ndarray) -> tuple[float, float, int]:
        y, n = np.asarray(y, dtype=float), np.asarray(n, dtype=float)
        total = float(n.sum())
        r = float(y.sum()) / total
        g = len(y)
        if g < 2:
            return r, 0.0, g
        resid = y - r * n
        return r, float(g / (g - 1) * (resid**2).sum()) / total**2, g

    rt, vt, gt = ratio_var(y_t, n_t)
    rc, vc, gc = ratio_var(y_c, n_c)
    if rc == 0:
        raise ValueError("control's ratio is 0: a relative effect is undefined")
    q = rt / rc
    se = (
        abs(q) * float(np.sqrt(vt / rt**2 + vc / rc**2))
        if rt != 0
        else float(np.sqrt(vt)) / abs(rc)
    )
    df = max(1, min(gt, gc) - 1)
    half = float(stats.t.ppf(0.975, df)) * se
    return q - 1.0, q - 1.0 - half, q - 1.0 + half
