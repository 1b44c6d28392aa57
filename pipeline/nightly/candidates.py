"""Step 5 of the night: the candidates, built in the refit simulator and registered once per
date and algorithm — the exact plan of the refit world (`pipeline.model.planner`, where the
solver can run) and the model-free agents (`pipeline.model.algos`), from scratch, from the
champion's weights or imitating tonight's plan (``PRICING_TRAIN_INIT``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import mlflow
from stable_baselines3.common.base_class import BaseAlgorithm

from pipeline.model.agents import Agent, algo_name
from pipeline.model.algos import ALGOS
from pipeline.model.planner import DP_MAX_STATES, PLANNER, Planner, dp_states, dp_tractable, plan
from pipeline.model.train import Teacher, TrainConfig, WarmStartError, train_agent
from pipeline.nightly.results import NightStopped, Trained
from pipeline.nightly.steps import TrainProgress, fitted_world, night_lake
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from pipeline.tracking import experiment, git_commit
from sim.world import World

log = logging.getLogger("pricing.nightly")


def train_candidate(
    settings: Settings,
    date: dt.date,
    algo: str,
    lineage: dict[str, str],
    progress: TrainProgress | None = None,
) -> Trained:
    """Train one algorithm in the refit simulator (the planner: solve it) and register it, once
    per date and algo. The planner is skipped, with the reason, where the solver cannot run."""
    lake = night_lake(settings, date)
    registry = Registry(settings, lake)
    existing = registry.find_version(date.isoformat(), algo)
    if existing is not None:
        return Trained(algo=algo, version=str(existing.version), reused=True)
    world = fitted_world(lake, date)
    if algo == PLANNER and not dp_tractable(world.compile()):
        why = (
            f"the refit world has {dp_states(world.compile()):,} solver states (limit "
            f"{DP_MAX_STATES:,}): no exact plan tonight, the model-free agents remain"
        )
        log.info("planner skipped: %s", why)
        return Trained(algo=algo, version=None, reused=False, skipped=why)
    start = _starting_point(settings, registry, algo, world)
    run_name = f"{algo}__{date.isoformat()}__seed{settings.train_seed}"
    with experiment(settings), mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({"data/logical_date": date.isoformat(), "sim/world": world.name})
        mlflow.set_tags({"logical_date": date.isoformat(), "algo": algo, "step": "train"})
        model: Agent
        if algo == PLANNER:
            planner = plan(world)
            mlflow.log_metric("plan/expected_profit", float(planner.value0.sum()))
            model = planner
        else:
            model = _train_model_free(settings, world, algo, start, progress)
        tags = {
            **lineage,
            "logical_date": date.isoformat(),
            "git_commit": git_commit(),
            "mlflow_run_id": run.info.run_id,
            "init": start.init,
        }
        mv = registry.register_candidate(model, world, algo, tags)
    return Trained(
        algo=algo, version=str(mv.version), reused=False, run_id=run.info.run_id, init=start.init
    )


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where a model-free night starts, and the tag that says so."""

    init: str  # scratch | champion:v<N> | imitate:planner (with the reason when it fell back)
    weights: BaseAlgorithm | None = None  # the champion's, to fine-tune
    teacher: Teacher | None = None  # the plan the actor imitates first

    @property
    def warm(self) -> bool:
        return self.weights is not None or self.teacher is not None


def _starting_point(settings: Settings, registry: Registry, algo: str, world: World) -> _Start:
    """Where a model-free night starts (``PRICING_TRAIN_INIT``): ``scratch``; ``champion``: the
    champion's weights when it is a model of the same algorithm that fits tonight's world;
    ``planner``: the PPO actor first imitates the exact plan of tonight's refit world (where the
    solver can run). Anything else trains from scratch with the full budget and says why."""
    if algo == PLANNER or settings.train_init == "scratch":
        return _Start("scratch")
    params = world.compile()
    if settings.train_init == "planner":
        if not ALGOS[algo].stochastic:
            return _Start(f"scratch ({algo} has no actor to imitate the plan)")
        if not dp_tractable(params):
            return _Start("scratch (the refit world is too large to plan)")
        return _Start("imitate:planner", teacher=plan(world).actions)
    version = registry.champion_version()
    if version is None:
        return _Start("scratch (no champion to fine-tune)")
    champion = registry.load(version).model
    if isinstance(champion, Planner) or algo_name(champion) != algo:
        return _Start(f"scratch (the champion v{version} is no {algo})")
    obs_shape = getattr(champion.observation_space, "shape", None)
    n_actions = getattr(champion.action_space, "n", None)
    if obs_shape != (params.obs_dim,) or n_actions != params.A:
        return _Start(f"scratch (the champion v{version} was trained on another observation)")
    return _Start(f"champion:v{version}", weights=champion)


def _train_model_free(
    settings: Settings,
    world: World,
    algo: str,
    start: _Start,
    progress: TrainProgress | None,
) -> BaseAlgorithm:
    config = TrainConfig.for_night(settings, algo)
    if start.warm:  # a warm start: a fraction of a scratch night's budget
        budget = max(1, round(config.timesteps * settings.finetune_fraction))
        config = dataclasses.replace(config, timesteps=budget)
    mlflow.log_params({f"train/{k}": v for k, v in config.as_params().items()})

    def report(done: int, total: int, profit: float | None) -> None:
        if profit is not None:
            mlflow.log_metric("train/episode_profit", profit, step=done)
        if progress is not None:
            progress(done, total, profit)

    try:
        return train_agent(world, config, report, start=start.weights, teacher=start.teacher)
    except WarmStartError as err:
        raise NightStopped(
            "train",
            f"fine-tuning {algo} from the champion is not possible: {err}. Set "
            "PRICING_TRAIN_INIT=scratch for this night.",
        ) from None
