"""The short night the fault cases run: a tiny world's history, the planner as the candidate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pipeline.data.lake import Lake
from pipeline.data.synthetic import write_history
from pipeline.settings import Settings
from sim.world import World
from tests.conftest import tiny_world_dict

START = dt.date(2026, 1, 5)
DAYS = 12
LAST = START + dt.timedelta(days=DAYS - 1)


def night_settings(root: Path, **extra: Any) -> Settings:
    """Settings of a planner-only night on the tiny world (its file written under ``root``)."""
    (root / "world.json").write_text(json.dumps(tiny_world_dict()))
    base: dict[str, Any] = {
        "data_dir": root,
        "world_file": root / "world.json",
        "train_days": 10,
        "holdout_days": 3,
        "algos": ("planner",),
        "eval_episodes": 100,
        "bootstrap_samples": 200,
        "fidelity_max_conversion_error": 0.15,
        "fidelity_max_deviance_ratio": 10.0,
    }
    return Settings(**{**base, **extra})


def write_tiny_history(lake: Lake) -> None:
    """The logs of ``DAYS + 1`` days from ``START``: a night on ``LAST`` and on the day after."""
    write_history(lake, World.model_validate(tiny_world_dict()), DAYS + 1, 3, START)
