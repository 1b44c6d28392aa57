"""Saving and loading trained agents, with the SHA-256 checked before anything is unpickled.

An SB3 ``.zip`` holds pickled objects, so loading an untrusted file runs its code. Every model this
project saves gets a ``<file>.sha256`` beside it; `load_agent` refuses a file whose hash is missing
or does not match, before SB3 opens it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from pipeline.errors import PricingError
from pipeline.model.algos import ALGOS, algorithm_of
from sim.market import Market
from sim.policies import Policy
from sim.served import Lens
from sim.world import World


class ModelIntegrityError(PricingError, RuntimeError):
    """The model file's SHA-256 is missing or differs from the recorded one."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_agent(model: BaseAlgorithm, path: str | Path) -> str:
    """Save the model and its ``.sha256`` sidecar; returns the hash."""
    p = Path(path)
    if p.suffix != ".zip":
        p = p.with_suffix(".zip")
    p.parent.mkdir(parents=True, exist_ok=True)
    model.save(p)
    digest = file_sha256(p)
    Path(f"{p}.sha256").write_text(f"{digest}  {p.name}\n")
    return digest


def verify_sha256(path: str | Path, expected: str | None = None) -> str:
    """Check a model file against ``expected`` or its sidecar; returns the hash."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file {p} not found")
    if expected is None:
        sidecar = Path(f"{p}.sha256")
        if not sidecar.is_file():
            raise ModelIntegrityError(
                f"{p} has no {sidecar.name}; only models saved by `pricing train` (or with a "
                f"recorded hash) are loaded. If you trust the file: sha256sum {p} > {sidecar}"
            )
        expected = sidecar.read_text().split()[0]
    actual = file_sha256(p)
    if actual != expected:
        raise ModelIntegrityError(
            f"{p}: SHA-256 {actual[:12]}… does not match the recorded {expected[:12]}…; "
            "the file was changed or corrupted and will not be loaded"
        )
    return actual


def load_agent(path: str | Path, expected_sha256: str | None = None) -> BaseAlgorithm:
    """Verify, then load a model of any algorithm in `ALGOS`."""
    verify_sha256(path, expected_sha256)
    last: Exception | None = None
    for algo in ALGOS.values():
        try:
            model: BaseAlgorithm = algo.sb3.load(path, device="cpu")
            return model
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            last = err
    names = " or ".join(a.upper() for a in ALGOS)
    raise ValueError(f"{path} is not a {names} model saved by stable-baselines3: {last}")


class AgentPolicy(Policy):
    """A trained SB3 agent behind the baseline policy interface (reads the observation). Given
    the ``world`` it was trained in, it observes any market as the service would serve it: with
    its own world's arrays (`sim.served.Lens`)."""

    def __init__(
        self, model: BaseAlgorithm, name: str = "agent", world: World | None = None
    ) -> None:
        self.model = model
        self.name = name
        self.stochastic = algorithm_of(model).stochastic
        self.lens = Lens(world) if world is not None else None

    def probs(self, market: Market, obs: np.ndarray) -> np.ndarray:
        if self.lens is not None:
            obs = self.lens.observe(market)
        policy: Any = self.model.policy
        with torch.no_grad():
            t = torch.as_tensor(obs, dtype=torch.float32)
            if self.stochastic:
                return np.asarray(policy.get_distribution(t).distribution.probs.numpy())
            q = policy.q_net(t).numpy()
        out = np.zeros(q.shape, dtype=q.dtype)
        out[np.arange(q.shape[0]), q.argmax(axis=1)] = 1.0
        return out


# Written by the MLflow client into every download of a registered version (name and number),
# so it differs between the logged model and its registered copies; it carries no model content.
_CLIENT_WRITTEN = frozenset({"registered_model_meta"})


def directory_sha256(root: str | Path) -> str:
    """A hash of every file under ``root`` (relative path and content), order-independent."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in _CLIENT_WRITTEN:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()
