from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.world import World, default_world


def tiny_world_dict() -> dict:
    """Two small SKUs over two days: every test that needs the exact optimum runs in a second."""
    w = json.loads(default_world().to_json())
    w["name"] = "tiny"
    w["horizon"]["steps"] = 48
    w["skus"] = [
        {
            "id": "scarce",
            "ref_price": 20.0,
            "unit_cost": 9.0,
            "arrival_rate": 6.0,
            "capacity": 25,
            "initial_inventory": 25,
            "restock_every": 24,
            "restock_qty": 10,
            "clearance_target": 0.0,
        },
        {
            "id": "overstock",
            "ref_price": 50.0,
            "unit_cost": 30.0,
            "arrival_rate": 3.0,
            "capacity": 40,
            "initial_inventory": 40,
            "restock_every": 0,
            "restock_qty": 0,
            "clearance_target": 0.8,
        },
    ]
    return w


@pytest.fixture
def tiny_world() -> World:
    return World.model_validate(tiny_world_dict())


@pytest.fixture
def tiny_world_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_world_dict()))
    return path
