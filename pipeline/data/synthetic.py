"""Synthetic history into the lake: what `pricing history` and the demo write.

The logs of a world's rule-based pricer (with ε exploration, so that they carry propensities),
one raw partition per day and feed, and the catalogue they were priced from, as a snapshot dated
on the first day (`pipeline.data.catalogue`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

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


def write_history(
    lake: Lake,
    world: World,
    days: int,
    seed: int,
    start: dt.date,
    epsilon: float = 0.1,
    on_day: Callable[[dt.date], None] | None = None,
) -> WrittenHistory:
    """Simulate ``days`` days of ``world`` from ``start`` into ``lake``: the decisions and
    transactions feeds day by day (replacing those days' partitions), then the catalogue."""
    decisions = transactions = 0
    for day in generate_history(world, days, seed, start, epsilon=epsilon):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
        decisions += len(day.decisions)
        transactions += len(day.transactions)
        if on_day is not None:
            on_day(day.date)
    catalogue = Catalogue.of_world(world)
    written = add_to_catalogue(
        lake, start, list(catalogue.skus), True, catalogue.pricing, catalogue.horizon
    )
    return WrittenHistory(days, len(world.skus), decisions, transactions, written[0])
