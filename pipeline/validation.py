"""The validation gate: Great Expectations suites for the raw feeds and the daily features.

Every call of `validate_partition` builds a throw-away GX file context in a temporary directory
(pandas datasource, whole-dataframe batch, one ExpectationSuite per feed, a Checkpoint that also
renders Data Docs), runs it on one day's partition and returns a `ValidationResult`: pass/fail,
one record per failed expectation, a one-paragraph reason for the CLI and Airflow, and the Data
Docs pages to keep beside a quarantined partition. Nothing is shared between runs, so concurrent
nights never see each other's suites.

What the suites catch (the usual ways real logs go wrong):

- schema drift: a contract column dropped or renamed, an unexpected column, a changed dtype;
- nulls in required columns; an empty partition (zero rows) or an unreadable/truncated file;
- prices that are negative, zero or absurd (more than 20x the base price, or for POS data more
  than 20x off the SKU's median price that day, the usual cents-for-dollars slip); negative costs;
- duplicated event ids or transaction ids (a replayed export);
- timestamps outside the partition's UTC day or later than ``now`` (clock skew, wrong partition);
- propensities outside (0, 1] (off-policy estimates divide by them), unknown outcomes, actions
  outside the action set, negative quantities, a quantity on a row that is not a purchase, and a
  purchase of more units than were in stock.

Two checks need a value computed from two columns, which GX's pandas expectations cannot express
with a factor; the frame handed to GX therefore carries one derived column (``price_to_base`` for
decisions, ``price_to_sku_median`` for transactions) and the schema check expects it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.features import FEATURES
from sim.feeds import DECISIONS, OUTCOMES, PURCHASE, TRANSACTIONS, Feed

if TYPE_CHECKING:
    from pipeline.lake import Lake

FEEDS: tuple[str, ...] = ("decisions", "transactions", "features")
MAX_PRICE_FACTOR = 20.0
"""A price more than this many times its reference (or the SKU's median) is a data error."""

_ZONE = {"decisions": "raw", "transactions": "raw", "features": "features"}
_DERIVED = {"decisions": "price_to_base", "transactions": "price_to_sku_median", "features": None}
_CONTRACTS: dict[str, Feed] = {
    "decisions": DECISIONS,
    "transactions": TRANSACTIONS,
    "features": FEATURES,
}
# Numeric dtype families: the width of an integer is a storage detail, a string price is drift.
_INT_TYPES = ["int64", "int32", "int16", "int8", "Int64", "Int32"]
_FLOAT_TYPES = ["float64", "float32", "Float64", *_INT_TYPES]
_TS_TYPE = "datetime64[ns, UTC]"
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
# suites


def _utc_datetime(value: dt.datetime) -> dt.datetime:
    """``now`` as aware UTC; a naive value is taken to be UTC (the lake's clock)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _schema(feed: str) -> list[Any]:
    import great_expectations.expectations as gxe

    columns = list(_CONTRACTS[feed].names)
    derived = _DERIVED[feed]
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, notes="zero rows: the export failed or the file was truncated"
        ),
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*columns, *([derived] if derived else [])],
            exact_match=True,
            notes="the feed's columns must match the data contract (schema drift)",
        ),
    ]


def _types(contract: Feed) -> list[Any]:
    """Each column's dtype family, from the feed's contract (timestamps are checked apart)."""
    import great_expectations.expectations as gxe

    why = "dtype differs from the data contract"
    families = {"str": ["str"], "int": _INT_TYPES, "float": _FLOAT_TYPES}
    return [
        gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=families[kind], notes=why)
        for kind in ("str", "int", "float")
        for c in contract.of_kind(kind)
    ]


def _not_null(columns: Sequence[str]) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column=c, notes="required column has nulls")
        for c in columns
    ]


def _timestamps(date: dt.date, now: dt.datetime) -> list[Any]:
    import great_expectations.expectations as gxe

    start = dt.datetime.combine(date, dt.time(0), tzinfo=dt.UTC)
    return [
        gxe.ExpectColumnTypeToBe(
            column="ts", type_=_TS_TYPE, notes="timestamps must be tz-aware UTC"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            min_value=start,
            max_value=start + dt.timedelta(days=1),
            strict_max=True,
            notes=f"timestamp outside the partition's UTC day {date.isoformat()}",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            max_value=now,
            notes=f"timestamp in the future (after {now.isoformat()})",
        ),
    ]


def _positive(column: str, why: str, upper: float | None = None) -> Any:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=0,
        strict_min=True,
        max_value=upper,
        strict_max=upper is not None,
        notes=why,
    )


def _at_least(column: str, low: float, why: str, high: float | None = None) -> Any:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=low, max_value=high, notes=why
    )


def build_suite(feed: str, date: dt.date, now: dt.datetime, n_actions: int | None = None) -> Any:
    """The GX ExpectationSuite for one feed and partition date.

    Args:
        feed: "decisions", "transactions" or "features".
        date: the partition's UTC day; timestamps must fall inside it.
        now: no timestamp may be later than this (naive means UTC).
        n_actions: size of the pricing action set (decisions only); default: the bundled world's.

    Returns:
        An unsaved ``great_expectations.ExpectationSuite`` named after the feed.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS} (got {feed!r})")
    now = _utc_datetime(now)
    exps = _schema(feed)
    if feed == "decisions":
        n = n_actions if n_actions is not None else _default_n_actions()
        exps += _types(DECISIONS)
        exps += _not_null(DECISIONS.required)
        exps += _timestamps(date, now)
        exps += [
            gxe.ExpectColumnValuesToBeUnique(
                column="event_id", notes="duplicated event ids (a replayed or doubled export)"
            ),
            _positive("price_shown", "price shown must be > 0"),
            _positive(
                "price_to_base",
                f"price shown must be > 0 and < {MAX_PRICE_FACTOR:g} x base_price",
                upper=MAX_PRICE_FACTOR,
            ),
            _positive("base_price", "base price must be > 0"),
            _positive("competitor_price", "competitor price must be > 0"),
            _at_least("unit_cost", 0, "unit cost must be >= 0"),
            _at_least("inventory", 0, "inventory must be >= 0"),
            gxe.ExpectColumnValuesToBeInSet(
                column="action",
                value_set=list(range(n)),
                notes=f"action index must be in 0..{n - 1}",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="propensity",
                min_value=0,
                strict_min=True,
                max_value=1,
                notes="propensity must be in (0, 1]",
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="outcome",
                value_set=list(OUTCOMES),
                notes=f"outcome must be one of {', '.join(OUTCOMES)}",
            ),
            _at_least("quantity", 0, "quantity must be >= 0"),
            gxe.ExpectColumnValuesToBeInSet(
                column="quantity",
                value_set=[0],
                row_condition=Column("outcome") != PURCHASE,
                notes="quantity must be 0 unless the outcome is a purchase",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="quantity",
                min_value=1,
                row_condition=Column("outcome") == PURCHASE,
                notes="a purchase must have quantity >= 1",
            ),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="inventory",
                column_B="quantity",
                or_equal=True,
                notes="more units sold than were in stock",
            ),
        ]
    elif feed == "transactions":
        exps += _types(TRANSACTIONS)
        exps += _not_null(TRANSACTIONS.required)
        exps += _timestamps(date, now)
        exps += [
            gxe.ExpectColumnValuesToBeUnique(
                column="transaction_id",
                notes="duplicated transaction ids (a replayed or doubled export)",
            ),
            _positive("unit_price", "unit price must be > 0"),
            gxe.ExpectColumnValuesToBeBetween(
                column="price_to_sku_median",
                min_value=1 / MAX_PRICE_FACTOR,
                max_value=MAX_PRICE_FACTOR,
                notes=f"unit price more than {MAX_PRICE_FACTOR:g}x off the SKU's median that day",
            ),
            _at_least("unit_cost", 0, "unit cost must be >= 0"),
            _at_least("quantity", 0, "quantity must be >= 0"),
        ]
    else:
        counts = ["views", "carts", "abandons", "inventory_start", "inventory_end"]
        exps += _types(FEATURES)
        exps += _not_null(FEATURES.required)
        exps += [
            gxe.ExpectColumnValuesToBeInSet(
                column="date",
                value_set=[date.isoformat()],
                notes=f"feature rows must belong to {date.isoformat()}",
            ),
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["date", "sku"], notes="one row per SKU and day"
            ),
            *[_at_least(c, 0, f"{c} must be >= 0") for c in counts],
            _at_least("purchases", 0, "purchases must be >= 0"),
            _at_least("units", 0, "units must be >= 0"),
            _at_least("revenue", 0, "revenue must be >= 0"),
            _at_least("sales_velocity", 0, "sales velocity must be >= 0"),
            _at_least("conversion", 0, "conversion must be in [0, 1]", high=1),
            _at_least("abandon_rate", 0, "abandon rate must be in [0, 1]", high=1),
            _at_least("price_changes", 0, "at most one price move per hour", high=23),
            _positive("mean_price", "mean price must be > 0"),
            _positive(
                "price_rel",
                f"relative price must be in (0, {MAX_PRICE_FACTOR:g})",
                upper=MAX_PRICE_FACTOR,
            ),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="units",
                column_B="purchases",
                or_equal=True,
                notes="every purchase sells at least one unit",
            ),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="views",
                column_B="carts",
                or_equal=True,
                notes="more carts than views",
            ),
        ]
    return gx.ExpectationSuite(name=feed, expectations=exps)


def _default_n_actions() -> int:
    from sim.world import default_world

    return len(default_world().pricing.actions)


# --------------------------------------------------------------------------------------------
# running GX


@contextlib.contextmanager
def _quiet_gx() -> Iterator[None]:
    """Keep GX's chatter out of task logs: its import logs hundreds of info lines and raises
    deprecation warnings about its own imports, none of which a pricing team can act on."""
    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", category=DeprecationWarning, module="great_expectations"
            )
            yield
    finally:
        gx_logger.setLevel(level)


def _frame_for_gx(feed: str, df: pd.DataFrame) -> pd.DataFrame:
    """The frame GX sees: the partition plus the derived check column, dtypes made checkable.

    GX's per-value type check only runs on object columns, so string columns go to object (the
    values are unchanged); tz-aware timestamps get one unit, since the unit is storage detail that
    differs between writers (pandas 3 reads microseconds, the generator writes nanoseconds). GX
    stores suites as JSON, where a date becomes its ISO string, so the features' ``date`` column
    is compared as ISO strings too.
    """
    out = df.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.StringDtype):
            out[col] = s.astype(object)
        elif isinstance(s.dtype, pd.DatetimeTZDtype):
            out[col] = s.dt.as_unit("ns")
    if feed == "features" and "date" in out.columns:
        out["date"] = out["date"].map(_iso_date, na_action="ignore")
    derived = _DERIVED[feed]
    if feed == "decisions":
        out[derived] = _numeric(out, "price_shown") / _numeric(out, "base_price")
    elif feed == "transactions":
        price = _numeric(out, "unit_price")
        if "sku" in out.columns and len(out):
            median = price.groupby(out["sku"].astype(str).to_numpy()).transform("median")
        else:
            median = pd.Series(np.nan, index=out.index)
        out[derived] = price / median.where(median > 0)
    return out


def _iso_date(value: Any) -> Any:
    """A plain date as ISO text; anything else (a timestamp, a number) unchanged, to be flagged."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


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


def _run_gx(
    feed: str, frame: pd.DataFrame, suite: Any, date: dt.date, now: dt.datetime, data_docs: bool
) -> tuple[Any, dict[str, bytes]]:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
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
    now = _utc_datetime(now)
    with _quiet_gx():
        suite = build_suite(feed, date, now, n_actions)
        gx_result, docs = _run_gx(feed, _frame_for_gx(feed, df), suite, date, now, data_docs)
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
        df = lake.read_partition(_ZONE[feed], feed, date)
    except Exception as exc:
        # Whatever the reader raises (a missing partition, a truncated Parquet footer, a
        # permission or network error) the night must stop with a report, not a traceback.
        error = f"{type(exc).__name__}: {exc}"
        return None, validate_partition(feed, None, date, now, read_error=error)
    return df, validate_partition(feed, df, date, now, n_actions=n_actions, data_docs=data_docs)


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
    source = lake.partition_prefix(_ZONE[feed], feed, date)
    quarantine = lake.partition_prefix("quarantine", feed, date)
    target = quarantine.rstrip("/")
    report = f"{target}/validation.json"
    if lake.list(source):
        location = lake.move_partition(feed, date, from_zone=_ZONE[feed], to_zone="quarantine")
    else:
        location = lake.uri(quarantine)
        if lake.exists(report):
            return location
    lake.write_bytes(report, json.dumps(result.summary(), indent=2, sort_keys=True).encode())
    for rel, data in sorted(result.docs_html.items()):
        lake.write_bytes(f"{target}/data_docs/{rel}", data)
    return location
