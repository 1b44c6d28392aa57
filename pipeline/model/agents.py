"""Every kind of candidate behind one interface: a trained stable-baselines3 model (PPO, DQN) or
the exact solver's policy of the refit world (`pipeline.model.planner.Planner`).

- `agent_policy`: the simulator's `Policy` of an agent (evaluation, off-policy estimates);
- `served_policy`: what the pricing service evaluates per request (`ServedPolicy`);
- `algo_name`: the name the registry and the tables give it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from pipeline.model.algos import algorithm_of
from pipeline.model.artifacts import AgentPolicy
from pipeline.model.numpy_policy import export_policy
from pipeline.model.planner import PLANNER, Planner, PlannerPolicy
from sim.policies import Policy
from sim.world import World

Agent = BaseAlgorithm | Planner


class ServedPolicy(Protocol):
    """The service's view of a champion: greedy actions and probabilities from observations of
    SKUs (their index in the champion's world)."""

    @property
    def stochastic(self) -> bool: ...

    def actions(self, obs: np.ndarray, sku: np.ndarray | None) -> np.ndarray: ...

    def probs(self, obs: np.ndarray, sku: np.ndarray | None) -> np.ndarray: ...


def algo_name(agent: Agent) -> str:
    return PLANNER if isinstance(agent, Planner) else algorithm_of(agent).name


def agent_policy(agent: Agent, name: str, world: World | None = None) -> Policy:
    """The simulator's policy of ``agent`` (greedy in evaluation, as in service). Given the
    ``world`` a network was trained in, it observes every market as the service serves it
    (`sim.served.Lens`); a planner decodes its own world's state from any observation."""
    if isinstance(agent, Planner):
        return PlannerPolicy(agent, name)
    return AgentPolicy(agent, name, world)


def served_policy(agent: Agent) -> ServedPolicy:
    """Networks as plain numpy (`pipeline.model.numpy_policy`); a planner as its table."""
    if isinstance(agent, Planner):
        return agent
    return export_policy(agent)
