"""`pricing nightly`, `pricing demo`: a night for one date (directly, or as the Airflow DAG), and
the demo that plays a retailer's first night."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli import render
from pipeline.cli.app import app, console, fail, parse_date, say, settings
from pipeline.cli.data import history
from pipeline.cli.model import evaluate
from pipeline.errors import ExitCode
from pipeline.settings import Settings


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
    clusters: Annotated[
        bool,
        typer.Option(
            "--clusters/--no-clusters",
            envvar="PRICING_CLUSTERS",
            help="one night per cluster of SKUs (pricing clusters), each with its own model "
            "and champion, after the catalogue's validation and features",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="with --clusters: cluster nights run side by side, each in a process of its "
            "own (default PRICING_NIGHT_WORKERS or 1; memory grows with each)",
        ),
    ] = None,
) -> None:
    """Run the whole night for one date. Exit 0: completed (promoted or not); 2: a gate stopped it
    (with --clusters: the catalogue's steps, or every cluster's night)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.nightly.run import run_night
    from pipeline.nightly.steps import TrainProgress
    from pipeline.tracking import require_tracking

    config = settings(data_dir=data_dir, lake_uri=lake)
    day = parse_date(date, "--date")
    require_tracking(config)  # before hours of work, not after
    if airflow:
        if clusters:  # the DAG reads it when it is parsed, as on a scheduler
            os.environ["PRICING_CLUSTERS"] = "true"
        _through_airflow(config, day)
        return
    if workers is not None and not clusters:
        fail("--workers runs cluster nights side by side: add --clusters")
    if clusters:
        _clustered(config, day, workers)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:

        def train_progress(algo: str) -> TrainProgress:
            task = bar.add_task(f"training {algo}", total=1)

            def report(done: int, total: int, profit: float | None) -> None:
                bar.update(task, completed=min(done, total), total=total)

            return report

        result = run_night(config, day, say=say, train_progress=train_progress)
    if result.status == "stopped":
        console.print(f"[bold red]night {date} stopped at {result.stopped_at}:[/] {result.reason}")
        raise typer.Exit(ExitCode.STOPPED)
    _print_night(config, day, f"night {date}: refit simulator")


def _clustered(config: Settings, day: dt.date, workers: int | None) -> None:
    from rich.table import Table

    from pipeline.nightly.run import run_clustered_night
    from pipeline.nightly.steps import night_summary

    night = run_clustered_night(config, day, say=say, workers=workers)
    catalogue = night.catalogue
    if catalogue.status == "stopped":
        console.print(
            f"[bold red]night {day} stopped at {catalogue.stopped_at}:[/] {catalogue.reason}"
        )
        raise typer.Exit(ExitCode.STOPPED)
    table = Table(title=f"night {day}: {len(night.clusters)} clusters, refit simulators")
    for col in ("cluster", "night", "champion", "% of optimum", "vs static", "vs rule"):
        table.add_column(
            col, justify="left" if col in ("cluster", "night", "champion") else "right"
        )
    for cid, result in night.clusters.items():
        if result.status == "stopped":
            table.add_row(cid, f"stopped at {result.stopped_at}", "—", "", "", "")
            continue
        report, decision = night_summary(config.for_cluster(cid), day)
        champion = decision.champion_label or "none yet"
        rows = report.get("policies", {})
        mine = rows.get(champion, {})
        pct = mine.get("pct_of_optimal")
        table.add_row(
            cid,
            "promoted" if decision.moved else "kept",
            champion,
            "—" if pct is None else f"{pct:.1f}",
            _uplift(mine, rows.get("static", {})),
            _uplift(mine, rows.get("rule", {})),
        )
    console.print(table)
    for cid, result in night.clusters.items():
        if result.status == "stopped":  # one line each, however long: logs are read with grep
            console.print(
                f"cluster {cid} stopped at {result.stopped_at}: {result.reason}", soft_wrap=True
            )
    if any(r.stopped_at == "error" for r in night.clusters.values()):
        raise typer.Exit(ExitCode.INTERNAL)  # the others ran; the traceback is in the log
    if all(r.status == "stopped" for r in night.clusters.values()):
        raise typer.Exit(ExitCode.STOPPED)


def _uplift(mine: dict[str, Any], base: dict[str, Any]) -> str:
    """Profit of ``mine`` over ``base`` (evaluation report rows), as a signed percentage."""
    if not mine or not base.get("mean_profit"):
        return "—"
    return f"{(mine['mean_profit'] - base['mean_profit']) / abs(base['mean_profit']):+.1%}"


def _print_night(config: Settings, day: dt.date, title: str) -> None:
    from pipeline.contracts import fit_report_path
    from pipeline.data.lake import open_lake
    from pipeline.nightly.steps import night_summary, read_json

    fit = read_json(open_lake(config), fit_report_path(day))
    if fit.get("mode") == "transactions":
        render.demand(fit)
    report, decision = night_summary(config, day)
    render.night(report, decision, f"{title}, {config.eval_episodes} paired episodes")


def _through_airflow(config: Settings, day: dt.date) -> None:
    from pipeline.orchestration import airflow_run

    # The DAG's tasks read their settings from the environment, as on a worker.
    os.environ["PRICING_DATA_DIR"] = str(config.data_dir)
    os.environ["PRICING_LAKE_URI"] = config.lake
    home = airflow_run.configure(config.data_dir)
    say(f"Airflow home {home} (SQLite); migrating the metadata DB")
    airflow_run.prepare_db()
    say(f"dag.test(): pricing_nightly for {day}; task logs follow")
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    result = airflow_run.run_dag("pricing_nightly", midnight)
    render.task_grid(f"pricing_nightly: {result.state}", f"run {result.run_id}", result.tasks)
    if result.stop is not None:
        console.print(
            f"[bold red]night {day} stopped at {result.stop['step']}:[/] {result.stop['reason']}"
        )
        raise typer.Exit(ExitCode.STOPPED)
    if result.state != "success":
        failed = [t for t, st in result.tasks.items() if st == "failed"]
        fail(f"the Airflow run failed at {', '.join(failed) or '?'}; its log is above")
    _print_night(config, day, f"night {day} through Airflow: refit simulator")


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
    from pipeline.model.evaluation import headroom

    os.environ.setdefault("PRICING_DATA_DIR", str(data_dir))
    # the first night: the exact plan of the refit world and PPO beside it at a fifth of the
    # nightly budget (the plan wins where the solver runs: README, agent quality)
    os.environ.setdefault("PRICING_PPO_TIMESTEPS", "1000000")
    config = settings(data_dir=data_dir)
    start = dt.date(2026, 1, 5)
    last = start + dt.timedelta(days=days - 1)
    console.rule(f"1/3 {days} days of history of the rule-based pricer (10 % exploration)")
    history(
        world_path=config.world_file,
        days=days,
        skus=None,
        lake=config.lake,
        s3_endpoint_url=config.s3_endpoint_url,
        seed=seed,
        start=start.isoformat(),
        epsilon=0.1,
    )
    how = "the pricing_nightly DAG through Airflow" if airflow else "the nightly loop"
    console.rule(f"2/3 {how} for {last}")
    nightly(date=last.isoformat(), data_dir=data_dir, lake=config.lake, airflow=airflow)
    console.rule("3/3 the champion in the true world (the one that generated the logs)")
    champion = f"models:/{config.model_name}@champion"
    out = data_dir / "reports" / "demo.json"
    evaluate(
        world_path=config.world_file,
        policies=f"dp,{champion},static,rule,bc,bandit,myopic,random",
        episodes=episodes,
        seed=seed + 1000,
        json_out=out,
        as_served=True,
    )
    report = json.loads(out.read_text())
    h = headroom(report, champion)
    served = {k: report["policies"][f"{k} as served"]["mean_profit"] for k in (champion, "rule")}
    render.out().print(
        f"champion vs rule: {100 * h.vs_rule:+.1f} % profit (as served, with exploration and "
        f"guardrails: {100 * (served[champion] / served['rule'] - 1):+.1f} %); share of the "
        f"static → optimum headroom captured: {h.share_vs_dp_run:.0%} against the DP policy on "
        f"the same episodes, {h.share_vs_dp_exact:.0%} against its exact expectation; "
        f"{h.pct_of_optimal:.1f} % of the optimum",
        soft_wrap=True,
    )
