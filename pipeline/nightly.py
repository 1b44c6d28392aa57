"""The nightly loop, one plain function per step, for one logical date.

    validate raw feeds → features → refit simulator → fidelity gate → train (PPO, DQN)
      → offline evaluation → promotion gate → champion move

Each step reads what earlier steps wrote to the lake or the registry, writes its own outputs for
that date (overwriting a re-run's), and returns a small JSON-able dict: the Airflow DAG calls the
same functions task by task, `run_night` calls them in order for the CLI. A gate that stops the
night raises `NightStopped`; nothing downstream runs and the champion is untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.catalogue import read_catalogue
from pipeline.errors import ExitCode, PricingError
from pipeline.lake import Lake
from pipeline.settings import Settings
from sim.catalogue import apply_catalogue
from sim.world import World, load_world

log = logging.getLogger("pricing.nightly")

Progress = Callable[[str], None]


class NightStopped(PricingError, RuntimeError):
    """A gate stopped the night. ``step`` names it; the message says why and what to do."""

    exit_code = ExitCode.STOPPED

    def __init__(self, step: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.details = details or {}


@dataclass
class NightResult:
    date: str
    status: str  # completed | stopped
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped_at: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "status": self.status,
            "stopped_at": self.stopped_at,
            "reason": self.reason,
            "steps": self.steps,
        }


def _lake(settings: Settings) -> Lake:
    return Lake.from_uri(settings.lake, settings.s3_endpoint_url)


def base_world(settings: Settings, lake: Lake, date: dt.date) -> tuple[World, str]:
    """The world a night refits, and where its catalogue came from: ``PRICING_WORLD_FILE`` if
    set; else the default market around the lake's catalogue in force on ``date``; else the
    default world."""
    if settings.world_file is not None:
        return load_world(settings.world_file), str(settings.world_file)
    snapshot = read_catalogue(lake, date)
    if snapshot is None:
        return load_world(None), "the default world (no catalogue in the lake)"
    catalogue, uri = snapshot
    return apply_catalogue(load_world(None), catalogue), uri


def _report_path(kind: str, date: dt.date, name: str) -> str:
    return f"reports/{kind}/date={date.isoformat()}/{name}"


def _write_json(lake: Lake, relpath: str, payload: Any) -> None:
    lake.write_bytes(relpath, json.dumps(payload, indent=2, default=str).encode())


def _read_json(lake: Lake, relpath: str) -> Any:
    return json.loads(lake.read_bytes(relpath))


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _window(settings: Settings, date: dt.date) -> tuple[list[dt.date], list[dt.date]]:
    """Training days and held-out days, both ending at ``date``."""
    days = [date - dt.timedelta(days=i) for i in range(settings.train_days - 1, -1, -1)]
    return days[: -settings.holdout_days], days[-settings.holdout_days :]


# ---------------------------------------------------------------------------------------------
# 1. validation gate on the raw feeds
# ---------------------------------------------------------------------------------------------
def validate_raw(
    settings: Settings, date: dt.date, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Validate the date's raw partitions; a failure quarantines the partition and stops the night.

    Days of the training window validated on earlier nights keep their report; any day without
    one is validated now, so nothing unvalidated reaches the simulator.
    """
    from pipeline.validation import quarantine_partition, read_and_validate, validate_partition

    lake = _lake(settings)
    now = now or dt.datetime.now(dt.UTC)
    n_actions = len(base_world(settings, lake, date)[0].pricing.actions)
    train_days, holdout = _window(settings, date)
    checked: dict[str, Any] = {}
    has = {f: lake.has_partition("raw", f, date) for f in ("decisions", "transactions")}
    if not any(has.values()) and not any(lake.has_partition("quarantine", f, date) for f in has):
        raise NightStopped(
            "validate",
            f"no raw logs for {date}: neither {lake.uri(lake.partition_prefix('raw', 'decisions', date))}"
            " nor the transactions partition exists; write them with `pricing history`, "
            "`pricing ingest` or the pricing service's log export, then re-run the night.",
            {"date": date.isoformat()},
        )
    feeds = ["transactions"]
    if has["decisions"] or not has["transactions"]:
        feeds.insert(0, "decisions")
    for feed in ("decisions", "transactions"):
        if lake.has_partition("quarantine", feed, date) and not lake.has_partition(
            "raw", feed, date
        ):
            where = lake.partition_prefix("quarantine", feed, date)
            raise NightStopped(
                "validate",
                f"{feed} {date} is in quarantine ({lake.uri(where)}); fix the export and write it "
                "back to raw/ (or remove the quarantined copy to run the night without it) before "
                "re-running the night.",
                {"feed": feed, "date": date.isoformat(), "quarantine": lake.uri(where)},
            )
    for day in [*train_days, *holdout]:
        for feed in feeds:
            marker = _report_path(f"validation/{feed}", day, "validation.json")
            if day != date and (lake.exists(marker) or not lake.has_partition("raw", feed, day)):
                continue
            # Data Docs are rendered only for a partition that goes to quarantine
            df, result = read_and_validate(
                lake, feed, day, now, n_actions=n_actions, data_docs=False
            )
            if not result.success:
                result = validate_partition(
                    feed, df, day, now, read_error=result.read_error, n_actions=n_actions
                )
                where = quarantine_partition(lake, feed, day, result)
                raise NightStopped(
                    "validate",
                    f"{feed} {day}: {result.message()} The partition was moved to {where} with "
                    "its report; fix the export and re-run the night.",
                    {
                        "feed": feed,
                        "date": day.isoformat(),
                        "quarantine": where,
                        "failures": result.summary().get("failures", []),
                    },
                )
            _write_json(lake, marker, result.summary())
            checked[f"{feed}/{day.isoformat()}"] = result.summary().get("statistics", {})
    return {"feeds": feeds, "validated": sorted(checked)}


def _read_days(lake: Lake, feed: str, days: list[dt.date]) -> pd.DataFrame | None:
    frames = [
        lake.read_partition("raw", feed, d) for d in days if lake.has_partition("raw", feed, d)
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


# ---------------------------------------------------------------------------------------------
# 2. features (validated too)
# ---------------------------------------------------------------------------------------------
def extract_features(
    settings: Settings, date: dt.date, now: dt.datetime | None = None
) -> dict[str, Any]:
    from pipeline.features import build_features
    from pipeline.validation import validate_partition

    lake = _lake(settings)
    decisions = _read_days(lake, "decisions", [date])
    transactions = _read_days(lake, "transactions", [date])
    if transactions is None:
        raise NightStopped("features", f"no transactions partition for {date}; ingest it first")
    features = build_features(decisions, transactions)
    result = validate_partition(
        "features", features, date, now or dt.datetime.now(dt.UTC), data_docs=False
    )
    if not result.success:
        raise NightStopped(
            "features",
            f"features {date}: {result.message()}",
            {"failures": result.summary().get("failures", [])},
        )
    uri = lake.write_partition("features", "features", date, features)
    return {"features_uri": uri, "rows": len(features)}


# ---------------------------------------------------------------------------------------------
# 3. simulator refit and 4. fidelity gate
# ---------------------------------------------------------------------------------------------
def refit_simulator(settings: Settings, date: dt.date) -> dict[str, Any]:
    """Fit the market to the training window; writes the fitted world and its report."""
    from sim.fit import FitError, fit_world

    lake = _lake(settings)
    train_days, _ = _window(settings, date)
    decisions = _read_days(lake, "decisions", train_days)
    base, catalogue = base_world(settings, lake, date)
    try:
        if decisions is None:
            from sim.transactions_world import fit_transactions_world

            transactions = _read_days(lake, "transactions", train_days)
            if transactions is None:
                raise NightStopped("refit", f"no logs in the training window ending {date}")
            world, report = fit_transactions_world(base, transactions)
            data_sha = _sha256(
                pd.util.hash_pandas_object(transactions, index=False).values.tobytes()
            )
        else:
            fit = fit_world(base, decisions)
            world, report = fit.world, fit.report
            data_sha = _sha256(pd.util.hash_pandas_object(decisions, index=False).values.tobytes())
    except FitError as err:
        raise NightStopped(
            "refit",
            f"the logs cannot be fitted with the catalogue of {catalogue}: {err}. Write the "
            "catalogue to the lake with `pricing history` or `pricing ingest` (or point "
            "PRICING_WORLD_FILE at a world file that holds these SKUs), then re-run the night.",
            {"catalogue": catalogue},
        ) from None
    report["catalogue"] = catalogue
    world_json = world.to_json().encode()
    lake.write_bytes(_report_path("sim", date, "world.json"), world_json)
    _write_json(lake, _report_path("sim", date, "fit_report.json"), report)
    mode = "decisions" if decisions is not None else "transactions"
    return {
        "world_uri": lake.uri(_report_path("sim", date, "world.json")),
        "sim_params_sha256": _sha256(world_json),
        "data_sha256": data_sha,
        "mode": mode,
        "catalogue": catalogue,
        # lineage of the models trained on this fit: the validation report of the night's feed
        "validation_report": lake.uri(_report_path(f"validation/{mode}", date, "validation.json")),
    }


def _fitted_world(lake: Lake, date: dt.date) -> World:
    from sim.world import parse_world

    path = _report_path("sim", date, "world.json")
    if not lake.exists(path):
        raise NightStopped("refit", f"no fitted simulator for {date}; run the refit step first")
    return parse_world(json.loads(lake.read_bytes(path)), lake.uri(path))


def check_fidelity(settings: Settings, date: dt.date) -> dict[str, Any]:
    from sim.fit import FidelityReport, fidelity_check
    from sim.transactions_world import TransactionsFidelity, transactions_fidelity_check

    lake = _lake(settings)
    _, holdout = _window(settings, date)
    world = _fitted_world(lake, date)
    heldout = _read_days(lake, "decisions", holdout)
    rep: FidelityReport | TransactionsFidelity
    if heldout is not None:
        rep = fidelity_check(
            world,
            heldout,
            settings.fidelity_max_conversion_error,
            settings.fidelity_max_deviance_ratio,
        )
    else:
        tx = _read_days(lake, "transactions", holdout)
        if tx is None:
            raise NightStopped("fidelity", f"no held-out logs for {holdout}")
        rep = transactions_fidelity_check(world, tx, settings.fidelity_max_deviance_ratio)
    payload = rep.to_dict()
    _write_json(lake, _report_path("sim", date, "fidelity.json"), payload)
    if not rep.passed:
        raise NightStopped(
            "fidelity",
            f"the refit simulator does not reproduce the held-out days: {rep.message} "
            "The champion stays; inspect reports/sim/date=…/fidelity.json.",
            payload,
        )
    return {
        "passed": True,
        "conversion_error": payload.get("conversion_error"),
        "deviance_ratio": payload.get("deviance_ratio"),
    }


# ---------------------------------------------------------------------------------------------
# 5. training
# ---------------------------------------------------------------------------------------------
def train_candidate(
    settings: Settings,
    date: dt.date,
    algo: str,
    lineage: dict[str, str],
    progress: Callable[[int, int, float | None], None] | None = None,
) -> dict[str, Any]:
    """Train one algorithm in the refit simulator and register it (once per date and algo)."""
    import mlflow

    from pipeline.registry import Registry, experiment, git_commit
    from pipeline.train import TrainConfig, train_agent

    lake = _lake(settings)
    registry = Registry(settings, lake)
    existing = registry.find_version(date.isoformat(), algo)
    if existing is not None:
        return {"algo": algo, "version": str(existing.version), "reused": True}
    world = _fitted_world(lake, date)
    budget = settings.ppo_timesteps if algo == "ppo" else settings.dqn_timesteps
    config = TrainConfig(
        algo=algo, timesteps=budget, seed=settings.train_seed, n_envs=settings.n_envs
    )
    run_name = f"{algo}__{date.isoformat()}__seed{settings.train_seed}"
    with experiment(settings), mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({f"train/{k}": v for k, v in config.as_params().items()})
        mlflow.log_params({"data/logical_date": date.isoformat(), "sim/world": world.name})
        mlflow.set_tags({"logical_date": date.isoformat(), "algo": algo, "step": "train"})

        def report(done: int, total: int, profit: float | None) -> None:
            if profit is not None:
                mlflow.log_metric("train/episode_profit", profit, step=done)
            if progress is not None:
                progress(done, total, profit)

        model = train_agent(world, config, report)
        tags = {
            **lineage,
            "logical_date": date.isoformat(),
            "git_commit": git_commit(),
            "mlflow_run_id": run.info.run_id,
        }
        mv = registry.register_candidate(model, world, algo, tags)
    return {"algo": algo, "version": str(mv.version), "reused": False, "run_id": run.info.run_id}


# ---------------------------------------------------------------------------------------------
# 6. offline evaluation
# ---------------------------------------------------------------------------------------------
def evaluate_candidates(settings: Settings, date: dt.date, versions: list[str]) -> dict[str, Any]:
    """Candidates vs champion vs baselines on the refit simulator (paired seeds, bootstrap CIs)
    and off-policy estimates on the held-out logged decisions. Picks the challenger."""
    import mlflow

    from pipeline.models import AgentPolicy
    from pipeline.registry import Registry, experiment
    from sim.evaluate import (
        Rollouts,
        dp_values,
        episode_skus,
        paired_difference,
        rollout,
        summarize,
    )
    from sim.policies import Policy, make_baselines

    lake = _lake(settings)
    registry = Registry(settings, lake)
    world = _fitted_world(lake, date)
    params = world.compile()
    champion = registry.champion_version()
    # "v2 ppo": tables name the algorithm, since version numbers follow registration order
    label = {v: registry.label(v) for v in {*versions, *([champion] if champion else [])}}
    policies: dict[str, tuple[Policy, bool]] = {}
    for v in [*versions, *([champion] if champion and champion not in versions else [])]:
        policies[label[v]] = (AgentPolicy(registry.load(v).model, label[v]), True)
    used = np.unique(episode_skus(params, settings.eval_episodes))
    for name, pol in make_baselines(params, ["rule", "static"], skus=used.tolist()).items():
        policies[name] = (pol, False)
    results: dict[str, Rollouts] = {
        name: rollout(params, pol, settings.eval_episodes, settings.eval_seed, greedy=greedy)
        for name, (pol, greedy) in policies.items()
    }
    from pipeline.evaluation import dp_tractable

    report = summarize(
        params,
        results,
        settings.eval_episodes,
        settings.eval_seed,
        dp_values(params) if dp_tractable(params) else None,
    )
    best = max(versions, key=lambda v: results[label[v]].profit.mean())
    incumbent = label[champion] if champion is not None else "rule"
    mean, lo, hi = paired_difference(
        results[label[best]], results[incumbent], settings.bootstrap_samples, settings.eval_seed
    )
    cand = results[label[best]]
    days_per_episode = params.T * world.horizon.step_hours / 24.0
    evidence: dict[str, Any] = {
        "candidate_version": best,
        "candidate_label": label[best],
        "incumbent": f"champion {incumbent}" if champion is not None else "rule",
        "champion_version": champion,
        "diff_mean": mean,
        "diff_ci95": [lo, hi],
        "candidate_margin_rate": float(cand.margin.sum() / max(cand.revenue.sum(), 1e-9)),
        "candidate_changes_per_day": float(cand.price_changes.mean() / days_per_episode),
    }
    evidence.update(
        _off_policy(settings, lake, date, world, policies[label[best]][0], policies[incumbent][0])
    )
    report["evidence"] = evidence
    registry.set_challenger(best)
    _write_json(lake, _report_path("evaluation", date, "report.json"), report)

    with experiment(settings), mlflow.start_run(run_name=f"evaluate__{date.isoformat()}"):
        mlflow.set_tags({"logical_date": date.isoformat(), "step": "evaluate"})
        for name, r in report["policies"].items():
            mlflow.log_metric(f"eval/{name}/mean_profit", r["mean_profit"])
            if r["pct_of_optimal"] is not None:
                mlflow.log_metric(f"eval/{name}/pct_of_optimal", r["pct_of_optimal"])
        mlflow.log_metrics(
            {"eval/diff_mean": mean, "eval/diff_ci_low": lo, "eval/diff_ci_high": hi}
        )
        mlflow.log_dict(report, "evaluation/report.json")
        _log_plots(world, results, {k: v[0] for k, v in policies.items()}, settings.eval_seed)
    return {
        "challenger": best,
        "challenger_label": label[best],
        "incumbent": incumbent,
        "diff_mean": mean,
        "diff_ci95": [lo, hi],
    }


def _off_policy(
    settings: Settings, lake: Lake, date: dt.date, world: World, candidate: Any, incumbent: Any
) -> dict[str, Any]:
    """Off-policy (candidate − incumbent) on the held-out logged decisions, where logs exist."""
    from pipeline.ope import (
        RidgeRewardModel,
        decision_units,
        logged_market,
        ope_compare,
        target_probs,
    )

    _, holdout = _window(settings, date)
    decisions = _read_days(lake, "decisions", holdout)
    if decisions is None:
        return {"ope_diff": None, "ope_ci95": None, "ope_ess": None}
    try:
        # logged seasons start on the first day the lake holds (as `pricing history` writes them)
        first = lake.list_dates("raw", "decisions")[0]
        units = decision_units(decisions, world, season_start=pd.Timestamp(first, tz="UTC"))
        market = logged_market(units, world)
        # agents act greedily in service, so their logged-state probabilities are greedy too
        pa = target_probs(candidate, market, greedy=True)
        pb = target_probs(incumbent, logged_market(units, world), greedy=True)
        cmp = ope_compare(units, pa, pb)
        dr = ope_compare(units, pa, pb, reward_model=RidgeRewardModel(world))
    except (ValueError, KeyError) as err:
        log.warning("off-policy estimate skipped: %s", err)
        return {"ope_diff": None, "ope_ci95": None, "ope_ess": None, "ope_error": str(err)}
    return {
        "ope_diff": cmp["diff"],
        "ope_ci95": list(cmp["ci95"]),
        "ope_ess": cmp["min_ess"],
        "ope_estimator": cmp["estimator"],
        "ope_n": cmp["n"],
        "ope_dr_diff": dr["diff"],
        "ope_dr_ci95": list(dr["ci95"]),
    }


def _log_plots(world: World, results: Any, policies: Any, seed: int) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    from pipeline.plots import action_mix, price_trajectories, profit_distribution, save_figures

    figs = {
        "profit_distribution": profit_distribution(results),
        "action_mix": action_mix(results),
        "price_trajectories": price_trajectories(world, policies, seed),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_figures(figs, Path(tmp)):
            mlflow.log_artifact(str(path), "plots")


# ---------------------------------------------------------------------------------------------
# 7. promotion gate
# ---------------------------------------------------------------------------------------------
def promotion_gate(settings: Settings, date: dt.date) -> dict[str, Any]:
    """Decide from the evaluation report; promote through the compare-and-set path."""
    from pipeline.gate import GateEvidence, GateThresholds, promotion_decision
    from pipeline.registry import PromotionConflict, Registry

    lake = _lake(settings)
    report = _read_json(lake, _report_path("evaluation", date, "report.json"))
    ev = report["evidence"]
    evidence = GateEvidence(
        candidate_version=str(ev["candidate_version"]),
        incumbent=ev["incumbent"],
        champion_version=ev["champion_version"],
        diff_mean=float(ev["diff_mean"]),
        diff_ci95=(float(ev["diff_ci95"][0]), float(ev["diff_ci95"][1])),
        candidate_margin_rate=float(ev["candidate_margin_rate"]),
        candidate_changes_per_day=float(ev["candidate_changes_per_day"]),
        ope_diff=ev.get("ope_diff"),
        ope_ci95=(float(ev["ope_ci95"][0]), float(ev["ope_ci95"][1]))
        if ev.get("ope_ci95")
        else None,
        ope_ess=ev.get("ope_ess"),
    )
    thresholds = GateThresholds(
        promotion_margin=settings.promotion_margin,
        margin_floor=settings.margin_floor,
        max_price_changes_per_day=settings.max_price_changes_per_day,
        min_ope_support=settings.min_ope_support,
    )
    registry = Registry(settings, lake)
    if evidence.candidate_version == evidence.champion_version:
        # a re-run of a night whose candidate already won: nothing to decide
        out = {
            "promote": False,
            "moved": False,
            "reason": f"v{evidence.candidate_version} is already the champion (night re-run)",
            "checks": {},
            "evidence": ev,
            "champion": registry.champion_version(),
        }
        out["champion_label"] = registry.label(out["champion"]) if out["champion"] else None
        _write_json(lake, _report_path("gate", date, "decision.json"), out)
        return out
    decision = promotion_decision(evidence, thresholds)
    out = decision.to_dict()
    if decision.promote:
        if registry.champion_version() == evidence.candidate_version:
            out["moved"] = False
            out["note"] = f"v{evidence.candidate_version} is already the champion (re-run)"
        else:
            try:
                registry.promote(
                    evidence.candidate_version,
                    evidence.champion_version,
                    decision.reason,
                    who="nightly",
                    decision=out,
                )
                out["moved"] = True
            except PromotionConflict as err:
                out["moved"] = False
                out["note"] = str(err)
    else:
        out["moved"] = False
    out["champion"] = registry.champion_version()
    out["champion_label"] = registry.label(out["champion"]) if out["champion"] else None
    _write_json(lake, _report_path("gate", date, "decision.json"), out)
    return out


# ---------------------------------------------------------------------------------------------
# the whole night
# ---------------------------------------------------------------------------------------------
def run_night(
    settings: Settings,
    date: dt.date,
    say: Progress | None = None,
    train_progress: Callable[[str], Callable[[int, int, float | None], None]] | None = None,
    now: dt.datetime | None = None,
) -> NightResult:
    """Every step in order. Stops (status "stopped") at the first gate that says no."""
    say = say or (lambda msg: log.info(msg))
    result = NightResult(date=date.isoformat(), status="running")

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        say(f"{name} …")
        out = fn()
        result.steps[name] = out
        return out

    try:
        step("validate", lambda: validate_raw(settings, date, now))
        step("features", lambda: extract_features(settings, date, now))
        refit = step("refit", lambda: refit_simulator(settings, date))
        step("fidelity", lambda: check_fidelity(settings, date))
        lineage = {k: refit[k] for k in ("data_sha256", "sim_params_sha256", "validation_report")}
        versions = []
        for algo in settings.algos:
            cb = train_progress(algo) if train_progress else None

            def train_one(a: str = algo, c: Any = cb) -> dict[str, Any]:
                return train_candidate(settings, date, a, lineage, c)

            versions.append(step(f"train_{algo}", train_one)["version"])
        step("evaluate", lambda: evaluate_candidates(settings, date, versions))
        step("gate", lambda: promotion_gate(settings, date))
    except NightStopped as stop:
        result.status = "stopped"
        result.stopped_at = stop.step
        result.reason = str(stop)
        result.steps[stop.step] = {"stopped": True, "reason": str(stop), **stop.details}
        return result
    result.status = "completed"
    return result


def gate_decided(settings: Settings, date: dt.date) -> str | None:
    """Where the gate's decision for ``date`` lies, if the night got that far; else None."""
    lake = _lake(settings)
    path = _report_path("gate", date, "decision.json")
    return lake.uri(path) if lake.exists(path) else None


def night_summary(settings: Settings, date: dt.date) -> dict[str, Any]:
    """The evaluation table and the gate's decision of a completed night, for printing."""
    lake = _lake(settings)
    report = _read_json(lake, _report_path("evaluation", date, "report.json"))
    decision = _read_json(lake, _report_path("gate", date, "decision.json"))
    return {"report": report, "decision": decision}


__all__ = [
    "NightResult",
    "NightStopped",
    "check_fidelity",
    "evaluate_candidates",
    "extract_features",
    "gate_decided",
    "night_summary",
    "promotion_gate",
    "refit_simulator",
    "run_night",
    "train_candidate",
    "validate_raw",
]
