"""The MLflow tracking server killed in the middle of a champion move, then restarted: a real
``mlflow server`` process (SQLite backend, local artifacts), stopped at the points where a move
talks to it. Each case ends with the champion unchanged or moved exactly once, the ledger
agreeing with the alias, and `pricing doctor` healthy after at most a repair."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.lake import open_lake
from pipeline.errors import Unavailable
from pipeline.release.doctor import diagnose, repair
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.conftest import register_tiny_version
from tests.faults.hooks import after_alias_moves, ledger_moves
from tests.mlflow_server import MlflowServer


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    # one attempt per request, a short timeout: an outage is reported in seconds, not minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    srv = MlflowServer(tmp_path / "mlflow")
    srv.root.mkdir()
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def registry(server: MlflowServer, tmp_path: Path) -> Registry:
    settings = Settings(
        data_dir=tmp_path / "data",
        model_name=f"tracking-{uuid.uuid4().hex[:6]}",
        mlflow_tracking_uri=server.url,
    )
    reg = Registry(settings, open_lake(settings))
    for seed in range(2):
        register_tiny_version(reg, seed, f"2026-01-0{seed + 1}")
    reg.promote("1", None, "first champion", who="test")
    return reg


def test_server_down_before_the_move_changes_nothing(
    registry: Registry, server: MlflowServer, fault_row: Any
) -> None:
    server.kill()
    with pytest.raises(Unavailable, match=r"did not answer.*nothing was changed"):
        registry.promote("2", "1", "second", who="test")
    assert ledger_moves(registry) == [("promote", "1")]  # the ledger is in the lake: readable now
    server.start()
    assert registry.champion_version() == "1" and diagnose(registry).healthy
    registry.promote("2", "1", "second, retried", who="test")
    assert registry.champion_version() == "2"
    assert ledger_moves(registry) == [("promote", "1"), ("promote", "2")]
    fault_row(
        "MLflow tracking server down when a move starts",
        "`mlflow server` killed before the promotion",
        True,
        0,
        "Unavailable (exit 4): the model registry at http://… did not answer; nothing was changed",
    )


def test_server_killed_after_the_alias_moved(
    registry: Registry, server: MlflowServer, fault_row: Any
) -> None:
    with after_alias_moves(server.kill):
        entry = registry.promote("2", "1", "second", who="test")  # alias, ledger: the move is whole
    assert entry.to_version == "2"
    server.start()
    assert registry.champion_version() == "2"
    assert ledger_moves(registry) == [("promote", "1"), ("promote", "2")]
    sick = diagnose(registry)
    assert [f.check for f in sick.findings if not f.ok] == ["promoted_at tag"]
    assert repair(registry).healthy and diagnose(registry).healthy
    assert registry.version("2").tags["promoted_at"] == entry.when
    fault_row(
        "MLflow tracking server killed after the alias move",
        "`mlflow server` killed between the alias move and its tag",
        True,
        0,
        "a warning (promoted_at not written); `pricing doctor` reports it, `--repair` writes it",
    )
