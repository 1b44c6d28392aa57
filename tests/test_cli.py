from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from sim.world import default_world

runner = CliRunner()


def test_world_default_prints_valid_json() -> None:
    res = runner.invoke(app, ["world", "--default"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["skus"][0]["id"] == default_world().skus[0].id


def test_invalid_world_file_names_field(tmp_path: Path, tiny_world_file: Path) -> None:
    data = json.loads(tiny_world_file.read_text())
    data["skus"][0]["arrival_rate"] = -3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    res = runner.invoke(app, ["evaluate", "--world", str(bad), "--policies", "rule"])
    assert res.exit_code == 1
    assert "skus[0].arrival_rate" in res.output and "greater than 0" in res.output


def test_history_writes_daily_partitions(tmp_path: Path, tiny_world_file: Path) -> None:
    lake = tmp_path / "lake"
    args = [
        "history",
        "--world",
        str(tiny_world_file),
        "--days",
        "2",
        "--skus",
        "3",
        "--lake",
        str(lake),
        "--seed",
        "4",
        "--start",
        "2026-02-02",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for feed in ("decisions", "transactions"):
        parts = sorted((lake / "raw" / feed).glob("date=*/part-*.parquet"))
        assert [p.parent.name for p in parts] == ["date=2026-02-02", "date=2026-02-03"]
    [part] = (lake / "raw/decisions/date=2026-02-02").glob("part-*.parquet")
    dec = pd.read_parquet(part)
    assert dec["sku"].nunique() == 3
    # re-running the same command replaces, never duplicates
    first = len(dec)
    assert runner.invoke(app, args).exit_code == 0
    [again] = (lake / "raw/decisions/date=2026-02-02").glob("part-*.parquet")
    assert len(pd.read_parquet(again)) == first
    assert len(list((lake / "raw/decisions/date=2026-02-02").iterdir())) == 2  # + its manifest


def test_history_writes_to_an_s3_lake(
    tiny_world_file: Path, s3_lake_uri: str, s3_endpoint: str
) -> None:
    import datetime as dt

    import boto3

    from pipeline.data.lake import Lake

    res = runner.invoke(
        app,
        [
            "history",
            "--world",
            str(tiny_world_file),
            "--days",
            "2",
            "--lake",
            s3_lake_uri,
            "--s3-endpoint-url",
            s3_endpoint,
            "--start",
            "2026-02-02",
        ],
    )
    assert res.exit_code == 0, res.output
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert [k for k in keys if "/part-" not in k] == [
        "lake/catalogue/date=2026-02-02/catalogue.json",
        *(
            f"lake/raw/{feed}/date={d}/_manifest.json"
            for feed in ("decisions", "transactions")
            for d in ("2026-02-02", "2026-02-03")
        ),
    ]
    assert len([k for k in keys if "/part-" in k]) == 4
    lake = Lake.from_uri(s3_lake_uri, endpoint_url=s3_endpoint)
    assert lake.read_partition("raw", "decisions", dt.date(2026, 2, 3))["sku"].nunique() == 2


def test_history_to_a_missing_bucket_fails_cleanly(
    tiny_world_file: Path, s3_lake_uri: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRICING_S3_ENDPOINT_URL", s3_endpoint)
    args = ["history", "--world", str(tiny_world_file), "--days", "1", "--lake", "s3://nope/x"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert "bucket 'nope' does not exist" in res.output


def test_evaluate_writes_the_report_contract(tmp_path: Path, tiny_world_file: Path) -> None:
    out = tmp_path / "report.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--world",
            str(tiny_world_file),
            "--policies",
            "dp,rule,static,myopic,bandit,random",
            "--episodes",
            "40",
            "--seed",
            "3",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["episodes"] == 40 and report["seed"] == 3
    assert set(report["policies"]) == {"dp", "rule", "static", "myopic", "bandit", "random"}
    for r in report["policies"].values():
        lo, hi = r["ci95"]
        assert lo <= r["mean_profit"] <= hi
        assert isinstance(r["pct_of_optimal"], float)
    assert 90 < report["policies"]["dp"]["pct_of_optimal"] < 110
    assert "% of optimal" in res.stdout


def test_unknown_policy_is_a_clear_error(tiny_world_file: Path) -> None:
    res = runner.invoke(
        app, ["evaluate", "--world", str(tiny_world_file), "--policies", "rule,cheapest"]
    )
    assert res.exit_code == 1
    assert "unknown policy 'cheapest'" in res.output


def test_planner_file_and_behavioural_clone_from_the_command_line(
    tmp_path: Path, tiny_world_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pricing train --algo planner` writes the exact plan; `pricing evaluate` takes it as a
    file, and `bc` clones the lake's logged decisions (a clear error when there are none)."""
    monkeypatch.setenv("PRICING_DATA_DIR", str(tmp_path / "data"))
    plan_file = tmp_path / "plan.npz"
    res = runner.invoke(
        app,
        ["train", "--world", str(tiny_world_file), "--algo", "planner", "--out", str(plan_file)],
    )
    assert res.exit_code == 0, res.output
    assert plan_file.is_file() and Path(f"{plan_file}.sha256").is_file()
    args = ["evaluate", "--world", str(tiny_world_file), "--episodes", "30", "--seed", "1"]
    res = runner.invoke(app, [*args, "--policies", "dp,bc"])
    assert res.exit_code == 1 and "holds none" in res.output
    res = runner.invoke(
        app,
        [
            "history",
            "--world",
            str(tiny_world_file),
            "--days",
            "8",
            "--lake",
            str(tmp_path / "data" / "lake"),
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "report.json"
    res = runner.invoke(app, [*args, "--policies", f"dp,{plan_file},bc,random", "--json", str(out)])
    assert res.exit_code == 0, res.output
    policies = json.loads(out.read_text())["policies"]
    assert policies["plan"]["mean_profit"] == policies["dp"]["mean_profit"]
    assert policies["bc"]["mean_profit"] > policies["random"]["mean_profit"]
    assert "bc: cloned" in res.output
