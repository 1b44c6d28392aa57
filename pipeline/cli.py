"""`pricing`: the one command line of the project."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.core import Context as ClickContext  # typer vendors click
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup

from pipeline.errors import ExitCode, PricingError
from pipeline.tracking import require_tracking

# Messages go to standard error and are never wrapped: a message cut mid-sentence at 80 columns
# (the width rich assumes without a terminal) reads badly in logs and defeats grep.
console = Console(stderr=True, soft_wrap=True)
DEBUG_ENV = "PRICING_DEBUG"


class _Commands(TyperGroup):
    """Every command's errors become one message and a documented exit code (`ExitCode`): the
    traceback only with ``--debug`` (or PRICING_DEBUG=1), or in a log file for a bug."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as err:
            code, message = explain(err)
            if os.environ.get(DEBUG_ENV):
                console.print_exception()
            elif code == ExitCode.INTERNAL:
                message += f"; the traceback is in {_write_traceback(err)}"
            console.print(f"[bold red]error:[/] {escape(message)}")
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reinforcement-learning dynamic pricing: simulate, train, evaluate. Exit codes: 0 done; "
    "1 bad input or settings; 2 a gate stopped the night, or drift; 3 admin token missing or "
    "wrong; 4 a service out of reach (lake, MLflow, database); 5 a bug (traceback in a file); "
    "130 interrupted.",
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an error (or PRICING_DEBUG=1)")
    ] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


# The libraries whose exceptions mean "a service is out of reach", found anywhere in the chain.
_UNREACHABLE = {
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "ConnectTimeout",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "MaxRetryError",
    "NewConnectionError",
    "ReadTimeout",
    "ReadTimeoutError",
    "TimeoutError",
}
_UNREACHABLE_TEXT = ("Max retries exceeded", "Connection refused", "Failed to establish")


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def explain(err: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one-line message for an error that reached the command line."""
    if isinstance(err, PricingError):
        return err.exit_code, str(err)
    chain = _chain(err)
    names = {type(e).__name__ for e in chain}
    modules = " ".join(type(e).__module__ for e in chain)
    text = " ".join(str(e) for e in chain)
    if "sqlalchemy" in modules and "OperationalError" in names:
        return ExitCode.UNAVAILABLE, (
            f"a database is out of reach: {str(err).splitlines()[0]}; check that it runs and "
            "MLFLOW_TRACKING_URI / PRICING_LOCK_URI"
        )
    if names & _UNREACHABLE or any(t in text for t in _UNREACHABLE_TEXT):
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        service = (
            f"the MLflow tracking server {uri}"
            if "mlflow" in modules or uri.startswith("http")
            else "a service"
        )
        return ExitCode.UNAVAILABLE, (
            f"{service} is out of reach ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
            "check that it runs and that its address is right"
        )
    user_errors: list[type[BaseException]] = []
    for module, name in (
        ("sim.world", "WorldError"),
        ("sim.fit", "FitError"),
        ("pydantic", "ValidationError"),
        ("mlflow.exceptions", "MlflowException"),
    ):
        loaded = sys.modules.get(module)  # an exception of a module never imported cannot occur
        if loaded is not None:
            user_errors.append(getattr(loaded, name))
    if isinstance(err, tuple(user_errors)):
        return ExitCode.BAD_INPUT, str(err)
    if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
        return ExitCode.BAD_INPUT, str(err)
    return ExitCode.INTERNAL, f"unexpected {type(err).__name__}: {err}"


def _write_traceback(err: BaseException) -> str:
    """Append the traceback to a log file and return its path (under the data dir if writable)."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(err))
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for folder in (
        Path(os.environ.get("PRICING_DATA_DIR", "data")) / "logs",
        Path(tempfile.gettempdir()),
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "pricing-errors.log"
            with path.open("a") as out:
                out.write(f"--- {stamp} pricing {' '.join(sys.argv[1:])}\n{text}\n")
            return str(path)
        except OSError:
            continue
    return "(nowhere: no writable log folder)"


WorldOpt = Annotated[
    Path | None,
    typer.Option("--world", help="world file (JSON); default: the bundled default world"),
]
LakeOpt = Annotated[
    str, typer.Option("--lake", help="lake root: a directory, file://PATH or s3://bucket/prefix")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint-url",
        envvar="PRICING_S3_ENDPOINT_URL",
        help="S3-compatible endpoint for s3:// lakes (MinIO, moto); default: AWS",
    ),
]


def _fail(message: str, code: int = ExitCode.BAD_INPUT) -> NoReturn:
    if os.environ.get(DEBUG_ENV) and sys.exc_info()[0] is not None:
        console.print_exception()  # the error being handled, with --debug
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _lake(uri: str, endpoint_url: str | None) -> Any:
    from pipeline.lake import Lake, LakeError

    try:
        return Lake.from_uri(uri, endpoint_url=endpoint_url or None)
    except LakeError as err:
        _fail(str(err))


def _world(path: Path | None) -> Any:
    from sim.world import WorldError, load_world

    try:
        return load_world(path)
    except WorldError as err:
        _fail(str(err))


@app.command()
def world(
    default: Annotated[bool, typer.Option("--default", help="print the default world")] = False,
    path: WorldOpt = None,
) -> None:
    """Print a world as JSON: the default one, or a file after validating it."""
    if not default and path is None:
        _fail("pass --default, or --world FILE to validate and print a world file")
    w = _world(None if default else path)
    sys.stdout.write(w.to_json() + "\n")


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
    """Write synthetic decisions and transactions feeds, one Parquet partition a day."""
    from rich.progress import Progress

    from pipeline.lake import LakeError
    from sim.history import generate_history

    store = _lake(lake, s3_endpoint_url)
    w = _world(world_path)
    try:
        first = dt.date.fromisoformat(start)
    except ValueError:
        _fail(f"--start must be a date YYYY-MM-DD (got {start!r})")
    if skus is not None:
        w = w.expand(skus, seed)
    rows = 0
    purchases = 0
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("simulating days", total=days)
        for day in generate_history(w, days, seed, first, epsilon=epsilon):
            try:
                store.write_partition("raw", "decisions", day.date, day.decisions)
                store.write_partition("raw", "transactions", day.date, day.transactions)
            except LakeError as err:
                _fail(str(err))
            rows += len(day.decisions)
            purchases += len(day.transactions)
            bar.advance(task)
    from pipeline.catalogue import add_to_catalogue
    from sim.catalogue import Catalogue

    catalogue = Catalogue.of_world(w)
    written = add_to_catalogue(
        store, first, list(catalogue.skus), True, catalogue.pricing, catalogue.horizon
    )
    console.print(
        f"wrote {days} days x {len(w.skus)} SKUs: {rows:,} decisions, {purchases:,} transactions "
        f"under {store.uri('raw')}/, and the catalogue (costs, stock, price ladder) to "
        f"{written[0]}"
    )


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
    """Map a point-of-sale export onto the transactions feed, one raw partition per UTC date."""
    from pipeline.ingest import IngestError, ingest_transactions
    from pipeline.lake import LakeError

    store = _lake(lake, s3_endpoint_url)
    try:
        report = ingest_transactions(source, mapping, store, replace=replace)
    except (IngestError, LakeError) as err:
        _fail(str(err))
    table = Table(title=f"ingest {source.name}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("rows read", f"{report.rows_read:,}")
    table.add_row("rows written", f"{report.rows_written:,}")
    for reason, count in report.rejected.items():
        table.add_row(f"rejected: {reason}", f"{count:,}")
    table.add_row("returns", f"{report.returns:,}")
    if report.rows_kept:
        table.add_row("kept from earlier ingests", f"{report.rows_kept:,}")
    if report.dates:
        span = f"{report.dates[0]} … {report.dates[-1]}" if len(report.dates) > 1 else ""
        table.add_row("dates", f"{len(report.dates)}  {span}".rstrip())
    shown = ", ".join(report.skus[:8]) + (" …" if len(report.skus) > 8 else "")
    table.add_row("SKUs", f"{len(report.skus)}  {shown}".rstrip())
    _out().print(table)
    if report.rows_read - report.rows_written:
        console.print(
            f"rejected rows and returns, with reasons: {report.rejects_uri}", soft_wrap=True
        )
    if report.rows_written == 0:
        worst = max(report.rejected.items(), key=lambda kv: kv[1], default=("", 0))
        hint = {
            "bad_ts": ': check "ts_format" and "timezone" in the mapping',
            "bad_price": ': check the price column and "decimal" in the mapping',
            "bad_quantity": ': check the quantity column and "decimal" in the mapping',
        }.get(worst[0], "")
        why = f"most rows rejected as {worst[0]}{hint}" if worst[1] else "the file has no sales"
        _fail(f"no transactions written from {source}; {why}")
    console.print(
        f"wrote {len(report.partitions)} partitions under {store.uri('raw/transactions')}/"
    )


def _print_report(report: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for col in ("policy", "mean profit", "95% CI", "% of optimal", "units", "changes/ep"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    rows = sorted(report["policies"].items(), key=lambda kv: -kv[1]["mean_profit"])
    for name, r in rows:
        pct = r["pct_of_optimal"]
        table.add_row(
            name.removeprefix("models:/"),
            f"{r['mean_profit']:,.1f}",
            f"[{r['ci95'][0]:,.0f}, {r['ci95'][1]:,.0f}]",
            "—" if pct is None else f"{pct:.1f}",
            f"{r['mean_units']:.1f}",
            f"{r['price_changes_per_episode']:.1f}",
        )
    _out().print(table)


def _out() -> Console:
    """Standard output; wide enough for the tables when it is not a terminal (logs, make)."""
    return Console() if sys.stdout.isatty() else Console(width=120)


@app.command()
def evaluate(
    world_path: WorldOpt = None,
    policies: Annotated[
        str,
        typer.Option(help="comma-separated: dp,rule,static,myopic,bandit,random and model paths"),
    ] = "dp,rule,static,myopic,bandit,random",
    episodes: Annotated[int, typer.Option(min=1, help="episodes per policy (same seeds)")] = 300,
    seed: Annotated[int, typer.Option(help="seed shared by every policy")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """Evaluate policies on common random numbers; print a table, optionally write JSON."""
    from pipeline.evaluation import evaluate_policies

    w = _world(world_path)
    names = [n.strip() for n in policies.split(",") if n.strip()]
    if not names:
        _fail("--policies is empty; e.g. --policies dp,rule,static")
    if any(n.startswith("models:/") for n in names):
        require_tracking(_settings())
    start = time.perf_counter()
    try:
        report = evaluate_policies(w, names, episodes, seed, log=console.print)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(str(err))
    _print_report(report, f"{w.name}: {episodes} episodes, seed {seed}")
    console.print(f"evaluated in {time.perf_counter() - start:.1f}s")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"report written to {json_out}")


@app.command()
def train(
    world_path: WorldOpt = None,
    algo: Annotated[str, typer.Option(help="ppo or dqn")] = "ppo",
    timesteps: Annotated[int, typer.Option(min=1, help="SKU-steps of experience")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    n_envs: Annotated[int, typer.Option(min=1, help="SKU-episodes stepped together")] = 64,
    out: Annotated[
        Path, typer.Option(help="model file (.zip); a .sha256 is written beside")
    ] = Path("data/models/agent.zip"),
) -> None:
    """Train an agent in the vectorised market and save it with its SHA-256."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.models import save_agent
    from pipeline.train import TrainConfig, train_agent

    w = _world(world_path)
    try:
        config = TrainConfig(algo=algo, timesteps=timesteps, seed=seed, n_envs=n_envs)
    except ValueError as err:
        _fail(str(err))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} steps"),
        TextColumn("{task.fields[profit]}"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"training {algo}", total=timesteps, profit="")

        def progress(done: int, total: int, profit: float | None) -> None:
            shown = "" if profit is None else f"profit/episode {profit:,.0f}"
            bar.update(task, completed=min(done, total), profit=shown)

        model = train_agent(w, config, progress)
    digest = save_agent(model, out)
    console.print(f"saved {out} (sha256 {digest[:12]}…)")


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from pipeline.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        _fail(f"invalid settings: {err}")


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a date YYYY-MM-DD (got {value!r})")
        raise


def _print_night(summary: dict[str, Any], title: str) -> None:
    _print_report(summary["report"], title)
    decision = summary["decision"]
    verdict = "[bold green]PROMOTED[/]" if decision.get("moved") else "[bold yellow]KEPT[/]"
    _out().print(f"gate: {verdict} — {decision['reason']}")
    champion = decision.get("champion_label") or (
        f"v{decision['champion']}" if decision.get("champion") else "none yet"
    )
    _out().print(f"champion: {champion}")


def _print_demand(settings: Any, day: dt.date) -> None:
    """The per-SKU demand fit of a transactions-only night."""
    from pipeline.lake import Lake

    lake = Lake.from_uri(settings.lake, settings.s3_endpoint_url)
    report = json.loads(lake.read_bytes(f"reports/sim/date={day.isoformat()}/fit_report.json"))
    demand = report["demand"]
    table = Table(title="fitted demand (transactions only): units ~ Poisson(price^elasticity)")
    for col in ("sku", "days", "units", "elasticity", "95% CI", "note"):
        table.add_column(col, justify="left" if col in ("sku", "note") else "right")
    for row in demand["skus"]:
        if row.get("identifiable"):
            ci = f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
            el = f"{row['elasticity']:.2f}"
            note = "negative, as expected" if row["negative"] else "NOT negative"
        else:
            ci, el, note = "—", "—", row.get("reason") or "not identifiable"
        table.add_row(str(row["sku"]), str(row["days"]), f"{row['units']:.0f}", el, ci, note)
    _out().print(table)
    s = demand["summary"]
    _out().print(
        f"{s['negative']} of {s['identifiable']} identifiable elasticities are negative "
        f"({s['significantly_negative']} significantly); simulator price sensitivity: "
        f"{report['segment']['source']}"
    )


@app.command()
def nightly(
    date: Annotated[str, typer.Option(help="logical date YYYY-MM-DD (the last day of logs)")],
    data_dir: Annotated[
        Path | None, typer.Option(help="default: PRICING_DATA_DIR or ./data")
    ] = None,
    lake: Annotated[str | None, typer.Option(help="default: PRICING_LAKE_URI or data/lake")] = None,
    airflow: Annotated[
        bool,
        typer.Option(
            "--airflow",
            help="run the pricing_nightly DAG through Airflow (dag.test on a SQLite metadata DB "
            "in AIRFLOW_HOME, default data_dir/airflow) instead of calling the steps directly",
        ),
    ] = False,
) -> None:
    """Run the whole night for one date. Exit 0: completed (promoted or not); 2: a gate stopped it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.nightly import night_summary, run_night

    settings = _settings(data_dir=data_dir, lake_uri=lake)
    day = _date(date, "--date")
    require_tracking(settings)  # before hours of work, not after
    if airflow:
        _nightly_through_airflow(settings, day)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:

        def train_progress(algo: str) -> Any:
            task = bar.add_task(f"training {algo}", total=1)

            def report(done: int, total: int, profit: float | None) -> None:
                bar.update(task, completed=min(done, total), total=total)

            return report

        result = run_night(
            settings,
            day,
            say=lambda m: console.print(f"[dim]{m}[/]"),
            train_progress=train_progress,
        )
    if result.status == "stopped":
        console.print(f"[bold red]night {date} stopped at {result.stopped_at}:[/] {result.reason}")
        raise typer.Exit(2)
    if result.steps.get("refit", {}).get("mode") == "transactions":
        _print_demand(settings, day)
    _print_night(
        night_summary(settings, day),
        f"night {date}: refit simulator, {settings.eval_episodes} paired episodes",
    )


def _nightly_through_airflow(settings: Any, day: dt.date) -> None:
    import os

    from pipeline import airflow_run
    from pipeline.nightly import night_summary

    # The DAG's tasks read their settings from the environment, as on a worker.
    os.environ["PRICING_DATA_DIR"] = str(settings.data_dir)
    os.environ["PRICING_LAKE_URI"] = settings.lake
    try:
        home = airflow_run.configure(settings.data_dir)
        console.print(f"[dim]Airflow home {home} (SQLite); migrating the metadata DB[/]")
        airflow_run.prepare_db()
        console.print(f"[dim]dag.test(): pricing_nightly for {day}; task logs follow[/]")
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        result = airflow_run.run_dag("pricing_nightly", midnight)
    except airflow_run.AirflowRunError as err:
        _fail(str(err))
    from rich.markup import escape

    grid = Table(title=f"pricing_nightly: {result.state}", caption=f"run {result.run_id}")
    grid.add_column("task")
    grid.add_column("state")
    colours = {"success": "green", "failed": "red", "upstream_failed": "yellow"}
    for task, state in result.tasks.items():
        grid.add_row(escape(task), f"[{colours.get(state, 'dim')}]{state}[/]")
    _out().print(grid)
    if result.stop is not None:
        console.print(
            f"[bold red]night {day} stopped at {result.stop['step']}:[/] {result.stop['reason']}"
        )
        raise typer.Exit(2)
    if result.state != "success":
        failed = [t for t, st in result.tasks.items() if st == "failed"]
        _fail(f"the Airflow run failed at {', '.join(failed) or '?'}; its log is above")
    _print_night(
        night_summary(settings, day),
        f"night {day} through Airflow: refit simulator, {settings.eval_episodes} paired episodes",
    )


def _when(value: str, option: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a time such as 2026-02-01T14:00 (got {value!r})")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


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
    from pipeline.monitor import MonitorError, monitor_window

    settings = _settings()
    require_tracking(settings)
    begin = _when(start, "--start")
    stop = _when(end, "--end") if end else begin + dt.timedelta(hours=1)
    try:
        report = monitor_window(settings, begin, stop, publish=publish)
    except MonitorError as err:
        _fail(str(err))
    k, d = report["kpis"], report["drift"]
    table = Table(title=f"monitor {begin.isoformat()} → {stop.isoformat()}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("prices shown", f"{k['decisions']:,}")
    if k["decisions"]:
        table.add_row("conversion", f"{k['conversion']:.2%}")
        table.add_row("revenue", f"{k['revenue']:,.2f}")
        table.add_row("gross profit", f"{k['gross_profit']:,.2f}")
        table.add_row("margin", "—" if k["margin"] is None else f"{k['margin']:.1%}")
        table.add_row("exploration rate", f"{k['exploration_rate']:.1%}")
        mix = ", ".join(f"{a}: {share:.0%}" for a, share in k["action_share"].items())
        table.add_row("action mix", mix)
    for feature, value in d.get("psi", {}).items():
        kind = "market" if feature in d.get("alarm_features", ()) else "policy"
        table.add_row(f"PSI {feature} ({kind})", f"{value:.3f}")
    _out().print(table)
    colour = {"drift": "bold red", "ok": "green"}.get(d["status"], "yellow")
    _out().print(f"[{colour}]{d['status']}[/]: {d['message']}")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str))
    if d["status"] == "drift":
        raise typer.Exit(2)


def _require_token(settings: Any, token: str | None) -> None:
    import hmac

    if not settings.admin_token:
        _fail(
            "manual champion moves are disabled: set PRICING_ADMIN_TOKEN where the pipeline "
            "runs, then pass it with --token (or PRICING_TOKEN)"
        )
    if not token or not hmac.compare_digest(token, settings.admin_token):
        _fail("the admin token is missing or wrong (--token or PRICING_TOKEN)", code=3)


TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="PRICING_TOKEN", help="admin token", show_default=False),
]


@app.command()
def promote(
    version: Annotated[str, typer.Option(help="version number, or 'challenger'")],
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
    token: TokenOpt = None,
    who: Annotated[str | None, typer.Option(help="who, for the ledger")] = None,
    dry_run: Annotated[bool, typer.Option(help="show what would happen")] = False,
) -> None:
    """Make a version the champion (admin). Same path as the nightly gate: lock, compare-and-set,
    ledger."""
    _manual_move("promote", reason, token, version, who, dry_run)


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
    token: TokenOpt = None,
    who: Annotated[str | None, typer.Option(help="who, for the ledger")] = None,
    dry_run: Annotated[bool, typer.Option(help="show what would happen")] = False,
) -> None:
    """Point the champion back at the version it replaced (admin)."""
    _manual_move("rollback", reason, token, None, who, dry_run)


def _manual_move(
    action: str, reason: str, token: str | None, version: str | None, who: str | None, dry: bool
) -> None:
    from pipeline.lake import Lake
    from pipeline.registry import PromotionConflict, Registry, RegistryError

    settings = _settings()
    _require_token(settings, token)
    require_tracking(settings)
    reg = Registry(settings, Lake.from_uri(settings.lake, settings.s3_endpoint_url))
    try:
        move = reg.manual_move(action, reason, version, who=who, dry_run=dry)
    except (RegistryError, PromotionConflict) as err:
        _fail(str(err))
    done = "promoted" if action == "promote" else "rolled back"
    head = "dry run: champion would move" if dry else f"{done}: champion"
    console.print(f"{head} v{move['from']} → v{move['to']} ({reason})")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="where the lake, MLflow and reports go")] = Path(
        "data"
    ),
    days: Annotated[int, typer.Option(min=7, help="days of synthetic history")] = 28,
    episodes: Annotated[int, typer.Option(min=10, help="true-world episodes per policy")] = 600,
    seed: Annotated[int, typer.Option(help="random seed of the history")] = 0,
    airflow: Annotated[
        bool,
        typer.Option(
            help="run the night through Airflow's pricing_nightly DAG (--no-airflow: the same "
            "steps called directly)"
        ),
    ] = True,
) -> None:
    """Synthetic history of a rule-based pricer, the nightly loop on its last day (through the
    Airflow DAG), and the new champion measured in the true world against the optimum and the
    baselines."""
    import os

    os.environ.setdefault("PRICING_DATA_DIR", str(data_dir))
    settings = _settings(data_dir=data_dir)
    start = dt.date(2026, 1, 5)
    last = start + dt.timedelta(days=days - 1)
    console.rule(f"1/3 {days} days of history of the rule-based pricer (10 % exploration)")
    history(
        world_path=settings.world_file,
        days=days,
        skus=None,
        lake=settings.lake,
        s3_endpoint_url=settings.s3_endpoint_url,
        seed=seed,
        start=start.isoformat(),
        epsilon=0.1,
    )
    how = "the pricing_nightly DAG through Airflow" if airflow else "the nightly loop"
    console.rule(f"2/3 {how} for {last}")
    try:
        nightly(date=last.isoformat(), data_dir=data_dir, lake=settings.lake, airflow=airflow)
    except typer.Exit as stop:
        if stop.exit_code:
            raise
    console.rule("3/3 the champion in the true world (the one that generated the logs)")
    champion = f"models:/{settings.model_name}@champion"
    out = data_dir / "reports" / "demo.json"
    evaluate(
        world_path=settings.world_file,
        policies=f"dp,{champion},static,rule,bandit,myopic,random",
        episodes=episodes,
        seed=seed + 1000,
        json_out=out,
    )
    report = json.loads(out.read_text())["policies"]
    exact = json.loads(out.read_text())["dp_expected_profit"]
    c, st, dp, rule = (report[k]["mean_profit"] for k in (champion, "static", "dp", "rule"))
    _out().print(
        f"champion vs rule: {100 * (c / rule - 1):+.1f} % profit; share of the static → optimum "
        f"headroom captured: {(c - st) / (dp - st):.0%} against the DP policy on the same episodes, "
        f"{(c - st) / (exact - st):.0%} against its exact expectation; "
        f"{report[champion]['pct_of_optimal']:.1f} % of the optimum"
    )


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="the embedded defaults' root")] = Path("data"),
    airflow_port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Airflow (UI, scheduler, DAG processor, triggerer) and the MLflow UI on localhost, over the
    same SQLite databases and lake as the CLI; Ctrl-C stops them."""
    import os
    import secrets
    import signal
    import time

    from pipeline import local_stack
    from pipeline.airflow_run import AirflowRunError

    settings = _settings(data_dir=data_dir)
    token_note = "PRICING_ADMIN_TOKEN as set"
    if not settings.admin_token:
        # The promote DAG refuses to move the champion unless a token is configured.
        os.environ["PRICING_ADMIN_TOKEN"] = secrets.token_urlsafe(16)
        token_note = f"generated for this session: {os.environ['PRICING_ADMIN_TOKEN']}"

    stopping = False

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:  # a second signal must not cut the clean-up short
            stopping = True
            raise KeyboardInterrupt

    # Installed explicitly: a shell that starts a command in the background makes it ignore
    # SIGINT, and Python then keeps ignoring it. `kill` and a closed terminal stop it too.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        stack = local_stack.start(
            settings, airflow_port, mlflow_port, say=lambda m: console.print(f"[dim]{m}[/]")
        )
    except (local_stack.StackError, AirflowRunError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted while starting; everything started was stopped", code=130)
    try:
        table = Table(title="running on localhost (Ctrl-C stops everything)")
        for col in ("service", "URL", "notes"):
            table.add_column(col)
        airflow, mlflow_ui = stack.components
        table.add_row(
            "Airflow",
            airflow.url,
            f"login {local_stack.USER} / {stack.password}; log {airflow.log}",
        )
        table.add_row("MLflow", mlflow_ui.url, f"registry and runs; log {mlflow_ui.log}")
        _out().print(table)
        _out().print(
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


def main() -> None:
    """The `pricing` command: usage errors exit 1 like any other bad input (not click's 2, which
    here means a gate stopped the night)."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as err:
        err.show()  # `pricing` alone: the help, which is no error
        code = ExitCode.OK
    except ClickException as err:
        err.show()
        code = ExitCode.BAD_INPUT
    except typer.Abort:
        console.print("[bold red]interrupted[/]")
        code = ExitCode.INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
