from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.lake import ZONES, Lake, LakeError

D1 = dt.date(2026, 1, 5)
D2 = dt.date(2026, 1, 6)
D3 = dt.date(2026, 1, 7)


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{seed}-{i}" for i in range(n)],
            "ts": pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(np.arange(n), unit="min"),
            "sku": rng.choice(["a", "b"], size=n),
            "quantity": rng.integers(1, 4, size=n),
            "unit_price": rng.uniform(5, 10, size=n).round(2),
        }
    )


def test_partition_round_trip(lake: Lake) -> None:
    df = frame(50)
    uri = lake.write_partition("raw", "transactions", D1, df)
    [part] = lake.part_paths("raw", "transactions", D1)
    assert uri == lake.uri(part) and part.startswith("raw/transactions/date=2026-01-05/part-")
    assert lake.has_partition("raw", "transactions", D1)
    assert not lake.has_partition("raw", "transactions", D2)
    pd.testing.assert_frame_equal(lake.read_partition("raw", "transactions", D1), df)


def test_rewrite_replaces_never_duplicates(lake: Lake) -> None:
    prefix = lake.partition_prefix("raw", "transactions", D1) + "/"
    assert prefix == "raw/transactions/date=2026-01-05/"
    lake.write_partition("raw", "transactions", D1, frame(40, seed=1))
    # a part another writer added is replaced with the rest: not read alongside the new data
    lake.add_part("raw", "transactions", D1, frame(5, seed=9), "part-w1.parquet")
    lake.write_bytes(prefix + "report.json", b"{}")
    new = frame(30, seed=2)
    lake.write_partition("raw", "transactions", D1, new)
    lake.write_partition("raw", "transactions", D1, new)  # a retry writes the same object
    pd.testing.assert_frame_equal(lake.read_partition("raw", "transactions", D1), new)
    [part] = lake.part_paths("raw", "transactions", D1)
    assert lake.list(prefix) == sorted([part, prefix + "_manifest.json", prefix + "report.json"])


def test_list_dates(lake: Lake) -> None:
    assert lake.list_dates("raw", "transactions") == []
    for d in (D3, D1, D2):
        lake.write_partition("raw", "transactions", d, frame(3))
    lake.write_partition("raw", "decisions", dt.date(2025, 12, 31), frame(3))
    lake.write_partition("features", "transactions", dt.date(2025, 12, 30), frame(3))
    # neither a foreign folder nor a date folder without a manifest is a partition
    lake.write_bytes("raw/transactions/date=latest/_manifest.json", b'{"parts": []}')
    lake.write_bytes("raw/transactions/date=2026-02-01/report.json", b"{}")
    lake.write_bytes("raw/transactions/date=2026-02-02/part-0000.parquet", b"x")
    assert lake.list_dates("raw", "transactions") == [D1, D2, D3]
    assert lake.list_dates("raw", "decisions") == [dt.date(2025, 12, 31)]


def test_move_to_quarantine_moves_every_file_and_deletes_only_the_source(lake: Lake) -> None:
    df = frame(20)
    lake.write_partition("raw", "transactions", D1, df)
    lake.write_bytes("raw/transactions/date=2026-01-05/validation.json", b'{"ok": false}')
    lake.write_partition("raw", "transactions", D2, frame(7, seed=3))
    lake.write_partition("raw", "decisions", D1, frame(9, seed=4))
    before = set(lake.list())

    uri = lake.move_partition("transactions", D1)  # raw -> quarantine by default

    assert uri == lake.uri("quarantine/transactions/date=2026-01-05")
    src = {k for k in before if k.startswith("raw/transactions/date=2026-01-05/")}
    moved = {"quarantine" + k.removeprefix("raw") for k in src}
    assert len(src) == 3  # the part, its manifest and the report
    assert set(lake.list()) == (before - src) | moved
    pd.testing.assert_frame_equal(lake.read_partition("quarantine", "transactions", D1), df)
    assert lake.read_bytes("quarantine/transactions/date=2026-01-05/validation.json") == (
        b'{"ok": false}'
    )
    assert not lake.has_partition("raw", "transactions", D1)
    assert lake.list_dates("raw", "transactions") == [D2]


def test_move_replaces_the_destination(lake: Lake) -> None:
    lake.write_partition("quarantine", "transactions", D1, frame(3, seed=5))
    lake.write_bytes("quarantine/transactions/date=2026-01-05/old-report.json", b"{}")
    new = frame(11, seed=6)
    lake.write_partition("raw", "transactions", D1, new)
    lake.move_partition("transactions", D1, "raw", "quarantine")
    [part] = lake.part_paths("quarantine", "transactions", D1)
    folder = "quarantine/transactions/date=2026-01-05/"
    assert lake.list("quarantine/") == [folder + "_manifest.json", part]
    pd.testing.assert_frame_equal(lake.read_partition("quarantine", "transactions", D1), new)


def test_move_of_a_missing_partition_is_an_error(lake: Lake) -> None:
    with pytest.raises(LakeError, match=r"no partition raw/transactions/date=2026-01-05 in"):
        lake.move_partition("transactions", D1, "raw", "quarantine")


def test_missing_partition_names_it_and_how_to_create_it(lake: Lake) -> None:
    with pytest.raises(LakeError) as err:
        lake.read_partition("raw", "transactions", D1)
    assert "no partition raw/transactions/date=2026-01-05 in" in str(err.value)
    assert "pricing ingest" in str(err.value)
    with pytest.raises(LakeError, match="pricing history"):
        lake.read_partition("raw", "decisions", D1)


def test_corrupt_parquet_is_reported_unreadable(lake: Lake) -> None:
    uri = lake.write_partition("raw", "transactions", D1, frame(200))
    [key] = lake.part_paths("raw", "transactions", D1)
    data = lake.read_bytes(key)
    lake.write_bytes(key, data[: len(data) // 2])
    with pytest.raises(LakeError, match="unreadable") as err:
        lake.read_partition("raw", "transactions", D1)
    assert uri in str(err.value)


def test_bytes_round_trip(lake: Lake) -> None:
    assert not lake.exists("reports/nightly/2026-01-05.json")
    lake.write_bytes("reports/nightly/2026-01-05.json", b'{"a": 1}')
    assert lake.exists("reports/nightly/2026-01-05.json")
    assert lake.read_bytes("reports/nightly/2026-01-05.json") == b'{"a": 1}'
    lake.write_bytes("reports/nightly/2026-01-05.json", b"")
    assert lake.read_bytes("reports/nightly/2026-01-05.json") == b""
    lake.write_bytes("reports/other.txt", b"x")
    assert lake.list("reports/nightly") == ["reports/nightly/2026-01-05.json"]
    assert lake.list("reports/") == ["reports/nightly/2026-01-05.json", "reports/other.txt"]
    with pytest.raises(LakeError, match=r"no object .*reports/missing\.json"):
        lake.read_bytes("reports/missing.json")


def test_bad_arguments_are_clear_errors(lake: Lake) -> None:
    with pytest.raises(LakeError, match="zone must be one of"):
        lake.write_partition("bronze", "transactions", D1, frame(2))
    with pytest.raises(LakeError, match="feed must be a plain name"):
        lake.read_partition("raw", "../x", D1)
    with pytest.raises(LakeError, match=r"'\.\.'"):
        lake.write_bytes("../outside.txt", b"x")
    with pytest.raises(LakeError, match="relative"):
        lake.read_bytes("/etc/passwd")
    assert set(ZONES) == {"raw", "quarantine", "features", "reports"}


def test_uris(tmp_path: Path) -> None:
    local = Lake.from_uri(str(tmp_path / "lake"))
    assert local.uri("raw/x") == str(tmp_path / "lake" / "raw" / "x")
    same = Lake.from_uri((tmp_path / "lake").as_uri())
    local.write_bytes("raw/x", b"1")
    assert same.read_bytes("raw/x") == b"1"
    assert Lake.from_uri("s3://bucket/a/b/").uri("raw/x") == "s3://bucket/a/b/raw/x"
    assert Lake.from_uri("s3://bucket").uri("raw/x") == "s3://bucket/raw/x"
    with pytest.raises(LakeError, match="unsupported scheme 'gs'"):
        Lake.from_uri("gs://bucket/lake")
    with pytest.raises(LakeError, match="names no bucket"):
        Lake.from_uri("s3:///lake")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LakeError, match="is a file"):
        Lake.from_uri(str(tmp_path / "file"))


def test_local_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake.from_uri(str(tmp_path))
    old = frame(10, seed=1)
    lake.write_partition("raw", "transactions", D1, old)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        lake.write_partition("raw", "transactions", D1, frame(99, seed=2))
    monkeypatch.undo()
    folder = tmp_path / "raw/transactions/date=2026-01-05"
    [part] = lake.part_paths("raw", "transactions", D1)
    assert sorted(p.name for p in folder.iterdir()) == ["_manifest.json", part.rsplit("/")[-1]]
    pd.testing.assert_frame_equal(lake.read_partition("raw", "transactions", D1), old)


def test_s3_missing_bucket_says_how_to_create_it(s3_lake_uri: str, s3_endpoint: str) -> None:
    lake = Lake.from_uri("s3://no-such-bucket-here/lake", endpoint_url=s3_endpoint)
    with pytest.raises(LakeError, match=r"bucket 'no-such-bucket-here' does not exist.*mb"):
        lake.write_partition("raw", "transactions", D1, frame(2))


def test_s3_objects_land_under_the_prefix(s3_lake_uri: str, s3_endpoint: str) -> None:
    import boto3

    lake = Lake.from_uri(s3_lake_uri, endpoint_url=s3_endpoint)
    lake.write_partition("raw", "transactions", D1, frame(2))
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    [part] = lake.part_paths("raw", "transactions", D1)
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "lake/raw/transactions/date=2026-01-05/_manifest.json",
        "lake/" + part,
    ]


def test_a_fixed_export_written_back_is_not_an_interrupted_move(lake: Lake) -> None:
    lake.write_partition("raw", "transactions", D1, frame(3, seed=5))
    lake.move_partition("transactions", D1)
    assert not lake.interrupted_move("transactions", D1, "raw", "quarantine")  # raw is empty
    lake.write_partition("raw", "transactions", D1, frame(4, seed=6))  # the corrected export
    assert not lake.interrupted_move("transactions", D1, "raw", "quarantine")
    lake.write_partition("raw", "transactions", D1, frame(3, seed=5))  # the same bytes again
    assert lake.interrupted_move("transactions", D1, "raw", "quarantine")


def test_a_part_is_read_only_once_its_manifest_lists_it(lake: Lake) -> None:
    """A crash between a part's write and its commit leaves an unlisted part: no reader sees it,
    and the partition reads as it was before."""
    old = frame(6, seed=1)
    lake.write_partition("raw", "transactions", D1, old)
    lake.write_bytes("raw/transactions/date=2026-01-05/part-crashed.parquet", frame(3).to_parquet())
    lake.write_bytes("raw/transactions/date=2026-01-06/part-crashed.parquet", frame(3).to_parquet())
    pd.testing.assert_frame_equal(lake.read_partition("raw", "transactions", D1), old)
    assert not lake.has_partition("raw", "transactions", D2)
    assert lake.list_dates("raw", "transactions") == [D1]


def test_a_batch_write_replaces_the_services_parts_in_one_commit(lake: Lake) -> None:
    """The manifest is the commit: before it is written a reader sees the service's parts, after
    it the batch's part, never both."""
    for i in range(3):
        lake.add_part("raw", "transactions", D1, frame(4, seed=i), f"part-svc{i}.parquet")
    served = lake.read_partition("raw", "transactions", D1)
    assert len(served) == 12
    seen = []
    real_put = lake.store.put

    def put(key: str, data: bytes) -> None:  # a reader between the part's write and the commit
        real_put(key, data)
        seen.append(len(lake.read_partition("raw", "transactions", D1)))

    lake.store.put = put  # type: ignore[method-assign]
    lake.write_partition("raw", "transactions", D1, frame(5, seed=9))
    assert seen[0] == 12
    assert len(lake.read_partition("raw", "transactions", D1)) == 5
    assert len(lake.part_paths("raw", "transactions", D1)) == 1


def test_writers_committing_at_once_all_land(lake: Lake) -> None:
    """Parts added by several writers at the same time are all listed (the manifest is rewritten
    by compare-and-set, re-read on conflict)."""
    from concurrent.futures import ThreadPoolExecutor

    def add(i: int) -> None:
        lake.add_part("raw", "transactions", D1, frame(2, seed=i), f"part-w{i}.parquet")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(add, range(12)))
    assert len(lake.part_paths("raw", "transactions", D1)) == 12
    assert len(lake.read_partition("raw", "transactions", D1)) == 24
    add(3)  # a retried batch replaces its own part
    assert len(lake.read_partition("raw", "transactions", D1)) == 24


def test_a_damaged_manifest_or_a_missing_part_is_a_clear_error(lake: Lake) -> None:
    lake.write_partition("raw", "transactions", D1, frame(3))
    [part] = lake.part_paths("raw", "transactions", D1)
    lake.store.delete(part)
    with pytest.raises(LakeError, match="listed in the partition's manifest but missing"):
        lake.read_partition("raw", "transactions", D1)
    lake.write_bytes("raw/transactions/date=2026-01-05/_manifest.json", b"{not json")
    with pytest.raises(LakeError, match=r"manifest .*_manifest\.json is unreadable.*re-create"):
        lake.read_partition("raw", "transactions", D1)
