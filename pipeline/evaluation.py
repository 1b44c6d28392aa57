"""`pricing evaluate`: baselines and trained agents on the same seeds, against the DP optimum."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sim.evaluate import Rollouts, dp_values, episode_skus, rollout, summarize
from sim.policies import POLICY_NAMES, Policy, make_baselines
from sim.world import MarketParams, World

# Above this many DP states (summed over SKUs) the exact optimum is skipped: pct_of_optimal is null.
DP_MAX_STATES = 50_000_000


def dp_tractable(params: MarketParams) -> bool:
    """Whether the exact optimum is small enough to solve (see `DP_MAX_STATES`)."""
    p = params
    return int((p.capacity + 1).sum()) * p.T * p.L * p.C <= DP_MAX_STATES


def resolve_policies(
    world: World, names: Sequence[str], episodes: int | None = None
) -> dict[str, tuple[Policy, bool]]:
    """Map each name to (policy, greedy). Baseline names build baselines; anything else is a path
    to a saved agent (its SHA-256 is checked before loading)."""
    from pipeline.models import AgentPolicy, load_agent

    params = world.compile()
    base_names = [n for n in names if n in POLICY_NAMES]
    used = None if episodes is None else sorted(set(episode_skus(params, episodes).tolist()))
    baselines = make_baselines(params, base_names, skus=used)
    out: dict[str, tuple[Policy, bool]] = {}
    for name in names:
        if name in baselines:
            out[name] = (baselines[name], False)
            continue
        if name.startswith("models:/"):
            out[name] = (AgentPolicy(_load_registered(name).model, name), True)
            continue
        path = Path(name)
        if not path.exists():
            raise ValueError(
                f"unknown policy {name!r}: not one of {', '.join(POLICY_NAMES)} and no such model "
                "file (train one with `pricing train`)"
            )
        label = path.stem if path.stem not in out else str(path)
        out[label] = (AgentPolicy(load_agent(path), label), True)
    return out


def run_policies(
    world: World,
    names: Sequence[str],
    episodes: int,
    seed: int,
    log: Callable[[str], Any] | None = None,
) -> dict[str, Rollouts]:
    """Run every policy on the same ``episodes`` seeds; per-episode results by policy name."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {episodes})")
    params = world.compile()
    results: dict[str, Rollouts] = {}
    for name, (policy, greedy) in resolve_policies(world, names, episodes).items():
        if log:
            log(f"evaluating {name} on {episodes} episodes")
        results[name] = rollout(params, policy, episodes, seed, greedy=greedy)
    return results


def _load_registered(uri: str) -> Any:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` from the configured registry, verified."""
    from pipeline.lake import Lake
    from pipeline.registry import Registry, RegistryError
    from pipeline.settings import Settings

    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, version = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    else:
        raise ValueError(f"{uri}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    settings = Settings(model_name=name)
    registry = Registry(settings, Lake.from_uri(settings.lake, settings.s3_endpoint_url))
    try:
        return registry.load(registry.resolve(version).version)
    except RegistryError as err:
        raise ValueError(f"{uri}: {err} (tracking URI {settings.tracking_uri})") from None


def evaluate_policies(
    world: World,
    names: Sequence[str],
    episodes: int,
    seed: int,
    log: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """`run_policies`, summarised into the JSON-ready report of `pricing evaluate`."""
    params = world.compile()
    results = run_policies(world, names, episodes, seed, log)
    optimum = dp_values(params) if dp_tractable(params) else None
    return summarize(params, results, episodes, seed, optimum)
