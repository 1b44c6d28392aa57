from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.world import WorldError, default_world, load_world
from tests.conftest import tiny_world_dict


def test_default_world_round_trips(tmp_path: Path) -> None:
    w = default_world()
    path = tmp_path / "w.json"
    path.write_text(w.to_json())
    assert load_world(path) == w
    assert load_world(path).fingerprint() == w.fingerprint()


def test_compile_shapes_and_seasonality() -> None:
    p = default_world().compile()
    assert p.ratios[0] == pytest.approx(0.6) and p.ratios[-1] == pytest.approx(1.5)
    assert list(p.moves) == [-2, -1, 0, 1, 2]
    assert p.traffic.mean() == pytest.approx(1.0, rel=1e-9)
    assert np.allclose(p.seg_mix.sum(axis=1), 1.0)
    assert p.buy_prob.shape == (p.K, p.S, p.L, p.C)
    # demand falls with our price and rises with the competitor's
    assert np.all(np.diff(p.buy_prob, axis=2) < 0)
    assert np.all(p.buy_prob[:, :, :, 0] >= p.buy_prob[:, :, :, 2])
    # abandonment grows only with price rises
    assert p.abandon[5, 7] > p.abandon[5, 6] > p.abandon[5, 5] == p.abandon[5, 3]


def _mutate(path: list, value: object) -> dict:
    d = tiny_world_dict()
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["skus", 0, "unit_cost"], -1.0, "skus[0].unit_cost"),
        (["skus", 0, "capacity"], 0, "skus[0].capacity"),
        (["skus", 1, "unit_cost"], 500.0, "skus[1].unit_cost"),
        (["segments", 0, "share"], 0.9, "must sum to 1"),
        (
            ["competitor", "transition", 0],
            [0.5, 0.2, 0.2],
            "competitor.transition[0] must sum to 1",
        ),
        (["pricing", "price_step"], 0.07, "price_step must divide"),
        (["pricing", "actions"], [-0.12, 0.0, 0.05], "not a multiple of price_step"),
        (["horizon", "steps"], 1, "horizon.steps"),
        (["seasonality", "hour_of_day"], [1.0] * 23, "seasonality.hour_of_day"),
        (["skus", 0, "initial_inventory"], 99, "exceeds capacity"),
        (["abandonment", "base"], 1.5, "abandonment.base"),
    ],
)
def test_invalid_world_names_field(
    tmp_path: Path, path: list, value: object, expected: str
) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(_mutate(path, value)))
    with pytest.raises(WorldError) as err:
        load_world(f)
    assert expected in str(err.value)


def test_unknown_field_rejected(tmp_path: Path) -> None:
    d = tiny_world_dict()
    d["skus"][0]["colour"] = "red"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    with pytest.raises(WorldError, match=r"skus\[0\]\.colour"):
        load_world(f)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match="not found"):
        load_world(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorldError, match="not valid JSON"):
        load_world(bad)


def test_expand_catalogue_is_deterministic() -> None:
    w = default_world()
    a, b = w.expand(20, seed=3), w.expand(20, seed=3)
    assert a == b and len(a.skus) == 20
    assert len({s.id for s in a.skus}) == 20
    assert w.expand(2, seed=0).skus == w.skus[:2]
