from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.ingest import ingest_transactions
from pipeline.data.lake import Lake
from pipeline.data.mapping import IngestError, load_mapping
from sim.feeds import TRANSACTION_COLUMNS
from sim.history import generate_history
from sim.world import default_world

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLE = EXAMPLES / "pos_sample.csv"
MAPPING = EXAMPLES / "pos_mapping.json"
runner = CliRunner()


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_uri(str(tmp_path / "lake"))


def all_rows(lake: Lake) -> pd.DataFrame:
    dates = lake.list_dates("raw", "transactions")
    return pd.concat(
        [lake.read_partition("raw", "transactions", d) for d in dates], ignore_index=True
    )


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_example_export_becomes_the_transactions_feed(lake: Lake) -> None:
    report = ingest_transactions(SAMPLE, MAPPING, lake)
    source = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)

    assert report.rows_read == len(source) == 316
    assert report.rows_written == 304
    assert report.returns == 6
    assert report.rejected == {
        "bad_ts": 1,
        "missing_sku": 1,
        "bad_quantity": 1,
        "bad_price": 1,
        "zero_quantity": 1,
        "negative_price": 1,
    }
    assert report.rows_read == report.rows_written + report.rows_rejected + report.returns
    assert report.skus == ["21730", "22423", "71053", "84406B", "85123A"]
    assert report.dates[0] == dt.date(2010, 12, 1) and report.dates[-1] == dt.date(2010, 12, 21)
    assert lake.list_dates("raw", "transactions") == report.dates

    rows = all_rows(lake)
    assert tuple(rows.columns) == TRANSACTION_COLUMNS
    synthetic = next(generate_history(default_world(), 1, 0, dt.date(2026, 1, 5))).transactions
    assert dict(rows.dtypes) == dict(synthetic.dtypes)
    assert len(rows) == 304 and rows["transaction_id"].is_unique
    assert (rows["quantity"] > 0).all() and (rows["unit_price"] >= 0).all()
    assert rows["unit_cost"].isna().all()  # the UCI layout has no cost column
    # December in London is GMT: the wall time is the UTC time
    first = rows.iloc[0]
    assert first["ts"] == pd.Timestamp("2010-12-01 10:16", tz="UTC")
    assert first["transaction_id"] == "536365:1" and first["customer_id"] == "14202"
    assert rows.groupby("sku")["unit_price"].nunique().min() >= 2  # prices vary
    for d in report.dates:
        part = lake.read_partition("raw", "transactions", d)
        assert (part["ts"].dt.date == d).all()

    rejects = pd.read_parquet(report.rejects_uri)
    assert list(rejects.columns[:2]) == ["source_row", "reason"]
    assert rejects["reason"].value_counts().to_dict() == {**report.rejected, "return": 6}
    bad_qty = rejects[rejects["reason"] == "bad_quantity"].iloc[0]
    assert bad_qty["Quantity"] == "six"
    assert source.iloc[bad_qty["source_row"] - 1]["Quantity"] == "six"
    assert (rejects.loc[rejects["reason"] == "return", "Quantity"].astype(int) < 0).all()
    summary = json.loads(lake.read_bytes("quarantine/ingest/pos_sample/summary.json"))
    assert summary == report.to_dict()
    assert summary["rows_written"] == 304 and summary["returns"] == 6


def test_reingesting_is_idempotent(lake: Lake) -> None:
    first = ingest_transactions(SAMPLE, MAPPING, lake)
    before = {k: lake.read_bytes(k) for k in lake.list()}
    again = ingest_transactions(SAMPLE, MAPPING, lake)
    assert again.rows_written == first.rows_written and again.rows_kept == 0
    assert {k: lake.read_bytes(k) for k in lake.list()} == before


def test_timezones_and_iso_timestamps(tmp_path: Path, lake: Lake) -> None:
    src = write_csv(
        tmp_path / "tz.csv",
        "when,item,n,price",
        "2024-01-15 00:30,a,1,2.0",  # GMT: same instant in UTC
        "2024-07-01 00:30,a,1,2.0",  # BST: previous UTC day
        "2024-07-01T10:00:00+02:00,b,2,3.0",  # an explicit offset wins over the mapping's zone
        "2024-10-27 01:30,b,1,3.0",  # the repeated autumn hour: first (BST) occurrence
    )
    mapping = {
        "columns": {"ts": "when", "sku": "item", "quantity": "n", "unit_price": "price"},
        "timezone": "Europe/London",
    }
    report = ingest_transactions(src, mapping, lake)
    assert report.rows_written == 4 and report.rejected == {}
    assert report.dates == [
        dt.date(2024, 1, 15),
        dt.date(2024, 6, 30),
        dt.date(2024, 7, 1),
        dt.date(2024, 10, 27),
    ]
    ts = sorted(all_rows(lake)["ts"])
    assert ts == [
        pd.Timestamp("2024-01-15 00:30", tz="UTC"),
        pd.Timestamp("2024-06-30 23:30", tz="UTC"),
        pd.Timestamp("2024-07-01 08:00", tz="UTC"),
        pd.Timestamp("2024-10-27 00:30", tz="UTC"),
    ]


def test_line_totals_costs_and_synthesized_ids(tmp_path: Path, lake: Lake) -> None:
    src = write_csv(
        tmp_path / "totals.csv",
        "Date;Article;Qty;Total;Cost;Client",
        "03/02/2025 09:15;X1;4;10,00;6,00;c1",
        "03/02/2025 09:15;X1;4;10,00;6,00;c1",  # the same line twice: two sales, two ids
        "03/02/2025 11:00;X2;3;7,50;;",  # unknown cost and customer
        "04/02/2025 18:45;X2;2;5,5;garbled;c2",
    )
    mapping = {
        "columns": {
            "ts": "Date",
            "sku": "Article",
            "quantity": "Qty",
            "line_total": "Total",
            "line_cost": "Cost",
            "customer_id": "Client",
        },
        "ts_format": "%d/%m/%Y %H:%M",
        "delimiter": ";",
        "decimal": ",",
    }
    report = ingest_transactions(src, mapping, lake)
    assert report.rows_written == 3 and report.rejected == {"bad_cost": 1}
    rows = all_rows(lake)
    assert rows["unit_price"].tolist() == [2.5, 2.5, 2.5]
    assert rows["unit_cost"].iloc[:2].tolist() == [1.5, 1.5] and np.isnan(rows["unit_cost"].iloc[2])
    assert rows["customer_id"].iloc[:2].tolist() == ["c1", "c1"]
    assert pd.isna(rows["customer_id"].iloc[2])
    ids = rows["transaction_id"]
    assert ids.is_unique and ids.str.match(r"^tx-[0-9a-f]{20}$").all()
    lake2 = Lake.from_uri(str(tmp_path / "other-lake"))
    ingest_transactions(src, mapping, lake2)
    assert all_rows(lake2)["transaction_id"].tolist() == ids.tolist()


def test_lines_given_away_or_priced_far_off_the_day_are_rejected_not_the_day(
    tmp_path: Path, lake: Lake
) -> None:
    # a real export's odd lines: a free item, a line of a few cents among 3.00 ones; the lake's
    # validation would stop the whole day on either, so ingest rejects just those lines
    src = write_csv(
        tmp_path / "odd.csv",
        "ts,sku,qty,total",
        "2025-02-03 09:00,A,1,3.00",
        "2025-02-03 10:00,A,2,6.00",
        "2025-02-03 11:00,A,1,0.00",  # given away
        "2025-02-03 12:00,A,1,0.01",  # 300x under the day's median
        "2025-02-04 09:00,A,1,0.10",  # alone on its day: its own median, kept
    )
    cols = {"ts": "ts", "sku": "sku", "quantity": "qty", "line_total": "total"}
    report = ingest_transactions(src, {"columns": cols}, lake)
    assert report.rejected == {"zero_price": 1, "price_outlier": 1}
    assert all_rows(lake)["unit_price"].tolist() == [3.0, 3.0, 0.1]
    rejects = pd.read_parquet(io.BytesIO(lake.read_bytes("quarantine/ingest/odd/rejects.parquet")))
    assert sorted(rejects["reason"]) == ["price_outlier", "zero_price"]


def test_parquet_source_with_typed_columns(tmp_path: Path, lake: Lake) -> None:
    src = tmp_path / "pos.parquet"
    pd.DataFrame(
        {
            "sold_at": pd.to_datetime(["2025-03-01 10:00", "2025-03-02 12:00", None]),
            "code": ["A", "B", "C"],
            "units": [1, 2, 3],
            "price": [9.99, 4.5, 1.0],
            "cust": [17850.0, np.nan, 1.0],
            "line": ["L1", "", "L3"],
        }
    ).to_parquet(src)
    mapping = {
        "columns": {
            "ts": "sold_at",
            "sku": "code",
            "quantity": "units",
            "unit_price": "price",
            "customer_id": "cust",
            "transaction_id": "line",
        }
    }
    report = ingest_transactions(src, mapping, lake)
    assert report.rows_written == 2 and report.rejected == {"bad_ts": 1}
    rows = all_rows(lake)
    assert rows["customer_id"].iloc[0] == "17850" and pd.isna(rows["customer_id"].iloc[1])
    assert rows["transaction_id"].iloc[0] == "L1"
    assert rows["transaction_id"].iloc[1].startswith("tx-")  # blank id: synthesized


def test_overlapping_exports_merge_and_replace_rewrites(tmp_path: Path, lake: Lake) -> None:
    header = "ts,sku,qty,price"
    a = write_csv(
        tmp_path / "a.csv",
        header,
        "2025-05-01T10:00:00Z,s,1,1.0",
        "2025-05-02T10:00:00Z,s,1,1.0",
        "2025-05-02T11:00:00Z,s,2,1.0",
    )
    b = write_csv(
        tmp_path / "b.csv",
        header,
        "2025-05-02T11:00:00Z,s,2,1.0",  # also in a.csv: the same sale, not a new one
        "2025-05-02T12:00:00Z,s,3,1.0",
        "2025-05-03T10:00:00Z,s,1,1.0",
    )
    mapping = {"columns": {"ts": "ts", "sku": "sku", "quantity": "qty", "unit_price": "price"}}
    ingest_transactions(a, mapping, lake)
    report = ingest_transactions(b, mapping, lake)
    assert report.rows_kept == 1
    day2 = lake.read_partition("raw", "transactions", dt.date(2025, 5, 2))
    assert day2["quantity"].tolist() == [1, 2, 3]
    assert lake.list_dates("raw", "transactions") == [dt.date(2025, 5, d) for d in (1, 2, 3)]
    assert lake.exists("quarantine/ingest/a/summary.json")
    assert lake.exists("quarantine/ingest/b/rejects.parquet")

    ingest_transactions(b, mapping, lake, replace=True)
    day2 = lake.read_partition("raw", "transactions", dt.date(2025, 5, 2))
    assert day2["quantity"].tolist() == [2, 3]


BASE: dict[str, Any] = {
    "columns": {"ts": "ts", "sku": "sku", "quantity": "qty", "unit_price": "price"}
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"columns": {**BASE["columns"], "price": "x"}}, "unknown field columns.price"),
        ({"columns": {"ts": "ts", "sku": "sku", "unit_price": "price"}}, "columns.quantity is"),
        (
            {"columns": {**BASE["columns"], "line_total": "price"}},
            "either columns.unit_price or columns.line_total",
        ),
        ({"columns": {"ts": "ts", "sku": "sku", "quantity": "qty"}}, "columns.unit_price"),
        ({"timezome": "UTC"}, "unknown key 'timezome'"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"ts_format": "dd/mm/yyyy"}, "ts_format must be a strptime pattern"),
        ({"delimiter": ";;"}, "'delimiter' must be a single character"),
        ({"columns": []}, "'columns' must be an object"),
    ],
)
def test_invalid_mapping_is_a_clear_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(IngestError, match=message):
        load_mapping({**BASE, **change})


def test_mapping_must_fit_the_file(tmp_path: Path, lake: Lake) -> None:
    src = write_csv(tmp_path / "x.csv", "ts,sku,quantity,price", "2025-01-01,a,1,1")
    with pytest.raises(IngestError) as err:
        ingest_transactions(src, BASE, lake)
    assert "columns.quantity = 'qty' is not a column of x.csv" in str(err.value)
    assert "its columns are: ts, sku, quantity, price" in str(err.value)
    semi = write_csv(tmp_path / "semi.csv", "ts;sku;qty;price", "2025-01-01;a;1;1")
    with pytest.raises(IngestError, match='set "delimiter"'):
        ingest_transactions(semi, BASE, lake)
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(IngestError, match=r"unknown file type '\.xlsx'"):
        ingest_transactions(tmp_path / "x.xlsx", BASE, lake)
    with pytest.raises(IngestError, match="does not exist"):
        ingest_transactions(tmp_path / "nope.csv", BASE, lake)
    bad_json = tmp_path / "m.json"
    bad_json.write_text('{"columns": {')
    with pytest.raises(IngestError, match=r"m\.json: not valid JSON \(line 1"):
        ingest_transactions(src, bad_json, lake)
    assert lake.list() == []


def test_cli_ingest_to_s3_prints_the_report(s3_lake_uri: str, s3_endpoint: str) -> None:
    args = ["ingest", "--source", str(SAMPLE), "--mapping", str(MAPPING), "--lake", s3_lake_uri]
    res = runner.invoke(app, [*args, "--s3-endpoint-url", s3_endpoint])
    assert res.exit_code == 0, res.output
    for text in ("rows read", "316", "rows written", "304", "rejected: bad_ts", "returns"):
        assert text in res.stdout
    lake = Lake.from_uri(s3_lake_uri, endpoint_url=s3_endpoint)
    assert len(lake.list_dates("raw", "transactions")) == 18
    assert lake.exists("quarantine/ingest/pos_sample/rejects.parquet")
    assert s3_lake_uri + "/quarantine/ingest/pos_sample/rejects.parquet" in res.output


def test_cli_ingest_bad_input_exits_1(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"columns": {"ts": "InvoiceDate"}}))
    args = ["ingest", "--source", str(SAMPLE), "--mapping", str(mapping), "--lake", lake]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "columns.sku is required" in res.output

    # a wrong ts_format rejects every row: the command says so and where to look
    data = json.loads(MAPPING.read_text())
    mapping.write_text(json.dumps({**data, "ts_format": "%d/%m/%Y %H:%M:%S"}))
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert "no transactions written" in res.output and "ts_format" in res.output
    assert (tmp_path / "lake/quarantine/ingest/pos_sample/rejects.parquet").is_file()
