from __future__ import annotations

import datetime as dt
import itertools
import json
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.data.features import (
    DECISION_FEATURES,
    FEATURE_COLUMNS,
    build_features,
    conversion_by_price_bucket,
    decision_partials,
    features_from_partials,
    transaction_partials,
)
from sim.feeds import DECISION_COLUMNS, TRANSACTION_COLUMNS
from sim.history import generate_history
from sim.world import World, default_world

START = dt.date(2026, 3, 4)


def _feeds(world: World, days: int = 3, seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    logs = list(generate_history(world, days, seed, START))
    dec = pd.concat([d.decisions for d in logs], ignore_index=True)
    tx = pd.concat([d.transactions for d in logs], ignore_index=True)
    return dec, tx


@pytest.fixture
def feeds(tiny_world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _feeds(tiny_world)


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index(["date", "sku"]).sort_index()


def test_features_agree_with_the_feeds(feeds: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    dec, tx = feeds
    f = build_features(dec, tx)
    assert tuple(f.columns) == FEATURE_COLUMNS
    assert len(f) == 3 * 2 and not f.duplicated(["date", "sku"]).any()
    assert all(isinstance(d, dt.date) for d in f["date"])

    # What was sold comes from the POS feed, line for line.
    assert f["purchases"].sum() == len(tx)
    assert f["units"].sum() == tx["quantity"].sum()
    assert f["revenue"].sum() == pytest.approx((tx["quantity"] * tx["unit_price"]).sum())
    tx_day = tx.assign(date=tx["ts"].dt.date).groupby(["date", "sku"])
    k = _keyed(f)
    assert (k["purchases"] == tx_day.size()).all()
    assert (k["units"] == tx_day["quantity"].sum()).all()

    # The funnel comes from the decision log.
    dec_day = dec.assign(date=dec["ts"].dt.date).groupby(["date", "sku"])
    assert (k["views"] == dec_day.size()).all()
    carted = dec["outcome"].isin(["cart", "purchase", "abandon"])
    assert (k["carts"] == carted.groupby([dec["ts"].dt.date, dec["sku"]]).sum()).all()
    assert f["abandons"].sum() == (dec["outcome"] == "abandon").sum()
    assert (f["carts"] >= f["purchases"]).all() and (f["views"] >= f["carts"]).all()
    assert f["conversion"].between(0, 1).all() and f["abandon_rate"].between(0, 1).all()
    assert np.allclose(f["conversion"], f["purchases"] / f["views"])
    assert np.allclose(f["sales_velocity"], f["units"] / 24)
    assert np.allclose(k["mean_price"], dec_day["price_shown"].mean())
    # The rule pricer stays on its ladder: 0.6 .. 1.5 of the reference price.
    assert f["price_rel"].between(0.6, 1.5).all()
    assert f["competitor_gap"].abs().lt(1).all()
    assert (f["inventory_end"] >= 0).all() and (f["inventory_end"] <= f["inventory_start"]).all()


def test_inventory_and_price_moves_follow_the_hourly_path(
    feeds: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    dec, tx = feeds
    k = _keyed(build_features(dec, tx))
    for (day, sku), rows in dec.groupby([dec["ts"].dt.date, "sku"]):
        hours = rows.groupby(rows["ts"].dt.floor("h"))
        prices = hours["price_shown"].first().to_list()
        moves = sum(a != b for a, b in itertools.pairwise(prices))
        last = rows[rows["ts"].dt.floor("h") == rows["ts"].dt.floor("h").max()]
        assert k.loc[(day, sku), "price_changes"] == moves
        assert k.loc[(day, sku), "inventory_start"] == rows["inventory"].iloc[0]
        assert (
            k.loc[(day, sku), "inventory_end"] == last["inventory"].iloc[0] - last["quantity"].sum()
        )
    # "overstock" never restocks and its season spans the first two days: stock carries over.
    d1, d2 = START, START + dt.timedelta(days=1)
    assert k.loc[(d2, "overstock"), "inventory_start"] == k.loc[(d1, "overstock"), "inventory_end"]


def test_transactions_only_leaves_decision_columns_nan(
    feeds: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    dec, tx = feeds
    full = build_features(dec, tx)
    pos = build_features(None, tx)
    assert tuple(pos.columns) == FEATURE_COLUMNS
    assert pos[list(DECISION_FEATURES)].isna().all().all()
    for col in ("date", "sku", "purchases", "units", "revenue", "sales_velocity"):
        assert pos[col].tolist() == full[col].tolist()
    # The same dtypes whichever feeds were there, so partitions stack.
    assert (pos.dtypes == full.dtypes).all()


def test_sku_days_seen_in_one_feed_only(feeds: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    dec, tx = feeds
    extra = tx.iloc[:1].assign(sku="pos-only", transaction_id="tx-extra")
    f = _keyed(build_features(dec[dec["sku"] != "overstock"], pd.concat([tx, extra])))
    pos_only = f.loc[(START, "pos-only")]
    assert pos_only["purchases"] == 1 and pos_only["views"] == 0
    assert np.isnan(pos_only["conversion"]) and np.isnan(pos_only["mean_price"])
    # An SKU-day with views but no sales has zero purchases, not NaN.
    no_sales = build_features(dec, tx.iloc[:0])
    assert (no_sales["purchases"] == 0).all() and (no_sales["revenue"] == 0).all()
    assert (no_sales["views"] > 0).all()


def test_empty_feeds_give_an_empty_frame_with_the_contract() -> None:
    dec = pd.DataFrame(columns=list(DECISION_COLUMNS))
    tx = pd.DataFrame(columns=list(TRANSACTION_COLUMNS))
    for out in (build_features(dec, tx), build_features(None, tx)):
        assert out.empty and tuple(out.columns) == FEATURE_COLUMNS


def test_timestamps_in_another_zone_count_on_their_utc_day(
    feeds: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    _, tx = feeds
    local = tx.assign(ts=tx["ts"].dt.tz_convert("America/New_York"))
    a, b = build_features(None, tx), build_features(None, local)
    pd.testing.assert_frame_equal(a, b)


def test_conversion_by_price_bucket(feeds: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    dec, _ = feeds
    table = conversion_by_price_bucket(dec)
    assert table["views"].sum() == len(dec)
    assert table["purchases"].sum() == (dec["outcome"] == "purchase").sum()
    seen = table[table["views"] > 0]
    assert seen["conversion"].between(0, 1).all()
    assert table.loc[table["views"] == 0, "conversion"].isna().all()
    # Dearer prices convert worse in the simulated market.
    assert seen["conversion"].iloc[0] > seen["conversion"].iloc[-1]

    two = conversion_by_price_bucket(dec, edges=(0.0, 1.0, 10.0))
    rel = dec["price_shown"] / dec["base_price"]
    assert two["views"].tolist() == [(rel < 1).sum(), (rel >= 1).sum()]
    assert two["bucket"].tolist() == ["[0, 1)", "[1, 10)"]
    json.dumps(two.drop(columns="conversion").to_dict("records"))
    with pytest.raises(ValueError, match="increasing"):
        conversion_by_price_bucket(dec, edges=(1.0, 0.5))
    with pytest.raises(ValueError, match="increasing"):
        conversion_by_price_bucket(dec, edges=(1.0,))


def test_throughput_on_a_large_catalogue() -> None:
    """Hundreds of SKUs and ~100k decision rows: the work is a few vectorised group-bys."""
    w = json.loads(default_world().to_json())
    w["skus"] = [
        {**sku, "id": f"{sku['id']}-{i}"} for i in range(50) for sku in w["skus"]
    ]  # 300 SKUs
    dec, tx = _feeds(World.model_validate(w), days=2, seed=1)
    started = time.perf_counter()
    f = build_features(dec, tx)
    seconds = time.perf_counter() - started
    print(f"build_features: {len(dec):,} decision rows in {seconds:.3f} s")
    assert len(f) == 2 * 300
    assert f["purchases"].sum() == len(tx) and f["views"].sum() == len(dec)
    assert f["conversion"].between(0, 1).all()


def _split(df: pd.DataFrame, how: str, rng: np.random.Generator) -> list[pd.DataFrame]:
    if how == "whole":
        return [df]
    if how == "by_sku":  # pricing history's parts: blocks of SKUs
        skus = sorted(df["sku"].unique())
        return [df[df["sku"].isin(skus[i::3])] for i in range(3)]
    if how == "by_batch":  # the service's parts: consecutive rows, an hour cut in two
        cuts = [0, *sorted(rng.choice(np.arange(1, len(df)), size=4, replace=False)), len(df)]
        return [df.iloc[a:b] for a, b in itertools.pairwise(cuts)]
    shuffled = rng.permutation(len(df))  # any split at all, rows out of order
    return [df.iloc[shuffled[i::5]] for i in range(5)]


@pytest.mark.parametrize("how", ["whole", "by_sku", "by_batch", "random"])
def test_streaming_features_equal_the_whole_day_features(how: str) -> None:
    """Part by part (the nightly path for a large catalogue) gives the features of the whole
    day read at once, on the demo's world, whatever the split of the day into parts."""
    rng = np.random.default_rng(3)
    for day in generate_history(default_world(), 2, 7, START):
        expected = build_features(day.decisions, day.transactions)
        streamed = features_from_partials(
            [decision_partials(p) for p in _split(day.decisions, how, rng)],
            [transaction_partials(p) for p in _split(day.transactions, how, rng)],
        )
        pd.testing.assert_frame_equal(streamed, expected, check_exact=False, rtol=1e-12)
        pos_only = features_from_partials(
            None, [transaction_partials(p) for p in _split(day.transactions, how, rng)]
        )
        pd.testing.assert_frame_equal(
            pos_only, build_features(None, day.transactions), check_exact=False, rtol=1e-12
        )
