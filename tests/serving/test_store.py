"""The service's store as several worker processes share it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from serving.store import Store


class _DropsBetweenReads:
    """A connection that lets another process drop ``batch`` right after its first read."""

    def __init__(self, db: sqlite3.Connection, other: Store, batch: str) -> None:
        self.db, self.other, self.batch, self.reads = db, other, batch, 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = self.db.execute(sql, *args)
        if sql.lstrip().upper().startswith("SELECT"):
            self.reads += 1
            if self.reads == 1:
                self.other.drop_batch(self.batch)
        return cursor


def _log_one(store: Store, prefix: str, first: int) -> str:
    columns = {"event_id": [f"{prefix}-{first:x}"], "sku": "a"}
    store.log([(prefix, first, "treatment", time.time(), columns, [10.0], [6.0], 0)])
    return f"{prefix}-{first:x}"


def test_a_batch_read_while_another_worker_writes_it_keeps_its_outcomes(tmp_path: Path) -> None:
    """Two workers may export one batch (a starting worker recovers what looks abandoned): the
    second reads the batch's chunks and outcomes in one snapshot, so its file, written under the
    same name, is the same file and not one where every outcome became a view."""
    exporting = Store(tmp_path / "serving.sqlite")
    starting = Store(tmp_path / "serving.sqlite")
    event = _log_one(exporting, "p1", 0)
    assert exporting.report(event, "purchase", 2) == ("ok", ("treatment", 10.0, 6.0))
    assert exporting.stamp("w1-1", everything=True) == 1
    assert starting.pending_batches() == ["w1-1"]

    starting.db = _DropsBetweenReads(starting.db, exporting, "w1-1")  # type: ignore[assignment]
    chunks, outcomes = starting.batch_chunks("w1-1")
    assert [c["event_id"] for c in chunks] == [[event]]
    assert outcomes == {event: ("purchase", 2)}
    assert exporting.batch_chunks("w1-1") == ([], {})  # written and dropped by the other


def test_a_worker_retries_its_own_batches_and_recovers_any_at_start(tmp_path: Path) -> None:
    store = Store(tmp_path / "serving.sqlite")
    _log_one(store, "p1", 0)
    _log_one(store, "p2", 0)
    store.stamp("host-1-a", everything=True, limit=1)
    store.stamp("host-12-b", everything=True, limit=1)
    assert store.pending_batches("host-1-") == ["host-1-a"]
    assert sorted(store.pending_batches()) == ["host-1-a", "host-12-b"]
