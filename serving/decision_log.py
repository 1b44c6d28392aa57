"""The decision log: every price shown, joined with its reported outcome by ``event_id``, written
to the lake's ``raw/decisions/date=D/`` in the decisions feed's contract (`sim.feeds.DECISIONS`),
so that the night validates, refits and evaluates on what was served.

A decision waits in the service's store for its outcome until its outcome window closes (then its
outcome stays ``view``: the visitor saw the price and did nothing the platform reported) or an
outcome arrives. Due decisions are exported in batches, one part file per batch and day; shutdown
exports everything still waiting.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import pandas as pd

from pipeline.data.lake import Lake
from serving.store import Store
from sim.feeds import DECISIONS, VIEW

log = logging.getLogger("pricing.serve")


def default_writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class DecisionLog:
    """``writer`` is the event loop's connection (records, outcomes), ``store`` the exporting
    thread's own."""

    def __init__(
        self, writer: Store, store: Store, lake: Lake, writer_id: str, window_s: float
    ) -> None:
        self.writer = writer
        self.store = store
        self.lake = lake
        self._pending: list[tuple[Any, ...]] = []
        self.writer_id = writer_id.replace("/", "-") or default_writer_id()
        self.window_s = window_s
        self.prefix = uuid.uuid4().hex[:12]
        self._next = 0

    def event_ids(self, n: int) -> tuple[int, list[str]]:
        """``n`` ids unique across processes and restarts, and the first one's number."""
        start, self._next = self._next, self._next + n
        return start, [f"{self.prefix}-{i:x}" for i in range(start, start + n)]

    def record(
        self,
        first: int,
        arm: str,
        columns: dict[str, Any],
        prices: list[float],
        costs: list[float],
    ) -> None:
        """Keep a request's prices; `persist` stores them (every few milliseconds, before an
        outcome is joined, and at shutdown): one transaction for many requests keeps the
        workers from queueing on SQLite's write lock."""
        due = time.time() + self.window_s
        self._pending.append((self.prefix, first, arm, due, columns, prices, costs))

    def persist(self) -> int:
        pending, self._pending = self._pending, []
        if pending:
            try:
                self.writer.log(pending)
            except BaseException:
                self._pending = pending + self._pending
                raise
        return len(pending)

    def report(
        self, event_id: str, outcome: str, quantity: int
    ) -> tuple[str, tuple[str, float, float] | None]:
        self.persist()
        return self.writer.report(event_id, outcome, quantity)

    def flush(self, everything: bool = False) -> int:
        """Export due decisions (every waiting one when ``everything``); returns rows written.
        A batch stamped but not written before (a crash mid-export) is written first."""
        written = 0
        for batch in self.store.pending_batches():
            written += self._export(batch)
        batch = f"{self.writer_id}-{time.time_ns():x}"
        if self.store.stamp(batch, everything):
            written += self._export(batch)
        return written

    def _export(self, batch: str) -> int:
        chunks, outcomes = self.store.batch_chunks(batch)
        frames = [pd.DataFrame(c) for c in chunks]  # scalars broadcast over the chunk's rows
        rows = 0
        if frames:
            frame = pd.concat(frames, ignore_index=True)
            joined = [outcomes.get(e, (VIEW, 0)) for e in frame["event_id"]]
            frame["outcome"] = [o for o, _ in joined]
            frame["quantity"] = [q for _, q in joined]
            frame = to_feed(frame)
            rows = len(frame)
            for day, part in frame.groupby(frame["ts"].dt.date, sort=True):
                self.lake.add_part(
                    "raw", "decisions", day, part.reset_index(drop=True), f"part-{batch}.parquet"
                )
        self.store.drop_batch(batch)
        log.info("decision log: %d decisions written (batch %s)", rows, batch)
        return rows


def to_feed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stored rows with the contract's dtypes."""
    out = frame.copy()
    for c in DECISIONS.columns:
        if c.kind == "ts":
            out[c.name] = pd.to_datetime(out[c.name], utc=True, format="ISO8601")
        elif c.kind == "int":
            out[c.name] = out[c.name].astype("int64")
        elif c.kind == "float":
            out[c.name] = out[c.name].astype("float64")
        else:
            out[c.name] = out[c.name].astype(object)
    return out[list(DECISIONS.names)]
