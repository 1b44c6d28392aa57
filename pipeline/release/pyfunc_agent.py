"""The MLflow pyfunc model of a pricing agent, logged as code (MLflow "models from code").

Logging the model as this file, rather than as a pickled Python object, means loading it runs only
this reviewed source; the one pickle-bearing artifact (the SB3 ``.zip``) is loaded after its SHA-256
is checked against the hash recorded in the model's own ``manifest.json``. `pipeline.release.registry`
additionally verifies the whole model directory against the registry's ``model_sha256`` tag before
MLflow opens it.

Input: one row per SKU, the observation columns of `sim.market.OBS_NAMES` plus the segment-mix
columns ``segment_<name>``, and ``current_price`` and ``ref_price`` (a planner, which looks its
table up per SKU, also ``sku``: the SKU's id in the model's world). Output: ``action`` (index),
``move`` (fraction of the reference price) and ``price`` (the new price, on the ladder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from pipeline.model.agents import served_policy
from pipeline.model.artifacts import load_agent
from pipeline.model.planner import Planner, load_planner
from sim.world import load_world


class PricingAgentModel(PythonModel):
    def load_context(self, context: Any) -> None:
        manifest = json.loads(Path(context.artifacts["manifest"]).read_text())
        self.world = load_world(context.artifacts["world"])
        path, sha = context.artifacts["agent"], manifest["agent_sha256"]
        agent = (
            load_planner(path, self.world, sha)
            if manifest.get("agent_file") == "agent.npz"
            else load_agent(path, sha)
        )
        self.policy = served_policy(agent)
        self.columns: list[str] = manifest["observation_columns"]
        self.index = {s.id: k for k, s in enumerate(self.world.skus)}
        if isinstance(agent, Planner):
            self.columns = [*self.columns, "sku"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        missing = [c for c in [*self.columns, "current_price", "ref_price"] if c not in model_input]
        if missing:
            raise ValueError(f"input is missing columns {missing}; see the model signature")
        sku = None
        if "sku" in self.columns:
            unknown = sorted(set(model_input["sku"]) - set(self.index))[:3]
            if unknown:
                raise ValueError(f"sku {unknown} not in the model's world; see its world.json")
            sku = np.array([self.index[s] for s in model_input["sku"]], dtype=np.int64)
        observed = [c for c in self.columns if c != "sku"]
        obs = model_input[observed].to_numpy(dtype=np.float32)
        action = np.asarray(self.policy.actions(obs, sku), dtype=np.int64).reshape(-1)
        pr = self.world.pricing
        move = np.asarray(pr.actions)[action]
        ref = model_input["ref_price"].to_numpy(dtype=float)
        rel = model_input["current_price"].to_numpy(dtype=float) / ref + move
        rel = np.clip(np.round((rel - pr.price_min) / pr.price_step), 0, None) * pr.price_step
        rel = np.clip(rel + pr.price_min, pr.price_min, pr.price_max)
        return pd.DataFrame({"action": action, "move": move, "price": np.round(rel * ref, 2)})


# "models from code": MLflow runs this file and serves what it sets
mlflow.models.set_model(PricingAgentModel())
