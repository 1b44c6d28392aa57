"""The steps of a night, for one logical date: each reads what earlier steps wrote, computes, and
writes its own outputs for that date (overwriting a re-run's), returning a small typed result.

    validate raw feeds → features → refit simulator → fidelity gate → candidates
      (`pipeline.nightly.candidates`: the exact plan, PPO)
      → offline evaluation (`pipeline.nightly.evaluate`) → promotion gate → champion move

The Airflow DAG calls these functions task by task, `pipeline.nightly.run.run_night` calls them
in the one order `pipeline.contracts.NIGHT_STEPS` gives. A gate that stops the night raises
`NightStopped`; nothing downstream runs and the champion is untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from pipeline.contracts import (
    CLUSTERS_PREFIX,
    evaluation_report_path,
    fidelity_report_path,
    fit_report_path,
    fitted_world_path,
    gate_decision_path,
    validation_report_path,
)
from pipeline.data.catalogue import read_catalogue
from pipeline.data.clusters import read_clusters
from pipeline.data.features import (
    decision_partials,
    features_from_partials,
    transaction_partials,
)
from pipeline.data.lake import Lake, open_lake
from pipeline.data.slices import Sliced, slice_window
from pipeline.data.validation import (
    finish_quarantine,
    quarantine_partition,
    read_and_validate,
    validate_partition,
)
from pipeline.data.window import validate_in_parts, validate_together
from pipeline.nightly.results import (
    Faithful,
    Featured,
    Gated,
    NightStopped,
    Refitted,
    Validated,
)
from pipeline.release.gate import GateEvidence, GateThresholds, promotion_decision
from pipeline.release.registry import PromotionConflict, Registry
from pipeline.settings import Settings
from sim.catalogue import apply_catalogue
from sim.fit import (
    FidelityReport,
    FitError,
    TransactionsFidelity,
    fidelity_check,
    fit_transactions_world,
    fit_world,
    transactions_fidelity_check,
)
from sim.world import World, load_world, parse_world

log = logging.getLogger("pricing.nightly")

TrainProgress = Callable[[int, int, float | None], None]  # done, total, recent episode profit
FEEDS = ("decisions", "transactions")


# ---------------------------------------------------------------------------------------------
# what every step shares
# ---------------------------------------------------------------------------------------------
def night_lake(settings: Settings, date: dt.date) -> Lake:
    """The lake a night's step reads and writes: the whole lake, or for a cluster's night
    (``settings.cluster``) that cluster's view: its own reports and the rows of its SKUs in the
    clusters snapshot in force on ``date`` (`pipeline.data.clusters`)."""
    lake = open_lake(settings)
    if settings.cluster is None:
        return lake
    clusters = read_clusters(lake, date)  # the snapshots are shared: the view reads them
    members = clusters.members().get(settings.cluster) if clusters is not None else None
    if not members:
        raise NightStopped(
            "refit",
            f"cluster {settings.cluster} has no SKU in the clusters in force on {date} "
            f"({lake.uri(CLUSTERS_PREFIX)}); run `pricing clusters --date {date}` first",
        )
    return lake.for_cluster(settings.cluster, members)


def base_world(settings: Settings, lake: Lake, date: dt.date) -> tuple[World, str]:
    """The world a night refits, and where its catalogue came from: ``PRICING_WORLD_FILE`` if
    set; else the default market around the lake's catalogue in force on ``date``; else the
    default world."""
    if settings.world_file is not None:
        world, source = load_world(settings.world_file), str(settings.world_file)
    else:
        snapshot = read_catalogue(lake, date)
        if snapshot is None:
            world, source = load_world(None), "the default world (no catalogue in the lake)"
        else:
            catalogue, source = snapshot
            world = apply_catalogue(load_world(None), catalogue)
    if lake.skus is not None:  # a cluster's night prices its own SKUs
        world = world.with_skus([s for s in world.skus if s.id in lake.skus])
        source += f" (cluster {settings.cluster}: {len(world.skus)} SKUs)"
    return world, source


def _categories(settings: Settings, lake: Lake, date: dt.date) -> dict[str, str]:
    """SKU -> category from the catalogue in force (none with ``PRICING_WORLD_FILE``)."""
    snapshot = None if settings.world_file is not None else read_catalogue(lake, date)
    if snapshot is None:
        return {}
    return {item.id: item.category for item in snapshot[0].skus if item.category}


def public_holidays(settings: Settings, days: list[dt.date]) -> list[dt.date]:
    """The days among ``days`` that are public holidays of ``PRICING_POS_HOLIDAYS`` (none unset)."""
    if not settings.pos_holidays or not days:
        return []
    import holidays

    calendar = holidays.country_holidays(
        settings.pos_holidays, years=range(days[0].year, days[-1].year + 1)
    )
    return [d for d in days if d in calendar]


def window(settings: Settings, date: dt.date) -> tuple[list[dt.date], list[dt.date]]:
    """Training days and held-out days, both ending at ``date``."""
    days = [date - dt.timedelta(days=i) for i in range(settings.train_days - 1, -1, -1)]
    return days[: -settings.holdout_days], days[-settings.holdout_days :]


def slice_clusters(
    settings: Settings,
    date: dt.date,
    members: dict[str, list[str]],
    say: Callable[[str], None] | None = None,
) -> Sliced:
    """Each cluster's rows of the night's window, cut once for all its reads
    (`pipeline.data.slices`); a step of the catalogue's, after the clusters."""
    train_days, holdout = window(settings, date)
    return slice_window(open_lake(settings), members, train_days + holdout, say)


def read_days(lake: Lake, feed: str, days: list[dt.date]) -> pd.DataFrame | None:
    """The raw partitions of ``feed`` for ``days`` that exist, as one frame (None if none)."""
    frames = [
        lake.read_partition("raw", feed, d) for d in days if lake.has_partition("raw", feed, d)
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def write_json(lake: Lake, relpath: str, payload: Any) -> None:
    lake.write_bytes(relpath, json.dumps(payload, indent=2, default=str).encode())


def read_json(lake: Lake, relpath: str) -> Any:
    return json.loads(lake.read_bytes(relpath))


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _frame_sha256(frame: pd.DataFrame) -> str:
    return _sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())


def fitted_world(lake: Lake, date: dt.date) -> World:
    """The simulator the refit step wrote for ``date``."""
    path = fitted_world_path(date)
    if not lake.exists(path):
        raise NightStopped("refit", f"no fitted simulator for {date}; run the refit step first")
    return parse_world(json.loads(lake.read_bytes(path)), lake.uri(path))


# ---------------------------------------------------------------------------------------------
# 1. validation gate on the raw feeds
# ---------------------------------------------------------------------------------------------
def _feeds_of_the_night(lake: Lake, date: dt.date) -> list[str]:
    """The feeds the night reads; stops it when the date has no logs or is in quarantine."""
    has = {f: lake.has_partition("raw", f, date) for f in FEEDS}
    quarantined = {f: lake.has_partition("quarantine", f, date) for f in FEEDS}
    if not any(has.values()) and not any(quarantined.values()):
        raise NightStopped(
            "validate",
            f"no raw logs for {date}: neither "
            f"{lake.uri(lake.partition_prefix('raw', 'decisions', date))} nor the transactions "
            "partition exists; write them with `pricing history`, `pricing ingest` or the "
            "pricing service's log export, then re-run the night.",
            {"date": date.isoformat()},
        )
    for feed in FEEDS:
        if quarantined[feed] and not has[feed]:
            where = lake.uri(lake.partition_prefix("quarantine", feed, date))
            raise NightStopped(
                "validate",
                f"{feed} {date} is in quarantine ({where}); fix the export and write it back to "
                "raw/ (or remove the quarantined copy to run the night without it) before "
                "re-running the night.",
                {"feed": feed, "date": date.isoformat(), "quarantine": where},
            )
    return (
        ["decisions", "transactions"]
        if has["decisions"] or not has["transactions"]
        else ["transactions"]
    )


def _finish_interrupted_quarantines(lake: Lake, days: list[dt.date]) -> None:
    """A quarantine move cut short by a crash is completed, and stops the night as the move
    would have: the raw parts left behind are not a whole day to validate."""
    for feed in FEEDS:
        for day in sorted(set(lake.list_dates("quarantine", feed)) & set(days)):
            where = finish_quarantine(lake, feed, day)
            if where is not None:
                raise NightStopped(
                    "validate",
                    f"{feed} {day}: a quarantine move was cut short; it is complete now, in "
                    f"{where} with its report. Fix the export and re-run the night.",
                    {"feed": feed, "date": day.isoformat(), "quarantine": where},
                )


def validate_raw(settings: Settings, date: dt.date, now: dt.datetime | None = None) -> Validated:
    """Validate the date's raw partitions; a failure quarantines the partition and stops the night.

    Days of the training window validated on earlier nights keep their report; any day without
    one is validated now, so nothing unvalidated reaches the simulator.
    """
    lake = open_lake(settings)
    now = now or dt.datetime.now(dt.UTC)
    n_actions = len(base_world(settings, lake, date)[0].pricing.actions)
    train_days, holdout = window(settings, date)
    _finish_interrupted_quarantines(lake, [*train_days, *holdout])
    feeds = _feeds_of_the_night(lake, date)
    checked = []
    todo = {}
    for feed in feeds:
        days = [
            day
            for day in [*train_days, *holdout]
            if day == date
            or (
                not lake.exists(validation_report_path(feed, day))
                and lake.has_partition("raw", feed, day)
            )
        ]
        # a first night's window in a few GX runs; whatever does not pass is validated alone
        for result in validate_together(lake, feed, days, now, n_actions):
            write_json(lake, validation_report_path(feed, result.date), result.summary())
            checked.append(f"{feed}/{result.date.isoformat()}")
        todo[feed] = [d for d in days if f"{feed}/{d.isoformat()}" not in checked]
    for day in [*train_days, *holdout]:
        for feed in feeds:
            if day not in todo[feed]:
                continue
            # a large catalogue's day a few runs at a time; what fails them is read whole for
            # its report. Data Docs are rendered only for a partition that goes to quarantine.
            outcome = validate_in_parts(lake, feed, day, now, n_actions)
            if outcome is None:
                df, outcome = read_and_validate(
                    lake, feed, day, now, n_actions=n_actions, data_docs=False
                )
                if not outcome.success:
                    outcome = validate_partition(
                        feed, df, day, now, read_error=outcome.read_error, n_actions=n_actions
                    )
                    where = quarantine_partition(lake, feed, day, outcome)
                    raise NightStopped(
                        "validate",
                        f"{feed} {day}: {outcome.message()} The partition was moved to {where} "
                        "with its report; fix the export and re-run the night.",
                        {
                            "feed": feed,
                            "date": day.isoformat(),
                            "quarantine": where,
                            "failures": outcome.summary().get("failures", []),
                        },
                    )
            write_json(lake, validation_report_path(feed, day), outcome.summary())
            checked.append(f"{feed}/{day.isoformat()}")
    return Validated(feeds=feeds, validated=sorted(checked))


# ---------------------------------------------------------------------------------------------
# 2. features (validated too)
# ---------------------------------------------------------------------------------------------
def extract_features(settings: Settings, date: dt.date, now: dt.datetime | None = None) -> Featured:
    """The day's features per SKU, validated by their own suite, written to ``features/``."""
    lake = open_lake(settings)
    if not lake.has_partition("raw", "transactions", date):
        raise NightStopped("features", f"no transactions partition for {date}; ingest it first")
    # Part by part: a day of a large catalogue is never held whole (pipeline.data.features).
    decisions = (
        [decision_partials(p) for p in lake.iter_partition("raw", "decisions", date)]
        if lake.has_partition("raw", "decisions", date)
        else None
    )
    transactions = [
        transaction_partials(p) for p in lake.iter_partition("raw", "transactions", date)
    ]
    features = features_from_partials(decisions, transactions)
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
    return Featured(features_uri=uri, rows=len(features))


# ---------------------------------------------------------------------------------------------
# 3. simulator refit and 4. fidelity gate
# ---------------------------------------------------------------------------------------------
def refit_simulator(settings: Settings, date: dt.date) -> Refitted:
    """Fit the market to the training window; writes the fitted world and its report."""
    lake = night_lake(settings, date)
    train_days, _ = window(settings, date)
    decisions = read_days(lake, "decisions", train_days)
    base, catalogue = base_world(settings, lake, date)
    try:
        if decisions is not None:
            fit = fit_world(base, decisions)
            world, report, data_sha = fit.world, fit.report, _frame_sha256(decisions)
        else:
            transactions = read_days(lake, "transactions", train_days)
            if transactions is None:
                raise NightStopped("refit", f"no logs in the training window ending {date}")
            world, report = fit_transactions_world(
                base,
                transactions,
                min_units_per_day=settings.pos_min_units_per_day,
                max_skus=settings.pos_max_skus,
                categories=_categories(settings, lake, date),
                holidays=public_holidays(settings, train_days),
            )
            data_sha = _frame_sha256(transactions)
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
    world_path = fitted_world_path(date)
    lake.write_bytes(world_path, world_json)
    write_json(lake, fit_report_path(date), report)
    mode = "decisions" if decisions is not None else "transactions"
    return Refitted(
        world_uri=lake.uri(world_path),
        sim_params_sha256=_sha256(world_json),
        data_sha256=data_sha,
        mode=mode,
        catalogue=catalogue,
        validation_report=lake.uri(validation_report_path(mode, date)),
    )


def check_fidelity(settings: Settings, date: dt.date) -> Faithful:
    """The refit simulator must reproduce the held-out days, or the night stops."""
    lake = night_lake(settings, date)
    _, holdout = window(settings, date)
    world = fitted_world(lake, date)
    heldout = read_days(lake, "decisions", holdout)
    rep: FidelityReport | TransactionsFidelity
    if heldout is not None:
        rep = fidelity_check(
            world,
            heldout,
            settings.fidelity_max_conversion_error,
            settings.fidelity_max_deviance_ratio,
        )
    else:
        tx = read_days(lake, "transactions", holdout)
        if tx is None:
            raise NightStopped("fidelity", f"no held-out logs for {holdout}")
        report = json.loads(lake.read_bytes(fit_report_path(date)))
        multiplier = float(report.get("calendar", {}).get("multiplier", 1.0))
        rep = transactions_fidelity_check(
            world,
            tx,
            settings.fidelity_max_deviance_ratio,
            {d: multiplier for d in public_holidays(settings, holdout)},
        )
    payload = rep.to_dict()
    write_json(lake, fidelity_report_path(date), payload)
    if not rep.passed:
        raise NightStopped(
            "fidelity",
            f"the refit simulator does not reproduce the held-out days: {rep.message} "
            f"The champion stays; inspect {lake.uri(fidelity_report_path(date))}.",
            payload,
        )
    return Faithful(
        passed=True,
        conversion_error=payload.get("conversion_error"),
        deviance_ratio=payload.get("deviance_ratio"),
    )


# ---------------------------------------------------------------------------------------------
# 7. promotion gate (5., the candidates, are in pipeline.nightly.candidates; 6., the
# evaluation, in pipeline.nightly.evaluate)
# ---------------------------------------------------------------------------------------------
def promotion_gate(settings: Settings, date: dt.date) -> Gated:
    """Decide from the evaluation report; promote through the compare-and-set path."""
    lake = night_lake(settings, date)
    report = read_json(lake, evaluation_report_path(date))
    evidence = GateEvidence.from_dict(report["evidence"])
    thresholds = GateThresholds(
        promotion_margin=settings.promotion_margin,
        margin_floor=settings.margin_floor,
        max_price_changes_per_day=settings.max_price_changes_per_day,
        min_ope_support=settings.min_ope_support,
    )
    registry = Registry(settings, lake)
    note = None
    if evidence.candidate_version == evidence.champion_version:
        # a re-run of a night whose candidate already won: nothing to decide
        promote, moved = False, False
        reason = f"v{evidence.candidate_version} is already the champion (night re-run)"
        checks: dict[str, dict[str, Any]] = {}
        shown = report["evidence"]
    else:
        decision = promotion_decision(evidence, thresholds)
        promote, moved, reason = decision.promote, False, decision.reason
        checks, shown = decision.checks, decision.evidence
        if promote and registry.champion_version() == evidence.candidate_version:
            note = f"v{evidence.candidate_version} is already the champion (re-run)"
            # a retry of a gate whose ledger append failed: the move is recorded now
            if registry.reconcile() is not None:
                note += "; its ledger line, missing, was recorded"
        elif promote:
            try:
                tags = registry.version(evidence.candidate_version).tags
                registry.promote(
                    evidence.candidate_version,
                    evidence.champion_version,
                    reason,
                    who="nightly",
                    # the ledger says what kind of candidate won and where its training started
                    decision={
                        **decision.to_dict(),
                        "candidate_algo": tags.get("algo"),
                        "candidate_init": tags.get("init", "scratch"),
                    },
                )
                moved = True
            except PromotionConflict as err:
                note = str(err)
    champion = registry.champion_version()
    gated = Gated(
        promote=promote,
        moved=moved,
        reason=reason,
        checks=checks,
        evidence=shown,
        champion=champion,
        champion_label=registry.label(champion) if champion else None,
        note=note,
    )
    write_json(lake, gate_decision_path(date), gated.to_dict())
    return gated


def gate_decided(settings: Settings, date: dt.date) -> str | None:
    """Where the gate's decision for ``date`` lies, if the night got that far; else None."""
    lake = night_lake(settings, date)
    path = gate_decision_path(date)
    return lake.uri(path) if lake.exists(path) else None


def night_summary(settings: Settings, date: dt.date) -> tuple[dict[str, Any], Gated]:
    """The evaluation report and the gate's decision of a completed night, for printing."""
    lake = night_lake(settings, date)
    report = read_json(lake, evaluation_report_path(date))
    decision = read_json(lake, gate_decision_path(date))
    return report, Gated.from_dict(decision)
