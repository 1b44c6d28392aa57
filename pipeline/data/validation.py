"""The validation gate: one day of one feed through its Great Expectations suite
(`pipeline.data.suites`), and a failed partition into quarantine with its report.

Every call of `validate_partition` builds a throw-away GX file context in a temporary directory
(pandas datasource, whole-dataframe batch, the feed's ExpectationSuite, a Checkpoint that also
renders Data Docs), runs it on one day's partition and returns a `ValidationResult`: pass/fail,
one record per failed expectation, a one-paragraph reason for the CLI and Airflow, and the Data
Docs pages to keep beside a quarantined partition. Nothing is shared between runs, so concurrent
nights never see each other's suites. An unreadable or truncated file is a failed validation too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.gx import ProgressBarsConfig, RunIdentifier, UpdateDataDocsAction, gx, quiet_gx
from pipeline.data.lake import Lake
from pipeline.data.suites import FEEDS, ZONE, build_suite, frame_for_gx, utc_datetime

_MAX_LISTED_FAILURES = 8


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of validating one day of one feed.

    Attributes:
        feed: "decisions", "transactions" or "features".
        date: the partition's logical date.
        success: True when every expectation held and the partition was readable.
        failures: one JSON-able record per failed expectation: ``expectation`` (GX type),
            ``column``, ``unexpected_count``, ``element_count``, ``observed_value``, ``sample``
            (a few offending values) and ``message`` (short, human).
        statistics: GX's counts of evaluated/successful expectations plus ``rows``, ``columns``
            and ``seconds``.
        docs_html: the GX Data Docs site, relative path -> bytes (empty when nothing could be read).
        read_error: why the partition could not be read, if it could not.
    """

    feed: str
    date: dt.date
    success: bool
    failures: list[dict[str, Any]]
    statistics: dict[str, Any]
    docs_html: dict[str, bytes] = field(default_factory=dict, repr=False)
    read_error: str | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-able report (what ``validation.json`` holds)."""
        return {
            "feed": self.feed,
            "date": self.date.isoformat(),
            "success": self.success,
            "message": self.message(),
            "read_error": self.read_error,
            "statistics": _jsonable(self.statistics),
            "failures": _jsonable(self.failures),
            "data_docs": sorted(self.docs_html),
        }

    def message(self) -> str:
        """One paragraph that says whether the partition passed and, if not, what failed where."""
        head = f"{self.feed} partition for {self.date.isoformat()}"
        if self.success:
            rows = self.statistics.get("rows")
            n = self.statistics.get("evaluated_expectations")
            return f"{head} passed validation ({rows} rows, {n} expectations)."
        if self.read_error is not None:
            return f"{head} failed validation: partition_readable: {self.failures[0]['message']}."
        total = self.statistics.get("evaluated_expectations", "?")
        failed = [f for f in self.failures if f.get("evaluated", True)]
        broken = [f for f in self.failures if not f.get("evaluated", True)]
        parts = []
        for f in failed[:_MAX_LISTED_FAILURES]:
            where = f" on column '{f['column']}'" if f.get("column") else ""
            parts.append(f"{f['expectation']}{where}: {f['message']}")
        if len(failed) > _MAX_LISTED_FAILURES:
            parts.append(f"{len(failed) - _MAX_LISTED_FAILURES} more (see validation.json)")
        missing = {c for f in self.failures for c in f.get("missing_columns", [])}
        # Expectations on a missing column cannot run; they echo the schema failure above.
        echoes = [f for f in broken if set(str(f.get("column")).split(", ")) & missing]
        if echoes:
            parts.append(f"{len(echoes)} expectation(s) not evaluated because columns are missing")
        others = [f for f in broken if f not in echoes]
        if others:
            columns = sorted({str(f["column"]) for f in others if f.get("column")})
            parts.append(
                f"{len(others)} expectation(s) could not be evaluated"
                + (f" on column(s) {', '.join(repr(c) for c in columns)}" if columns else "")
                + f" ({others[0]['message'].removeprefix('could not be evaluated ')})"
            )
        return (
            f"{head} failed validation, {len(self.failures)} of {total} expectations failed: "
            + "; ".join(parts)
            + "."
        )


# --------------------------------------------------------------------------------------------
# running GX


def _collect_docs(site: Path) -> dict[str, bytes]:
    """The Data Docs files a reader needs: the HTML pages, their stylesheets and the favicon.

    The pages pull Bootstrap and friends from public CDNs; GX's bundled fonts and multi-MB
    animated gifs are not referenced by them and are left out.
    """
    out: dict[str, bytes] = {}
    for path in sorted(site.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(site).as_posix()
        keep = (
            path.suffix == ".html"
            or rel == "static/images/favicon.ico"
            or (rel.startswith("static/styles/") and not rel.endswith("_template.css"))
        )
        if keep:
            out[rel] = path.read_bytes()
    return out


def run_gx(
    feed: str, frame: pd.DataFrame, suite: Any, date: dt.date, now: dt.datetime, data_docs: bool
) -> tuple[Any, dict[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        # Data Docs need a file context; without them an in-memory one is cheaper to build.
        context = (
            gx.get_context(mode="file", project_root_dir=tmp)
            if data_docs
            else gx.get_context(mode="ephemeral")
        )
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        batch = (
            context.data_sources.add_pandas("lake")
            .add_dataframe_asset(feed)
            .add_batch_definition_whole_dataframe("partition")
        )
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{feed} {date.isoformat()}", data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{feed}-gate",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs")] if data_docs else [],
                # BASIC has the counts and a sample of bad values; SUMMARY's extra value counts
                # cost a third more time and nothing here reads them.
                result_format="BASIC",
            )
        )
        # The run time names the Data Docs page; pinning it to `now` keeps re-runs of a night
        # writing the same paths.
        run_id = RunIdentifier(run_name=f"{feed}-{date.isoformat()}", run_time=now)
        outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
        result = next(iter(outcome.run_results.values()))
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
        docs = _collect_docs(site) if site.is_dir() else {}
    return result, docs


# --------------------------------------------------------------------------------------------
# turning GX results into failures


def _jsonable(value: Any) -> Any:
    """Numpy scalars, timestamps, NaN and the like, as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dt.datetime | dt.date | pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or value is pd.NA:
        return None
    return str(value)


def _column_of(kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("column"):
        return str(kwargs["column"])
    if kwargs.get("column_A"):
        return f"{kwargs['column_A']}, {kwargs['column_B']}"
    if kwargs.get("column_list"):
        return ", ".join(map(str, kwargs["column_list"]))
    return None


def _describe(exp_type: str, notes: str, res: dict[str, Any], exc: dict[str, Any] | None) -> str:
    if exc and exc.get("raised_exception"):
        text = str(exc.get("exception_message") or "unknown error").strip().splitlines()[0]
        return f"could not be evaluated ({text[:200]})"
    if exp_type == "expect_table_columns_to_match_set":
        mismatched = (res.get("details") or {}).get("mismatched") or {}
        bits = []
        if mismatched.get("missing"):
            bits.append("missing columns " + ", ".join(map(str, mismatched["missing"])))
        if mismatched.get("unexpected"):
            bits.append("unexpected columns " + ", ".join(map(str, mismatched["unexpected"])))
        return f"{notes}: {'; '.join(bits) or 'columns differ'}"
    if res.get("unexpected_count") is not None:
        # JSON spelling quotes text, so a price stored as "20.0" reads differently from 20.0.
        sample = ", ".join(
            json.dumps(_jsonable(v)) for v in (res.get("partial_unexpected_list") or [])[:3]
        )
        count = f"{res['unexpected_count']} of {res.get('element_count', '?')} rows"
        return f"{notes} ({count}{'; e.g. ' + sample if sample else ''})"
    if "observed_value" in res:
        return f"{notes} (observed {_jsonable(res['observed_value'])})"
    return notes


def _failures(gx_result: Any, suite: Any) -> list[dict[str, Any]]:
    """One record per failed expectation, in suite order (table checks first), unevaluated last."""
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    out = []
    for r in gx_result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        notes = cfg.notes if isinstance(cfg.notes, str) else "; ".join(cfg.notes or [])
        res = dict(r.result or {})
        exc = dict(r.exception_info or {})
        if exc and "raised_exception" not in exc:
            # Results that need several metrics nest exception info by metric id.
            raised = [v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")]
            exc = raised[0] if raised else {}
        evaluated = not exc.get("raised_exception", False)
        mismatched = (res.get("details") or {}).get("mismatched") or {}
        schema = {
            f"{k}_columns": [str(c) for c in mismatched[k]]
            for k in ("missing", "unexpected")
            if mismatched.get(k)
        }
        out.append(
            {
                **schema,
                "expectation": cfg.type,
                "column": _column_of(dict(cfg.kwargs)),
                "evaluated": evaluated,
                "unexpected_count": _jsonable(res.get("unexpected_count")),
                "element_count": _jsonable(res.get("element_count")),
                "observed_value": _jsonable(res.get("observed_value")),
                "sample": _jsonable((res.get("partial_unexpected_list") or [])[:5]),
                "message": _describe(cfg.type, notes or cfg.type, res, exc),
                "_order": order.get(cfg.id, len(order)),
            }
        )
    out.sort(key=lambda f: (not f["evaluated"], f["_order"]))
    for f in out:
        del f["_order"]
    return out


# --------------------------------------------------------------------------------------------
# public entry points


def validate_partition(
    feed: str,
    df: pd.DataFrame | None,
    date: dt.date,
    now: dt.datetime,
    read_error: str | None = None,
    *,
    n_actions: int | None = None,
    data_docs: bool = True,
) -> ValidationResult:
    """Validate one day of one feed with its GX suite.

    A missing frame or a ``read_error`` is a failed validation, not an exception, so an unreadable
    or truncated file stops the night the same way bad rows do.

    Args:
        feed: "decisions", "transactions" or "features".
        df: the partition, or None when it could not be read.
        date: the partition's UTC day.
        now: the wall clock of the run; later timestamps are in the future (naive means UTC).
        read_error: why the partition could not be read, when it could not.
        n_actions: size of the pricing action set; default: the bundled world's.
        data_docs: render the GX Data Docs into ``docs_html`` (about a third of the run time).

    Returns:
        The `ValidationResult`, with GX Data Docs unless nothing could be read or they were
        not asked for.
    """
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS} (got {feed!r})")
    started = time.perf_counter()
    if df is None or read_error is not None:
        why = read_error or "no data was supplied"
        return ValidationResult(
            feed=feed,
            date=date,
            success=False,
            failures=[
                {
                    "expectation": "partition_readable",
                    "column": None,
                    "evaluated": True,
                    "unexpected_count": None,
                    "element_count": None,
                    "observed_value": None,
                    "sample": [],
                    "message": f"the partition could not be read ({why})",
                }
            ],
            statistics={
                "evaluated_expectations": 0,
                "successful_expectations": 0,
                "unsuccessful_expectations": 1,
                "success_percent": 0.0,
                "rows": 0,
                "columns": 0,
                "seconds": round(time.perf_counter() - started, 3),
            },
            read_error=why,
        )
    now = utc_datetime(now)
    with quiet_gx():
        suite = build_suite(feed, date, now, n_actions)
        gx_result, docs = run_gx(feed, frame_for_gx(feed, df), suite, date, now, data_docs)
    stats = {k: _jsonable(v) for k, v in dict(gx_result.statistics).items()}
    stats.update(
        rows=len(df), columns=len(df.columns), seconds=round(time.perf_counter() - started, 3)
    )
    return ValidationResult(
        feed=feed,
        date=date,
        success=bool(gx_result.success),
        failures=_failures(gx_result, suite),
        statistics=stats,
        docs_html=docs,
    )


def read_and_validate(
    lake: Lake,
    feed: str,
    date: dt.date,
    now: dt.datetime,
    *,
    n_actions: int | None = None,
    data_docs: bool = True,
) -> tuple[pd.DataFrame | None, ValidationResult]:
    """Read a partition from the lake and validate it; unreadable data is a failed result.

    Raw feeds are read from the ``raw`` zone, ``features`` from the ``features`` zone;
    ``n_actions`` and ``data_docs`` are passed on to `validate_partition`.

    Returns:
        (the frame, or None when it could not be read; the `ValidationResult`).
    """
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS} (got {feed!r})")
    try:
        df = lake.read_partition(ZONE[feed], feed, date)
    except Exception as exc:
        # Whatever the reader raises (a missing partition, a truncated Parquet footer, a
        # permission or network error) the night must stop with a report, not a traceback.
        error = f"{type(exc).__name__}: {exc}"
        return None, validate_partition(feed, None, date, now, read_error=error)
    return df, validate_partition(feed, df, date, now, n_actions=n_actions, data_docs=data_docs)


def finish_quarantine(lake: Lake, feed: str, date: dt.date) -> str | None:
    """Complete a quarantine move that a crash cut short (some parts still in raw, identical
    copies in quarantine beside the report); return where the partition now is, or None when
    there was no such move. A partial raw partition is never validated as if it were whole."""
    if feed not in FEEDS or not lake.interrupted_move(feed, date, ZONE[feed], "quarantine"):
        return None
    return lake.move_partition(feed, date, from_zone=ZONE[feed], to_zone="quarantine", merge=True)


def quarantine_partition(lake: Lake, feed: str, date: dt.date, result: ValidationResult) -> str:
    """Move a failed partition to ``quarantine/`` with its validation report beside it.

    Writes ``validation.json`` (``result.summary()``) and the Data Docs under ``data_docs/`` in
    the quarantined partition's folder. Nothing is deleted: the data moves, it is not dropped.
    Re-running a night is safe: when the source partition is already gone and the quarantine
    folder holds a report, that first report (the one that saw the data) is kept as it is.

    Args:
        lake: the lake holding the partition.
        feed: "decisions", "transactions" (raw zone) or "features" (features zone).
        date: the partition's date.
        result: the failed validation to store beside the data.

    Returns:
        The quarantine location of the partition, as the lake reports it.
    """
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS} (got {feed!r})")
    quarantine = lake.partition_prefix("quarantine", feed, date)
    target = quarantine.rstrip("/")
    report = f"{target}/validation.json"
    summary = json.dumps(result.summary(), indent=2, sort_keys=True).encode()
    if lake.has_partition(ZONE[feed], feed, date):
        # The report first: wherever a crash stops the move, the data has its reason beside it
        # (and a night that finds the move cut short completes it: `finish_quarantine`).
        lake.write_bytes(report, summary)
        location = lake.move_partition(
            feed, date, from_zone=ZONE[feed], to_zone="quarantine", keep=("validation.json",)
        )
    else:
        location = lake.uri(quarantine)
        if lake.exists(report):
            return location
        lake.write_bytes(report, summary)
    for rel, data in sorted(result.docs_html.items()):
        lake.write_bytes(f"{target}/data_docs/{rel}", data)
    return location
