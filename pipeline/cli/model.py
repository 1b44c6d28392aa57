"""`pricing train`, `pricing evaluate`: an agent trained in the simulator; policies compared."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import render
from pipeline.cli.app import WorldOpt, app, console, fail, settings


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
    report = evaluate_policies(w, names, episodes, seed, console.print, load_registered)
    render.evaluation_table(report, f"{w.name}: {episodes} episodes, seed {seed}")
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

    from pipeline.model.artifacts import save_agent
    from pipeline.model.train import TrainConfig, train_agent
    from sim.world import load_world

    w = load_world(world_path)
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
