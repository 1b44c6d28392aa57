"""A trained agent's network as plain numpy: what the pricing service evaluates per request.

SB3's ``model.predict`` converts every observation to a torch tensor and back and walks several
Python layers of checks; for a 128x128 MLP that overhead dwarfs the arithmetic. `NumpyPolicy`
holds the same weights (float32) and computes the same logits (PPO's action head) or Q-values
(DQN) with two matrix products; its greedy action is SB3's ``predict(deterministic=True)``
(tested on recorded observations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from pipeline.model.algos import algorithm_of


def _relu(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum(x, np.float32(0.0)))


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.tanh(x))


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"Tanh": _tanh, "ReLU": _relu}


@dataclass(frozen=True)
class NumpyPolicy:
    """Layers of (weights, bias), an activation between them, and what the outputs mean."""

    weights: tuple[np.ndarray, ...]  # (in, out) each, float32
    biases: tuple[np.ndarray, ...]
    activation: str  # "Tanh" or "ReLU"
    stochastic: bool  # outputs are logits of action probabilities (else Q-values: greedy)

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """Logits or Q-values, shape (N, A)."""
        act = _ACTIVATIONS[self.activation]
        x = np.asarray(obs, dtype=np.float32)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if i < last:
                x = act(x)
        return x

    def actions(self, obs: np.ndarray, sku: np.ndarray | None = None) -> np.ndarray:
        """The greedy action per row: SB3's ``predict(obs, deterministic=True)``. ``sku`` (the
        rows' SKU indices, which a network does not need) keeps the interface of every served
        policy (`pipeline.model.agents.ServedPolicy`)."""
        return np.asarray(self.scores(obs).argmax(axis=1), dtype=np.int64)

    def probs(self, obs: np.ndarray, sku: np.ndarray | None = None) -> np.ndarray:
        """Action probabilities: the softmax of the logits (PPO), one-hot greedy (DQN)."""
        s = self.scores(obs).astype(np.float64)
        if not self.stochastic:
            out = np.zeros_like(s)
            out[np.arange(len(s)), s.argmax(axis=1)] = 1.0
            return out
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))


def _linear_stack(modules: Any) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    weights, biases, activation = [], [], "Tanh"
    for layer in modules:
        name = type(layer).__name__
        if name == "Linear":
            weights.append(layer.weight.detach().cpu().numpy().T.astype(np.float32).copy())
            biases.append(layer.bias.detach().cpu().numpy().astype(np.float32).copy())
        elif name in _ACTIVATIONS:
            activation = name
        else:
            raise ValueError(f"cannot export a {name} layer to numpy")
    return weights, biases, activation


def export_policy(model: BaseAlgorithm) -> NumpyPolicy:
    """The network of a trained PPO (actor: MLP, then the action head) or DQN (Q-network)."""
    algo = algorithm_of(model)
    policy: Any = model.policy
    if algo.stochastic:
        weights, biases, activation = _linear_stack(policy.mlp_extractor.policy_net)
        head_w, head_b, _ = _linear_stack([policy.action_net])
        weights += head_w
        biases += head_b
    else:
        weights, biases, activation = _linear_stack(policy.q_net.q_net)
    return NumpyPolicy(tuple(weights), tuple(biases), activation, algo.stochastic)
