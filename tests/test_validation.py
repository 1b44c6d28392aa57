from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.data.features import build_features
from pipeline.data.lake import Lake
from pipeline.data.validation import (
    ValidationResult,
    quarantine_partition,
    read_and_validate,
    validate_partition,
)
from sim.history import DayLogs, generate_history
from sim.world import World, default_world
from tests.conftest import tiny_world_dict

DAY = dt.date(2026, 1, 5)
NOW = dt.datetime(2026, 1, 6, 3, 0, tzinfo=dt.UTC)  # the night after the partition's day


@pytest.fixture(scope="module")
def logs() -> DayLogs:
    return next(generate_history(World.model_validate(tiny_world_dict()), 1, 3, DAY))


def _frame(logs: DayLogs, feed: str) -> pd.DataFrame:
    if feed == "features":
        return build_features(logs.decisions, logs.transactions)
    return getattr(logs, feed).copy()


def _failed(result: ValidationResult) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in result.failures}


@pytest.mark.parametrize("feed", ["decisions", "transactions", "features", "features (POS only)"])
def test_a_clean_partition_passes(logs: DayLogs, feed: str) -> None:
    if feed == "features (POS only)":
        feed, df = "features", build_features(None, logs.transactions)
    else:
        df = _frame(logs, feed)
    result = validate_partition(feed, df, DAY, NOW)
    assert result.success, result.message()
    assert result.failures == []
    assert "passed" in result.message()
    assert result.statistics["rows"] == len(df)
    assert result.statistics["unsuccessful_expectations"] == 0
    assert "index.html" in result.docs_html


def _set(column: str, value: object, rows: slice = slice(3, 5)) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        if value is None:  # a null in a typed column: go through object, as a bad export would
            df[column] = df[column].astype(object)
        df.loc[df.index[rows], column] = value

    return mutate


def _scale(column: str, factor: float) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[df.index[:2], column] = df[column].iloc[:2] * factor

    return mutate


def _duplicate(column: str) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[df.index[1], column] = df[column].iloc[0]

    return mutate


def _shift_ts(delta: dt.timedelta) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[df.index[-1], "ts"] = df["ts"].iloc[-1] + delta

    return mutate


def _quantity_on_a_view(df: pd.DataFrame) -> None:
    df.loc[df.index[df["outcome"] == "view"][0], "quantity"] = 2


def _drop(column: str) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        del df[column]

    return mutate


CORRUPTIONS: dict[str, tuple[str, Callable[[pd.DataFrame], None], str, str]] = {
    # id: (feed, corruption, expectation that must fail, column the message must name)
    "dropped column": (
        "decisions",
        _drop("unit_cost"),
        "expect_table_columns_to_match_set",
        "unit_cost",
    ),
    "extra column": (
        "decisions",
        lambda df: df.insert(3, "debug_flag", 1),
        "expect_table_columns_to_match_set",
        "debug_flag",
    ),
    "null sku": ("decisions", _set("sku", None), "expect_column_values_to_not_be_null", "sku"),
    "negative price": (
        "decisions",
        _set("price_shown", -4.0),
        "expect_column_values_to_be_between",
        "price_shown",
    ),
    "absurd price": (
        "decisions",
        _scale("price_shown", 25.0),
        "expect_column_values_to_be_between",
        "price_to_base",
    ),
    "duplicated event_id": (
        "decisions",
        _duplicate("event_id"),
        "expect_column_values_to_be_unique",
        "event_id",
    ),
    "timestamp from another day": (
        "decisions",
        _shift_ts(dt.timedelta(days=-3)),
        "expect_column_values_to_be_between",
        "ts",
    ),
    "propensity 0": (
        "decisions",
        _set("propensity", 0.0),
        "expect_column_values_to_be_between",
        "propensity",
    ),
    "propensity 1.5": (
        "decisions",
        _set("propensity", 1.5),
        "expect_column_values_to_be_between",
        "propensity",
    ),
    "bad outcome": (
        "decisions",
        _set("outcome", "refund"),
        "expect_column_values_to_be_in_set",
        "outcome",
    ),
    "price stored as text": (
        "decisions",
        lambda df: df.__setitem__("price_shown", df["price_shown"].astype(str)),
        "expect_column_values_to_be_in_type_list",
        "price_shown",
    ),
    "naive timestamps": (
        "transactions",
        lambda df: df.__setitem__("ts", df["ts"].dt.tz_localize(None)),
        "expect_column_type_to_be",
        "ts",
    ),
    "duplicated transaction_id": (
        "transactions",
        _duplicate("transaction_id"),
        "expect_column_values_to_be_unique",
        "transaction_id",
    ),
    "conversion above 1": (
        "features",
        _set("conversion", 1.2, slice(0, 1)),
        "expect_column_values_to_be_between",
        "conversion",
    ),
}


def _named_columns(result: ValidationResult) -> set[str]:
    evaluated = [f for f in result.failures if f["evaluated"]]
    named = {c for f in evaluated for c in str(f["column"]).split(", ")}
    named |= {c for f in evaluated for c in f.get("missing_columns", [])}
    return named | {c for f in evaluated for c in f.get("unexpected_columns", [])}


@pytest.mark.parametrize("case", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_each_corruption_fails_naming_expectation_and_column(logs: DayLogs, case: str) -> None:
    feed, corrupt, expectation, column = CORRUPTIONS[case]
    df = _frame(logs, feed)
    corrupt(df)
    result = validate_partition(feed, df, DAY, NOW, data_docs=False)
    assert not result.success
    message = result.message()
    assert expectation in message and column in message, message
    assert any(f["expectation"] == expectation and f["evaluated"] for f in result.failures)
    assert column in _named_columns(result), result.failures
    json.dumps(result.summary())


def test_several_row_level_faults_are_all_reported(logs: DayLogs) -> None:
    """Faults in different rows of one partition each fail their own expectation."""
    dec = logs.decisions.copy()
    _set("unit_cost", -1.0, slice(0, 1))(dec)
    _set("competitor_price", 0.0, slice(1, 2))(dec)
    _set("action", 7, slice(2, 3))(dec)
    _quantity_on_a_view(dec)
    result = validate_partition("decisions", dec, DAY, NOW, data_docs=False)
    assert _failed(result) == {
        ("expect_column_values_to_be_between", "unit_cost"),
        ("expect_column_values_to_be_between", "competitor_price"),
        ("expect_column_values_to_be_in_set", "action"),
        ("expect_column_values_to_be_in_set", "quantity"),
    }
    assert all(f["unexpected_count"] == 1 for f in result.failures)
    assert "action index must be in 0..4" in result.message()

    tx = logs.transactions.copy()
    _scale("unit_price", 100.0)(tx)  # cents exported as dollars
    _set("quantity", -1, slice(5, 6))(tx)
    result = validate_partition("transactions", tx, DAY, NOW, data_docs=False)
    assert _failed(result) == {
        ("expect_column_values_to_be_between", "price_to_sku_median"),
        ("expect_column_values_to_be_between", "quantity"),
    }

    feats = build_features(logs.decisions, logs.transactions)
    _set("date", DAY - dt.timedelta(days=1), slice(0, 1))(feats)
    _set("abandon_rate", -0.5, slice(1, 2))(feats)
    result = validate_partition("features", feats, DAY, NOW, data_docs=False)
    assert _failed(result) == {
        ("expect_column_values_to_be_in_set", "date"),
        ("expect_column_values_to_be_between", "abandon_rate"),
    }


def test_a_timestamp_in_the_future_is_told_apart_from_another_day(logs: DayLogs) -> None:
    df = logs.decisions.copy()
    now = dt.datetime.combine(DAY, dt.time(22, 0), tzinfo=dt.UTC)
    df = df[df["ts"] <= now].copy()
    df.loc[df.index[-1], "ts"] = pd.Timestamp(now) + pd.Timedelta(minutes=30)
    result = validate_partition("decisions", df, DAY, now, data_docs=False)
    assert not result.success
    [failure] = result.failures
    assert failure["column"] == "ts" and failure["unexpected_count"] == 1
    assert "future" in result.message() and "expect_column_values_to_be_between" in result.message()
    # A naive `now` is read as UTC.
    again = validate_partition("decisions", df, DAY, now.replace(tzinfo=None), data_docs=False)
    assert again.failures == result.failures


def test_an_empty_partition_fails(logs: DayLogs) -> None:
    result = validate_partition("decisions", logs.decisions.iloc[:0], DAY, NOW, data_docs=False)
    assert not result.success
    assert _failed(result) == {("expect_table_row_count_to_be_between", None)}
    assert "zero rows" in result.message()

    nothing = validate_partition("transactions", pd.DataFrame(), DAY, NOW, data_docs=False)
    assert not nothing.success
    message = nothing.message()
    assert "expect_table_row_count_to_be_between" in message and "missing columns" in message
    assert "not evaluated because columns are missing" in message


def test_a_read_error_is_a_failed_result_not_an_exception() -> None:
    result = validate_partition("decisions", None, DAY, NOW, read_error="truncated footer")
    assert not result.success and result.read_error == "truncated footer"
    assert _failed(result) == {("partition_readable", None)}
    assert "truncated footer" in result.message() and result.docs_html == {}
    assert json.loads(json.dumps(result.summary()))["read_error"] == "truncated footer"


def test_the_action_set_size_is_a_parameter(logs: DayLogs) -> None:
    df = logs.decisions
    top = int(df["action"].max())
    narrow = validate_partition("decisions", df, DAY, NOW, n_actions=top, data_docs=False)
    assert _failed(narrow) == {("expect_column_values_to_be_in_set", "action")}
    assert f"action index must be in 0..{top - 1}" in narrow.message()


def test_summary_and_data_docs(logs: DayLogs) -> None:
    df = logs.decisions.copy()
    df.loc[df.index[:3], "sku"] = None
    result = validate_partition("decisions", df, DAY, NOW)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["success"] is False and summary["feed"] == "decisions"
    assert summary["date"] == DAY.isoformat() and summary["message"] == result.message()
    [failure] = summary["failures"]
    assert failure["unexpected_count"] == 3 and failure["element_count"] == len(df)
    assert "required column has nulls" in failure["message"]
    pages = [p for p in result.docs_html if p.startswith("validations/") and p.endswith(".html")]
    assert len(pages) == 1 and "index.html" in result.docs_html
    assert b"sku" in result.docs_html[pages[0]]
    # Only what a reader needs: no multi-MB gifs or font files.
    assert sum(len(b) for b in result.docs_html.values()) < 2_000_000
    assert not [p for p in result.docs_html if p.endswith((".gif", ".otf"))]
    # The page path is pinned to `now`, so a re-run of the night rewrites the same files.
    assert pages[0].startswith("validations/decisions/decisions-2026-01-05/20260106T030000")


QUIET_SCRIPT = """
import datetime as dt, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from pipeline.data.validation import validate_partition
from sim.history import generate_history
from sim.world import default_world
day = next(generate_history(default_world(), 1, 0, dt.date(2026, 1, 5)))
result = validate_partition("transactions", day.transactions, day.date, dt.datetime(2026, 1, 6))
print("ok" if result.success else result.message())
"""


def test_validation_is_quiet_in_a_process_that_logs_at_info() -> None:
    """As in an Airflow task: root logging at INFO before GX is first imported."""
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT], cwd=root, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
    assert "great_expectations" not in run.stderr and "Calculating Metrics" not in run.stderr
    assert run.stderr.strip() == "", run.stderr


def test_read_and_validate_then_quarantine(lake: Lake, logs: DayLogs) -> None:
    bad = logs.decisions.copy()
    bad.loc[bad.index[0], "propensity"] = 0.0
    lake.write_partition("raw", "decisions", DAY, bad)
    lake.write_partition("raw", "transactions", DAY, logs.transactions)

    # What comes back from Parquet (dtypes, timestamp units) still meets the contract.
    df, ok = read_and_validate(lake, "transactions", DAY, NOW, data_docs=False)
    assert ok.success, ok.message()
    assert df is not None and len(df) == len(logs.transactions)

    df, result = read_and_validate(lake, "decisions", DAY, NOW)
    assert not result.success and df is not None
    location = quarantine_partition(lake, "decisions", DAY, result)
    assert "quarantine/decisions/date=2026-01-05" in location
    assert not lake.has_partition("raw", "decisions", DAY)
    pd.testing.assert_frame_equal(lake.read_partition("quarantine", "decisions", DAY), bad)
    prefix = lake.partition_prefix("quarantine", "decisions", DAY).rstrip("/")
    report = json.loads(lake.read_bytes(f"{prefix}/validation.json"))
    assert report["success"] is False and "propensity" in report["message"]
    docs = [p for p in lake.list(f"{prefix}/data_docs/") if p.endswith(".html")]
    assert f"{prefix}/data_docs/index.html" in docs and len(docs) >= 2

    # Re-running the night: the raw partition is gone, the first report is kept.
    df, missing = read_and_validate(lake, "decisions", DAY, NOW)
    assert df is None and not missing.success and "no partition" in (missing.read_error or "")
    assert quarantine_partition(lake, "decisions", DAY, missing) == location
    assert json.loads(lake.read_bytes(f"{prefix}/validation.json")) == report


def test_a_truncated_file_is_a_failed_validation(tmp_path: Path, logs: DayLogs) -> None:
    lake = Lake.from_uri(str(tmp_path / "lake"))
    lake.write_partition("raw", "transactions", DAY, logs.transactions)
    [part] = (tmp_path / "lake" / "raw" / "transactions").rglob("part-*.parquet")
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])

    df, result = read_and_validate(lake, "transactions", DAY, NOW)
    assert df is None and not result.success
    assert result.read_error is not None and "unreadable" in result.read_error
    assert "partition_readable" in result.message() and "could not be read" in result.message()

    location = quarantine_partition(lake, "transactions", DAY, result)
    assert Path(location).is_dir() and not lake.has_partition("raw", "transactions", DAY)
    report = json.loads((Path(location) / "validation.json").read_text())
    assert report["read_error"] == result.read_error and report["data_docs"] == []


def test_a_15k_row_partition_validates_in_seconds() -> None:
    """A catalogue of ~100 SKUs makes ~16k decisions a day: the gate's everyday load."""
    w = json.loads(default_world().to_json())
    w["skus"] = [{**sku, "id": f"{sku['id']}-{i}"} for i in range(18) for sku in w["skus"]]
    day = next(generate_history(World.model_validate(w), 1, 0, DAY))
    assert len(day.decisions) > 12_000
    result = validate_partition("decisions", day.decisions, DAY, NOW, data_docs=False)
    assert result.success, result.message()
    print(f"validated {len(day.decisions):,} rows in {result.statistics['seconds']:.2f} s")
    assert np.isfinite(result.statistics["seconds"])


@pytest.mark.parametrize("crash_at", ["manifest", "part"])
def test_a_quarantine_move_cut_short_is_completed_not_validated(
    tmp_path: Path, fault_row: Any, crash_at: str
) -> None:
    """A crash in the middle of a quarantine move of a partition in several parts (the service
    writes one per batch) never leaves a partial day visible: cut before the raw manifest is
    deleted, the day is whole in both zones and the next night completes the move and stops,
    instead of validating it again; cut after it, raw shows nothing and quarantine holds it all."""
    from pipeline.data.lake import LocalStore
    from pipeline.nightly.results import NightStopped
    from pipeline.nightly.steps import validate_raw
    from pipeline.settings import Settings

    settings = Settings(data_dir=tmp_path, world_file=None)
    lake = Lake.from_uri(settings.lake)
    day = dt.date(2026, 1, 5)
    good = pd.DataFrame({"x": [1, 2]})
    for i in range(3):
        lake.add_part("raw", "decisions", day, good.assign(x=good.x + i), f"part-w{i}.parquet")
    result = validate_partition("decisions", good, day, NOW, data_docs=False)
    store = lake.store
    assert isinstance(store, LocalStore)
    delete = store.delete

    def crash(key: str) -> None:
        if key.startswith("raw/") and (crash_at == "manifest" or "part-w1" in key):
            raise KeyboardInterrupt("the worker was killed")
        delete(key)

    store.delete = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        quarantine_partition(lake, "decisions", day, result)
    store.delete = delete  # type: ignore[method-assign]
    prefix = lake.partition_prefix("quarantine", "decisions", day)
    assert lake.exists(f"{prefix}/validation.json")  # the reason went first
    assert len(lake.read_partition("quarantine", "decisions", day)) == 6  # committed whole
    if crash_at == "manifest":
        assert len(lake.read_partition("raw", "decisions", day)) == 6  # and still whole in raw
        with pytest.raises(NightStopped, match="a quarantine move was cut short; it is complete"):
            validate_raw(settings, day + dt.timedelta(days=1))
        assert not lake.list("raw/decisions/")
        sees = (
            "the next night completes the move and stops: a quarantine move was cut short; it "
            "is complete now, in …/quarantine/… with its report"
        )
    else:
        assert not lake.has_partition("raw", "decisions", day)  # leftover parts are unlisted
        assert lake.list_dates("raw", "decisions") == []
        sees = (
            "nothing: the day is committed in quarantine; raw's leftover parts are read by no one"
        )
    assert len(lake.read_partition("quarantine", "decisions", day)) == 6  # nothing lost
    fault_row(
        "worker killed in the middle of a quarantine move",
        f"the process stopped at the {'raw manifest' if crash_at == 'manifest' else 'second raw part'}"
        " of a three-part day",
        True,
        0,
        sees,
    )
