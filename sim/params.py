"""A world compiled to arrays (`MarketParams`): what the gymnasium env, the vectorised market and
the exact solver all read, so the three can never disagree about the dynamics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.world import Pricing, World


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


@dataclass(frozen=True)
class MarketParams:
    """Everything the dynamics need, as arrays. Shapes: K SKUs, T steps, S segments, L price levels,
    C competitor states, A actions."""

    world: World
    T: int
    L: int
    A: int
    C: int
    S: int
    K: int
    ratios: np.ndarray  # (L,) price / reference
    moves: np.ndarray  # (A,) ladder steps per action
    initial_level: int
    hour: np.ndarray  # (T,) hour of day at each step
    weekday: np.ndarray  # (T,) weekday at each step
    traffic: np.ndarray  # (T,) seasonal multiplier of arrivals, mean 1 over a week
    seg_mix: np.ndarray  # (T, S) segment shares at each step
    ref_price: np.ndarray  # (K,)
    unit_cost: np.ndarray  # (K,)
    capacity: np.ndarray  # (K,) int
    initial_inventory: np.ndarray  # (K,) int
    arrivals: np.ndarray  # (K, T) expected visitors per step
    buy_prob: np.ndarray  # (K, S, L, C) purchase (cart) probability of one visitor
    cart_rate: np.ndarray  # (K, T, L, C) expected carts per step
    abandon: np.ndarray  # (L, L) abandon probability moving from level i to level j
    comp_ratio: np.ndarray  # (K, C) competitor price / our reference
    comp_P: np.ndarray  # (C, C) transition matrix
    comp_cdf: np.ndarray  # (C, C) row-wise cumulative
    comp_initial: int
    restock: np.ndarray  # (K, T) units arriving at the start of step t (t >= 1)
    clear_max_left: np.ndarray  # (K,) int: the bonus is paid if end inventory <= this; -1 = none
    clear_bonus: np.ndarray  # (K,) currency
    dispersion: np.ndarray  # (K,) per-step over-dispersion of demand (0 = Poisson), see _dispersion
    change_cost: np.ndarray  # (K,) currency per price change
    abandon_cost: float
    margin_weight: float
    velocity_alpha: float
    remaining_traffic: np.ndarray  # (K, T+1) expected visitors from step t to the end
    future_restock: np.ndarray  # (K, T+1) units still to arrive after step t

    @classmethod
    def from_world(cls, w: World) -> MarketParams:
        ladder = _ladder(w.pricing)
        clock = _clock(w)
        demand = _demand(w, ladder["ratios"], clock)
        stock = _stock(w, clock["T"])
        rw = w.reward
        ref = np.array([s.ref_price for s in w.skus])
        arrivals = demand["arrivals"]
        K = len(w.skus)
        remaining_traffic = np.concatenate(
            [np.cumsum(arrivals[:, ::-1], axis=1)[:, ::-1], np.zeros((K, 1))], axis=1
        )
        return cls(
            world=w,
            **ladder,
            **clock,
            **demand,
            **stock,
            S=len(w.segments),
            K=K,
            ref_price=ref,
            unit_cost=np.array([s.unit_cost for s in w.skus]),
            change_cost=rw.price_change_penalty * ref,
            abandon_cost=rw.abandonment_penalty,
            margin_weight=rw.margin_weight,
            velocity_alpha=float(1.0 - 0.5 ** (1.0 / w.observation.velocity_halflife)),
            remaining_traffic=remaining_traffic,
        )

    @property
    def obs_dim(self) -> int:
        return N_FIXED_OBS + self.S


N_FIXED_OBS = 16


def _ladder(pr: Pricing) -> dict[str, Any]:
    """The price ladder: its ratios to the reference price, each action's move in steps."""
    L = round((pr.price_max - pr.price_min) / pr.price_step) + 1
    return {
        "L": L,
        "ratios": pr.price_min + pr.price_step * np.arange(L),
        "moves": np.array([round(a / pr.price_step) for a in pr.actions], dtype=np.int64),
        "A": len(pr.actions),
        "initial_level": round((pr.initial_price - pr.price_min) / pr.price_step),
    }


def _clock(w: World) -> dict[str, Any]:
    """Hour and weekday of each step, and the seasonal multiplier of arrivals (mean 1 a week)."""
    T = w.horizon.steps
    hours_from_start = w.horizon.start_hour + w.horizon.step_hours * np.arange(T)
    hour = hours_from_start % 24
    weekday = (w.horizon.start_weekday + hours_from_start // 24) % 7
    hod = np.asarray(w.seasonality.hour_of_day, dtype=float)
    dow = np.asarray(w.seasonality.day_of_week, dtype=float)
    traffic = (hod / hod.mean())[hour] * (dow / dow.mean())[weekday]
    return {"T": T, "hour": hour, "weekday": weekday, "traffic": traffic}


def _demand(w: World, ratios: np.ndarray, clock: dict[str, Any]) -> dict[str, Any]:
    """Segment mix, purchase probabilities, arrivals, abandonment and the competitor's chain."""
    seg = w.segments
    share = np.array([s.share for s in seg])
    wk = np.array([s.weekend_multiplier for s in seg])
    weekend = (clock["weekday"] >= 5)[:, None]
    mix = np.where(weekend, share * wk, share)
    seg_mix = mix / mix.sum(axis=1, keepdims=True)

    skus = w.skus
    ref = np.array([s.ref_price for s in skus])
    comp_ref = np.array([s.competitor_reference for s in skus])
    comp_states = np.array([c.price_ratio for c in w.competitor.states])
    comp_ratio = comp_ref[:, None] * comp_states[None, :] / ref[:, None]  # (K, C)

    intent = np.array([s.intent for s in seg])
    scale = np.array([s.price_sensitivity_scale for s in skus])
    beta = scale[:, None] * np.array([s.price_sensitivity for s in seg])[None, :]  # (K, S)
    gamma = np.array([s.competitor_sensitivity for s in seg])
    log_p = np.log(ratios)  # (L,)
    log_gap = log_p[None, :, None] - np.log(comp_ratio)[:, None, :]  # (K, L, C)
    logit = (
        intent[None, :, None, None]
        - beta[:, :, None, None] * log_p[None, None, :, None]
        - gamma[None, :, None, None] * log_gap[:, None, :, :]
    )
    buy_prob = _sigmoid(logit)  # (K, S, L, C)

    rate = np.array([s.arrival_rate for s in skus]) * w.horizon.step_hours
    arrivals = rate[:, None] * clock["traffic"][None, :]  # (K, T)
    cart_rate = np.einsum("kt,ts,kslc->ktlc", arrivals, seg_mix, buy_prob)

    ab = w.abandonment
    rise = np.maximum(0.0, log_p[None, :] - log_p[:, None])  # (from, to)
    abandon = np.clip(ab.base + ab.per_price_increase * rise, 0.0, 1.0)

    P = np.array(w.competitor.transition, dtype=float)
    P = P / P.sum(axis=1, keepdims=True)
    comp_cdf = np.cumsum(P, axis=1)
    comp_cdf[:, -1] = 1.0
    return {
        "C": len(comp_states),
        "dispersion": _dispersion(w, clock),
        "seg_mix": seg_mix,
        "arrivals": arrivals,
        "buy_prob": buy_prob,
        "cart_rate": cart_rate,
        "abandon": abandon,
        "comp_ratio": comp_ratio,
        "comp_P": P,
        "comp_cdf": comp_cdf,
        "comp_initial": w.competitor.initial_state,
    }


def _dispersion(w: World, clock: dict[str, Any]) -> np.ndarray:
    """Per-step over-dispersion that gives a day's units the variance ``demand_dispersion`` asks for.

    Each step's visitors are Poisson with a rate scaled by an independent Gamma(1/a, a) draw (mean
    1), so a step's units are negative binomial with variance m + a m^2. Over a day of steps with
    means m_h, the variance is M + a sum(m_h^2) for M = sum(m_h): a = alpha M^2 / sum(m_h^2) gives
    the day's units the variance M + alpha M^2 of a daily negative binomial. Independent steps keep
    the state Markov, so the exact solver stays exact (`sim.dp`).
    """
    alpha = np.array([s.demand_dispersion for s in w.skus])
    if not alpha.any():
        return np.zeros(len(w.skus))
    per_day = max(1, 24 // w.horizon.step_hours)
    hod = np.asarray(w.seasonality.hour_of_day, dtype=float)
    hours = (w.horizon.start_hour + w.horizon.step_hours * np.arange(per_day)) % 24
    m = hod[hours]
    return np.asarray(alpha * m.sum() ** 2 / (m**2).sum())


def _stock(w: World, T: int) -> dict[str, Any]:
    """Capacity, initial stock, scheduled restocks and the clearance targets."""
    skus = w.skus
    K = len(skus)
    restock = np.zeros((K, T), dtype=np.int64)
    for k, s in enumerate(skus):
        if s.restock_every:
            restock[k, s.restock_every :: s.restock_every] = s.restock_qty
    capacity = np.array([s.capacity for s in skus], dtype=np.int64)
    target = np.array([s.clearance_target for s in skus])
    clear_max_left = np.where(target > 0, np.floor((1.0 - target) * capacity + 1e-9), -1).astype(
        np.int64
    )
    future = np.concatenate([np.cumsum(restock[:, ::-1], axis=1)[:, ::-1], np.zeros((K, 1))], 1)
    ref = np.array([s.ref_price for s in skus])
    return {
        "clear_bonus": np.where(target > 0, w.reward.clearance_bonus * ref, 0.0),
        "capacity": capacity,
        "initial_inventory": np.array([s.initial_inventory for s in skus], dtype=np.int64),
        "restock": restock,
        "clear_max_left": clear_max_left,
        # future_restock[t] = units arriving at steps > t
        "future_restock": np.concatenate([future[:, 1:], np.zeros((K, 1))], axis=1),
    }
