"""The catalogue as data: dated snapshots in the lake, written by history and ingest, read by the
night (unless PRICING_WORLD_FILE overrides it)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.catalogue import add_to_catalogue, catalogue_dates, read_catalogue
from pipeline.data.ingest import ingest_transactions
from pipeline.data.lake import Lake
from pipeline.nightly.steps import base_world
from pipeline.settings import Settings
from sim.catalogue import (
    Catalogue,
    CatalogueError,
    CatalogueItem,
    apply_catalogue,
    derive_items,
    parse_catalogue,
)
from sim.world import World, default_world
from tests.conftest import tiny_world_dict

REPO = Path(__file__).resolve().parents[1]
D1, D2, D3 = dt.date(2026, 1, 5), dt.date(2026, 1, 10), dt.date(2026, 1, 20)


def _item(sku: str, cost: float = 5.0) -> CatalogueItem:
    return CatalogueItem(id=sku, ref_price=10.0, unit_cost=cost, capacity=20)


def test_a_world_round_trips_through_its_catalogue() -> None:
    world = World.model_validate(tiny_world_dict()).expand(5, seed=2)
    catalogue = Catalogue.of_world(world)
    again = apply_catalogue(world, parse_catalogue(json.loads(catalogue.to_json())))
    assert again == world  # the base world's traffic is kept for the SKUs it knows


def test_new_skus_start_from_the_median_traffic_and_take_the_ladder_and_horizon() -> None:
    base = default_world()
    tiny = World.model_validate(tiny_world_dict())
    world = apply_catalogue(base, Catalogue.of_world(tiny))
    assert [s.id for s in world.skus] == ["scarce", "overstock"]
    median = float(np.median([s.arrival_rate for s in base.skus]))
    assert all(s.arrival_rate == pytest.approx(median) for s in world.skus)
    assert world.horizon == tiny.horizon and world.pricing == tiny.pricing
    assert world.segments == base.segments  # the market is the base world's


def test_an_invalid_catalogue_names_the_field() -> None:
    data = json.loads(Catalogue(skus=(_item("a"),)).to_json())
    data["skus"][0]["unit_cost"] = 99.0
    with pytest.raises(CatalogueError, match=r"skus\[0\]\.unit_cost 99.0 must be below"):
        parse_catalogue(data, "cat.json")
    data["skus"] = [data["skus"][0] | {"unit_cost": 5.0}] * 2
    with pytest.raises(CatalogueError, match="appears twice"):
        parse_catalogue(data, "cat.json")


def test_snapshots_are_dated_and_later_ones_learn_new_skus(tmp_path: Path) -> None:
    lake = Lake.from_uri(str(tmp_path / "lake"))
    assert read_catalogue(lake, D1) is None
    add_to_catalogue(lake, D1, [_item("a"), _item("b")], replace=True)
    add_to_catalogue(lake, D3, [_item("a", cost=7.0)], replace=True)
    add_to_catalogue(lake, D2, [_item("c"), _item("a", cost=1.0)], replace=False)
    assert catalogue_dates(lake) == [D1, D2, D3]
    ids = {d: read_catalogue(lake, d)[0].ids() for d in (D1, D2, D3)}  # type: ignore[index]
    assert ids == {D1: ["a", "b"], D2: ["a", "b", "c"], D3: ["a", "b", "c"]}
    # without replace, what is there stays (here: a's cost at each date)
    cost = {d: read_catalogue(lake, d)[0].skus[0].unit_cost for d in (D2, D3)}  # type: ignore[index]
    assert cost == {D2: 5.0, D3: 7.0}
    # a night between snapshots uses the one in force
    assert read_catalogue(lake, D2 + dt.timedelta(days=3))[1].endswith(  # type: ignore[index]
        "date=2026-01-10/catalogue.json"
    )


def test_items_from_sales_say_what_they_assume() -> None:
    tx = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2026-01-05T10:00", "2026-01-06T11:00", "2026-01-06T12:00"]),
            "sku": ["a", "a", "b"],
            "quantity": [2, 4, 1],
            "unit_price": [10.0, 12.0, 3.0],
            "unit_cost": [6.0, np.nan, np.nan],
        }
    )
    a, b = derive_items(tx, horizon_hours=168)
    assert (a.ref_price, a.unit_cost, a.assumed) == (11.0, 6.0, ("capacity",))
    assert a.capacity == 26  # 1.2 x (6 units over 2 days = 0.125 an hour) x 168 h, rounded up
    assert (b.unit_cost, b.assumed) == (1.8, ("unit_cost", "capacity"))


def test_ingest_adds_the_exports_skus_and_keeps_corrected_entries(tmp_path: Path) -> None:
    lake = Lake.from_uri(str(tmp_path / "lake"))
    source, mapping = REPO / "examples/pos_sample.csv", REPO / "examples/pos_mapping.json"
    report = ingest_transactions(source, mapping, lake)
    catalogue, uri = read_catalogue(lake, report.dates[-1])  # type: ignore[misc]
    assert uri == report.catalogue and sorted(catalogue.ids()) == report.skus
    assert all("capacity" in s.assumed and "unit_cost" in s.assumed for s in catalogue.skus)
    # a pricing team corrects one SKU's cost; the next ingest keeps it
    first = catalogue.skus[0]
    fixed = first.model_copy(update={"unit_cost": 0.5, "assumed": ("capacity",)})
    add_to_catalogue(lake, report.dates[0], [fixed], replace=True)
    ingest_transactions(source, mapping, lake)
    again, _ = read_catalogue(lake, report.dates[-1])  # type: ignore[misc]
    assert next(s for s in again.skus if s.id == first.id).unit_cost == 0.5


def test_the_night_reads_the_lakes_catalogue_unless_a_world_file_overrides(
    tmp_path: Path,
) -> None:
    lake = Lake.from_uri(str(tmp_path / "lake"))
    world = World.model_validate(tiny_world_dict()).expand(3, seed=1)
    settings = Settings(data_dir=tmp_path)
    found, source = base_world(settings, lake, D2)
    assert found == default_world() and "default world" in source
    cat = Catalogue.of_world(world)
    add_to_catalogue(lake, D1, list(cat.skus), True, cat.pricing, cat.horizon)
    found, source = base_world(settings, lake, D2)
    assert [s.id for s in found.skus] == [s.id for s in world.skus]
    assert source.endswith("catalogue/date=2026-01-05/catalogue.json")
    assert base_world(settings, lake, D1 - dt.timedelta(days=1))[0] == default_world()
    (tmp_path / "w.json").write_text(json.dumps(tiny_world_dict()))
    override = Settings(data_dir=tmp_path, world_file=tmp_path / "w.json")
    found, source = base_world(override, lake, D2)
    assert [s.id for s in found.skus] == ["scarce", "overstock"] and source.endswith("w.json")
