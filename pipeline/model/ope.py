"""Off-policy evaluation (OPE) of pricing policies on the logged decisions.

The decisions feed holds one row per visitor, but the logging policy acts once per SKU and step (an
hour by default): every visitor of that SKU-hour saw the same price, drawn with the same propensity.
So the unit of evaluation is the *decision unit*, one SKU-hour:

1. `pipeline.model.logged` groups the log into decision units (`decision_units`), with the
   hour's realised reward and the state the logging policy acted in, and asks any policy what it
   would have done there (`logged_market`, `target_probs`);
2. `snips` and `doubly_robust` estimate the mean reward per decision of the target policy from the
   importance weights ``target(a | x) / propensity``; `ope_compare` estimates the paired difference
   of two targets, and `ope_agrees` checks it against the simulator's verdict where the logs give
   enough support (effective sample size).

Limitations, read before trusting a number:

- **One-step estimates.** Each estimate is the expected reward of the target's action *in the states
  the logging policy visited*. The effect of the action on later states (stock sold today is not for
  sale tomorrow; a price cut now changes the level the next move starts from) is ignored, as is the
  different state distribution the target would visit. A policy that wins by planning over the season
  (the DP optimum, a trained agent saving stock for the evening peak) can look worse here than in
  the simulator, and a greedy one better. That is why the promotion gate only asks for agreement in
  sign, and only where the support is large.
- **Only hours with visitors are logged.** A SKU-hour with no visitor leaves no row, so its decision
  (and any price-change penalty it paid) is missing. The estimand is the mean reward over SKU-hours
  with at least one visitor. Their stock, price and recent-sales state are still rebuilt exactly,
  because an empty hour sells nothing.
- **No clearance bonus.** The end-of-season bonus depends on the whole season, not on one decision,
  so it is left out of the per-decision reward.
- **Stateful targets** (the Thompson-sampling bandit) are asked in a freshly reset state: their
  within-season learning is not replayed.
- **Independence.** The confidence intervals treat decision units as independent; consecutive hours
  of a SKU are correlated, so the intervals are somewhat optimistic.
- **Noisy hours.** An hour's few purchases are mostly chance, so even a perfect reward model
  explains only part of the reward's variance (about a quarter on the tiny test world) and the
  doubly robust estimate is not always tighter than SNIPS. Both are kept; the gate reads their
  effective sample size before their sign.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.model.logged import catalogue_free_params
from sim.stats import Z95
from sim.world import World


@dataclass(frozen=True)
class OPEEstimate:
    """An off-policy estimate of a target policy's mean reward per decision (currency per SKU-step).

    Attributes:
        estimator: ``"snips"`` or ``"dr"``.
        value: the estimate.
        ci95: normal-approximation 95 % confidence interval.
        ess: effective sample size of the importance weights, ``(Σw)² / Σw²`` (at most ``n``).
        n: number of decision units.
        logging_value: the logging policy's on-policy mean reward per decision, for context.
    """

    estimator: str
    value: float
    ci95: tuple[float, float]
    ess: float
    n: int
    logging_value: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ci95": list(self.ci95)}


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²``: how many on-policy decisions the weighted
    sample is worth (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=float)
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def _checked(units: pd.DataFrame, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rewards, actions, target probabilities) after checking the shapes agree."""
    n = len(units)
    if n == 0:
        raise ValueError("no decision units: nothing to evaluate")
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"target probabilities must have shape ({n}, A) (got {p.shape})")
    a = units["action"].to_numpy(dtype=np.int64)
    if a.max() >= p.shape[1]:
        raise ValueError(f"a logged action is out of range for {p.shape[1]} actions")
    return units["reward"].to_numpy(dtype=float), a, p


def importance_weights(units: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    """``target(a | x) / propensity`` of each logged decision."""
    _, a, p = _checked(units, probs)
    return np.asarray(p[np.arange(len(a)), a] / units["propensity"].to_numpy(dtype=float))


def _se(influence: np.ndarray) -> float:
    n = len(influence)
    return float(np.sqrt(np.sum(influence**2) / (n * (n - 1)))) if n > 1 else 0.0


def _snips_parts(units: pd.DataFrame, probs: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """SNIPS value, its influence function per unit (mean zero) and the weights."""
    r, _, _ = _checked(units, probs)
    w = importance_weights(units, probs)
    if w.sum() <= 0:
        return float("nan"), np.full(len(r), np.nan), w
    value = float(np.sum(w * r) / np.sum(w))
    return value, w * (r - value) / w.mean(), w


def snips(units: pd.DataFrame, target_probs: np.ndarray) -> OPEEstimate:
    """Self-normalised importance sampling of the target's mean reward per decision.

    ``Σ w r / Σ w`` with ``w = target(a | x) / propensity``. Self-normalising trades a small bias for
    a much lower variance than plain importance sampling and keeps the estimate within the range of
    the rewards. The interval is the delta-method normal interval. A target that gives no mass to any
    logged action has no support: the value is NaN and the ESS 0.

    Args:
        units: decision units from `decision_units`.
        target_probs: the target's action probabilities per unit, shape (N, A) (`target_probs`).
    """
    value, infl, w = _snips_parts(units, target_probs)
    se = _se(infl)
    return OPEEstimate(
        estimator="snips",
        value=value,
        ci95=(value - Z95 * se, value + Z95 * se),
        ess=effective_sample_size(w),
        n=len(units),
        logging_value=float(units["reward"].mean()),
    )


class RewardModel(Protocol):
    """Predicts the expected reward of every action in every unit's state, for the doubly robust
    estimator."""

    def fit(self, units: pd.DataFrame) -> RewardModel:
        """Return a model fitted on ``units`` (``self`` is left unchanged)."""
        ...

    def predict(self, units: pd.DataFrame) -> np.ndarray:
        """Expected reward of each action in each unit's state, shape (N, A)."""
        ...


@dataclass(frozen=True)
class RidgeRewardModel:
    """A pooled ridge regression of the reward per visitor, shared by the whole catalogue.

    The reward of an action is known in part: the price-change penalty follows from the move, and a
    SKU with no stock sells nothing and loses no cart. The rest is modelled per visitor, in reference
    prices, as a linear function of the unit margin at the new price times features of that price
    (log price / reference, log price / competitor, their squares and product, weekend, stock per
    visitor), plus terms for the price rise that drives abandonment. Predictions are scaled by the
    hour's visitor count: visitors arrive before they see the price, so their number does not depend
    on the action, and conditioning on it takes the traffic's share out of the reward's variance.

    Attributes:
        world: the world whose ladder and reward weights the units follow.
        alpha: ridge penalty, in visitors.
        coef: fitted coefficients (None until `fit`).
    """

    world: World
    alpha: float = 1.0
    coef: np.ndarray | None = None

    @staticmethod
    def _features(units: pd.DataFrame, ratio_new: np.ndarray, ratio_old: np.ndarray) -> np.ndarray:
        base = units["base_price"].to_numpy(dtype=float)
        comp_rel = units["competitor_price"].to_numpy(dtype=float) / base
        z = np.log(ratio_new)
        g = np.log(ratio_new / comp_rel)
        margin = ratio_new - units["unit_cost"].to_numpy(dtype=float) / base
        weekend = (pd.to_datetime(units["decision_ts"], utc=True).dt.day_of_week >= 5).to_numpy()
        stock = units["inventory"].to_numpy(dtype=float)
        cover = np.minimum(1.0, stock / units["views"].to_numpy(dtype=float))
        rise = np.maximum(0.0, np.log(ratio_new / ratio_old))
        cols = [
            margin,
            margin * z,
            margin * g,
            margin * z * z,
            margin * g * g,
            margin * z * g,
            margin * weekend,
            margin * cover,
            np.ones_like(z),
            z,
            g,
            rise,
        ]
        return np.stack(cols, axis=1)

    def fit(self, units: pd.DataFrame) -> RidgeRewardModel:
        """Fit on the logged actions of ``units`` with stock; returns a fitted copy."""
        params = catalogue_free_params(self.world)
        u = units[units["inventory"].to_numpy() > 0]
        before = u["level_before"].to_numpy(dtype=np.int64)
        new = np.clip(before + params.moves[u["action"].to_numpy(dtype=np.int64)], 0, params.L - 1)
        x = self._features(u, params.ratios[new], params.ratios[before])
        base = u["base_price"].to_numpy(dtype=float)
        change = self.world.reward.price_change_penalty * base * (new != before)
        views = u["views"].to_numpy(dtype=float)
        y = (u["reward"].to_numpy(dtype=float) + change) / (views * base)
        # weighted by visitors: an hour with more visitors measures the per-visitor reward better
        xw = x * views[:, None]
        gram = x.T @ xw + self.alpha * np.eye(x.shape[1])
        return dataclasses.replace(self, coef=np.linalg.solve(gram, xw.T @ y))

    def predict(self, units: pd.DataFrame) -> np.ndarray:
        """Expected reward of each action in each unit's state, shape (N, A)."""
        if self.coef is None:
            raise ValueError("RidgeRewardModel.predict before fit: call fit(units) first")
        params = catalogue_free_params(self.world)
        before = units["level_before"].to_numpy(dtype=np.int64)
        new = np.clip(before[:, None] + params.moves[None, :], 0, params.L - 1)
        base = units["base_price"].to_numpy(dtype=float)
        scale = units["views"].to_numpy(dtype=float) * base
        stocked = units["inventory"].to_numpy() > 0
        out = np.empty(new.shape)
        for a in range(params.A):
            x = self._features(units, params.ratios[new[:, a]], params.ratios[before])
            out[:, a] = np.where(stocked, (x @ self.coef) * scale, 0.0)
        change = self.world.reward.price_change_penalty * base[:, None] * (new != before[:, None])
        return np.asarray(out - change)


def cross_fit(
    reward_model: RewardModel, units: pd.DataFrame, folds: int = 2, seed: int = 0
) -> np.ndarray:
    """Out-of-fold reward predictions, shape (N, A): each unit is predicted by a model that did not
    see it, so the model's overfit does not leak into the doubly robust correction."""
    n = len(units)
    if folds < 1 or folds > n:
        raise ValueError(f"folds must be in 1..{n} (got {folds})")
    if folds == 1:
        return np.asarray(reward_model.fit(units).predict(units), dtype=float)
    fold = np.random.default_rng(seed).permutation(n) % folds
    out: np.ndarray | None = None
    for f in range(folds):
        test = fold == f
        pred = np.asarray(
            reward_model.fit(units[~test]).predict(units[test].reset_index(drop=True)),
            dtype=float,
        )
        if out is None:
            out = np.empty((n, pred.shape[1]))
        out[test] = pred
    assert out is not None
    return out


def _dr_terms(units: pd.DataFrame, probs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-unit doubly robust scores: model value of the target plus the weighted residual."""
    r, a, p = _checked(units, probs)
    if q.shape != p.shape:
        raise ValueError(f"reward predictions have shape {q.shape}, expected {p.shape}")
    w = importance_weights(units, probs)
    idx = np.arange(len(a))
    return np.asarray((p * q).sum(axis=1) + w * (r - q[idx, a]))


def doubly_robust(
    units: pd.DataFrame,
    target_probs: np.ndarray,
    reward_model: RewardModel,
    folds: int = 2,
    seed: int = 0,
) -> OPEEstimate:
    """Doubly robust estimate of the target's mean reward per decision.

    ``mean( Σ_a target(a | x) q̂(x, a) + w (r − q̂(x, a_logged)) )``: the reward model's value of the
    target, corrected by the importance-weighted residual on the logged action. Unbiased if either the
    propensities or the model are right, and less noisy than importance sampling when the model
    explains much of the reward. The model is cross-fitted (``folds`` random folds, ``seed``).

    Args:
        units: decision units from `decision_units`.
        target_probs: the target's action probabilities per unit, shape (N, A).
        reward_model: e.g. ``RidgeRewardModel(world)``; fitted here, per fold.
        folds: cross-fitting folds (1 fits and predicts in-sample).
        seed: seeds the fold assignment.
    """
    q = cross_fit(reward_model, units, folds, seed)
    psi = _dr_terms(units, target_probs, q)
    value = float(psi.mean())
    se = _se(psi - value)
    return OPEEstimate(
        estimator="dr",
        value=value,
        ci95=(value - Z95 * se, value + Z95 * se),
        ess=effective_sample_size(importance_weights(units, target_probs)),
        n=len(units),
        logging_value=float(units["reward"].mean()),
    )


def ope_compare(
    units: pd.DataFrame,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    reward_model: RewardModel | None = None,
    folds: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Estimated difference ``a − b`` of the mean reward per decision, paired on the same units.

    SNIPS by default, doubly robust when a ``reward_model`` is given (one cross-fit shared by both
    targets). The interval is a normal interval on the paired per-unit influence terms, so what the
    two estimates share cancels.

    Returns:
        JSON-ready ``{"estimator", "diff", "ci95": [lo, hi], "value_a", "value_b", "ess_a",
        "ess_b", "min_ess", "n", "logging_value"}``; ``min_ess`` is the support of the comparison.
    """
    n = len(units)
    if reward_model is None:
        va, ia, wa = _snips_parts(units, probs_a)
        vb, ib, wb = _snips_parts(units, probs_b)
        estimator = "snips"
        diff_terms = ia - ib
    else:
        q = cross_fit(reward_model, units, folds, seed)
        psi_a, psi_b = _dr_terms(units, probs_a, q), _dr_terms(units, probs_b, q)
        va, vb = float(psi_a.mean()), float(psi_b.mean())
        wa, wb = importance_weights(units, probs_a), importance_weights(units, probs_b)
        estimator = "dr"
        diff_terms = (psi_a - psi_b) - (va - vb)
    diff = va - vb
    se = _se(diff_terms)
    ess_a, ess_b = effective_sample_size(wa), effective_sample_size(wb)
    return {
        "estimator": estimator,
        "diff": diff,
        "ci95": [diff - Z95 * se, diff + Z95 * se],
        "value_a": va,
        "value_b": vb,
        "ess_a": ess_a,
        "ess_b": ess_b,
        "min_ess": min(ess_a, ess_b),
        "n": n,
        "logging_value": float(units["reward"].mean()),
    }


def ope_agrees(compare: Mapping[str, Any], sim_diff: float, min_ess: float) -> bool | None:
    """Does the off-policy comparison agree in sign with the simulator's difference?

    Args:
        compare: a result of `ope_compare`.
        sim_diff: the simulator's estimate of the same difference ``a − b``.
        min_ess: the least effective sample size at which the logs count as support.

    Returns:
        None when the logs give too little support (``min_ess`` not reached or no estimate);
        False when the off-policy interval excludes zero on the other side of ``sim_diff`` (a
        ``sim_diff`` of 0 is on the positive side: an interval entirely below zero contradicts
        it); True otherwise (an interval that straddles zero contradicts nothing). The promotion
        gate uses this rule.
    """
    if not compare["min_ess"] >= min_ess or not np.isfinite(compare["diff"]):
        return None
    lo, hi = compare["ci95"]
    # A simulator difference of exactly 0 counts with the positive side: what the gate asks is
    # whether the candidate is at least as good, and logs that are confidently worse say no.
    if sim_diff >= 0:
        return bool(hi >= 0)
    return bool(lo <= 0)
