"""Behavioural cloning of the logged decisions: the baseline that learns what the shop already
does, without a simulator.

The field report names it as the alternative to reinforcement learning: fit a classifier from the
state the logging policy saw to the action it took, and price with its most probable action. It
uses the same decision units as off-policy evaluation (`pipeline.model.logged`): the state is
rebuilt as the logging policy saw it, and the observation is the simulator's (`sim.market.observe`),
so the clone can be evaluated beside every other policy. A small MLP, trained with cross-entropy
on CPU in seconds; units are weighted by nothing (it imitates, exploration included).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.model.logged import logged_market
from pipeline.model.numpy_policy import NumpyPolicy
from sim.market import Market
from sim.policies import Policy
from sim.world import World

BC = "bc"  # its name in evaluation tables


class ClonedPolicy(Policy):
    """The clone's action probabilities (softmax of a small network over the observation)."""

    def __init__(self, net: NumpyPolicy, n_units: int, name: str = BC) -> None:
        self.net = net
        self.n_units = n_units  # decision units it was fitted on
        self.name = name

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        return self.net.probs(obs)


def fit_cloned_policy(
    units: pd.DataFrame,
    world: World,
    seed: int = 0,
    steps: int = 3000,
    hidden: tuple[int, ...] = (128, 128),
) -> ClonedPolicy:
    """Fit the clone on decision units (`pipeline.model.logged.decision_units`) of ``world``."""
    if len(units) < 50:
        raise ValueError(
            f"behavioural cloning needs logged decisions: {len(units)} decision units is too few "
            "(at least 50)"
        )
    params = world.compile()
    obs = logged_market(units, world).observe()
    actions = units["action"].to_numpy(dtype=np.int64)
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = obs.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.Tanh()]
        width = h
    layers.append(torch.nn.Linear(width, params.A))
    net = torch.nn.Sequential(*layers)
    x = torch.as_tensor(obs, dtype=torch.float32)
    y = torch.as_tensor(actions.copy())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):  # minibatches of 256 drawn with replacement
        idx = torch.as_tensor(rng.integers(0, len(x), 256))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = tuple(m.weight.detach().numpy().T.astype(np.float32).copy() for m in linear)
    biases = tuple(m.bias.detach().numpy().astype(np.float32).copy() for m in linear)
    return ClonedPolicy(NumpyPolicy(weights, biases, "Tanh", stochastic=True), len(units))
