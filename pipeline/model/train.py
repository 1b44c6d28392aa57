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


Teacher = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (observations, SKU indices) -> actions


def imitate(
    model: BaseAlgorithm,
    venv: MarketVecEnv,
    teacher: Teacher,
    episodes: int = 16,
    epochs: int = 10,
    epsilon: float = 0.2,
    seed: int = 0,
) -> float:
    """Behavioural cloning of ``teacher`` (actions from observations and SKU indices, e.g. the
    exact plan of the same world) into a PPO actor before PPO trains it further.

    The teacher prices ``episodes`` rounds of the vectorised market with ``epsilon`` random moves
    (so the states off its own path are seen too); the actor (shared layers and action head) is
    fitted to the teacher's action by cross-entropy. Returns the final agreement on the states."""
    policy: Any = model.policy
    rng = np.random.default_rng(seed)
    obs_all: list[np.ndarray] = []
    act_all: list[np.ndarray] = []
    obs = np.asarray(venv.reset())
    for _ in range(episodes * venv.params.T):
        want = teacher(obs, venv.market.sku)
        obs_all.append(obs)
        act_all.append(want)
        explore = rng.random(len(want)) < epsilon
        acts = np.where(explore, rng.integers(0, venv.params.A, len(want)), want)
        obs = np.asarray(venv.step(acts)[0])
    x = torch.as_tensor(np.concatenate(obs_all), dtype=torch.float32)
    y = torch.as_tensor(np.concatenate(act_all), dtype=torch.int64)
    actor = [
        *policy.mlp_extractor.policy_net.parameters(),
        *policy.action_net.parameters(),
        *policy.features_extractor.parameters(),
    ]
    opt = torch.optim.Adam(actor, lr=1e-3)
    order_rng = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=order_rng)
        for i in range(0, len(x), 512):
            idx = order[i : i + 512]
            logits = policy.action_net(policy.mlp_extractor.forward_actor(x[idx]))
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    with torch.no_grad():
        logits = policy.action_net(policy.mlp_extractor.forward_actor(x))
        return float((logits.argmax(dim=1) == y).float().mean())


def train_agent(
    world: World,
    config: TrainConfig,
    progress: Callable[[int, int, float | None], None] | None = None,
    start: BaseAlgorithm | None = None,
    teacher: Teacher | None = None,
) -> BaseAlgorithm:
    """Train ``config.algo`` (see `pipeline.model.algos`); returns the SB3 model. Seeded end to
    end. ``start``: a trained model whose weights the training starts from (`warm_start`);
    ``teacher``: a policy (observation, SKU index → action) the PPO actor imitates first
    (`imitate`)."""
    torch.set_num_threads(config.torch_threads)
    venv = MarketVecEnv(world, num_envs=config.n_envs, seed=config.seed, reward_scale="sku")
    lr0 = config.learning_rate
    learning_rate: float | Callable[[float], float] = (
        (lambda remaining: lr0 * remaining) if config.lr_schedule == "linear" else lr0
    )
    model = ALGOS[config.algo].build(venv, config, learning_rate)
    if start is not None:
        warm_start(model, start)
    if teacher is not None:
        if not ALGOS[config.algo].stochastic:
            raise ValueError("imitation warm-starts a PPO actor; DQN has none")
        imitate(model, venv, teacher, seed=config.seed)
        venv.reset()
    callback = _Progress(config.timesteps, progress) if progress else None
    model.learn(total_timesteps=config.timesteps, callback=callback)
    return model
