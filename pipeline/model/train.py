"""Train a pricing agent with stable-baselines3 in the vectorised market."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from pipeline.model.algos import ALGOS
from pipeline.settings import Settings
from sim.vec_env import MarketVecEnv
from sim.world import World


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults reach the DP optimum's neighbourhood on the default world."""

    algo: str = "ppo"
    timesteps: int = 1_000_000  # SKU-steps of experience
    seed: int = 0
    n_envs: int = 64  # SKU-episodes stepped side by side
    learning_rate: float = 3e-4
    lr_schedule: str = "constant"  # or "linear": decays to 0 at the end of training
    n_steps: int = 168  # PPO: steps per env per rollout (a week, hourly)
    batch_size: int = 2688  # PPO minibatch
    n_epochs: int = 10
    gamma: float = 1.0  # the season has a fixed end and the time left is observed
    gae_lambda: float = 0.95
    ent_coef: float = 0.003
    clip_range: float = 0.2
    net_arch: tuple[int, ...] = (128, 128)
    torch_threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {', '.join(ALGOS)} (got {self.algo!r})")
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1 (got {self.timesteps})")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(
                f"lr_schedule must be 'constant' or 'linear' (got {self.lr_schedule!r})"
            )
        if self.n_envs < 1:
            raise ValueError(f"n_envs must be >= 1 (got {self.n_envs})")

    @classmethod
    def for_night(cls, settings: Settings, algo: str) -> TrainConfig:
        """The night's configuration of ``algo``: its budget, seed and envs from the settings."""
        return cls(
            algo=algo,
            timesteps=ALGOS[algo].budget(settings),
            seed=settings.train_seed,
            n_envs=settings.n_envs,
        )

    def as_params(self) -> dict[str, Any]:
        d = asdict(self)
        d["net_arch"] = list(self.net_arch)
        return d


class _Progress(BaseCallback):
    def __init__(self, total: int, report: Callable[[int, int, float | None], None]) -> None:
        super().__init__()
        self.total = total
        self.report = report
        self.profits: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "profit" in info:
                self.profits.append(info["profit"])
        return True

    def _on_rollout_end(self) -> None:
        recent = float(np.mean(self.profits[-256:])) if self.profits else None
        self.report(self.num_timesteps, self.total, recent)


class WarmStartError(ValueError):
    """The weights to start from do not fit the algorithm or the world."""


def warm_start(model: BaseAlgorithm, start: BaseAlgorithm) -> None:
    """Copy ``start``'s network weights into ``model`` (fine-tuning from the champion): same
    algorithm, same observation and action sizes, same layers, or `WarmStartError` says why."""
    if type(model) is not type(start):
        raise WarmStartError(
            f"cannot start a {type(model).__name__} from a {type(start).__name__}'s weights"
        )
    mine, theirs = model.policy.state_dict(), start.policy.state_dict()
    shapes = {k: tuple(v.shape) for k, v in mine.items()}
    given = {k: tuple(v.shape) for k, v in theirs.items()}
    if shapes != given:
        diff = sorted(k for k in shapes.keys() | given.keys() if shapes.get(k) != given.get(k))
        raise WarmStartError(
            f"the starting weights do not fit this world's network ({', '.join(diff[:3])} "
            "differ: another observation size, action set or architecture)"
        )
    model.policy.load_state_dict(theirs)


def train_agent(
    world: World,
    config: TrainConfig,
    progress: Callable[[int, int, float | None], None] | None = None,
    start: BaseAlgorithm | None = None,
) -> BaseAlgorithm:
    """Train ``config.algo`` (see `pipeline.model.algos`); returns the SB3 model. Seeded end to
    end. ``start``: a trained model whose weights the training starts from (`warm_start`)."""
    torch.set_num_threads(config.torch_threads)
    venv = MarketVecEnv(world, num_envs=config.n_envs, seed=config.seed, reward_scale="sku")
    lr0 = config.learning_rate
    learning_rate: float | Callable[[float], float] = (
        (lambda remaining: lr0 * remaining) if config.lr_schedule == "linear" else lr0
    )
    model = ALGOS[config.algo].build(venv, config, learning_rate)
    if start is not None:
        warm_start(model, start)
    callback = _Progress(config.timesteps, progress) if progress else None
    model.learn(total_timesteps=config.timesteps, callback=callback)
    return model
