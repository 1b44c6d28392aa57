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
import threading
import time
import uuid
from typing import Any

import orjson
import pandas as pd

from pipeline.data.lake import Lake
from serving.store import Store
from sim.feeds import DECISIONS, VIEW

log = logging.getLogger("pricing.serve")
EXPORT_CHUNKS = 20_000  # requests per exported batch


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
        self._exporting = threading.Lock()  # one thread at a time on the export connection
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
        arm: str | list[str],
        columns: dict[str, Any],
        prices: list[float],
        costs: list[float],
        period: int,
    ) -> None:
        """Keep a request's prices, shown in decision ``period``; `persist` stores them (every
        few milliseconds, before an outcome is joined, and at shutdown): one transaction for many
        requests keeps the workers from queueing on SQLite's write lock."""
        due = time.time() + self.window_s
        arms = arm if isinstance(arm, str) else orjson.dumps(arm).decode()  # one per price
        self._pending.append((self.prefix, first, arms, due, columns, prices, costs, period))

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

    def flush(self, everything: bool = False, recover: bool = False) -> int:
        """Export due decisions (every waiting one when ``everything``); returns rows written.
        A batch this process stamped but did not write (the lake refused it) is written first;
        with ``recover`` (at start), any process's (one that died mid-export)."""
        with self._exporting:
            return self._flush(everything, recover)

    def waiting(self) -> int:
        """Decisions stored and not yet exported (on the export connection)."""
        with self._exporting:
            return self.store.waiting()

    def _flush(self, everything: bool, recover: bool) -> int:
        written = 0
        for batch in self.store.pending_batches("" if recover else f"{self.writer_id}-"):
            written += self._export(batch)
        while True:  # in batches of at most EXPORT_CHUNKS requests: bounded memory
            batch = f"{self.writer_id}-{time.time_ns():x}"
            if not self.store.stamp(batch, everything, limit=EXPORT_CHUNKS):
                return written
            written += self._export(batch)

    def _export(self, batch: str) -> int:
        chunks, outcomes = self.store.batch_chunks(batch)
        rows = 0
        if chunks:
            frame = to_feed(_columns(chunks, outcomes))
            rows = len(frame)
            for day, part in frame.groupby(frame["ts"].dt.date, sort=True):
                self.lake.add_part(
                    "raw", "decisions", day, part.reset_index(drop=True), f"part-{batch}.parquet"
                )
        self.store.drop_batch(batch)
        log.info("decision log: %d decisions written (batch %s)", rows, batch)
        return rows


def _columns(chunks: list[dict[str, Any]], outcomes: dict[str, tuple[str, int]]) -> pd.DataFrame:
    """The chunks' rows as one frame (a scalar stands for every row of its chunk), each joined
    with its reported outcome (``view`` when none was)."""
    names = [n for n in DECISIONS.names if n not in ("outcome", "quantity")]
    fill = {c.name: c.fill for c in DECISIONS.columns if c.late}
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for chunk in chunks:
        n = len(chunk["event_id"])
        for name in names:
            value = chunk[name] if name in chunk else fill[name]  # stored before it was logged
            columns[name].extend(value if isinstance(value, list) else [value] * n)
    joined = [outcomes.get(e, (VIEW, 0)) for e in columns["event_id"]]
    columns["outcome"] = [o for o, _ in joined]
    columns["quantity"] = [q for _, q in joined]
    return pd.DataFrame(columns)


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
