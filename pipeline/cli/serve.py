"""`pricing serve`: the pricing service (package `serving`) under uvicorn.

uvicorn starts the service by import string (``serving.app:create_app``) in each worker; this
command only checks the service's settings first, so that a bad one fails here with its name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, fail, parse_date, say, settings


@app.command()
def serve(
    data_dir: Annotated[Path | None, typer.Option(help="the embedded defaults' root")] = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
) -> None:
    """The pricing service: POST /v1/price, /v1/prices, /v1/outcomes; GET /readyz, /metrics.
    It serves the registry's @champion (followed without restarts; the rule-based pricer when
    there is none), logs every decision to the lake, and stops cleanly on Ctrl-C or SIGTERM
    (writing every decision it holds). Knobs: PRICING_SERVE_* (see serving/config.py)."""
    import uvicorn
    from pydantic import ValidationError

    from serving.config import ServeSettings

    config = settings(data_dir=data_dir)
    os.environ["PRICING_DATA_DIR"] = str(config.data_dir)
    try:
        ServeSettings()
    except ValidationError as err:
        fail(f"invalid settings: {err}")
    multiproc = None
    if workers > 1:
        multiproc = tempfile.mkdtemp(prefix="pricing-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc
    say(f"pricing service on http://{host}:{port} ({workers} worker(s)); Ctrl-C stops it")
    try:
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=30,
        )
    finally:
        if multiproc:
            shutil.rmtree(multiproc, ignore_errors=True)


@app.command()
def replay(
    world: Annotated[
        Path | None, typer.Option(help="the world whose visitors are played; default: bundled")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="the running pricing service (default: PRICING_SERVICE_URL)")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="days to play")] = 7,
    start: Annotated[
        str | None, typer.Option(help="first day (default: after the lake's last decisions)")
    ] = None,
    seed: Annotated[int, typer.Option(help="visitors and outcomes")] = 0,
    customers: Annotated[int, typer.Option(min=1, help="distinct customers who visit")] = 20_000,
    nightly: Annotated[bool, typer.Option(help="run the nightly loop at each midnight")] = True,
    data_dir: Annotated[Path | None, typer.Option(help="the service's data dir")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    visits_out: Annotated[
        Path | None,
        typer.Option(
            "--visits",
            help="write every visitor's row here (Parquet): arm, unit, price, outcome, profit",
        ),
    ] = None,
) -> None:
    """The closed loop: a world's visitors against the running service (prices, outcomes), the
    night on the service's own decision log at each midnight, the service following what was
    promoted. Prints control vs treatment per day and overall: profit per visitor, conversion,
    margin (95 % CIs)."""

    import json

    from pipeline.cli import render
    from pipeline.orchestration.replay import replay as play
    from pipeline.orchestration.service_client import ServiceClient
    from pipeline.tracking import require_tracking
    from sim.world import load_world

    config = settings(data_dir=data_dir)
    if nightly:
        require_tracking(config)
    first = parse_date(start, "--start") if start else None
    figures = play(
        config,
        load_world(world),
        ServiceClient((url or config.service_url).rstrip("/"), config.admin_token),
        first,
        days,
        seed,
        customers,
        nightly,
        say,
    )
    visits = figures.pop("visits")
    render.replay(figures)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=1, default=str))
        say(f"figures written to {json_out}")
    if visits_out is not None:
        visits.to_parquet(visits_out, index=False)
        say(f"{len(visits):,} visitors' rows written to {visits_out}")


@app.command()
def rollout(
    url: Annotated[
        str | None, typer.Option(help="the running pricing service (default: PRICING_SERVICE_URL)")
    ] = None,
    date: Annotated[
        str | None, typer.Option(help="last day of the window (default: today, UTC)")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=90, help="days of served decisions judged")] = 1,
    min_visitors: Annotated[
        int | None,
        typer.Option(
            min=1, help="per arm, to judge at all (default: PRICING_ROLLOUT_MIN_VISITORS)"
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="judge, but move nothing")] = False,
    resume: Annotated[bool, typer.Option(help="start again from 0 % (after a stop)")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="the service's data dir")] = None,
) -> None:
    """One step of the staged rollout (5 → 10 → 25 → 50 % treatment): advance while the
    guardrails hold on the served decisions (no sample-ratio mismatch, no significant conversion
    loss, treatment margin above PRICING_MARGIN_FLOOR), back to 0 % when one trips (exit 2).
    At 0 % it holds until --resume. Every step is appended to the rollout ledger in the lake;
    the pricing_rollout DAG takes the same step every day."""
    import datetime as dt
    import getpass

    from pipeline.errors import ExitCode
    from pipeline.orchestration.staged_rollout import step, window

    config = settings(data_dir=data_dir)
    last = parse_date(date, "--date") if date else dt.datetime.now(dt.UTC).date()
    decision = step(
        config,
        url or config.service_url,
        window(last, days),
        getpass.getuser(),
        min_visitors or config.rollout_min_visitors,
        dry_run,
        resume,
        say,
    )
    if decision.action == "stop" and not dry_run:
        raise typer.Exit(ExitCode.STOPPED)


@app.command()
def parity(
    world: Annotated[
        Path | None, typer.Option(help="the world whose visitors are played; default: bundled")
    ] = None,
    seasons: Annotated[
        int, typer.Option(min=1, max=520, help="whole selling seasons each policy serves")
    ] = 2,
    seed: Annotated[int, typer.Option(help="visitors, outcomes and the paired evaluation")] = 7,
    episodes: Annotated[
        int, typer.Option(min=10, help="episodes of the table's (greedy) evaluation")
    ] = 300,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="served and evaluated ratios agree within this, points")
    ] = 3.0,
    data_dir: Annotated[Path | None, typer.Option(help="the embedded defaults' root")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """Is what is evaluated what is served? The champion and the rule-based pricer each serve
    every visitor of a world through a real pricing service for whole seasons (`pricing
    replay`), and the simulator evaluates both as served on the same seasons' visitors: prints
    served vs evaluated profit and the champion/rule ratio each way, with the gap's 95 % interval.
    Exits 2 when the gap's interval leaves ±--tolerance points. The PRICING_SERVE_* guardrails
    and exploration are the ones served and evaluated."""
    import json

    from pipeline.cli import render
    from pipeline.errors import ExitCode
    from pipeline.orchestration.parity import parity as measure
    from pipeline.tracking import require_tracking
    from sim.world import load_world

    config = settings(data_dir=data_dir)
    require_tracking(config)
    figures = measure(config, load_world(world), seasons, seed, episodes, tolerance, say=say)
    render.parity(figures)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=1, default=str))
        say(f"figures written to {json_out}")
    if not figures["agree"]:
        raise typer.Exit(ExitCode.STOPPED)
