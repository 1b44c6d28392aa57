"""Step 6 of the night: the candidates against the champion and the baselines, through THE
evaluation (`pipeline.model.evaluation.evaluate`) on the refit simulator, with off-policy
estimates on the held-out logged decisions; the best candidate becomes ``@challenger``.

Candidates, the champion and the rule-based pricer are judged *as served* (`sim.served.AsServed`:
the ``PRICING_SERVE_*`` exploration and guardrails, a price decided only where visitors come —
what `pricing parity` checks the service earns); each one's greedy figure, the policy alone, is
reported beside it (``greedy_mean_profit``).

What it writes: ``reports/evaluation/date=D/report.json`` (the evaluation table plus the gate's
evidence, `GateEvidence`), an MLflow run with the metrics and plots.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from pipeline.contracts import evaluation_report_path
from pipeline.data.lake import Lake
from pipeline.model.agents import agent_policy
from pipeline.model.cloning import BC, fit_cloned_policy
from pipeline.model.evaluation import Evaluation, as_served, baselines, evaluate
from pipeline.model.logged import logged_market, served_decision_units, target_probs
from pipeline.model.ope import RidgeRewardModel, ope_compare
from pipeline.model.plots import action_mix, price_trajectories, profit_distribution, save_figures
from pipeline.nightly.results import Evaluated, NightStopped
from pipeline.nightly.steps import fitted_world, night_lake, read_days, window, write_json
from pipeline.release.gate import GateEvidence
from pipeline.release.parity import ServedParity, served_parity, write_parity
from pipeline.release.registry import Registry, RegistryError
from pipeline.settings import ServedAs, Settings
from pipeline.tracking import experiment
from sim.policies import Policy
from sim.world import World

log = logging.getLogger("pricing.nightly")


def evaluate_candidates(settings: Settings, date: dt.date, versions: list[str]) -> Evaluated:
    """Candidates vs champion vs ``rule`` and ``static`` on the refit simulator (paired seeds,
    bootstrap CIs) and off-policy estimates on the held-out logs. Picks the challenger."""
    if not versions:
        raise NightStopped(
            "evaluate",
            f"no candidate was trained for {date} (PRICING_ALGOS={','.join(settings.algos)}: "
            "every one was skipped); add a model-free algorithm (ppo) to PRICING_ALGOS",
        )
    lake = night_lake(settings, date)
    registry = Registry(settings, lake)
    world = fitted_world(lake, date)
    champion = registry.champion_version()
    agents = [*versions, *([champion] if champion and champion not in versions else [])]
    # "v2 ppo": tables name the algorithm, since version numbers follow registration order
    label = {v: registry.label(v) for v in agents}
    loaded = {v: registry.load(v) for v in agents}
    pure: dict[str, Policy] = {
        label[v]: agent_policy(loaded[v].model, label[v], loaded[v].world) for v in agents
    }
    given = baselines(world, ["rule", "static"], settings.eval_episodes)
    pure["rule"] = given["rule"][0]
    # judged as served: exploration, guardrails, a price decided only where visitors come
    served = ServedAs()
    policies: dict[str, tuple[Policy, bool]] = {
        name: (
            as_served(world, p, served, "control" if name == "rule" else "treatment", name),
            False,
        )
        for name, p in pure.items()
    }
    policies["static"] = given["static"]
    policies.update(_cloned(settings, lake, date, world))
    ev = evaluate(world, policies, settings.eval_episodes, settings.eval_seed)
    greedy = evaluate(
        world, {name: (p, True) for name, p in pure.items()}, settings.eval_episodes,
        settings.eval_seed,
    )  # fmt: skip
    best = max(versions, key=lambda v: ev.results[label[v]].profit.mean())
    incumbent = label[champion] if champion is not None else "rule"
    evidence = _evidence(settings, ev, world, best, label[best], incumbent, champion)
    off_policy = _off_policy(settings, lake, date, world, pure[label[best]], pure[incumbent])
    report = ev.report()
    for name, r in greedy.report()["policies"].items():  # the policy alone, beside as served
        report["policies"][name]["greedy_mean_profit"] = r["mean_profit"]
        report["policies"][name]["greedy_pct_of_optimal"] = r["pct_of_optimal"]
    report["served_as"] = served.model_dump(mode="json")
    parity = _served_parity(settings, lake, date, served, world)
    report["served_parity"] = parity
    report["evidence"] = {**evidence.to_dict(), **off_policy, **_parity_evidence(parity)}
    registry.set_challenger(best)
    write_json(lake, evaluation_report_path(date), report)
    _log_run(settings, date, world, ev, report, policies, evidence)
    return Evaluated(
        challenger=best,
        challenger_label=label[best],
        incumbent=incumbent,
        diff_mean=evidence.diff_mean,
        diff_ci95=list(evidence.diff_ci95),
    )


def _logged_units(lake: Lake, days: list[dt.date], world: World) -> pd.DataFrame | None:
    """The decision units of the logged decisions of ``days`` (None: no decisions logged)."""
    decisions = read_days(lake, "decisions", days)
    if decisions is None:
        return None
    # logged seasons start on the first day the lake holds (as `pricing history` writes them)
    first = lake.list_dates("raw", "decisions")[0]
    return served_decision_units(decisions, world, season_start=pd.Timestamp(first, tz="UTC"))


def _cloned(
    settings: Settings, lake: Lake, date: dt.date, world: World
) -> dict[str, tuple[Policy, bool]]:
    """Behavioural cloning of the training window's logged decisions, as a baseline of the
    table (none when the night reads transactions only)."""
    train_days, _ = window(settings, date)
    try:
        units = _logged_units(lake, train_days, world)
        if units is None:
            return {}
        return {BC: (fit_cloned_policy(units, world, seed=settings.train_seed), True)}
    except (ValueError, KeyError) as err:
        log.warning("behavioural cloning skipped: %s", err)
        return {}


def _evidence(
    settings: Settings,
    ev: Evaluation,
    world: World,
    best: str,
    best_label: str,
    incumbent: str,
    champion: str | None,
) -> GateEvidence:
    """What the gate needs from the simulator: the paired profit difference and guardrails."""
    mean, lo, hi = ev.paired(best_label, incumbent, settings.bootstrap_samples, settings.eval_seed)
    cand = ev.results[best_label]
    days_per_episode = ev.params.T * world.horizon.step_hours / 24.0
    return GateEvidence(
        candidate_version=best,
        candidate_label=best_label,
        incumbent=f"champion {incumbent}" if champion is not None else "rule",
        champion_version=champion,
        diff_mean=mean,
        diff_ci95=(lo, hi),
        candidate_margin_rate=float(cand.margin.sum() / max(cand.revenue.sum(), 1e-9)),
        candidate_changes_per_day=float(cand.price_changes.mean() / days_per_episode),
    )


def _off_policy(
    settings: Settings,
    lake: Lake,
    date: dt.date,
    world: World,
    candidate: Policy,
    incumbent: Policy,
) -> dict[str, Any]:
    """Off-policy (candidate − incumbent) on the held-out logged decisions, where logs exist:
    the `GateEvidence` fields ``ope_*``."""
    _, holdout = window(settings, date)
    try:
        units = _logged_units(lake, holdout, world)
        if units is None:
            return {"ope_diff": None, "ope_ci95": None, "ope_ess": None}
        # agents act greedily in service, so their logged-state probabilities are greedy too
        pa = target_probs(candidate, logged_market(units, world), greedy=True)
        pb = target_probs(incumbent, logged_market(units, world), greedy=True)
        cmp = ope_compare(units, pa, pb)
        dr = ope_compare(units, pa, pb, reward_model=RidgeRewardModel(world))
    except (ValueError, KeyError) as err:  # the gate fails its check on this (never a pass)
        log.warning("off-policy estimate failed: %s", err)
        error = f"{err.__class__.__name__}: {err}"
        return {"ope_diff": None, "ope_ci95": None, "ope_ess": None, "ope_error": error}
    return {
        "ope_diff": cmp["diff"],
        "ope_ci95": list(cmp["ci95"]),
        "ope_ess": cmp["min_ess"],
        "ope_estimator": cmp["estimator"],
        "ope_n": cmp["n"],
        "ope_dr_diff": dr["diff"],
        "ope_dr_ci95": list(dr["ci95"]),
    }


def _served_parity(
    settings: Settings, lake: Lake, date: dt.date, served: ServedAs, world: World
) -> dict[str, Any]:
    """The champion's served decisions of ``date`` against its evaluation in tonight's refit
    ``world``, written to the lake (`pipeline.release.parity`). An error here is reported as
    such, never as parity: an alarm in the report the monitor reads, and for the gate. (The
    lake's own errors stop the step, to be retried.)"""
    try:
        result = served_parity(settings, lake, date, served, simulator=world)
    except (ValueError, KeyError, RegistryError) as err:
        log.warning("served parity could not be measured: %s", err)
        error = f"{err.__class__.__name__}: {err}"
        reason = f"served parity could not be measured ({error})"
        write_parity(lake, ServedParity(date.isoformat(), None, 0, True, alarm=True,
                                        reasons=[reason]))  # fmt: skip
        return {"judged": False, "error": error, "alarm": True}
    write_parity(lake, result)
    return {**result.to_dict(), "summary": result.summary}


def _parity_evidence(parity: dict[str, Any]) -> dict[str, Any]:
    if parity.get("error"):
        return {
            "served_parity_alarm": True,
            "served_parity_detail": f"served parity failed ({parity['error']})",
        }
    if not parity["judged"]:
        return {"served_parity_alarm": None, "served_parity_detail": parity["summary"]}
    return {"served_parity_alarm": parity["alarm"], "served_parity_detail": parity["summary"]}


def _log_run(
    settings: Settings,
    date: dt.date,
    world: World,
    ev: Evaluation,
    report: dict[str, Any],
    policies: Mapping[str, tuple[Policy, bool]],
    evidence: GateEvidence,
) -> None:
    """The evaluation's MLflow run: every policy's metrics, the report, three plots."""
    lo, hi = evidence.diff_ci95
    with experiment(settings), mlflow.start_run(run_name=f"evaluate__{date.isoformat()}"):
        mlflow.set_tags({"logical_date": date.isoformat(), "step": "evaluate"})
        for name, r in report["policies"].items():
            mlflow.log_metric(f"eval/{name}/mean_profit", r["mean_profit"])
            if r["pct_of_optimal"] is not None:
                mlflow.log_metric(f"eval/{name}/pct_of_optimal", r["pct_of_optimal"])
        mlflow.log_metrics(
            {"eval/diff_mean": evidence.diff_mean, "eval/diff_ci_low": lo, "eval/diff_ci_high": hi}
        )
        mlflow.log_dict(report, "evaluation/report.json")
        figures = {
            "profit_distribution": profit_distribution(ev.results),
            "action_mix": action_mix(ev.results),
            "price_trajectories": price_trajectories(
                world, {k: v[0] for k, v in policies.items()}, settings.eval_seed
            ),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for path in save_figures(figures, Path(tmp)):
                mlflow.log_artifact(str(path), "plots")
