"""A whole night in one process: the steps in the order `pipeline.contracts.NIGHT_STEPS` gives
(the same order the Airflow DAG reads), stopping at the first gate that says no.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
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
    slice_clusters,
    validate_raw,
)
from pipeline.nightly.workers import worker_start
from pipeline.settings import Settings
from pipeline.tracking import create_tracking_store

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
    workers: int | None = None,
) -> ClusteredNight:
    """The catalogue's steps (validation, features), the clusters (`pipeline.data.clusters`),
    then each cluster's night (`CLUSTER_STEPS`, with `Settings.for_cluster`: its own model,
    champion and ledger). A cluster whose night stops keeps its champion; the others go on.

    ``workers`` (default `Settings.night_workers`) above 1 runs the cluster nights side by side,
    each worker a process of its own (``train_progress`` is then not called; ``on_step`` hears
    of a cluster's steps when its night ends). The Airflow DAG maps the same cluster nights over
    its Celery workers.
    """
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
    started = time.perf_counter()
    sliced = slice_clusters(settings, date, members, tell)
    if on_step is not None:
        on_step("slices", time.perf_counter() - started, None)
    if sliced.skipped:
        tell(f"slices not cut for {', '.join(sliced.skipped)}: those days are filtered per cluster")
    workers = min(settings.night_workers if workers is None else workers, len(members))
    if workers > 1:
        _in_workers(settings, date, now, list(members), workers, night, tell, on_step)
        return night
    for cid in members:
        tell(f"cluster {cid} ({len(members[cid])} SKUs) …")
        night.clusters[cid] = _cluster_night(settings, cid, date, say, train_progress, now, on_step)
    return night


def _cluster_night(
    settings: Settings,
    cid: str,
    date: dt.date,
    say: Say | None,
    train_progress: Callable[[str], TrainProgress] | None,
    now: dt.datetime | None,
    on_step: Callable[[str, float, StepResult | None], None] | None,
) -> NightResult:
    try:
        return run_night(
            settings.for_cluster(cid), date, say, train_progress, now, on_step, CLUSTER_STEPS
        )
    except Exception as err:  # a bug or an outage in one cluster: the others still run
        log.exception("cluster %s failed", cid)
        return _failed(date, f"{err.__class__.__name__}: {err}", "the traceback is in the log")


def _failed(date: dt.date, what: str, where: str) -> NightResult:
    return NightResult(
        date=date.isoformat(),
        status="stopped",
        stopped_at="error",
        reason=f"{what} (its champion is unchanged; {where})",
    )


# A worker process serves at most this many cluster nights, then fresh ones take over: a bound
# on whatever one night leaves behind, at the cost of the imports (seconds) each time. Done as
# one pool per batch, not with ProcessPoolExecutor's max_tasks_per_child, which deadlocks on
# Python 3.11-3.13 once a worker exits at its limit with work still queued (CPython gh-115634).
TASKS_PER_WORKER = 8


def _in_workers(
    settings: Settings,
    date: dt.date,
    now: dt.datetime | None,
    cids: list[str],
    workers: int,
    night: ClusteredNight,
    tell: Say,
    on_step: Callable[[str, float, StepResult | None], None] | None,
) -> None:
    """The cluster nights in ``workers`` processes, recorded in ``night.clusters`` in ``cids``'
    order. A worker that dies (out of memory, killed) breaks its pool: every cluster of its
    batch not done by then is recorded as failed, with that reason; the next batch starts
    fresh workers."""
    tell(f"{len(cids)} cluster nights on {workers} worker processes …")
    create_tracking_store(settings)
    results: dict[str, NightResult] = {}
    batch = workers * TASKS_PER_WORKER
    for first in range(0, len(cids), batch):
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),  # no fork of a process holding threads and locks
            initializer=worker_start,
            initargs=(os.getpid(), max(1, (os.cpu_count() or 1) // workers)),
        ) as pool:
            futures = {
                pool.submit(_worker_night, settings, cid, date, now): cid
                for cid in cids[first : first + batch]
            }
            for future in as_completed(futures):
                cid = futures[future]
                timings: list[tuple[str, float]] = []
                try:
                    results[cid], timings = future.result()
                except Exception as err:  # the process itself died: BrokenProcessPool
                    results[cid] = _failed(
                        date, f"{err.__class__.__name__}: {err}", "its worker died"
                    )
                for name, seconds in timings:
                    if on_step is not None:
                        on_step(name, seconds, results[cid].steps.get(name))
                r = results[cid]
                outcome = r.status if r.stopped_at is None else f"stopped at {r.stopped_at}"
                tell(f"cluster {cid}: {outcome} ({len(results)}/{len(cids)})")
    night.clusters.update((cid, results[cid]) for cid in cids)


def _worker_night(
    settings: Settings, cid: str, date: dt.date, now: dt.datetime | None
) -> tuple[NightResult, list[tuple[str, float]]]:
    """One cluster's night in a worker process, with its steps' timings."""
    timings: list[tuple[str, float]] = []
    result = _cluster_night(
        settings, cid, date, None, None, now, lambda name, s, _: timings.append((name, s))
    )
    return result, timings
