"""Dated catalogue snapshots in the lake: ``catalogue/date=YYYY-MM-DD/catalogue.json``.

A snapshot holds the price ladder and every SKU's facts (`sim.catalogue.Catalogue`) from its date
on. `pricing history` writes the catalogue of the world it simulates, `pricing ingest` adds the
SKUs of a point-of-sale export (estimating what the export lacks, and saying so in each item's
``assumed``), and a pricing team may correct a snapshot by hand. A night for date ``D`` reads the
latest snapshot dated ``D`` or earlier; ``PRICING_WORLD_FILE`` overrides it.
"""

from __future__ import annotations

import datetime as dt
import json

from pipeline.contracts import CATALOGUE_NAME, CATALOGUE_PREFIX, catalogue_path
from pipeline.data.lake import Lake
from sim.catalogue import Catalogue, CatalogueError, CatalogueItem, parse_catalogue
from sim.world import Horizon, Pricing



def catalogue_dates(lake: Lake) -> list[dt.date]:
    """The dates that have a snapshot, sorted."""
    return lake.snapshot_dates(CATALOGUE_PREFIX, CATALOGUE_NAME)


def read_catalogue(lake: Lake, date: dt.date) -> tuple[Catalogue, str] | None:
    """The snapshot in force on ``date`` (the latest dated on or before it) and its URI."""
    usable = [d for d in catalogue_dates(lake) if d <= date]
    if not usable:
        return None
    path = catalogue_path(usable[-1])
    try:
        data = json.loads(lake.read_bytes(path))
    except json.JSONDecodeError as err:
        raise CatalogueError(
            f"catalogue {lake.uri(path)} is not valid JSON ({err}); fix it or write it again "
            "with `pricing history` / `pricing ingest`"
        ) from None
    return parse_catalogue(data, lake.uri(path)), lake.uri(path)


def write_catalogue(lake: Lake, date: dt.date, catalogue: Catalogue) -> str:
    lake.write_bytes(catalogue_path(date), catalogue.to_json().encode())
    return lake.uri(catalogue_path(date))


def add_to_catalogue(
    lake: Lake,
    date: dt.date,
    items: list[CatalogueItem],
    replace: bool,
    pricing: Pricing | None = None,
    horizon: Horizon | None = None,
) -> list[str]:
    """Add ``items`` to the snapshot in force on ``date`` (written anew at ``date``) and to every
    later snapshot, so that a night of any later date knows them; returns the URIs written.

    ``replace``: an item whose SKU is already there replaces it, and ``pricing`` and ``horizon``
    replace the ladder and horizon (synthetic history, whose world is the truth); otherwise what
    is there stays (a cost a pricing team corrected is not overwritten by the next export).
    ``pricing`` and ``horizon`` start a new catalogue (default: the default world's).
    """
    if not items:
        return []
    current = read_catalogue(lake, date)
    ladder, steps = pricing or Pricing(), horizon or Horizon()

    def updated(snapshot: Catalogue) -> Catalogue:
        merged = snapshot.merged(items, replace)
        if not replace:
            return merged
        return Catalogue(
            horizon=horizon or merged.horizon, pricing=pricing or merged.pricing, skus=merged.skus
        )

    first = (
        updated(current[0])
        if current
        else Catalogue(horizon=steps, pricing=ladder, skus=tuple(items))
    )
    written = [write_catalogue(lake, date, first)]
    for later in catalogue_dates(lake):
        if later > date:
            snapshot = read_catalogue(lake, later)
            assert snapshot is not None
            written.append(write_catalogue(lake, later, updated(snapshot[0])))
    return written


# Seasons repeat from here when the lake holds no catalogue yet (a Monday).
DEFAULT_SEASON_ANCHOR = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def season_anchor(lake: Lake, season_start: dt.datetime | None) -> dt.datetime:
    """Where the selling seasons of the pricing service start (and repeat every horizon):
    ``PRICING_SERVE_SEASON_START``, else midnight (UTC) of the lake's first catalogue snapshot,
    where `pricing history` starts its seasons too."""
    if season_start is not None:
        return season_start if season_start.tzinfo else season_start.replace(tzinfo=dt.UTC)
    dates = catalogue_dates(lake)
    if not dates:
        return DEFAULT_SEASON_ANCHOR
    return dt.datetime.combine(dates[0], dt.time(0), tzinfo=dt.UTC)
