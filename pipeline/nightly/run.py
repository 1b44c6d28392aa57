"""A whole night in one process: the steps in the order `pipeline.contracts.NIGHT_STEPS` gives
(the same order the Airflow DAG reads), stopping at the first gate that says no.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.contracts import CATALOGUE_STEPS, CLUSTER_STEPS, NIGHT_STEPS
from pipeline.data.clusters import cluster_catalogue
from pipeline.nightly.candidates import train_candidate
from pipeline.nightly.evaluate import evaluate_candidates
from pipeline.nightly.results import NightStopped, Refitted, StepResult, Stopped, Trained
from pipeline.nightly.steps import (
    TrainProgress,
    check_fidelity,
    extract_features,
    promotion_gate,
    refit_simulator,
    validate_raw,
)
from pipeline.settings import Settings

log = logging.getLogger("pricing.nightly")

Say = Callable[[str], None]


@dataclass
class NightResult:
    """Every step's result (``train_<algo>`` for each algorithm), and why the night stopped."""

    date: str
    status: str  # completed | stopped
    steps: dict[str, StepResult] = field(default_factory=dict)
    stopped_at: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "status": self.status,
            "stopped_at": self.stopped_at,
            "reason": self.reason,
            "steps": {name: step.to_dict() for name, step in self.steps.items()},
        }


def run_night(
    settings: Settings,
    date: dt.date,
    say: Say | None = None,
    train_progress: Callable[[str], TrainProgress] | None = None,
    now: dt.datetime | None = None,
    on_step: Callable[[str, float, StepResult | None], None] | None = None,
    steps: Sequence[str] = NIGHT_STEPS,
) -> NightResult:
    """Every step in order (``steps``: a part of `NIGHT_STEPS`, in its order). Stops (status
    "stopped") at the first gate that says no.

    ``on_step(name, seconds, result)`` hears of every step as it ends (``train_<algo>`` for each
    algorithm; the result is None for a step that raised), e.g. to time them.
    """
    tell: Say = say or log.info

    def timed(name: str, call: Callable[[], StepResult]) -> StepResult:
        started = time.perf_counter()
        out: StepResult | None = None
        try:
            out = call()
            return out
        finally:
            if on_step is not None:
                on_step(name, time.perf_counter() - started, out)

    result = NightResult(date=date.isoformat(), status="running")
    refitted: Refitted | None = None
    versions: list[str] = []

    def run(name: str) -> None:
        nonlocal refitted
        if name == "train":  # one run per algorithm, each recorded as train_<algo>
            assert refitted is not None
            for algo in settings.algos:
                tell(f"train_{algo} …")
                progress = train_progress(algo) if train_progress else None
                train = partial(train_candidate, settings, date, algo, refitted.lineage(), progress)
                trained = timed(f"train_{algo}", train)
                assert isinstance(trained, Trained)
                result.steps[f"train_{algo}"] = trained
                if trained.version is not None:
                    versions.append(trained.version)
                else:
                    tell(f"train_{algo} skipped: {trained.skipped}")
            return
        tell(f"{name} …")
        call: Callable[[], StepResult] = {
            "validate": lambda: validate_raw(settings, date, now),
            "features": lambda: extract_features(settings, date, now),
            "refit": lambda: refit_simulator(settings, date),
            "fidelity": lambda: check_fidelity(settings, date),
            "evaluate": lambda: evaluate_candidates(settings, date, versions),
            "gate": lambda: promotion_gate(settings, date),
        }[name]
        out = timed(name, call)
        if isinstance(out, Refitted):
            refitted = out
        result.steps[name] = out

    try:
        for name in steps:
            run(name)
    except NightStopped as stop:
        result.status = "stopped"
        result.stopped_at = stop.step
        result.reason = str(stop)
        result.steps[stop.step] = Stopped(reason=str(stop), details=stop.details)
        return result
    result.status = "completed"
    return result


@dataclass
class ClusteredNight:
    """A night fanned out over clusters: the catalogue's steps, then each cluster's night."""

    date: str
    catalogue: NightResult
    clusters: dict[str, NightResult] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """completed (every cluster's night ran to its gate, whatever the gates decided),
        partial (some clusters stopped, the others went on), or stopped (the catalogue's steps
        stopped: no cluster ran)."""
        if self.catalogue.status != "completed":
            return "stopped"
        if all(r.status == "completed" for r in self.clusters.values()):
            return "completed"
        return "partial"

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "status": self.status,
            "catalogue": self.catalogue.to_dict(),
            "clusters": {c: r.to_dict() for c, r in self.clusters.items()},
        }


def run_clustered_night(
    settings: Settings,
    date: dt.date,
    say: Say | None = None,
    train_progress: Callable[[str], TrainProgress] | None = None,
    now: dt.datetime | None = None,
    on_step: Callable[[str, float, StepResult | None], None] | None = None,
) -> ClusteredNight:
    """The catalogue's steps (validation, features), the clusters (`pipeline.data.clusters`),
    then each cluster's night in turn (`CLUSTER_STEPS`, with `Settings.for_cluster`: its own
    model, champion and ledger). A cluster whose night stops keeps its champion; the others go
    on. (The Airflow DAG maps the same cluster nights over its workers.)"""
    tell: Say = say or log.info
    catalogue = run_night(settings, date, say, now=now, on_step=on_step, steps=CATALOGUE_STEPS)
    night = ClusteredNight(date=date.isoformat(), catalogue=catalogue)
    if catalogue.status != "completed":
        return night
    started = time.perf_counter()
    clusters = cluster_catalogue(settings, date)
    if on_step is not None:
        on_step("clusters", time.perf_counter() - started, None)
    members = clusters.members()
    tell(f"{len(members)} clusters: {', '.join(members)}")
    for cid in members:
        tell(f"cluster {cid} ({len(members[cid])} SKUs) …")
        try:
            night.clusters[cid] = run_night(
                settings.for_cluster(cid), date, say, train_progress, now, on_step, CLUSTER_STEPS
            )
        except Exception as err:  # a bug or an outage in one cluster: the others still run
            log.exception("cluster %s failed", cid)
            night.clusters[cid] = NightResult(
                date=date.isoformat(),
                status="stopped",
                stopped_at="error",
                reason=f"{err.__class__.__name__}: {err} (its champion is unchanged; the "
                "traceback is in the log)",
            )
    return night
