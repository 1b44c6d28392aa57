"""The object store (moto's S3 server behind a fault proxy, real HTTP) failing during a night:
down at each step, mid-step, then back (the retry Airflow would make); and flapping (503s)
through a whole night, ridden out by botocore's retries. Each ends with the champion moved
exactly once, one model version, no duplicated rows, and the next night succeeding."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.lake import LakeUnavailable, open_lake
from pipeline.nightly.candidates import train_candidate
from pipeline.nightly.evaluate import evaluate_candidates
from pipeline.nightly.results import Refitted, StepResult, Trained
from pipeline.nightly.run import run_night
from pipeline.nightly.steps import (
    check_fidelity,
    extract_features,
    promotion_gate,
    refit_simulator,
    validate_raw,
)
from pipeline.release.doctor import diagnose
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.faults.hooks import after_alias_moves, ledger_moves
from tests.faults.night import LAST, night_settings, write_tiny_history
from tests.faults.proxy import FaultProxy


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    fault = FaultProxy(s3_endpoint)
    yield fault
    fault.close()


@pytest.fixture
def settings(tmp_path: Path, proxy: FaultProxy, s3_endpoint: str, s3_lake_uri: str) -> Settings:
    """A tiny world's history on S3 (written directly), the night's lake through the proxy."""
    config = night_settings(
        tmp_path,
        model_name=f"s3-faults-{uuid.uuid4().hex[:6]}",
        lake_uri=s3_lake_uri,
        s3_endpoint_url=proxy.url,
        s3_max_attempts=2,
        s3_timeout_s=3.0,
    )
    write_tiny_history(open_lake(config.model_copy(update={"s3_endpoint_url": s3_endpoint})))
    return config


def _steps(settings: Settings, date: dt.date) -> list[tuple[str, Callable[[], StepResult]]]:
    """The night's steps in order, each reading what the one before returned."""
    seen: dict[str, StepResult] = {}

    def refitted() -> Refitted:
        out = seen["refit"]
        assert isinstance(out, Refitted)
        return out

    def version() -> list[str]:
        out = seen["train"]
        assert isinstance(out, Trained) and out.version
        return [out.version]

    steps: list[tuple[str, Callable[[], StepResult]]] = [
        ("validate", lambda: validate_raw(settings, date)),
        ("features", lambda: extract_features(settings, date)),
        ("refit", lambda: refit_simulator(settings, date)),
        ("fidelity", lambda: check_fidelity(settings, date)),
        ("train", lambda: train_candidate(settings, date, "planner", refitted().lineage())),
        ("evaluate", lambda: evaluate_candidates(settings, date, version())),
        ("gate", lambda: promotion_gate(settings, date)),
    ]

    def remember(name: str, call: Callable[[], StepResult]) -> Callable[[], StepResult]:
        def run() -> StepResult:
            seen[name] = call()
            return seen[name]

        return run

    return [(name, remember(name, call)) for name, call in steps]


def _check_outputs(settings: Settings, nights: int) -> Registry:
    """One version per night, each move in the ledger once, no duplicated feature rows."""
    lake = open_lake(settings)
    reg = Registry(settings, lake)
    versions = reg.client.search_model_versions(f"name = '{settings.model_name}'")
    assert len(versions) == nights
    moves = reg.ledger.entries()
    assert len({e.to_version for e in moves}) == len(moves) >= 1
    for day in lake.list_dates("features", "features"):
        feats = lake.read_partition("features", "features", day)
        assert len(feats) == len(feats.drop_duplicates(["date", "sku"]))
    assert diagnose(reg).healthy
    return reg


# mid-step is the harder case (part of the step's outputs written); at the start: `make test-slow`
@pytest.mark.parametrize("when", [pytest.param("at the start", marks=pytest.mark.slow), "mid-step"])
def test_store_down_at_each_step_then_back(
    settings: Settings, proxy: FaultProxy, when: str, fault_row: Any
) -> None:
    reg = Registry(settings, open_lake(settings))
    for name, step in _steps(settings, LAST):
        proxy.set("down", after=0 if when == "at the start" else 1)
        with pytest.raises(LakeUnavailable) as err:
            step()
        message = str(err.value)
        assert "s3://" in message and ("object store" in message or "after retries" in message)
        proxy.set("up")
        assert reg.champion_version() is None, f"the champion moved during a failed {name}"
        step()  # the retry
    assert reg.champion_version() == "1"
    _check_outputs(settings, nights=1)
    following = run_night(settings, LAST + dt.timedelta(days=1))
    assert following.status == "completed", following.reason
    _check_outputs(settings, nights=2)
    fault_row(
        f"object store down {when} of each of the 7 steps of a night",
        "proxy drops every S3 connection"
        + (" after the step's first request" if when == "mid-step" else ""),
        True,
        0,
        "LakeUnavailable (exit 4): cannot read s3://…: the object store is out of reach; the "
        "retried step completes the night",
    )


def test_store_flapping_through_a_night(
    settings: Settings, proxy: FaultProxy, fault_row: Any
) -> None:
    flapping = settings.model_copy(update={"s3_max_attempts": 5})
    proxy.set("flap", every=5)  # one request in five answered 503 SlowDown
    result = run_night(flapping, LAST)
    proxy.set("up")
    assert result.status == "completed", result.reason
    assert proxy.injected > 10
    reg = _check_outputs(flapping, nights=1)
    assert reg.champion_version() == "1"
    fault_row(
        "object store flapping through a night",
        f"every 5th S3 request answered 503 ({proxy.injected} in all)",
        True,
        0,
        "nothing: botocore's standard retries (PRICING_S3_MAX_ATTEMPTS) ride it out",
    )


def test_gate_retried_after_the_store_fell_between_alias_and_ledger(
    settings: Settings, proxy: FaultProxy, fault_row: Any
) -> None:
    from pipeline.release.ledger import LedgerError

    steps = _steps(settings, LAST)
    for _, step in steps[:-1]:
        step()
    lose_the_store = after_alias_moves(lambda: proxy.set("down"))
    with lose_the_store, pytest.raises(LedgerError, match="could not be written"):
        steps[-1][1]()  # the gate: the alias moved, its ledger line did not
    proxy.set("up")
    gated = promotion_gate(settings, LAST)  # Airflow's retry of the gate task
    assert gated.champion == "1" and gated.note is not None and "was recorded" in gated.note
    reg = _check_outputs(settings, nights=1)
    assert ledger_moves(reg) == [("reconcile", "1")]
    fault_row(
        "object store down between the night's alias move and its ledger line",
        "the proxy drops every S3 connection once the gate moved the alias",
        True,
        0,
        "the gate task fails (LedgerError); its retry records the move and completes the night",
    )
