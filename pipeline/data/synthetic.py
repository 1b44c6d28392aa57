"""Synthetic history into the lake: what `pricing history` and the demo write.

The logs of a world's rule-based pricer (with ε exploration, so that they carry propensities),
one raw partition per day and feed, and the catalogue they were priced from, as a snapshot dated
on the first day (`pipeline.data.catalogue`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.data.catalogue import add_to_catalogue
from pipeline.data.lake import Lake
from sim.catalogue import Catalogue
from sim.history import generate_history
from sim.world import World

FEEDS = ("decisions", "transactions")


@dataclass(frozen=True)
class WrittenHistory:
    days: int
    skus: int
    decisions: int
    transactions: int
    catalogue_uri: str


#: SKUs simulated together: a larger catalogue is simulated a block at a time, and a day of it is
#: written as one part per block, so memory holds one block's day whatever the catalogue's size
BLOCK_SKUS = 2_000


def write_history(
    lake: Lake,
    world: World,
    days: int,
    seed: int,
    start: dt.date,
    epsilon: float = 0.1,
    on_day: Callable[[dt.date], None] | None = None,
    categories: Mapping[str, str] | None = None,
    on_block: Callable[[], None] | None = None,
) -> WrittenHistory:
    """Simulate ``days`` days of ``world`` from ``start`` into ``lake``: the decisions and
    transactions feeds day by day (replacing those days' partitions), then the catalogue
    (with each SKU's category from ``categories``, if given).

    A catalogue of more than `BLOCK_SKUS` SKUs is simulated a block of that many at a time,
    each block with its own random streams and id prefix, through all the days; ``on_block`` is
    called after each block-day. A simulation holds its block's market (its demand tables grow
    with the SKUs) and one day of its logs, so memory is bounded by the block, not the
    catalogue. The parts are written unlisted as they come and each day is committed once all
    its blocks are written: a run cut short leaves every day as it was."""
    n = len(world.skus)
    blocks = [world.with_skus(list(world.skus[i : i + BLOCK_SKUS])) for i in range(0, n, BLOCK_SKUS)]
    dates = [start + dt.timedelta(days=k) for k in range(days)]
    parts: dict[tuple[dt.date, str], list[str]] = {(d, f): [] for d in dates for f in FEEDS}
    decisions = transactions = 0
    for i, block in enumerate(blocks):
        if len(blocks) == 1:
            stream = generate_history(world, days, seed, start, epsilon=epsilon)
        else:
            stream = generate_history(
                block, days, seed + 7919 * (i + 1), start, epsilon=epsilon, id_prefix=f"b{i:03d}-"
            )
        for logs in stream:
            for feed, frame in (("decisions", logs.decisions), ("transactions", logs.transactions)):
                parts[logs.date, feed].append(lake.put_part("raw", feed, logs.date, frame))
            decisions += len(logs.decisions)
            transactions += len(logs.transactions)
            del logs
            if on_block is not None:
                on_block()
    for date in dates:
        for feed in FEEDS:
            lake.commit_parts("raw", feed, date, parts[date, feed])
        if on_day is not None:
            on_day(date)
    catalogue = Catalogue.of_world(world)
    items = list(catalogue.skus)
    if categories:
        items = [
            item.model_copy(update={"category": categories[item.id]})
            if item.id in categories
            else item
            for item in items
        ]
    written = add_to_catalogue(lake, start, items, True, catalogue.pricing, catalogue.horizon)
    return WrittenHistory(days, n, decisions, transactions, written[0])

