"""The exact optimum: backward induction over (step, inventory, price level, competitor state).

Why this state is Markov: visitors, carts and abandons depend only on the step (seasonality and
segment mix are functions of time), the price level before and after the move, and the competitor's
state; restocks are scheduled; the clearance bonus depends on the final inventory. The observation's
extra features (velocities, recent views and carts) are summaries of the past that do not change the
dynamics, so no policy that sees them can beat this optimum. The default world is DP-tractable as it
stands: nothing in it is left out of the solver.

Demand in a step is Poisson: carts are a Poisson thinning of Poisson visitors, and carts that are not
abandoned are a thinning of those, so units sold are ``min(Poisson(mean), inventory)`` with
``mean = cart_rate(t, new level, competitor) x (1 − abandon(old level, new level))``. Where a SKU's
demand is over-dispersed, the step's visitor rate carries an independent Gamma shock, and the thinned
counts are negative binomial with the same mean (`demand_dist`).

The cost per SKU is O(T x C x L x I^2) for I inventory levels, done as one batched matrix product per
step: about a second for the default world's SKUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from sim.params import MarketParams


@dataclass(frozen=True)
class SkuSolution:
    """Optimal values and policy of one SKU. Arrays are indexed [t, inventory, level, competitor]."""

    sku: int
    value: np.ndarray  # (T + 1, I, L, C) optimal expected profit-to-go
    policy: np.ndarray  # (T, I, L, C) int8 optimal action
    myopic: np.ndarray  # (T, I, L, C) int8 action maximising the expected reward of this step only
    value0: float  # expected profit from the initial state


def _pair_groups(params: MarketParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every (old level, action): the new level. Also, per new level, the padded list of the
    (old level, action) pairs that land on it, so one batched matmul serves them all."""
    L, A = params.L, params.A
    new = np.clip(np.arange(L)[:, None] + params.moves[None, :], 0, L - 1)  # (L, A)
    members: list[list[int]] = [[] for _ in range(L)]
    for lo in range(L):
        for a in range(A):
            members[new[lo, a]].append(lo * A + a)
    m = max(len(x) for x in members)
    group = np.full((L, m), -1, dtype=np.int64)
    for ln, xs in enumerate(members):
        group[ln, : len(xs)] = xs
    return new, group, group >= 0


def solve_sku(params: MarketParams, k: int) -> SkuSolution:
    """Backward induction for SKU ``k``: the optimal policy, its value, and the myopic policy."""
    p = params
    T, L, A, C = p.T, p.L, p.A, p.C
    cap = int(p.capacity[k])
    alpha = float(p.dispersion[k])
    n_inv = cap + 1
    new, group, valid = _pair_groups(p)
    gsafe = np.where(valid, group, 0)
    inv = np.arange(n_inv)
    # idx[i, d] = max(i - d, 0): inventory left after demand d from i units
    left = np.maximum(inv[:, None] - inv[None, :], 0)
    price = p.ref_price[k] * p.ratios  # (L,)
    unit_margin = price - p.unit_cost[k]
    change = (new != np.arange(L)[:, None]).astype(float)  # (L, A)
    ab = p.abandon[np.arange(L)[:, None], new]  # (L, A)
    d = np.arange(n_inv)

    V = np.zeros((T + 1, n_inv, L, C))
    final_ok = (inv <= p.clear_max_left[k]) if p.clear_max_left[k] >= 0 else np.zeros(n_inv, bool)
    V[T] = (p.clear_bonus[k] * final_ok)[:, None, None]
    policy = np.zeros((T, n_inv, L, C), dtype=np.int8)
    myopic = np.zeros((T, n_inv, L, C), dtype=np.int8)

    for t in range(T - 1, -1, -1):
        carts = p.cart_rate[k, t]  # (L, C) by new level
        mean = carts[new] * (1.0 - ab)[:, :, None]  # (L, A, C)
        pmf, sf = demand_dist(d[None, None, None, :], mean[..., None], alpha)  # (L, A, C, n_inv)
        pmf[..., n_inv - 1] = (
            sf[..., n_inv - 2] if n_inv > 1 else 1.0
        )  # fold the tail: P(D >= n_inv - 1)
        # expected units sold with i units on hand: sum_{j < i} P(D > j)
        exp_sold = np.concatenate([np.zeros((L, A, C, 1)), np.cumsum(sf, axis=-1)[..., :-1]], -1)
        exp_abandons = (carts[new] * ab[:, :, None])[..., None] * (inv > 0)  # (L, A, C, n_inv)
        reward = (
            p.margin_weight * exp_sold * unit_margin[new][:, :, None, None]
            - p.abandon_cost * exp_abandons
            - p.change_cost[k] * change[:, :, None, None]
        )  # (L, A, C, n_inv)

        # continuation: after sales the restock of step t+1, then the competitor moves
        nxt = V[t + 1]  # (n_inv, L, C')
        if t + 1 < T and p.restock[k, t + 1]:
            nxt = nxt[np.minimum(inv + p.restock[k, t + 1], cap)]
        W = np.einsum("ilx,cx->cli", nxt, p.comp_P)  # (C, L_new, n_inv)
        MW = W[:, :, left]  # (C, L_new, I_now, D)
        # pmf regrouped by new level: (C, L_new, D, m)
        flat = pmf.reshape(L * A, C, n_inv)
        P_g = flat[gsafe].transpose(2, 0, 3, 1) * valid[None, :, None, :]
        EV_g = np.matmul(MW, P_g)  # (C, L_new, n_inv, m)
        EV = np.zeros((L * A, C, n_inv))
        ln_idx, slot = np.nonzero(valid)
        EV[group[ln_idx, slot]] = EV_g[:, ln_idx, :, slot]
        Q = reward + EV.reshape(L, A, C, n_inv)  # (L, A, C, n_inv)
        best = Q.argmax(axis=1)  # (L, C, n_inv)
        V[t] = np.take_along_axis(Q, best[:, None], axis=1)[:, 0].transpose(2, 0, 1)
        policy[t] = best.transpose(2, 0, 1)
        myopic[t] = reward.argmax(axis=1).transpose(2, 0, 1)

    i0 = int(p.initial_inventory[k])
    return SkuSolution(
        sku=k,
        value=V,
        policy=policy,
        myopic=myopic,
        value0=float(V[0, i0, p.initial_level, p.comp_initial]),
    )


def demand_dist(d: np.ndarray, mean: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """P(D = d) and P(D > d) of a step's units: Poisson with ``mean``, or negative binomial with
    variance mean + alpha mean^2 where the SKU's demand is over-dispersed.

    The formulas of ``scipy.stats.poisson`` / ``nbinom`` called as ufuncs: the solvers call this
    once per step, where the distribution objects' argument checks cost more than the numbers.
    """
    k = np.asarray(d, dtype=float)
    mu = np.asarray(mean, dtype=float)
    if alpha <= 0:
        return np.exp(special.xlogy(k, mu) - mu - special.gammaln(k + 1)), special.pdtrc(k, mu)
    n = 1.0 / alpha
    prob = n / (n + mu)
    log_pmf = (
        special.gammaln(k + n)
        - special.gammaln(n)
        - special.gammaln(k + 1)
        + n * np.log(prob)
        + special.xlog1py(k, -prob)
    )
    return np.exp(log_pmf), special.betainc(k + 1, n, 1.0 - prob)


def demand_isf(tail: float, mean: float, alpha: float) -> float:
    """The count the step's demand exceeds with probability ``tail``."""
    if alpha <= 0:
        return float(stats.poisson.isf(tail, mean))
    n = 1.0 / alpha
    return float(stats.nbinom.isf(tail, n, n / (n + mean)))


_SOLUTIONS: dict[str, list[SkuSolution]] = {}


def solve_world(params: MarketParams) -> list[SkuSolution]:
    """`solve_sku` for every SKU, cached per world fingerprint for the life of the process."""
    key = params.world.fingerprint()
    if key not in _SOLUTIONS:
        _SOLUTIONS.clear()  # keep one world's tables in memory at a time
        _SOLUTIONS[key] = [solve_sku(params, k) for k in range(params.K)]
    return _SOLUTIONS[key]


def evaluate_price_path(params: MarketParams, k: int, levels: np.ndarray) -> float:
    """Exact expected profit of a fixed, state-independent path of price levels (one per step).

    The start level is the world's initial level, so the first move of the path counts as a change.
    """
    p = params
    T, L, C = p.T, p.L, p.C
    cap = int(p.capacity[k])
    alpha = float(p.dispersion[k])
    n_inv = cap + 1
    inv = np.arange(n_inv)
    left = np.maximum(inv[:, None] - inv[None, :], 0)
    levels = np.asarray(levels, dtype=np.int64)
    if levels.shape != (T,) or levels.min() < 0 or levels.max() >= L:
        raise ValueError(f"levels must be {T} ladder indices in 0..{L - 1}")
    prev = np.concatenate([[p.initial_level], levels[:-1]])
    d = np.arange(n_inv)
    V = np.zeros((n_inv, C))
    if p.clear_max_left[k] >= 0:
        V += (p.clear_bonus[k] * (inv <= p.clear_max_left[k]))[:, None]
    for t in range(T - 1, -1, -1):
        lo, ln = prev[t], levels[t]
        ab = p.abandon[lo, ln]
        carts = p.cart_rate[k, t, ln]  # (C,)
        mean = carts * (1.0 - ab)
        pmf, sf = demand_dist(d[None, :], mean[:, None], alpha)  # (C, n_inv)
        pmf[:, n_inv - 1] = sf[:, n_inv - 2] if n_inv > 1 else 1.0
        exp_sold = np.concatenate([np.zeros((C, 1)), np.cumsum(sf, axis=1)[:, :-1]], axis=1)
        unit_margin = p.ref_price[k] * p.ratios[ln] - p.unit_cost[k]
        reward = (
            p.margin_weight * exp_sold * unit_margin
            - p.abandon_cost * (carts * ab)[:, None] * (inv > 0)[None, :]
            - p.change_cost[k] * float(lo != ln)
        )
        nxt = V
        if t + 1 < T and p.restock[k, t + 1]:
            nxt = V[np.minimum(inv + p.restock[k, t + 1], cap)]
        W = (
            nxt @ p.comp_P.T
        )  # (n_inv, C): expectation over the competitor's next state, per current
        EV = np.einsum("cd,cid->ci", pmf, W.T[:, left])
        V = (reward + EV).T
    return float(V[int(p.initial_inventory[k]), p.comp_initial])


def static_path(params: MarketParams, target: int) -> np.ndarray:
    """Price levels over time when moving as fast as the actions allow to ``target`` and holding."""
    return np.asarray(static_paths(params)[target])


def static_paths(params: MarketParams) -> np.ndarray:
    """`static_path` of every target level at once, shape (L, T): at each step the move that gets
    closest to the target without overshooting, the smaller one on ties."""
    p = params
    by_size = np.asarray(sorted(p.moves, key=abs), dtype=np.int64)  # stable: ties keep their order
    targets = np.arange(p.L)
    paths = np.empty((p.L, p.T), dtype=np.int64)
    level = np.full(p.L, p.initial_level, dtype=np.int64)
    for t in range(p.T):
        gap = targets - level
        move = by_size[np.argmin(np.abs(gap[:, None] - by_size[None, :]), axis=1)]
        level = np.clip(level + move, 0, p.L - 1)
        paths[:, t] = level
    return paths


def static_values(params: MarketParams, k: int, tail: float = 1e-15) -> np.ndarray:
    """Exact expected profit of every fixed target level at once (shape (L,)), as
    `evaluate_price_path` of each `static_path`, batched over the targets.

    Demand beyond the point where its Poisson tail is below ``tail`` is folded into the last
    counted value, which changes values by at most ``tail`` x the largest value-to-go; that keeps
    the cost at O(T x L x C x I x D) with D the demand range instead of the inventory range.
    """
    p = params
    T, L, C = p.T, p.L, p.C
    cap = int(p.capacity[k])
    alpha = float(p.dispersion[k])
    n_inv = cap + 1
    inv = np.arange(n_inv)
    levels = static_paths(p)  # (paths, T)
    prev = np.concatenate([np.full((L, 1), p.initial_level), levels[:, :-1]], axis=1)
    V = np.zeros((L, n_inv, C))
    if p.clear_max_left[k] >= 0:
        V += (p.clear_bonus[k] * (inv <= p.clear_max_left[k]))[None, :, None]
    for t in range(T - 1, -1, -1):
        lo, ln = prev[:, t], levels[:, t]
        ab = p.abandon[lo, ln]  # (paths,)
        carts = p.cart_rate[k, t][ln]  # (paths, C)
        mean = carts * (1.0 - ab)[:, None]
        n_d = int(min(n_inv, demand_isf(tail, max(float(mean.max()), 1e-12), alpha) + 2))
        d = inv[:n_d]
        pmf, sf = demand_dist(d[None, None, :], mean[..., None], alpha)  # (paths, C, D)
        # demand counted up to n_d - 1 (the tail folded there): P(D > j) is 0 from n_d - 1 on
        if n_d > 1:
            pmf[..., n_d - 1] = sf[..., n_d - 2]
        else:
            pmf[..., 0] = 1.0
        sf[..., n_d - 1 :] = 0.0
        exp_sold = np.zeros((L, C, n_inv))  # E[min(D, i)] = sum_{j < i} P(D > j)
        exp_sold[..., 1 : n_d + 1] = np.cumsum(sf, axis=2)[..., : n_inv - 1]
        exp_sold[..., n_d + 1 :] = exp_sold[..., n_d : n_d + 1]
        unit_margin = p.ref_price[k] * p.ratios[ln] - p.unit_cost[k]  # (paths,)
        reward = (
            p.margin_weight * exp_sold * unit_margin[:, None, None]
            - p.abandon_cost * (carts * ab[:, None])[..., None] * (inv > 0)[None, None, :]
            - p.change_cost[k] * (lo != ln).astype(float)[:, None, None]
        )  # (paths, C, I)
        nxt = V
        if t + 1 < T and p.restock[k, t + 1]:
            nxt = V[:, np.minimum(inv + p.restock[k, t + 1], cap)]
        W = (nxt @ p.comp_P.T).transpose(0, 2, 1)  # (paths, C, I): over the next competitor state
        left = np.maximum(inv[:, None] - d[None, :], 0)  # (I, D)
        EV = np.einsum("pcd,pcid->pci", pmf, W[:, :, left])
        V = (reward + EV).transpose(0, 2, 1)
    return np.asarray(V[:, int(p.initial_inventory[k]), p.comp_initial])


def best_static_level(params: MarketParams, k: int) -> tuple[int, float]:
    """The fixed price level (reached as fast as possible from the start) with the best expected
    profit, found by exact evaluation of every level."""
    values = static_values(params, k)
    best = int(np.argmax(values))
    return best, float(values[best])


def expected_step_reward(
    params: MarketParams,
    k: np.ndarray,
    t: np.ndarray,
    inventory: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
    comp: np.ndarray,
    traffic: np.ndarray | None = None,
) -> np.ndarray:
    """The simulator's expected reward of one step in each given state (SKU ``k``, step ``t``,
    units on hand, level before and after the move, competitor state), the clearance bonus left
    out: the solver's own step reward (`solve_sku`), row by row. ``traffic`` (default 1) is the
    share of the step's visitors the price is shown to (an A/B arm's, per visitor)."""
    p = params
    k, t, inv = (np.asarray(x, dtype=np.int64) for x in (k, t, inventory))
    old, new, comp = (np.asarray(x, dtype=np.int64) for x in (old, new, comp))
    carts = p.cart_rate[k, t, new, comp]
    if traffic is not None:
        carts = carts * np.asarray(traffic, dtype=float)
    ab = p.abandon[old, new]
    mean = carts * (1.0 - ab)
    j = np.arange(max(int(inv.max(initial=0)), 1))
    exp_sold = np.zeros(len(k))
    for alpha in np.unique(p.dispersion[k]):
        rows = np.flatnonzero(p.dispersion[k] == alpha)
        _, sf = demand_dist(j[None, :], mean[rows, None], float(alpha))
        exp_sold[rows] = (sf * (j[None, :] < inv[rows, None])).sum(axis=1)  # sum_{j<inv} P(D>j)
    unit_margin = p.ref_price[k] * p.ratios[new] - p.unit_cost[k]
    return np.asarray(
        p.margin_weight * exp_sold * unit_margin
        - p.abandon_cost * carts * ab * (inv > 0)
        - p.change_cost[k] * (new != old)
    )
