"""What every fit shares: the error it raises, maximum-likelihood solvers with standard errors
from the observed information, and small helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from sim.stats import Z95


class FitError(ValueError):
    """The logs cannot be fitted or checked; the message names the column, SKU or segment."""


# --------------------------------------------------------------------------------------------------
# small helpers


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def to_json(x: Any) -> Any:
    """JSON-able copy: numpy scalars to Python, NaN and inf to None."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return [to_json(v) for v in x.tolist()]
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, pd.Timestamp):
        return x.isoformat()
    return x


def estimate(value: float, se: float) -> dict[str, float]:
    """An estimate with its standard error and normal-approximation 95 % interval."""
    return {
        "estimate": float(value),
        "se": float(se),
        "ci_low": float(value - Z95 * se),
        "ci_high": float(value + Z95 * se),
    }


def require_columns(df: pd.DataFrame, fields: Sequence[str], feed: str) -> None:
    missing = [c for c in fields if c not in df.columns]
    if missing:
        raise FitError(f"{feed} log lacks column(s) {missing}; expected at least {list(fields)}")
    if df.empty:
        raise FitError(f"{feed} log is empty; nothing to fit")


def inverse(h: np.ndarray) -> np.ndarray:
    """Inverse of an information matrix; NaN where it is singular (a parameter not identified)."""
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return np.full_like(h, np.nan)
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return np.full_like(h, np.nan)
    return np.asarray(cov)


def stationary(p: np.ndarray) -> np.ndarray:
    n = p.shape[0]
    a = np.vstack([p.T - np.eye(n), np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.asarray(np.clip(pi, 0.0, None))


# --------------------------------------------------------------------------------------------------
# maximum-likelihood fits


@dataclass(frozen=True)
class Mle:
    coef: np.ndarray
    cov: np.ndarray
    loglik: float
    converged: bool

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


def binomial_logit(
    x: np.ndarray, n: np.ndarray, y: np.ndarray, start: np.ndarray, offset: np.ndarray
) -> Mle:
    """Logistic regression on grouped data: ``y`` successes of ``n`` trials, logit ``x b + offset``."""

    def nll(b: np.ndarray) -> float:
        eta = x @ b + offset
        return float(-(y @ eta) + n @ np.logaddexp(0.0, eta))

    def grad(b: np.ndarray) -> np.ndarray:
        return np.asarray(-(x.T @ (y - n * sigmoid(x @ b + offset))))

    def hess(b: np.ndarray) -> np.ndarray:
        p = sigmoid(x @ b + offset)
        return np.asarray((x * (n * p * (1.0 - p))[:, None]).T @ x)

    res = optimize.minimize(nll, start, jac=grad, hess=hess, method="trust-exact")
    cov = inverse(hess(res.x))
    ok = bool(res.success) and bool(np.all(np.isfinite(cov)))
    return Mle(coef=np.asarray(res.x), cov=cov, loglik=-float(res.fun), converged=ok)


def poisson_glm(x: np.ndarray, y: np.ndarray) -> Mle:
    """Poisson regression with log link."""
    start = np.zeros(x.shape[1])
    start[0] = math.log(max(float(y.mean()), 1e-3))

    def nll(b: np.ndarray) -> float:
        eta = x @ b
        return float(np.exp(eta).sum() - y @ eta)

    def grad(b: np.ndarray) -> np.ndarray:
        return np.asarray(x.T @ (np.exp(x @ b) - y))

    def hess(b: np.ndarray) -> np.ndarray:
        return np.asarray((x * np.exp(x @ b)[:, None]).T @ x)

    res = optimize.minimize(nll, start, jac=grad, hess=hess, method="trust-exact")
    cov = inverse(hess(res.x))
    ok = bool(res.success) and bool(np.all(np.isfinite(cov)))
    return Mle(coef=np.asarray(res.x), cov=cov, loglik=-float(res.fun), converged=ok)


def linear_probability(
    r: np.ndarray, n: np.ndarray, y: np.ndarray, fit_slope: bool, slope0: float
) -> Mle:
    """Binomial MLE of p = clip(a + b * r, 0, 1) from ``y`` events in ``n`` trials at ``r``.

    This is the abandonment model; with ``fit_slope`` False the slope stays at ``slope0``.
    Probabilities are kept a hair inside (0, 1) so one observation the line calls impossible
    cannot make the likelihood -inf; the bounds keep ``a`` a probability and ``b`` within the
    world's range.
    """
    eps = 1e-9

    def line(theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta[0] + (theta[1] if fit_slope else slope0) * r)

    def nll(theta: np.ndarray) -> float:
        p = np.clip(line(theta), eps, 1.0 - eps)
        return float(-(y @ np.log(p) + (n - y) @ np.log1p(-p)))

    def grad(theta: np.ndarray) -> np.ndarray:
        raw = line(theta)
        p = np.clip(raw, eps, 1.0 - eps)
        # where the line is clipped the likelihood is flat in the parameters
        d = np.where((raw > eps) & (raw < 1.0 - eps), y / p - (n - y) / (1.0 - p), 0.0)
        return np.array([-d.sum(), -(d @ r)] if fit_slope else [-d.sum()])

    at_zero = r == 0
    rate0 = float(y[at_zero].sum() / n[at_zero].sum()) if at_zero.any() else 0.1
    start = np.array([min(max(rate0, 0.01), 0.9), *([1.0] if fit_slope else [])])
    bounds = [(1e-6, 1.0 - 1e-6), *([(0.0, 50.0)] if fit_slope else [])]
    res = optimize.minimize(nll, start, jac=grad, method="L-BFGS-B", bounds=bounds)
    p = np.clip(line(res.x), eps, 1.0 - eps)
    # observed information of a binomial in p, chained through the linear p(a, b)
    w = y / p**2 + (n - y) / (1.0 - p) ** 2
    design = np.stack([np.ones_like(r), r], axis=1) if fit_slope else np.ones((len(r), 1))
    cov = inverse((design * w[:, None]).T @ design)
    return Mle(coef=np.asarray(res.x), cov=cov, loglik=-float(res.fun), converged=bool(res.success))
