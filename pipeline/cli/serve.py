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

from pipeline.cli.app import app, fail, say, settings


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
