"""`MarketVecEnv`: N SKU-episodes stepped in one numpy call, as a stable-baselines3 `VecEnv`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sim.market import Market, StepOutcome, make_streams
from sim.world import World, default_world


class MarketVecEnv(VecEnv):
    """The dynamics of `PricingEnv`, vectorised: SB3 takes it directly (`PPO("MlpPolicy", venv)`).

    Args:
        world: the market (default: the bundled default world).
        num_envs: how many SKU-episodes run side by side.
        seed: seeds SKU draws and both random streams; with ``num_envs=1`` the trajectory is identical
            to `PricingEnv` reset with the same seed.
        skus: fixed SKU index per slot (re-used at every auto-reset); ``None`` draws uniformly.
        reward_scale: ``"none"`` returns profit in currency; ``"sku"`` divides each SKU's reward by
            its reference price x mean visitors per step, so that a catalogue of cheap and dear items
            trains evenly (evaluation always reports currency).
    """

    def __init__(
        self,
        world: World | None = None,
        num_envs: int = 64,
        seed: int | None = None,
        skus: Sequence[int] | np.ndarray | None = None,
        reward_scale: str = "none",
    ) -> None:
        self.world = world if world is not None else default_world()
        self.params = self.world.compile()
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        if reward_scale not in ("none", "sku"):
            raise ValueError(f"reward_scale must be 'none' or 'sku' (got {reward_scale!r})")
        self.market = Market(self.params, num_envs)
        self.render_mode = None
        observation_space = spaces.Box(self.market.obs_low, self.market.obs_high, dtype=np.float32)
        super().__init__(num_envs, observation_space, spaces.Discrete(self.params.A))
        self.fixed_skus: np.ndarray | None = None
        if skus is not None:
            fixed = np.asarray(skus, dtype=np.int64)
            if fixed.shape != (num_envs,) or fixed.min() < 0 or fixed.max() >= self.params.K:
                raise ValueError(
                    f"skus must hold {num_envs} indices in 0..{self.params.K - 1} (got {fixed})"
                )
            self.fixed_skus = fixed
        if reward_scale == "sku":
            per_step = self.params.arrivals.mean(axis=1)
            self._scale = 1.0 / (self.params.ref_price * per_step)
        else:
            self._scale = np.ones(self.params.K)
        self._seed = seed
        self._rng: np.random.Generator | None = None
        self._exo: np.random.Generator | None = None
        self._endo: np.random.Generator | None = None
        self._actions = np.zeros(num_envs, dtype=np.int64)
        self._returns = np.zeros(num_envs)
        self.last_outcome: StepOutcome | None = None

    # --- SB3 VecEnv API -------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        if self._rng is None or self._seed is not None:
            self._rng = np.random.default_rng(self._seed)
            self._exo, self._endo = make_streams(self._rng)
            self._seed = None  # the next reset() without seed() continues the streams
        idx = np.arange(self.num_envs)
        self.market.reset(idx, self._draw_skus(idx))
        self._returns[:] = 0.0
        return self.market.observe()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seed = seed
        self._rng = None
        return [seed] * self.num_envs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        if self._exo is None or self._endo is None:
            raise RuntimeError("call reset() before step()")
        out = self.market.step(self._actions, self._exo, self._endo)
        self.last_outcome = out
        self._returns += out.reward
        rewards = (out.reward * self._scale[out.sku]).astype(np.float32)
        dones = out.done.copy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            idx = np.flatnonzero(dones)
            terminal = self.market.observe()
            for i in idx:
                infos[i]["terminal_observation"] = terminal[i]
                infos[i]["TimeLimit.truncated"] = False
                infos[i]["profit"] = float(self._returns[i])
            self._returns[idx] = 0.0
            self.market.reset(idx, self._draw_skus(idx))
        return self.market.observe(), rewards, dones, infos

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    # --- helpers --------------------------------------------------------------------------------
    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices

    def _draw_skus(self, idx: np.ndarray) -> np.ndarray:
        if self.fixed_skus is not None:
            return np.asarray(self.fixed_skus[idx])
        assert self._rng is not None
        # one draw per slot, in slot order: with num_envs=1 this matches PricingEnv.reset
        return np.array([self._rng.integers(self.params.K) for _ in idx], dtype=np.int64)
