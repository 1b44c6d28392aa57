"""How long one promotion-ledger append takes as the ledger grows: 100, 1,000 and 10,000 entries,
on a local lake and on S3 (moto's server over real HTTP; a real S3 adds its network latency). An
append is a compare-and-set rewrite of the whole object (`pipeline.release.ledger`): its cost grows
with the ledger's size, and this says by how much. Last line:
``append_ms_10k_local=… append_ms_10k_s3=… ratio_10k_vs_100_local=…``.

    python bench/ledger.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import tempfile
import time
import uuid

import boto3

from pipeline.data.lake import Lake
from pipeline.release.ledger import Ledger, LedgerEntry, encode

SIZES = (100, 1_000, 10_000)


def _entry(i: int) -> LedgerEntry:
    return LedgerEntry(
        when="2026-01-01T00:00:00+00:00",
        who="nightly",
        action="promote",
        from_version=str(i),
        to_version=str(i + 1),
        reason="the candidate beat the champion by 3.1 % (CI [1.2, 5.0])",
        decision={"promote": True, "checks": {"margin": {"ok": True, "value": 0.031}}},
    )


def _time_appends(lake: Lake, size: int, repeats: int) -> float:
    ledger = Ledger(lake, f"bench/{uuid.uuid4().hex}.jsonl")
    lake.write_bytes(ledger.path, b"".join(encode(_entry(i)) for i in range(size)))
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        ledger.append(_entry(size + i))
        times.append(time.perf_counter() - started)
    assert len(ledger.entries()) == size + repeats
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            lakes = {"local": Lake.from_uri(tmp), "s3": Lake.from_uri("s3://bench/lake", endpoint)}
            ms = {
                (where, size): _time_appends(lake, size, args.repeats)
                for where, lake in lakes.items()
                for size in SIZES
            }
    finally:
        server.stop()
    kb = len(b"".join(encode(_entry(i)) for i in range(10_000))) / 1024
    print(
        f"median append time, {args.repeats} appends each (a 10,000-entry ledger is {kb:,.0f} KB)"
    )
    print(f"{'entries':>8} {'local ms':>9} {'s3 ms':>8}")
    for size in SIZES:
        print(f"{size:>8,} {ms['local', size]:>9.1f} {ms['s3', size]:>8.1f}")
    print(
        f"append_ms_10k_local={ms['local', 10_000]:.1f} append_ms_10k_s3={ms['s3', 10_000]:.1f} "
        f"ratio_10k_vs_100_local={ms['local', 10_000] / ms['local', 100]:.1f}"
    )


if __name__ == "__main__":
    main()
