"""`pricing monitor`, `pricing up`: a window's KPIs and drift; Airflow and MLflow on localhost."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from pipeline.cli import render
from pipeline.cli.app import app, console, fail, parse_time, say, settings
from pipeline.errors import ExitCode


@app.command()
def monitor(
    start: Annotated[str, typer.Option(help="window start, ISO time (UTC unless a zone is given)")],
    end: Annotated[str | None, typer.Option(help="window end; default: start + 1 hour")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    publish: Annotated[
        bool,
        typer.Option(
            help="also write it where the hourly DAG does (lake report, MLflow, Pushgateway) "
            "and move the monitor's watermark"
        ),
    ] = False,
) -> None:
    """KPIs and drift of the prices shown in [start, end) — what the hourly pricing_monitor DAG
    computes; read-only unless --publish. Exit 0: no drift (or not judged); 2: drift."""
    from pipeline.ops.monitor import monitor_window
    from pipeline.tracking import require_tracking

    config = settings()
    begin = parse_time(start, "--start")
    stop = parse_time(end, "--end") if end else begin + dt.timedelta(hours=1)
    require_tracking(config)
    report = monitor_window(config, begin, stop, publish=publish)
    k, d = report["kpis"], report["drift"]
    rows = [("prices shown", f"{k['decisions']:,}")]
    if k["decisions"]:
        mix = ", ".join(f"{a}: {share:.0%}" for a, share in k["action_share"].items())
        rows += [
            ("conversion", f"{k['conversion']:.2%}"),
            ("revenue", f"{k['revenue']:,.2f}"),
            ("gross profit", f"{k['gross_profit']:,.2f}"),
            ("margin", "—" if k["margin"] is None else f"{k['margin']:.1%}"),
            ("exploration rate", f"{k['exploration_rate']:.1%}"),
            ("action mix", mix),
        ]
    for feature, value in d.get("psi", {}).items():
        kind = "market" if feature in d.get("alarm_features", ()) else "policy"
        rows.append((f"PSI {feature} ({kind})", f"{value:.3f}"))
    render.key_values(f"monitor {begin.isoformat()} → {stop.isoformat()}", rows, header=True)
    colour = {"drift": "bold red", "ok": "green"}.get(d["status"], "yellow")
    render.out().print(f"[{colour}]{d['status']}[/]: {d['message']}")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str))
    if d["status"] == "drift":
        raise typer.Exit(ExitCode.STOPPED)


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="the embedded defaults' root")] = Path("data"),
    airflow_port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
    serve_port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Airflow (UI, scheduler, DAG processor, triggerer), the MLflow UI and the pricing service
    on localhost, over the same SQLite databases and lake as the CLI; Ctrl-C stops them."""
    from pipeline.orchestration import local_stack

    config = settings(data_dir=data_dir)
    # bandit: a message, not a password
    token_note = "PRICING_ADMIN_TOKEN as set"  # nosec B105
    if not config.admin_token:
        # The promote DAG refuses to move the champion unless a token is configured. A secret is
        # never printed: it goes to a file only its owner reads.
        os.environ["PRICING_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
        config.runtime_dir.mkdir(parents=True, exist_ok=True)
        path = config.runtime_dir / "admin-token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.environ["PRICING_ADMIN_TOKEN"] + "\n")
        token_note = f"generated for this session, in {path} (readable by you only)"
    stopping = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:  # a second signal must not cut the clean-up short
            stopping = True
            raise KeyboardInterrupt

    # Installed explicitly: a shell that starts a command in the background makes it ignore
    # SIGINT, and Python then keeps ignoring it. `kill` and a closed terminal stop it too.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        stack = local_stack.start(config, airflow_port, mlflow_port, say=say, serve_port=serve_port)
    except KeyboardInterrupt:
        fail("interrupted while starting; everything started was stopped", ExitCode.INTERRUPTED)
    try:
        airflow, mlflow_ui, service = stack.components
        rows = [
            (
                "Airflow",
                airflow.url,
                f"login {local_stack.USER} / {stack.password}; log {airflow.log}",
            ),
            ("MLflow", mlflow_ui.url, f"registry and runs; log {mlflow_ui.log}"),
            (
                "Pricing service",
                service.url,
                f"POST /v1/price, /readyz, /metrics, /docs; log {service.log}",
            ),
        ]
        render.services("running on localhost (Ctrl-C stops everything)", rows)
        render.out().print(
            "DAGs: pricing_nightly (un-pause it to run on its schedule, or trigger it), "
            f"pricing_promote (the form; admin token {token_note}), pricing_monitor"
        )
        while all(c.process.poll() is None for c in stack.components):
            time.sleep(1.0)
        dead = [c for c in stack.components if c.process.poll() is not None]
        console.print(f"[red]{dead[0].name} stopped; see {dead[0].log}[/]")
    except KeyboardInterrupt:
        console.print(f"stopping (at most {stack.tree.grace_s + 5:.0f} s)")
    finally:
        stopping = True
        stack.stop()
