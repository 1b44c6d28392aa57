"""Clusters of SKUs (pipeline.data.clusters) and the catalogue generator they are made for:
reproducible, stable across nights for unchanged SKUs, and a large catalogue written a block of
SKUs at a time."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.data import synthetic
from pipeline.data.catalogue import read_catalogue
from pipeline.data.clusters import (
    ClusterError,
    Clusters,
    assign_clusters,
    clusters_path,
    read_clusters,
)
from pipeline.data.features import build_features
from pipeline.data.lake import Lake
from pipeline.nightly.steps import extract_features
from pipeline.settings import Settings
from sim.catalogue import Catalogue
from sim.world import World, default_world, template_of
from tests.conftest import tiny_world_dict

D1 = dt.date(2026, 3, 2)
D2 = D1 + dt.timedelta(days=1)


def _catalogue(n: int, seed: int = 1) -> tuple[Catalogue, World]:
    templates = default_world()
    world = templates.expand(n, seed)
    catalogue = Catalogue.of_world(world)
    items = [
        s.model_copy(update={"category": template_of(templates, s.id)}) for s in catalogue.skus
    ]
    return catalogue.model_copy(update={"skus": tuple(items)}), world


def _features(catalogue: Catalogue, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [s.id for s in catalogue.skus]
    return pd.DataFrame(
        {
            "sku": ids * 3,
            "views": rng.gamma(2.0, 50.0, size=3 * len(ids)),
            "units": rng.poisson(5.0, size=3 * len(ids)),
        }
    )


def test_clusters_are_reproducible_and_follow_categories() -> None:
    catalogue, _ = _catalogue(300)
    features = _features(catalogue, 0)
    a = assign_clusters(catalogue, features, D1, skus_per_cluster=20)
    b = assign_clusters(catalogue, features, D1, skus_per_cluster=20)
    assert a.to_json() == b.to_json()
    members = a.members()
    assert set(a.assignment) == {s.id for s in catalogue.skus}
    for cid, skus in members.items():
        assert {template_of(default_world(), s) for s in skus} == {a.category[cid]}
        assert all(c.isalnum() or c == "-" for c in cid) and cid == cid.lower()
    # each category of 50 SKUs is cut into ceil(50 / 20) = 3 clusters
    assert len(members) == 6 * 3
    assert Clusters.from_json(json.loads(a.to_json())).to_json() == a.to_json()


def test_unchanged_skus_keep_their_cluster_across_nights() -> None:
    catalogue, _ = _catalogue(120)
    first = assign_clusters(catalogue, _features(catalogue, 0), D1, skus_per_cluster=10)
    # the next night: two SKUs delisted, three new ones, and every SKU's demand has moved
    bigger, _ = _catalogue(123)
    kept = [s for s in bigger.skus if s.id not in list(first.assignment)[:2]]
    night2 = bigger.model_copy(update={"skus": tuple(kept)})
    second = assign_clusters(night2, _features(night2, 1), D2, 10, previous=first)
    new = {s.id for s in night2.skus} - set(first.assignment)
    assert len(new) == 3
    for sku, cluster in second.assignment.items():
        if sku not in new:
            assert cluster == first.assignment[sku]
    for sku in new:  # placed in a cluster of its own category
        assert second.category[second.assignment[sku]] == template_of(default_world(), sku)
    assert set(second.assignment) == {s.id for s in night2.skus}
    assert "placed 3 new; 2 left the catalogue" in second.notes[0]
    # re-clustering from scratch is an explicit choice
    again = assign_clusters(night2, _features(night2, 1), D2, 10)
    assert again.notes == ["clustered anew"]


def test_a_new_category_opens_a_cluster() -> None:
    catalogue, _ = _catalogue(12)
    first = assign_clusters(catalogue, None, D1, skus_per_cluster=5)
    item = catalogue.skus[0].model_copy(update={"id": "lamp-1", "category": "Lamps & Lights"})
    grown = catalogue.model_copy(update={"skus": (*catalogue.skus, item)})
    second = assign_clusters(grown, None, D2, 5, previous=first)
    assert second.assignment["lamp-1"] == "lamps-lights-0"
    assert second.category["lamps-lights-0"] == "Lamps & Lights"
    with pytest.raises(ClusterError, match="skus_per_cluster must be >= 1"):
        assign_clusters(catalogue, None, D1, skus_per_cluster=0)


def test_a_large_catalogue_is_written_a_block_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More SKUs than a block: one part per block a day (memory holds one block's day), unique
    ids across blocks, each SKU's category in the catalogue, and the night's streamed features
    equal to the features of the whole day."""
    monkeypatch.setattr(synthetic, "BLOCK_SKUS", 4)
    templates = World.model_validate(tiny_world_dict())
    world = templates.expand(10, seed=3)
    lake = Lake.from_uri(str(tmp_path / "lake"))
    categories = {s.id: template_of(templates, s.id) or s.id for s in world.skus}
    blocks: list[int] = []
    written = synthetic.write_history(
        lake, world, 2, 0, D1, categories=categories, on_block=lambda: blocks.append(1)
    )
    assert len(blocks) == 2 * 3 and written.skus == 10
    assert len(lake.part_paths("raw", "decisions", D1)) == 3
    day = lake.read_partition("raw", "decisions", D1)
    assert day["event_id"].is_unique and set(day["sku"]) == {s.id for s in world.skus}
    tx = lake.read_partition("raw", "transactions", D1)
    assert tx["transaction_id"].is_unique
    snapshot = read_catalogue(lake, D1)
    assert snapshot is not None
    assert {i.id: i.category for i in snapshot[0].skus} == categories
    settings = Settings(data_dir=tmp_path, world_file=None)
    extract_features(settings, D1)
    streamed = lake.read_partition("features", "features", D1)
    pd.testing.assert_frame_equal(streamed, build_features(day, tx), check_exact=False, rtol=1e-12)


def test_pricing_clusters_writes_the_snapshot(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"PRICING_DATA_DIR": str(tmp_path), "PRICING_SKUS_PER_CLUSTER": "7"}
    lake = str(tmp_path / "lake")
    args = ["history", "--skus", "30", "--days", "2", "--lake", lake, "--start", str(D1)]
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["clusters", "--date", str(D2)], env=env)
    assert res.exit_code == 0, res.output
    assert "30 SKUs in" in res.output and "clustered anew" in res.output
    made = read_clusters(Lake.from_uri(lake), D2)
    assert made is not None and len(made.assignment) == 30
    assert Lake.from_uri(lake).exists(clusters_path(D2))
    again = runner.invoke(app, ["clusters", "--date", str(D2 + dt.timedelta(days=1))], env=env)
    assert again.exit_code == 0 and "kept 30 SKUs in their clusters" in again.output
    bad = runner.invoke(app, ["clusters", "--date", "yesterday"], env=env)
    assert bad.exit_code != 0 and "--date" in bad.output


def test_on_pos_data_only_the_skus_a_night_prices_are_clustered(tmp_path: Path) -> None:
    """A point-of-sale lake (transactions, no decision log): a SKU selling under
    PRICING_POS_MIN_UNITS_PER_DAY keeps its price, as in the refit, so it joins no cluster."""
    from pipeline.data.catalogue import write_catalogue
    from pipeline.data.clusters import cluster_catalogue
    from sim.history import generate_history

    settings = Settings(data_dir=tmp_path, cluster_days=3)
    lake = Lake.from_uri(settings.lake)
    world = World.model_validate(tiny_world_dict())
    catalogue = Catalogue.of_world(world)
    idle = catalogue.skus[0].model_copy(update={"id": "idle"})  # listed, never sold
    write_catalogue(lake, D1, catalogue.model_copy(update={"skus": (*catalogue.skus, idle)}))
    for day in generate_history(world, 3, 0, D1):
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    last = D1 + dt.timedelta(days=2)
    made = cluster_catalogue(settings, last)
    assert set(made.assignment) == {s.id for s in world.skus}
    assert any("1 SKUs sell under 0.5 units a day over 3 days" in n for n in made.notes)
    with pytest.raises(ClusterError, match="PRICING_POS_MIN_UNITS_PER_DAY"):
        cluster_catalogue(settings.model_copy(update={"pos_min_units_per_day": 1e6}), last)
