"""The model-based candidate: the exact optimum of the refit simulator, as a servable policy.

The refit world is fitted from the logs alone, so the policy the exact solver (`sim.dp`) computes
on it is a legitimate candidate: `plan` solves it, and the `Planner` prices from an observation by
decoding it to the solver's state (`sim.market.observed_state`: step, units on hand, price level,
competitor state) and looking the action up in the table. The table is saved as a plain ``.npz``
(no pickle: loaded with ``allow_pickle=False``) with its SHA-256 beside it, like every model.

Where the refit world is too large for the solver (`dp_tractable`), there is no planner: the
model-free agents remain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.model.artifacts import ModelIntegrityError, file_sha256, verify_sha256
from sim.dp import solve_world
from sim.market import Market, observed_state
from sim.params import MarketParams
from sim.policies import Policy, one_hot
from sim.world import World

PLANNER = "planner"  # its name among the algorithms a night trains (`contracts.ALGORITHMS`)

# Above this many solver states (summed over SKUs) the exact optimum is not solved.
DP_MAX_STATES = 50_000_000


def dp_states(params: MarketParams) -> int:
    p = params
    return int((p.capacity + 1).sum()) * p.T * p.L * p.C


def dp_tractable(params: MarketParams) -> bool:
    """Whether the exact optimum is small enough to solve (see `DP_MAX_STATES`)."""
    return dp_states(params) <= DP_MAX_STATES


@dataclass(frozen=True)
class Planner:
    """The solver's policy of one world: ``table[k, t, inventory, level, competitor]`` is the
    action, ``value0[k]`` the expected profit of SKU k in that world."""

    table: np.ndarray  # (K, T, I, L, C) int8, padded with 0 above each SKU's capacity
    value0: np.ndarray  # (K,) float
    params: MarketParams
    stochastic = False  # one action per state: probabilities are one-hot

    @property
    def world_sha256(self) -> str:
        return self.params.world.fingerprint()

    def actions(self, obs: np.ndarray, sku: np.ndarray | None) -> np.ndarray:
        """The solver's action for each observation row of SKU index ``sku``."""
        if sku is None:
            raise ValueError("the planner prices per SKU: give each row's SKU index")
        t, inventory, level, comp = observed_state(self.params, obs, sku)
        k = np.asarray(sku, dtype=np.int64)
        return np.asarray(self.table[k, t, inventory, level, comp], dtype=np.int64)

    def probs(self, obs: np.ndarray, sku: np.ndarray | None) -> np.ndarray:
        return one_hot(self.actions(obs, sku), self.params.A)


def plan(world: World) -> Planner:
    """Solve ``world`` exactly (`sim.dp.solve_world`); raises ValueError when it is too large."""
    params = world.compile()
    if not dp_tractable(params):
        raise ValueError(
            f"{world.name}: {dp_states(params):,} solver states exceed {DP_MAX_STATES:,}; "
            "train a model-free agent instead"
        )
    solutions = solve_world(params)
    inv_max = max(s.policy.shape[1] for s in solutions)
    table = np.zeros((params.K, params.T, inv_max, params.L, params.C), dtype=np.int8)
    for k, s in enumerate(solutions):
        table[k, :, : s.policy.shape[1]] = s.policy
    return Planner(table, np.array([s.value0 for s in solutions]), params)


def save_planner(planner: Planner, path: str | Path) -> str:
    """Write the table (``.npz``, no pickled objects) and its ``.sha256`` sidecar; returns the
    hash."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez_compressed(
            f,
            table=planner.table,
            value0=planner.value0,
            world_sha256=np.array(planner.world_sha256),
        )
    digest = file_sha256(p)
    Path(f"{p}.sha256").write_text(f"{digest}  {p.name}\n")
    return digest


def load_planner(path: str | Path, world: World, expected_sha256: str | None = None) -> Planner:
    """Verify the file's hash, then read the table (never unpickling) and check it was solved
    for ``world`` and fits its shape."""
    verify_sha256(path, expected_sha256)
    with np.load(path, allow_pickle=False) as data:
        table, value0 = data["table"], data["value0"]
        solved_for = str(data["world_sha256"])
    params = world.compile()
    if solved_for != world.fingerprint():
        raise ModelIntegrityError(
            f"{path} was solved for world {solved_for[:12]}…, not {world.fingerprint()[:12]}… "
            f"({world.name}); the planner and its world must come from the same version"
        )
    want = (params.K, params.T, int(params.capacity.max()) + 1, params.L, params.C)
    if table.shape != want or table.dtype != np.int8:
        raise ModelIntegrityError(f"{path}: table of shape {table.shape}, expected {want}")
    return Planner(table, value0, params)


class PlannerPolicy(Policy):
    """A `Planner` behind the simulator's policy interface: it prices from the observation,
    exactly as the service does, with the SKU index the market holds."""

    def __init__(self, planner: Planner, name: str = PLANNER) -> None:
        self.planner = planner
        self.name = name
        self._ids = [s.id for s in planner.params.world.skus]
        self._remap: tuple[int, np.ndarray] | None = None

    def _skus(self, market: Market) -> np.ndarray:
        """The market's SKU indices in the planner's own catalogue (a champion planned on an
        earlier night prices tonight's world by SKU id)."""
        world = market.p.world
        if self._remap is None or self._remap[0] != id(world):
            ids = [s.id for s in world.skus]
            if ids == self._ids:
                remap = np.arange(len(ids))
            else:
                mine = {sku: k for k, sku in enumerate(self._ids)}
                missing = [sku for sku in ids if sku not in mine]
                if missing:
                    raise ValueError(
                        f"{self.name} was planned without SKU(s) {', '.join(missing[:3])}: it "
                        "cannot price this catalogue; plan the world that holds them"
                    )
                remap = np.array([mine[sku] for sku in ids], dtype=np.int64)
            self._remap = (id(world), remap)
        return self._remap[1][market.sku]

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        return self.planner.probs(obs, self._skus(market))
