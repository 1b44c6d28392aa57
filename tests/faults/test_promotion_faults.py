"""Faults injected into a champion move, against real components: the lake on S3 (moto's
server behind a fault proxy) going down between the alias move and the ledger append, the
promotion lock's PostgreSQL connection dropped mid-move, and a second operator's promotion from
the command line. Each ends with the champion unchanged or moved exactly once, every move in the
ledger, and `pricing doctor` healthy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.data.lake import Lake, open_lake
from pipeline.release.doctor import diagnose, repair
from pipeline.release.ledger import LedgerError, LockLost
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.conftest import register_tiny_version
from tests.faults.hooks import after_alias_moves, ledger_moves
from tests.faults.proxy import FaultProxy
from tests.integration.stack import pg_url, pg_user


@pytest.fixture(scope="module")
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    fault = FaultProxy(s3_endpoint)
    yield fault
    fault.close()


@pytest.fixture
def registry(
    tmp_path: Path, proxy: FaultProxy, s3_lake_uri: str, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    """Three tiny versions, the lake (and so the ledger) on S3 through the fault proxy, two
    attempts per S3 request so that an outage is reported in seconds."""
    proxy.set("up")
    settings = Settings(
        data_dir=tmp_path,
        model_name=f"faults-{uuid.uuid4().hex[:6]}",
        lake_uri=s3_lake_uri,
        s3_endpoint_url=proxy.url,
        s3_max_attempts=2,
        s3_timeout_s=2.0,
    )
    reg = Registry(settings, open_lake(settings))
    for seed in range(3):
        register_tiny_version(reg, seed, f"2026-01-0{seed + 1}")
    return reg


def test_lake_down_between_alias_and_ledger_is_reconciled(
    registry: Registry, proxy: FaultProxy, fault_row: Any
) -> None:
    reg = registry
    reg.promote("1", None, "first champion", who="test")
    # the ledger append that follows the alias move finds the store gone
    lose_the_lake = after_alias_moves(lambda: proxy.set("down"))
    written = "v1 → v2, but its ledger line could not be written"
    with lose_the_lake, pytest.raises(LedgerError, match=written):
        reg.promote("2", "1", "second", who="test")
    proxy.set("up")
    assert reg.champion_version() == "2"  # the alias moved; the ledger is one move behind
    sick = diagnose(reg)
    assert not sick.healthy
    problems = {f.check: f.detail for f in sick.findings if not f.ok}
    assert set(problems) == {"champion recorded", "promoted_at tag"}  # the tag comes last
    assert "ledger ends at v1" in problems["champion recorded"]

    # the next promotion records the missing move first, then its own
    reg.promote("3", "2", "third", who="test")
    assert ledger_moves(reg) == [("promote", "1"), ("reconcile", "2"), ("promote", "3")]
    assert reg.rollback_target() == "2"
    assert diagnose(reg).healthy
    fault_row(
        "object store down between the alias move and the ledger append",
        "moto S3 behind a proxy that drops every connection",
        True,
        0,
        "LedgerError: champion moved v1 → v2, but its ledger line could not be written; "
        "the next promotion (or `pricing doctor --repair`) records it",
    )


def test_doctor_repairs_what_it_reports(registry: Registry, fault_row: Any) -> None:
    reg = registry
    reg.promote("1", None, "first champion", who="test")
    # a move outside pricing (the MLflow UI) and a line that is not an entry
    reg.client.set_registered_model_alias(reg.name, "champion", "2")
    reg.client.delete_model_version_tag(reg.name, "1", "promoted_at")
    lake = reg.ledger.store
    data, tag = lake.read_tagged(reg.ledger.path)
    lake.write_if(reg.ledger.path, data + b'{"half a line\n', tag)
    before = {f.check: f.ok for f in diagnose(reg).findings}
    assert before == {
        "ledger readable": False,
        "champion recorded": False,
        "ledger versions exist": True,
        "champion verifiable": True,
        "promoted_at tag": False,
    }
    fixed = repair(reg)
    assert fixed.healthy and reg.champion_version() == "2"  # the champion is never changed
    assert diagnose(reg).healthy
    assert ledger_moves(reg) == [("promote", "1"), ("reconcile", "2")]
    aside = [k for k in lake.list("reports/promotions/") if "set-aside" in k]
    assert len(aside) == 1 and lake.read_bytes(aside[0]) == b'{"half a line\n'  # nothing lost
    fault_row(
        "alias moved outside pricing; ledger line corrupted",
        "alias set in MLflow directly; garbage appended to the ledger",
        True,
        0,
        "`pricing doctor` exits 2 with a table of problems; `--repair` records the move and "
        "sets the bad line aside",
    )


def test_lock_connection_dropped_mid_move_moves_nothing(registry: Registry, fault_row: Any) -> None:
    url = pg_url(pg_user(), "test")
    reg = Registry(registry.settings.model_copy(update={"lock_uri": url}), registry.ledger.store)
    reg.promote("1", None, "first champion", who="test")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    key = zlib.crc32(f"pricing-promotion:{reg.name}".encode())
    reconcile = reg.reconcile_ledger

    def drop_the_lock_connection(*args: Any, **kwargs: Any) -> Any:
        with engine.connect() as conn:  # the database ends the session that holds the lock
            killed = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid::bigint = :k"
                ),
                {"k": key},
            ).fetchall()
        assert killed
        return reconcile(*args, **kwargs)

    reg.reconcile_ledger = drop_the_lock_connection  # type: ignore[method-assign]
    with pytest.raises(LockLost, match="connection dropped"):
        reg.promote("2", "1", "second", who="test")
    reg.reconcile_ledger = reconcile  # type: ignore[method-assign]
    engine.dispose()
    assert reg.champion_version() == "1" and ledger_moves(reg) == [("promote", "1")]
    reg.promote("2", "1", "second, retried", who="test")
    assert ledger_moves(reg) == [("promote", "1"), ("promote", "2")]
    fault_row(
        "promotion lock's database connection dropped mid-move",
        "pg_terminate_backend of the session holding the advisory lock",
        True,
        0,
        "LockLost (exit 4): the promotion lock's connection dropped; nothing was moved — try again",
    )


def test_two_operators_promote_at_once_one_is_told_why(
    registry: Registry, tmp_path: Path, fault_row: Any
) -> None:
    reg = registry
    reg.promote("1", None, "first champion", who="test")
    settings = reg.settings
    env = {
        **os.environ,
        "PRICING_DATA_DIR": str(settings.data_dir),
        "PRICING_MODEL_NAME": settings.model_name,
        "PRICING_LAKE_URI": settings.lake,
        "PRICING_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
        "PRICING_ADMIN_TOKEN": "a-real-admin-token",
        "PRICING_TOKEN": "a-real-admin-token",
    }
    pricing = str(Path(sys.executable).with_name("pricing"))
    lock = settings.runtime_dir / f"promotion-{settings.model_name}.lock"
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # both operators decide while a third move is running
        procs = [
            subprocess.Popen(
                [pricing, "promote", "--version", v, "--reason", f"operator {v}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for v in ("2", "3")
        ]
        deadline = time.monotonic() + 120
        while not all(_waits_on(p.pid, lock) for p in procs):
            assert time.monotonic() < deadline, "the promotions never reached the lock"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.2)
        fcntl.flock(held, fcntl.LOCK_UN)
    outcomes = [(p.wait(120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 1], outcomes
    [loser] = [err for code, (_, err) in outcomes if code]
    assert "but the decision assumed v1; nothing changed" in " ".join(loser.split())
    winner = reg.champion_version()
    assert winner in ("2", "3") and ledger_moves(reg) == [("promote", "1"), ("promote", winner)]
    fault_row(
        "two operators promote at once",
        "two `pricing promote` processes released together at the lock",
        True,
        0,
        "the loser exits 1: champion is vN but the decision assumed v1; nothing changed",
    )


def _waits_on(pid: int, lock: Path) -> bool:
    """Whether process ``pid`` has the lock file open (it decided, and waits for the lock)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(lock.resolve()) for fd in fds.iterdir())
    except OSError:
        return False


def test_s3_conditional_writes_keep_both_lines(s3_lake_uri: str, s3_endpoint: str) -> None:
    """Two writers that read the same ledger: the second write is refused, not merged away."""
    from pipeline.data.lake import StoreConflict

    lake = Lake.from_uri(s3_lake_uri, s3_endpoint)
    data, tag = lake.read_tagged("x.jsonl")
    assert (data, tag) == (b"", None)
    lake.write_if("x.jsonl", b"a\n", None)
    _, tag = lake.read_tagged("x.jsonl")
    lake.write_if("x.jsonl", b"a\nb\n", tag)
    with pytest.raises(StoreConflict):
        lake.write_if("x.jsonl", b"a\nc\n", tag)  # read before b was written
    with pytest.raises(StoreConflict):
        lake.write_if("x.jsonl", b"c\n", None)  # "create" an object that exists
    assert lake.read_bytes("x.jsonl") == b"a\nb\n"
