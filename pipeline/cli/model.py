"""`pricing train`, `pricing evaluate`: an agent trained in the simulator; policies compared."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli import render
from pipeline.cli.app import WorldOpt, app, console, fail, settings


@app.command()
def evaluate(
    world_path: WorldOpt = None,
    policies: Annotated[
        str,
        typer.Option(
            help="comma-separated: dp,rule,static,myopic,bandit,random, bc (the behavioural "
            "clone of the lake's logged decisions), models:/NAME@ALIAS and model files"
        ),
    ] = "dp,rule,static,myopic,bandit,random",
    episodes: Annotated[int, typer.Option(min=1, help="episodes per policy (same seeds)")] = 300,
    seed: Annotated[int, typer.Option(help="seed shared by every policy")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    as_served: Annotated[
        bool,
        typer.Option(
            "--as-served",
            help="also the rule and each agent as the pricing service serves them "
            "(PRICING_SERVE_* exploration and guardrails; rows '<name> as served')",
        ),
    ] = False,
) -> None:
    """Evaluate policies on common random numbers; print a table, optionally write JSON."""
    from pipeline.model.evaluation import evaluate_policies
    from pipeline.release.registry import load_registered
    from pipeline.tracking import require_tracking
    from sim.world import load_world

    w = load_world(world_path)
    names = [n.strip() for n in policies.split(",") if n.strip()]
    if not names:
        fail("--policies is empty; e.g. --policies dp,rule,static")
    if any(n.startswith("models:/") for n in names):
        require_tracking(settings())
    start = time.perf_counter()
    given = {"bc": (_cloned_from_lake(w), True)} if "bc" in names else None
    served = None
    if as_served:
        from pipeline.settings import ServedAs

        served = ServedAs()
    report = evaluate_policies(
        w, names, episodes, seed, console.print, load_registered, given, served
    )
    render.evaluation_table(report, f"{w.name}: {episodes} episodes, seed {seed}")
    console.print(f"evaluated in {time.perf_counter() - start:.1f}s")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"report written to {json_out}")


def _plan_to_file(world: Any, out: Path) -> None:
    """`pricing train --algo planner`: solve the world exactly and save the table."""
    from pipeline.model.planner import plan, save_planner

    if out.suffix != ".npz":
        out = out.with_suffix(".npz")
    start = time.perf_counter()
    console.print(f"solving {world.name} exactly ({len(world.skus)} SKUs) …")
    try:
        planner = plan(world)
    except ValueError as err:
        fail(str(err))
    digest = save_planner(planner, out)
    console.print(
        f"saved {out} (sha256 {digest[:12]}…) in {time.perf_counter() - start:.1f}s; expected "
        f"profit per episode {planner.value0.sum():,.1f}"
    )


def _cloned_from_lake(world: Any) -> Any:
    """The behavioural clone of the logged decisions of the lake's last ``PRICING_TRAIN_DAYS``
    days (`pipeline.model.cloning`)."""
    import pandas as pd

    from pipeline.data.lake import open_lake
    from pipeline.model.cloning import fit_cloned_policy
    from pipeline.model.logged import served_decision_units

    config = settings()
    lake = open_lake(config)
    dates = lake.list_dates("raw", "decisions")
    if not dates:
        fail(
            f"bc clones the logged decisions, and {lake.uri('raw/decisions')} holds none: write "
            "some with `pricing history` (or the service's log export), or drop bc from --policies"
        )
    days = dates[-config.train_days :]
    decisions = pd.concat([lake.read_partition("raw", "decisions", d) for d in days])
    try:
        units = served_decision_units(
            decisions, world, season_start=pd.Timestamp(dates[0], tz="UTC")
        )
        policy = fit_cloned_policy(units, world, seed=config.train_seed)
    except (ValueError, KeyError) as err:
        fail(f"bc: the lake's decisions cannot be cloned in {world.name}: {err}")
    console.print(f"bc: cloned {policy.n_units:,} logged decisions of {days[0]}…{days[-1]}")
    return policy


@app.command()
def train(
    world_path: WorldOpt = None,
    algo: Annotated[
        str, typer.Option(help="ppo, dqn, or planner (the exact plan of the world: an .npz)")
    ] = "ppo",
    timesteps: Annotated[int, typer.Option(min=1, help="SKU-steps of experience")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    n_envs: Annotated[int, typer.Option(min=1, help="SKU-episodes stepped together")] = 64,
    out: Annotated[
        Path, typer.Option(help="model file (.zip); a .sha256 is written beside")
    ] = Path("data/models/agent.zip"),
) -> None:
    """Train an agent in the vectorised market and save it with its SHA-256."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.model.artifacts import save_agent
    from pipeline.model.train import TrainConfig, train_agent
    from sim.world import load_world

    w = load_world(world_path)
    if algo == "planner":
        _plan_to_file(w, out)
        return
    try:
        config = TrainConfig(algo=algo, timesteps=timesteps, seed=seed, n_envs=n_envs)
    except ValueError as err:
        fail(str(err))
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
