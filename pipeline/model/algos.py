"""The algorithms a night can train: one table (`ALGOS`) of their stable-baselines3 class, the
setting that holds their nightly budget, and how each is built from a `TrainConfig`.

To add an algorithm: a builder here, a row in `ALGOS`, its name in
`pipeline.contracts.ALGORITHMS` and a budget field in `pipeline.settings.Settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from pipeline.settings import Settings
from sim.vec_env import MarketVecEnv

if TYPE_CHECKING:
    from pipeline.model.train import TrainConfig

LearningRate = float | Callable[[float], float]


def _ppo(venv: MarketVecEnv, config: TrainConfig, learning_rate: LearningRate) -> BaseAlgorithm:
    return PPO(
        "MlpPolicy",
        venv,
        learning_rate=learning_rate,
        n_steps=config.n_steps,
        # at least four minibatches per epoch, so small runs still take enough gradient steps
        batch_size=min(config.batch_size, max(64, config.n_steps * config.n_envs // 4)),
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        ent_coef=config.ent_coef,
        clip_range=config.clip_range,
        policy_kwargs={"net_arch": list(config.net_arch)},
        seed=config.seed,
        device="cpu",
        verbose=0,
        **config.extra,
    )


def _dqn(venv: MarketVecEnv, config: TrainConfig, learning_rate: LearningRate) -> BaseAlgorithm:
    return DQN(
        "MlpPolicy",
        venv,
        learning_rate=learning_rate,
        gamma=config.gamma if config.gamma < 1 else 0.999,
        buffer_size=200_000,
        learning_starts=min(10_000, config.timesteps // 10),
        batch_size=256,
        train_freq=4,
        gradient_steps=max(1, config.n_envs // 4),
        target_update_interval=2_000,
        exploration_fraction=0.3,
        exploration_final_eps=0.02,
        policy_kwargs={"net_arch": list(config.net_arch)},
        seed=config.seed,
        device="cpu",
        verbose=0,
        **config.extra,
    )


@dataclass(frozen=True)
class Algorithm:
    name: str
    sb3: type[BaseAlgorithm]
    budget_setting: str  # the Settings field with its nightly budget, in SKU-steps
    stochastic: bool  # the policy gives action probabilities (else Q-values: greedy)
    build: Callable[[MarketVecEnv, TrainConfig, LearningRate], BaseAlgorithm]

    def budget(self, settings: Settings) -> int:
        return int(getattr(settings, self.budget_setting))


ALGOS: dict[str, Algorithm] = {
    "ppo": Algorithm("ppo", PPO, "ppo_timesteps", stochastic=True, build=_ppo),
    "dqn": Algorithm("dqn", DQN, "dqn_timesteps", stochastic=False, build=_dqn),
}


def algorithm_of(model: BaseAlgorithm) -> Algorithm:
    """The table's row for a trained model."""
    for algo in ALGOS.values():
        if isinstance(model, algo.sb3):
            return algo
    raise ValueError(f"{type(model).__name__} is none of {', '.join(ALGOS)}")
