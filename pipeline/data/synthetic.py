"""Synthetic history into the lake: what `pricing history` and the demo write.

The logs of a world's rule-based pricer (with ε exploration, so that they carry propensities),
one raw partition per day and feed, and the catalogue they were priced from, as a snapshot dated
on the first day (`pipeline.data.catalogue`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pandas as pd

from pipeline.data.catalogue import add_to_catalogue
from pipeline.data.lake import Lake
from sim.catalogue import Catalogue
from sim.history import generate_history
from sim.world import World


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

    A catalogue of more than `BLOCK_SKUS` SKUs is simulated in blocks of that many, each with
    its own random streams and id prefix; ``on_block`` is called after each block of each day."""
    n = len(world.skus)
    blocks = [world.with_skus(list(world.skus[i : i + BLOCK_SKUS])) for i in range(0, n, BLOCK_SKUS)]
    if len(blocks) == 1:
        streams = [generate_history(world, days, seed, start, epsilon=epsilon)]
    else:
        streams = [
            generate_history(b, days, seed + 7919 * (i + 1), start, epsilon=epsilon, id_prefix=f"b{i:03d}-")
            for i, b in enumerate(blocks)
        ]
    decisions = transactions = 0
    for k in range(days):
        date = start + dt.timedelta(days=k)
        day_tx: list[pd.DataFrame] = []
        day_decisions = [0]

        def block_decisions(
            date: dt.date = date, day_tx: list[pd.DataFrame] = day_tx, count: list[int] = day_decisions
        ) -> Iterator[pd.DataFrame]:
            # The decisions of one block at a time; the transactions (a few percent of the rows)
            # are kept until the day's decisions are committed.
            for stream in streams:
                logs = next(stream)
                if logs.date != date:
                    raise AssertionError(f"simulated {logs.date}, expected {date}")
                day_tx.append(logs.transactions)
                count[0] += len(logs.decisions)
                yield logs.decisions
                if on_block is not None:
                    on_block()

        lake.write_parts("raw", "decisions", date, block_decisions())
        lake.write_parts("raw", "transactions", date, day_tx)
        decisions += day_decisions[0]
        transactions += sum(len(tx) for tx in day_tx)
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

