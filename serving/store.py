"""The service's durable state, shared by its worker processes: one SQLite file (WAL).

- ``holds``: the price decided for a SKU, arm and decision period (the first request of the period
  decides; every worker then serves the same price);
- ``skus``: per SKU, the exponential averages of sales, views and carts the observation needs;
- ``decisions``: every price shown, waiting for its outcome; exported to the lake in batches and
  deleted only once the part file is written (a batch id is stamped first, and the part is named
  by it, so an export cut short is redone under the same name: nothing lost, nothing twice);
- ``runtime``: settings changed through the admin API (A/B share, exploration), read by every
  worker.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sim.feeds import DECISIONS, OUTCOMES

_DECISION_COLS = DECISIONS.names

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS holds (
    sku TEXT NOT NULL, arm TEXT NOT NULL, period INTEGER NOT NULL,
    level INTEGER NOT NULL, action INTEGER NOT NULL, propensity REAL NOT NULL,
    policy TEXT NOT NULL, version TEXT, explored INTEGER NOT NULL, clipped INTEGER NOT NULL,
    PRIMARY KEY (sku, arm, period)
);
CREATE TABLE IF NOT EXISTS skus (
    sku TEXT PRIMARY KEY, period INTEGER NOT NULL,
    velocity REAL NOT NULL, views REAL NOT NULL, carts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    {
    ", ".join(
        f"{c} {'REAL' if k == 'float' else 'INTEGER' if k == 'int' else 'TEXT'}"
        for c, k in ((c.name, c.kind) for c in DECISIONS.columns)
    )
},
    due REAL NOT NULL, final INTEGER NOT NULL DEFAULT 0, batch TEXT,
    PRIMARY KEY (event_id)
);
CREATE INDEX IF NOT EXISTS decisions_batch ON decisions (batch, due);
CREATE TABLE IF NOT EXISTS runtime (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """One connection per process; the service calls it from its event loop only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- holds and SKU state -------------------------------------------------------------------
    def holds(self, arm: str, period: int, skus: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The decided holds among ``skus`` for ``arm`` and ``period``."""
        out: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(skus, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT sku, level, action, propensity, policy, version, explored, clipped "
                f"FROM holds WHERE arm = ? AND period = ? AND sku IN ({marks})",
                (arm, period, *chunk),
            )
            out.update({r[0]: r[1:] for r in rows})
        return out

    def last_levels(self, arm: str, period: int, skus: Sequence[str]) -> dict[str, int]:
        """Each SKU's latest held level for ``arm`` before ``period``."""
        out: dict[str, int] = {}
        for chunk in _chunks(skus, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT sku, level FROM holds h WHERE arm = ? AND sku IN "
                f"({marks}) AND period = (SELECT MAX(period) FROM holds g WHERE g.sku = h.sku "
                "AND g.arm = h.arm AND g.period < ?)",
                (arm, *chunk, period),
            )
            out.update(dict(rows))
        return out

    def sku_states(self, skus: Sequence[str]) -> dict[str, tuple[int, float, float, float]]:
        out: dict[str, tuple[int, float, float, float]] = {}
        for chunk in _chunks(skus, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT sku, period, velocity, views, carts FROM skus WHERE sku IN ({marks})",
                tuple(chunk),
            )
            out.update({r[0]: (int(r[1]), r[2], r[3], r[4]) for r in rows})
        return out

    def decide(
        self,
        arm: str,
        period: int,
        holds: Iterable[tuple[Any, ...]],
        sku_states: Iterable[tuple[Any, ...]],
    ) -> None:
        """Record new holds (the first writer wins) and SKU states, in one transaction."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO holds (sku, arm, period, level, action, propensity, "
                "policy, version, explored, clipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(h[0], arm, period, *h[1:]) for h in holds],
            )
            self.db.executemany(
                "INSERT INTO skus (sku, period, velocity, views, carts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (sku) DO UPDATE SET period = excluded.period, "
                "velocity = excluded.velocity, views = excluded.views, carts = excluded.carts "
                "WHERE excluded.period > skus.period",
                list(sku_states),
            )

    def forget_before(self, period: int) -> None:
        """Holds older than ``period`` (the last one per SKU and arm is kept: it is the next
        period's starting price)."""
        self.db.execute(
            "DELETE FROM holds WHERE period < ? AND period < (SELECT MAX(period) FROM holds g "
            "WHERE g.sku = holds.sku AND g.arm = holds.arm)",
            (period,),
        )

    # -- the decision log ----------------------------------------------------------------------
    def log(self, rows: Sequence[tuple[Any, ...]], due: float) -> None:
        """``rows`` in the decisions contract's column order, outcome ``view`` by default."""
        marks = ",".join("?" * (len(_DECISION_COLS) + 1))
        with self.transaction():
            self.db.executemany(
                f"INSERT OR IGNORE INTO decisions ({', '.join(_DECISION_COLS)}, due) "
                f"VALUES ({marks})",
                [(*r, due) for r in rows],
            )

    def report(
        self, event_id: str, outcome: str, quantity: int
    ) -> tuple[str, tuple[str, float, float] | None]:
        """Join an outcome to its decision: ('ok', (arm, price, unit cost)), ('late', None) when
        the decision already has its outcome or was exported, ('unknown', None)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        with self.transaction():
            found = self.db.execute(
                "SELECT ab_arm, price_shown, unit_cost, final, batch FROM decisions "
                "WHERE event_id = ?",
                (event_id,),
            ).fetchone()
            if found is None:
                return "unknown", None
            if found[3] or found[4] is not None:
                return "late", None
            self.db.execute(
                "UPDATE decisions SET outcome = ?, quantity = ?, final = 1 WHERE event_id = ?",
                (outcome, quantity, event_id),
            )
        return "ok", (str(found[0]), float(found[1]), float(found[2]))

    def stamp(self, batch: str, everything: bool = False) -> int:
        """Mark the decisions due for export (all when ``everything``) with ``batch``."""
        cur = self.db.execute(
            "UPDATE decisions SET batch = ? WHERE batch IS NULL AND (? OR final = 1 OR due <= ?)",
            (batch, int(everything), time.time()),
        )
        return cur.rowcount

    def pending_batches(self) -> list[str]:
        return [
            r[0]
            for r in self.db.execute("SELECT DISTINCT batch FROM decisions WHERE batch IS NOT NULL")
        ]

    def batch_rows(self, batch: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.db.execute(
            f"SELECT {', '.join(_DECISION_COLS)} FROM decisions WHERE batch = ? ORDER BY ts, event_id",
            (batch,),
        )
        return list(_DECISION_COLS), cur.fetchall()

    def drop_batch(self, batch: str) -> None:
        self.db.execute("DELETE FROM decisions WHERE batch = ?", (batch,))

    def waiting(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    # -- runtime settings ----------------------------------------------------------------------
    def set_runtime(self, values: dict[str, str]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT INTO runtime (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def runtime(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM runtime"))

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
