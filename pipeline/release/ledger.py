"""The promotion ledger and lock: one champion move at a time, each one recorded.

- `promotion_lock` serialises alias moves across processes (and hosts, on PostgreSQL: an
  advisory lock; a file lock otherwise). MLflow's own ``set_registered_model_alias`` is
  last-writer-wins, hence the lock.
- `Ledger` is the append-only log of champion moves in the lake (who, what, why, when,
  from → to), one JSON line a move.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from pipeline.contracts import LEDGER_PATH
from pipeline.settings import Settings


class ByteStore(Protocol):
    """What the ledger needs of a store (the `Lake` provides it)."""

    def read_bytes(self, relpath: str) -> bytes: ...

    def write_bytes(self, relpath: str, data: bytes) -> None: ...

    def exists(self, relpath: str) -> bool: ...


@dataclass(frozen=True)
class LedgerEntry:
    when: str
    who: str
    action: str  # promote | rollback
    from_version: str | None
    to_version: str
    reason: str
    decision: dict[str, Any] | None = None


class Ledger:
    """Append-only JSON-lines log of champion moves, kept in the lake."""

    def __init__(self, store: ByteStore, path: str = LEDGER_PATH) -> None:
        self.store = store
        self.path = path

    def entries(self) -> list[LedgerEntry]:
        if not self.store.exists(self.path):
            return []
        lines = self.store.read_bytes(self.path).decode().splitlines()
        return [LedgerEntry(**json.loads(line)) for line in lines if line.strip()]

    def append(self, entry: LedgerEntry) -> None:
        # Called under the promotion lock, so read-modify-write cannot interleave.
        old = self.store.read_bytes(self.path) if self.store.exists(self.path) else b""
        line = json.dumps(asdict(entry), sort_keys=True) + "\n"
        self.store.write_bytes(self.path, old + line.encode())


@contextlib.contextmanager
def promotion_lock(settings: Settings, timeout_s: float = 120.0) -> Iterator[None]:
    """Serialise alias moves across processes (and hosts, on PostgreSQL)."""
    uri = settings.lock_uri or settings.tracking_uri
    if uri.startswith("postgresql"):
        key = zlib.crc32(f"pricing-promotion:{settings.model_name}".encode())
        # autocommit: the session holds the lock without sitting idle in a transaction
        engine = sa.create_engine(uri, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                deadline = time.monotonic() + timeout_s
                lock = sa.text("SELECT pg_try_advisory_lock(:k)")
                while not conn.execute(lock, {"k": key}).scalar():
                    if time.monotonic() > deadline:
                        raise TimeoutError("another promotion holds the lock; try again later")
                    time.sleep(0.2)
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    settings.runtime_dir.mkdir(parents=True, exist_ok=True)
    path = settings.runtime_dir / f"promotion-{settings.model_name}.lock"
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another promotion holds {path}; try again later") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
