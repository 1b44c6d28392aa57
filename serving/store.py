"""The service's durable state, shared by its worker processes: one SQLite file (WAL).

- ``holds``: the price decided for a SKU, arm and decision period (the first request of the period
  decides; every worker then serves the same price);
- ``skus``: per SKU, the exponential averages of sales, views and carts the observation needs;
- ``chunks``: the prices shown by one request (one row of JSON columns per request: a
  10,000-SKU call is one insert), waiting for their outcome window to close; exported to the lake
  in batches and deleted only once the part file is written (a batch id is stamped first, and the
  part is named by it, so an export cut short is redone under the same name: nothing lost,
  nothing twice). Event ids are ``<prefix>-<n in hex>``: a chunk holds ``n`` from ``first``;
- ``outcomes``: the outcome reported for an event, joined to its chunk's rows at export;
- ``runtime``: settings changed through the admin API (A/B share, exploration), read by every
  worker;
- ``seen``: per SKU and decision period, the prices the service showed and the carts and sales
  reported for them: the averages of a period no request told of (a SKU nobody visited for a
  while) come from here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from sim.feeds import CARTED, OUTCOMES, PURCHASE

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL, first INTEGER NOT NULL, n INTEGER NOT NULL,
    arm TEXT NOT NULL, due REAL NOT NULL, batch TEXT
);
-- the rows themselves apart, so that counting and stamping chunks reads narrow rows only
CREATE TABLE IF NOT EXISTS chunk_data (
    prefix TEXT NOT NULL, first INTEGER NOT NULL,
    data TEXT NOT NULL, prices TEXT NOT NULL, costs TEXT NOT NULL,
    PRIMARY KEY (prefix, first)
);
CREATE INDEX IF NOT EXISTS chunks_events ON chunks (prefix, first);
CREATE INDEX IF NOT EXISTS chunks_batch ON chunks (batch, due);
CREATE TABLE IF NOT EXISTS outcomes (
    event_id TEXT PRIMARY KEY, chunk INTEGER NOT NULL, outcome TEXT NOT NULL,
    quantity INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_chunk ON outcomes (chunk);
CREATE TABLE IF NOT EXISTS runtime (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- what the service saw of each SKU in each decision period: prices shown, carts and units sold
-- reported (the averages the observation needs, for periods no request told of)
CREATE TABLE IF NOT EXISTS seen (
    sku TEXT NOT NULL, period INTEGER NOT NULL,
    views INTEGER NOT NULL DEFAULT 0, carts INTEGER NOT NULL DEFAULT 0,
    sales INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sku, period)
);
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
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(chunks)")}
        if "period" not in columns:  # a store written before chunks knew their period
            with contextlib.suppress(sqlite3.OperationalError):  # another worker added it
                self.db.execute("ALTER TABLE chunks ADD COLUMN period INTEGER")

    def close(self) -> None:
        self.db.close()

    # -- holds and SKU state -------------------------------------------------------------------
    def _by_sku(
        self,
        sql: str,
        skus: Sequence[str],
        before: tuple[Any, ...] = (),
        after: tuple[Any, ...] = (),
    ) -> dict[str, tuple[Any, ...]]:
        """The rows of ``sql`` keyed by their first column (the SKU), run over ``skus`` 500 at a
        time (SQLite bounds a statement's parameters); ``{skus}`` in ``sql`` stands for them,
        between the parameters ``before`` and ``after``."""
        out: dict[str, tuple[Any, ...]] = {}
        for i in range(0, len(skus), 500):
            chunk = skus[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(sql.format(skus=marks), (*before, *chunk, *after))
            out.update({r[0]: tuple(r[1:]) for r in rows})
        return out

    def holds(self, arm: str, period: int, skus: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The decided holds among ``skus`` for ``arm`` and ``period``."""
        return self._by_sku(
            "SELECT sku, level, action, propensity, policy, version, explored, clipped "
            "FROM holds WHERE arm = ? AND period = ? AND sku IN ({skus})",
            skus,
            (arm, period),
        )

    def last_levels(
        self, arm: str, period: int, skus: Sequence[str], since: int = -(2**62)
    ) -> dict[str, int]:
        """Each SKU's latest held level for ``arm`` before ``period`` (and from ``since``)."""
        # SQLite takes a bare column beside MAX() from the row holding the maximum
        rows = self._by_sku(
            "SELECT sku, level, MAX(period) FROM holds WHERE arm = ? AND period < ? AND "
            "period >= ? AND sku IN ({skus}) GROUP BY sku",
            skus,
            (arm, period, since),
        )
        return {sku: int(row[0]) for sku, row in rows.items()}

    def seen(
        self, skus: Sequence[str], first: int, last: int
    ) -> dict[tuple[str, int], tuple[int, int, int]]:
        """Sales, views and carts of ``skus`` in the periods ``first``..``last`` the service saw."""
        out: dict[tuple[str, int], tuple[int, int, int]] = {}
        for i in range(0, len(skus), 500):
            chunk = skus[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT sku, period, sales, views, carts FROM seen WHERE period BETWEEN ? AND ? "  # nosec B608
                f"AND sku IN ({marks})",
                (first, last, *chunk),
            )
            out.update({(r[0], r[1]): (r[2], r[3], r[4]) for r in rows})
        return out

    def sku_states(self, skus: Sequence[str]) -> dict[str, tuple[int, float, float, float]]:
        rows = self._by_sku(
            "SELECT sku, period, velocity, views, carts FROM skus WHERE sku IN ({skus})", skus
        )
        return {sku: (int(r[0]), r[1], r[2], r[3]) for sku, r in rows.items()}

    def decide(
        self,
        arm: str,
        period: int,
        holds: Iterable[tuple[Any, ...]],
        sku_states: Iterable[tuple[Any, ...]],
    ) -> int:
        """Record new holds (the first writer wins) and SKU states, in one transaction; returns
        how many holds were new."""
        with self.transaction():
            cur = self.db.executemany(
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
        return int(cur.rowcount)

    def forget_before(self, period: int) -> None:
        """Holds older than ``period`` (the last one per SKU and arm is kept: it is the next
        period's starting price)."""
        self.db.execute(
            "DELETE FROM holds WHERE period < ? AND period < (SELECT MAX(period) FROM holds g "
            "WHERE g.sku = holds.sku AND g.arm = holds.arm)",
            (period,),
        )

    # -- the decision log ----------------------------------------------------------------------
    def log(self, chunks: list[tuple[Any, ...]]) -> None:
        """Requests' prices, one row each: (prefix, first, arm, due, columns, prices, costs,
        period), ``columns`` mapping each decisions column but the outcome's to a list (one
        value per price) or a scalar (the same for all); each price counts as a view of its SKU
        in its period (``seen``). One transaction for all."""
        views: dict[tuple[str, int], int] = {}
        for c in chunks:
            skus = c[4]["sku"]
            for sku in skus if isinstance(skus, list) else [skus]:
                views[(sku, c[7])] = views.get((sku, c[7]), 0) + 1
        with self.transaction():
            self.db.executemany(
                "INSERT INTO chunks (prefix, first, n, arm, due, period) VALUES (?, ?, ?, ?, ?, ?)",
                [(c[0], c[1], len(c[5]), c[2], c[3], c[7]) for c in chunks],
            )
            self.db.executemany(
                "INSERT INTO seen (sku, period, views) VALUES (?, ?, ?) ON CONFLICT (sku, period) "
                "DO UPDATE SET views = views + excluded.views",
                [(sku, period, n) for (sku, period), n in views.items()],
            )
            self.db.executemany(
                "INSERT INTO chunk_data (prefix, first, data, prices, costs) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        prefix,
                        first,
                        orjson.dumps(columns),
                        orjson.dumps(prices),
                        orjson.dumps(costs),
                    )
                    for prefix, first, _, _, columns, prices, costs, _ in chunks
                ],
            )

    def report(
        self, event_id: str, outcome: str, quantity: int
    ) -> tuple[str, tuple[str, float, float] | None]:
        """Join an outcome to its decision: ('ok', (arm, price, unit cost)), ('late', None) when
        the decision already has an outcome, ('unknown', None) when no waiting decision has this
        id (never logged, or exported when its window closed)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        prefix, _, hex_n = event_id.rpartition("-")
        try:
            n = int(hex_n, 16)
        except ValueError:
            return "unknown", None
        with self.transaction():
            found = self.db.execute(
                "SELECT c.id, c.first, c.arm, d.prices, d.costs, c.period, d.data FROM chunks c "
                "JOIN chunk_data d ON d.prefix = c.prefix AND d.first = c.first WHERE "
                "c.prefix = ? AND c.first <= ? AND c.first + c.n > ? AND c.batch IS NULL",
                (prefix, n, n),
            ).fetchone()
            if found is None:
                return "unknown", None
            chunk, first, arm, prices, costs, period, data = found
            cur = self.db.execute(
                "INSERT OR IGNORE INTO outcomes (event_id, chunk, outcome, quantity) "
                "VALUES (?, ?, ?, ?)",
                (event_id, chunk, outcome, quantity),
            )
            if not cur.rowcount:
                return "late", None
            i = n - first
            if period is not None and outcome in CARTED:
                skus = orjson.loads(data)["sku"]
                self.db.execute(
                    "INSERT INTO seen (sku, period, carts, sales) VALUES (?, ?, 1, ?) "
                    "ON CONFLICT (sku, period) DO UPDATE SET carts = carts + 1, "
                    "sales = sales + excluded.sales",
                    (
                        skus[i] if isinstance(skus, list) else skus,
                        period,
                        quantity if outcome == PURCHASE else 0,
                    ),
                )
        if str(arm).startswith("["):  # a chunk whose prices went to several arms (sku design)
            arm = orjson.loads(arm)[i]
        return "ok", (str(arm), float(orjson.loads(prices)[i]), float(orjson.loads(costs)[i]))

    def stamp(self, batch: str, everything: bool = False, limit: int = 20_000) -> int:
        """Mark up to ``limit`` chunks due for export (any waiting one when ``everything``),
        oldest first, with ``batch``. The usual query walks the (batch, due) index, not the
        table, while it holds the write lock."""
        if everything:
            cur = self.db.execute(
                "UPDATE chunks SET batch = ? WHERE id IN "
                "(SELECT id FROM chunks WHERE batch IS NULL ORDER BY id LIMIT ?)",
                (batch, limit),
            )
        else:
            cur = self.db.execute(
                "UPDATE chunks SET batch = ? WHERE id IN "
                "(SELECT id FROM chunks WHERE batch IS NULL AND due <= ? ORDER BY id LIMIT ?)",
                (batch, time.time(), limit),
            )
        return cur.rowcount

    def pending_batches(self, writer: str = "") -> list[str]:
        """Batches stamped and not yet written (by a writer whose ids start with ``writer``)."""
        rows = self.db.execute(
            "SELECT DISTINCT batch FROM chunks WHERE batch IS NOT NULL AND substr(batch, 1, ?) = ?",
            (len(writer), writer),
        )
        return [r[0] for r in rows]

    def batch_chunks(self, batch: str) -> tuple[list[dict[str, Any]], dict[str, tuple[str, int]]]:
        """The chunks of ``batch`` (decoded columns) and the outcomes reported for them, read in
        one snapshot: another process exporting the same batch (a worker starting while another
        exports) may drop it between the two reads, and a file of chunks without their outcomes
        would replace the right one under the same name."""
        with self.snapshot():
            return self._batch_chunks(batch)

    def _batch_chunks(self, batch: str) -> tuple[list[dict[str, Any]], dict[str, tuple[str, int]]]:
        chunks = [
            orjson.loads(r[0])
            for r in self.db.execute(
                "SELECT d.data FROM chunks c JOIN chunk_data d ON d.prefix = c.prefix AND "
                "d.first = c.first WHERE c.batch = ? ORDER BY c.id",
                (batch,),
            )
        ]
        outcomes = self.db.execute(
            "SELECT event_id, outcome, quantity FROM outcomes WHERE chunk IN "
            "(SELECT id FROM chunks WHERE batch = ?)",
            (batch,),
        )
        return chunks, {e: (o, q) for e, o, q in outcomes}

    def drop_batch(self, batch: str) -> None:
        with self.transaction():
            self.db.execute(
                "DELETE FROM outcomes WHERE chunk IN (SELECT id FROM chunks WHERE batch = ?)",
                (batch,),
            )
            self.db.execute(
                "DELETE FROM chunk_data WHERE (prefix, first) IN "
                "(SELECT prefix, first FROM chunks WHERE batch = ?)",
                (batch,),
            )
            self.db.execute("DELETE FROM chunks WHERE batch = ?", (batch,))

    def waiting(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(n), 0) FROM chunks").fetchone()[0])

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
        """A write transaction (it takes the write lock at once)."""
        return _Transaction(self.db, "BEGIN IMMEDIATE")

    def snapshot(self) -> _Transaction:
        """A read transaction: its reads see one state of the file (WAL: writers go on)."""
        return _Transaction(self.db, "BEGIN DEFERRED")


class _Transaction:
    def __init__(self, db: sqlite3.Connection, begin: str) -> None:
        self.db = db
        self.begin = begin

    def __enter__(self) -> None:
        self.db.execute(self.begin)

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
