"""THE evaluation: policies on the same seeds (common random numbers), against the exact optimum.

One function, `evaluate`, serves every entry point: `pricing evaluate` (through
`evaluate_policies`), the night's candidate evaluation (`pipeline.nightly.evaluate`) and the
agent-quality benchmark (`bench/policy_quality.py`). It runs each policy on the same episodes,
solves the exact optimum when the world is small enough, and returns an `Evaluation`: the
per-episode results, the JSON report, and paired comparisons between any two policies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PricingError
from pipeline.model.agents import Agent, agent_policy
from pipeline.model.artifacts import load_agent
from pipeline.model.planner import dp_tractable, load_planner
from pipeline.settings import ServedAs
from sim.evaluate import Rollouts, dp_values, episode_skus, paired_difference, rollout, summarize
from sim.params import MarketParams
from sim.policies import POLICY_NAMES, Policy, make_baselines
from sim.served import AsServed, Draws
from sim.world import World

Policies = Mapping[str, tuple[Policy, bool]]  # name -> (policy, greedy)


@dataclass(frozen=True)
class Evaluation:
    """Every policy's per-episode results on the same episodes, and the exact optimum."""

    params: MarketParams
    episodes: int
    seed: int
    results: dict[str, Rollouts]
    optimum: np.ndarray | None  # optimal expected profit per SKU; None when not tractable

    def report(self) -> dict[str, Any]:
        """``{"episodes", "seed", "dp_expected_profit", "policies": {name: {...}}}``."""
        return summarize(self.params, self.results, self.episodes, self.seed, self.optimum)

    def paired(
        self, a: str, b: str, n_boot: int = 2000, seed: int = 0
    ) -> tuple[float, float, float]:
        """Mean and paired-bootstrap 95 % CI of the profit difference ``a − b`` per episode."""
        return paired_difference(self.results[a], self.results[b], n_boot, seed)


def evaluate(
    world: World,
    policies: Policies,
    episodes: int,
    seed: int,
    log: Callable[[str], Any] | None = None,
    optimum: bool = True,
) -> Evaluation:
    """Run every policy for ``episodes`` episodes on the same seeds; greedy ones take their most
    probable action (trained agents, as they act in service). ``optimum=False`` skips the exact
    optimum (the "% of optimal" column) where only the policies' ratio is wanted."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {episodes})")
    params = world.compile()
    results: dict[str, Rollouts] = {}
    for name, (policy, greedy) in policies.items():
        if log:
            log(f"evaluating {name} on {episodes} episodes")
        results[name] = rollout(params, policy, episodes, seed, greedy=greedy)
    best = dp_values(params) if optimum and dp_tractable(params) else None
    return Evaluation(params, episodes, seed, results, best)


def baselines(world: World, names: Sequence[str], episodes: int) -> dict[str, tuple[Policy, bool]]:
    """The named baselines, built only for the SKUs the episodes visit (the exact static search
    is per SKU)."""
    params = world.compile()
    used = sorted(set(episode_skus(params, episodes).tolist()))
    return {n: (p, False) for n, p in make_baselines(params, list(names), skus=used).items()}


def as_served(
    world: World,
    policy: Policy,
    served: ServedAs,
    arm: str,
    name: str,
    period0: int | None = None,
) -> AsServed:
    """``policy`` as the pricing service serves it in ``arm`` (`sim.served.AsServed`): greedy,
    with that arm's exploration on the SKUs that may explore, inside the guardrails. Given the
    decision period its season starts at (``period0``), it draws what the service draws."""
    eps = served.epsilon if arm == "treatment" else served.control_epsilon
    per_sku = np.array([eps if served.explores(s.id) else 0.0 for s in world.skus])
    draws = None
    if period0 is not None:
        draws = Draws(served.salt, arm, tuple(s.id for s in world.skus), period0)
    return AsServed(policy, served.guardrails, per_sku, greedy=True, name=name, draws=draws)


# models:/NAME@ALIAS -> the verified agent and the world it was trained in
Registered = Callable[[str], tuple[Agent, World]]


def resolve_policies(
    world: World,
    names: Sequence[str],
    episodes: int,
    registered: Registered | None = None,
    given: Policies | None = None,
) -> dict[str, tuple[Policy, bool]]:
    """Policies from names: ``given`` ones (built by the caller, e.g. the behavioural clone of
    the lake's logs), baselines by name, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``
    through ``registered`` (`pipeline.release.registry.load_registered`), anything else a saved
    agent's path (its SHA-256 checked first): an SB3 ``.zip`` or a planner's ``.npz``."""
    given = given or {}
    built = baselines(world, [n for n in names if n in POLICY_NAMES and n not in given], episodes)
    out: dict[str, tuple[Policy, bool]] = {}
    for name in names:
        if name in given:
            out[name] = given[name]
        elif name in built:
            out[name] = built[name]
        elif name.startswith("models:/"):
            if registered is None:
                raise PricingError(f"{name}: registered models need the registry here")
            agent, trained_in = registered(name)
            out[name] = (agent_policy(agent, name, trained_in), True)
        else:
            path = Path(name)
            if not path.exists():
                raise PricingError(
                    f"unknown policy {name!r}: not one of {', '.join(POLICY_NAMES)} and no such "
                    "model file (train one with `pricing train`)"
                )
            label = path.stem if path.stem not in out else str(path)
            # a planner's table (.npz) is solved for one world: load_planner checks it is this one
            agent = load_planner(path, world) if path.suffix == ".npz" else load_agent(path)
            out[label] = (agent_policy(agent, label), True)
    return out


def evaluate_policies(
    world: World,
    names: Sequence[str],
    episodes: int,
    seed: int,
    log: Callable[[str], Any] | None = None,
    registered: Registered | None = None,
    given: Policies | None = None,
    served: ServedAs | None = None,
) -> dict[str, Any]:
    """`pricing evaluate`: the named policies through `evaluate`, as its JSON report. With
    ``served``, the rule-based pricer and every trained agent or plan also as the pricing
    service serves them (`as_served`; rows ``<name> as served``)."""
    policies = resolve_policies(world, names, episodes, registered, given)
    if served is not None:
        for name in list(policies):
            agent = name.startswith("models:/") or (name not in POLICY_NAMES and name != "bc")
            if name == "rule" or agent:
                arm = "control" if name == "rule" else "treatment"
                label = f"{name} as served"
                policies[label] = (as_served(world, policies[name][0], served, arm, label), False)
    return evaluate(world, policies, episodes, seed, log).report()


@dataclass(frozen=True)
class Headroom:
    """How much of the gap between the best fixed price and the optimum a policy captures."""

    vs_rule: float  # profit gain over the rule-based pricer, as a fraction
    share_vs_dp_run: float  # of (optimum − static), the optimum measured by the DP's own run
    share_vs_dp_exact: float  # the same against the DP's exact expected profit
    pct_of_optimal: float | None


def headroom(report: dict[str, Any], policy: str) -> Headroom:
    """`Headroom` of ``policy`` in an evaluation report that holds ``dp``, ``static``, ``rule``."""
    profit = {k: report["policies"][k]["mean_profit"] for k in (policy, "static", "dp", "rule")}
    agent, static, dp, rule = (profit[k] for k in (policy, "static", "dp", "rule"))
    exact = report["dp_expected_profit"]
    return Headroom(
        vs_rule=agent / rule - 1,
        share_vs_dp_run=(agent - static) / (dp - static),
        share_vs_dp_exact=(agent - static) / (exact - static),
        pct_of_optimal=report["policies"][policy]["pct_of_optimal"],
    )
