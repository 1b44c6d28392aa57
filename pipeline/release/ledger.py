"""The promotion ledger and lock: one champion move at a time, each one recorded.

- `promotion_lock` serialises alias moves across processes (and hosts, on PostgreSQL: an
  advisory lock; a file lock otherwise). MLflow's own ``set_registered_model_alias`` is
  last-writer-wins, hence the lock. The lock is checked again just before the alias moves
  (`Lock.check`): a session whose database connection dropped has lost its advisory lock, and
  moves nothing.
- `Ledger` is the append-only log of champion moves in the lake (who, what, why, when,
  from → to), one JSON line a move, in one object. Appends are compare-and-set writes of that
  object (`pipeline.data.stores.Store.put_if`): two writers can never erase each other's line,
  even if the lock was lost, and a reader never sees half a line.

The order of a move, and what `pricing doctor` (`pipeline.release.doctor`) reconciles: the alias
moves first, then the ledger line is appended. An append that fails (the lake out of reach)
leaves the alias one move ahead of the ledger; the next promotion and ``pricing doctor --repair``
record that move with action ``reconcile``. The ledger never names a champion that did not serve.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import sqlalchemy as sa

from pipeline.contracts import LEDGER_PATH
from pipeline.data.stores import StoreConflict
from pipeline.errors import PricingError, Unavailable
from pipeline.settings import Settings

# how a move changes the champion: "rollback" pops the stack of champions, the others push
PUSHES = ("promote", "reconcile")


class ByteStore(Protocol):
    """What the ledger needs of a store (the `Lake` provides it)."""

    def read_tagged(self, relpath: str) -> tuple[bytes, str | None]: ...

    def write_if(self, relpath: str, data: bytes, tag: str | None) -> None: ...

    def uri(self, relpath: str) -> str: ...


class LedgerError(PricingError, RuntimeError):
    """The ledger holds a line that is not a ledger entry, or could not be appended to."""


class LockLost(Unavailable, RuntimeError):
    """The promotion lock was lost (its database connection dropped); nothing was moved."""


@dataclass(frozen=True)
class LedgerEntry:
    when: str
    who: str
    action: str  # promote | rollback | reconcile
    from_version: str | None
    to_version: str
    reason: str
    decision: dict[str, Any] | None = None


_FIELDS = {f.name for f in fields(LedgerEntry)}


@dataclass(frozen=True)
class LedgerContents:
    """What the ledger object holds: its entries, the lines that are not entries (line number,
    text), and the tag of the content read (for a compare-and-set rewrite)."""

    entries: list[LedgerEntry]
    bad_lines: list[tuple[int, str]]
    tag: str | None


def _parse(line: str) -> LedgerEntry:
    data = json.loads(line)
    if not isinstance(data, dict) or not {"when", "who", "action", "to_version"} <= set(data):
        raise ValueError("not a ledger entry")
    return LedgerEntry(**{k: v for k, v in data.items() if k in _FIELDS})


def encode(entry: LedgerEntry) -> bytes:
    return (json.dumps(asdict(entry), sort_keys=True) + "\n").encode()


class Ledger:
    """Append-only JSON-lines log of champion moves, kept in the lake."""

    def __init__(self, store: ByteStore, path: str = LEDGER_PATH) -> None:
        self.store = store
        self.path = path

    def read(self) -> LedgerContents:
        """Everything in the ledger, unreadable lines included (for `pricing doctor`)."""
        data, tag = self.store.read_tagged(self.path)
        entries, bad = [], []
        for number, line in enumerate(data.decode(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(_parse(line))
            except (ValueError, TypeError):
                bad.append((number, line))
        return LedgerContents(entries, bad, tag)

    def entries(self) -> list[LedgerEntry]:
        contents = self.read()
        if contents.bad_lines:
            number, line = contents.bad_lines[0]
            raise LedgerError(
                f"{self.store.uri(self.path)} line {number} is not a ledger entry "
                f"({line[:60]!r}); `pricing doctor` shows it, `pricing doctor --repair` sets it "
                "aside"
            )
        return contents.entries

    def append(self, entry: LedgerEntry, attempts: int = 10) -> None:
        """Append one line: a compare-and-set rewrite of the object, retried when another writer
        got in first, so no line is ever lost."""
        line = encode(entry)
        for attempt in range(attempts):
            data, tag = self.store.read_tagged(self.path)
            if data and not data.endswith(b"\n"):
                data += b"\n"
            try:
                self.store.write_if(self.path, data + line, tag)
                return
            except StoreConflict:
                time.sleep(0.05 * (attempt + 1))
        raise LedgerError(
            f"{self.store.uri(self.path)} kept changing while a line was appended "
            f"({attempts} attempts); try again"
        )

    def rewrite(self, contents: LedgerContents, entries: list[LedgerEntry]) -> None:
        """Replace the ledger with ``entries`` if it still holds ``contents`` (`pricing doctor`)."""
        data = b"".join(encode(e) for e in entries)
        self.store.write_if(self.path, data, contents.tag)


def champion_stack(entries: list[LedgerEntry]) -> list[str]:
    """The champions the ledger says served, oldest first, the current one last: a promotion
    (or a reconciled move) pushes, a rollback pops."""
    stack: list[str] = []
    for entry in entries:
        if entry.action == "rollback" and stack:
            stack.pop()
        else:
            stack.append(entry.to_version)
    return stack


class Lock:
    """A held promotion lock; `check` raises `LockLost` if it is no longer held."""

    def __init__(self, conn: sa.Connection | None = None, key: int = 0) -> None:
        self.conn = conn
        self.key = key

    def check(self) -> None:
        if self.conn is None:  # a file lock cannot be lost while its file is open
            return
        held = sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid() AND objid::bigint = :k"
        )
        try:
            ok = self.conn.execute(held, {"k": self.key}).scalar()
        except sa.exc.DBAPIError as err:
            raise LockLost(
                f"the promotion lock's database connection dropped ({type(err.orig).__name__}); "
                "nothing was moved — try again"
            ) from None
        if not ok:
            raise LockLost("the promotion lock is no longer held; nothing was moved — try again")


@contextlib.contextmanager
def promotion_lock(settings: Settings, timeout_s: float = 120.0) -> Iterator[Lock]:
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
                    yield Lock(conn, key)
                finally:
                    # a dropped connection has released the lock already
                    with contextlib.suppress(sa.exc.SQLAlchemyError):
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
            yield Lock()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
