"""Ingest a foreign point-of-sale export (CSV or Parquet) into the lake's transactions feed.

A mapping file names which source column holds each canonical field (`pipeline.data.mapping`). Valid
rows become the ``raw/transactions`` feed, one partition per UTC date, with exactly the columns of
``sim.feeds.TRANSACTIONS``. Every other row is kept, with its reason, in
``quarantine/ingest/<source stem>/rejects.parquet`` beside a ``summary.json``: nothing is dropped
silently. Returns (negative quantities) are not sales and go there too, counted on their own.

Re-ingesting a file is idempotent: transaction ids are the mapped ones or derived from the row's
content, and a partition that already exists is merged by transaction id (or rewritten with
``replace=True``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import warnings
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from pipeline.contracts import MAX_PRICE_FACTOR, ingest_quarantine
from pipeline.data.catalogue import add_to_catalogue
from pipeline.data.mapping import CANONICAL, REQUIRED, IngestError, Mapping, load_mapping
from pipeline.data.lake import Lake
from sim.catalogue import derive_items
from sim.feeds import TRANSACTION_COLUMNS
from sim.world import default_world

FEED = "transactions"
# Reasons in the order they are checked: a row gets the first that applies.
REASONS = (
    "bad_ts",
    "missing_sku",
    "bad_quantity",
    "bad_price",
    "bad_cost",
    "zero_quantity",
    "return",
    "negative_price",
    "zero_price",
    "price_outlier",
)
RETURN = "return"
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
# The range a nanosecond timestamp can hold, with a margin; anything outside is a typo.
_TS_MIN = pd.Timestamp("1700-01-01", tz="UTC")
_TS_MAX = pd.Timestamp("2200-01-01", tz="UTC")


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did; ``rows_read == rows_written + rows_rejected + returns``."""

    source: str
    rows_read: int
    rows_written: int
    rejected: dict[str, int]
    returns: int
    dates: list[dt.date]
    skus: list[str]
    partitions: list[str]
    rows_kept: int = 0
    rejects_uri: str = ""
    summary_uri: str = ""
    mapping: dict[str, Any] = field(default_factory=dict)
    catalogue: str = ""  # the catalogue snapshot the file's SKUs were added to

    @property
    def rows_rejected(self) -> int:
        """Rows rejected for a parse or validity reason (returns not included)."""
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the content of ``summary.json``)."""
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            "rejected": dict(self.rejected),
            "returns": self.returns,
            "rows_kept_from_earlier_ingests": self.rows_kept,
            "dates": [d.isoformat() for d in self.dates],
            "skus": list(self.skus),
            "partitions": list(self.partitions),
            "rejects": self.rejects_uri,
            "mapping": self.mapping,
            "catalogue": self.catalogue,
        }


def _read_source(source: Path, m: Mapping) -> pd.DataFrame:
    """The source file as read; CSV cells stay text so parsing decisions are made here."""
    if not source.is_file():
        raise IngestError(f"source file {source} does not exist")
    suffix = source.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(source)
        except Exception as err:
            raise IngestError(f"source {source} is unreadable as Parquet ({err})") from err
    if suffix not in CSV_SUFFIXES:
        raise IngestError(
            f"source {source}: unknown file type {suffix or '(none)'!r}; use one of "
            f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    sep = m.delimiter or ("\t" if suffix == ".tsv" else ",")
    try:
        # keep_default_na=False: "NA" or "null" may be a real SKU; blanks are handled per field.
        return pd.read_csv(
            source, sep=sep, dtype=str, keep_default_na=False, na_filter=False, encoding=m.encoding
        )
    except UnicodeDecodeError as err:
        raise IngestError(
            f"source {source} is not {m.encoding} text ({err.reason} at byte {err.start}); set "
            '"encoding" in the mapping, e.g. "cp1252" or "latin-1"'
        ) from err
    except LookupError as err:
        raise IngestError(f"mapping: unknown encoding {m.encoding!r}") from err
    except pd.errors.EmptyDataError as err:
        raise IngestError(f"source {source} is empty; expected a header line and rows") from err
    except pd.errors.ParserError as err:
        raise IngestError(
            f'source {source} is malformed CSV ({str(err).strip()}); check "delimiter" in the '
            "mapping or fix that line"
        ) from err


def _check_columns(frame: pd.DataFrame, m: Mapping, source: Path) -> None:
    have = [str(c) for c in frame.columns]
    for name, src in m.columns.items():
        if src not in have:
            hint = ""
            if len(have) == 1 and any(ch in have[0] for ch in ";\t|,"):
                hint = ' (one column only: set "delimiter" in the mapping)'
            raise IngestError(
                f"mapping: columns.{name} = {src!r} is not a column of {source.name}; its columns "
                f"are: {', '.join(have)}{hint}"
            )


def _blank(col: pd.Series) -> pd.Series:
    if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        return col.isna() | (col.astype(str).str.strip() == "")
    return col.isna()


def _numbers(col: pd.Series, decimal: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Parse a column as numbers: (values, blank, unparseable)."""
    blank = _blank(col)
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = col.astype("float64")
    else:
        text = col.astype(str).str.strip()
        if decimal != ".":
            text = text.str.replace(decimal, ".", regex=False)
        values = pd.to_numeric(text.where(~blank), errors="coerce").astype("float64")
    bad = ~blank & ~np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan))
    return values.where(~bad), blank, pd.Series(bad, index=col.index)


def _localize(ts: pd.Series, tz: str) -> pd.Series:
    """Naive wall times in ``tz`` to UTC; times with an offset are only converted."""
    if ts.dt.tz is None:
        # Autumn's repeated hour is read as its first (summer-time) occurrence and spring's
        # skipped hour as the moment after the jump: a till's clock can print either.
        ts = ts.dt.tz_localize(
            tz, ambiguous=np.ones(len(ts), dtype=bool), nonexistent="shift_forward"
        )
    return ts.dt.tz_convert("UTC")


def _one_ts(value: str, fmt: str | None, tz: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(pd.to_datetime(value, format=fmt))
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return ts.tz_convert("UTC")


def _parse_with(text: pd.Series, fmt: str | None, tz: str) -> pd.Series:
    with warnings.catch_warnings():
        # pandas warns when it falls back to per-element parsing; unparsed rows are counted.
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        except (ValueError, TypeError):
            parsed = None  # values with different UTC offsets, or a mix of naive and offset
        if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed.dtype):
            parsed = pd.Series(
                [pd.NaT if pd.isna(v) else _one_ts(v, fmt, tz) for v in text],
                index=text.index,
                dtype="datetime64[ns, UTC]",
            )
    return _localize(parsed, tz)


def _timestamps(col: pd.Series, m: Mapping) -> pd.Series:
    """Parse the sale times to UTC; NaT where a value is blank, unparseable or out of range."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        out = _localize(col, m.timezone)
    elif pd.api.types.is_numeric_dtype(col.dtype):
        raise IngestError(
            f"mapping: columns.ts = {m.columns['ts']!r} holds numbers, not timestamps; export it "
            "as text or as a timestamp type"
        )
    else:
        blank = _blank(col)
        text = col.astype(str).str.strip().where(~blank, None)
        if m.ts_format is not None:
            out = _parse_with(text, m.ts_format, m.timezone)
        else:
            out = _parse_with(text, "ISO8601", m.timezone)
            if (out.isna() & ~blank).any():
                # Not all ISO 8601: let pandas infer the format for the rest (month first).
                out = out.fillna(_parse_with(text.where(out.isna(), None), None, m.timezone))
    out = out.where((out >= _TS_MIN) & (out < _TS_MAX))
    return out.astype("datetime64[ns, UTC]")


def _ids(col: pd.Series) -> pd.Series:
    """Identifiers as text; integral floats (an int column with gaps) lose their '.0'."""
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy()
        integral = np.isfinite(vals) & (np.mod(vals, 1) == 0)
        text = pd.Series(
            [str(int(v)) if ok else str(v) for v, ok in zip(vals, integral, strict=True)],
            index=col.index,
        )
    else:
        text = col.astype(str).str.strip()
    return text.where(~_blank(col))


def _content_ids(frame: pd.DataFrame) -> pd.Series:
    """Deterministic ids from the canonical content and the occurrence among identical rows.

    The same sale exported twice (in one file re-ingested, or in two overlapping exports) gets
    the same id, so merging by id never duplicates it.
    """
    key = (
        frame["ts"].astype("int64").astype(str)
        + "|"
        + frame["sku"]
        + "|"
        + frame["quantity"].astype(str)
        + "|"
        + frame["unit_price"].map(repr)
        + "|"
        + frame["unit_cost"].map(repr)
        + "|"
        + frame["customer_id"].fillna("").astype(str)
    )
    occurrence = key.groupby(key, sort=False).cumcount().astype(str)
    return (key + "|" + occurrence).map(
        lambda k: "tx-" + hashlib.sha256(k.encode()).hexdigest()[:20]
    )


def _mapped_ids(col: pd.Series) -> pd.Series:
    """The source's ids, made unique per line: an invoice number repeats on each of its lines."""
    ids = _ids(col)
    counts = ids.map(ids.value_counts())
    line = ids.groupby(ids, sort=False).cumcount() + 1
    repeated = ids.notna() & (counts > 1)
    return ids.where(~repeated, ids + ":" + line.astype(str))


def _canonical(frame: pd.DataFrame, m: Mapping) -> tuple[pd.DataFrame, pd.Series]:
    """Parse every row: (canonical columns for all rows, reason per row with "" for valid)."""
    cols = m.columns
    ts = _timestamps(frame[cols["ts"]], m)
    sku = _ids(frame[cols["sku"]])
    qty, qty_blank, qty_bad = _numbers(frame[cols["quantity"]], m.decimal)
    qty_invalid = qty_blank | qty_bad | (qty.notna() & (np.mod(qty.fillna(0), 1) != 0))
    usable_qty = qty.where(~qty_invalid & (qty != 0))
    price_col = "unit_price" if "unit_price" in cols else "line_total"
    price, price_blank, price_bad = _numbers(frame[cols[price_col]], m.decimal)
    unit_price = price if price_col == "unit_price" else price / usable_qty
    cost_bad = pd.Series(False, index=frame.index)
    unit_cost = pd.Series(np.nan, index=frame.index, dtype="float64")
    cost_col = next((c for c in ("unit_cost", "line_cost") if c in cols), None)
    if cost_col is not None:
        cost, _, cost_unparsed = _numbers(frame[cols[cost_col]], m.decimal)
        # A blank cost is simply unknown; a garbled or negative one is an error worth a look.
        cost_bad = cost_unparsed | (cost < 0)
        unit_cost = cost if cost_col == "unit_cost" else cost / usable_qty
    customer = (
        _ids(frame[cols["customer_id"]])
        if "customer_id" in cols
        else pd.Series(np.nan, index=frame.index, dtype="str")
    )
    checks = {
        "bad_ts": ts.isna(),
        "missing_sku": sku.isna(),
        "bad_quantity": qty_invalid,
        "bad_price": price_blank | price_bad,
        "bad_cost": cost_bad,
        "zero_quantity": qty == 0,
        RETURN: qty < 0,
        "negative_price": unit_price < 0,
        # given away (a coupon, a free item): no price a customer chose to pay, and the lake's
        # validation would stop the whole day on it
        "zero_price": unit_price == 0,
    }
    reason = pd.Series("", index=frame.index, dtype=object)
    for name in REASONS:
        if name in checks:  # (a price outlier is judged among the lines that pass these)
            reason = reason.mask((reason == "") & checks[name].fillna(False).astype(bool), name)
    out = pd.DataFrame(
        {
            "ts": ts,
            "sku": sku.astype("str"),
            "quantity": qty,
            "unit_price": unit_price.astype("float64"),
            "unit_cost": unit_cost.astype("float64"),
            "customer_id": customer.astype("str"),
        },
        index=frame.index,
    )
    if "transaction_id" in cols:
        out["transaction_id"] = _mapped_ids(frame[cols["transaction_id"]])
    if "category" in cols:  # a catalogue fact (pooling thin SKUs), not a column of the feed
        out["category"] = _ids(frame[cols["category"]])
    return out, reason


def _price_outliers(canon: pd.DataFrame, reason: pd.Series) -> pd.Series:
    """``reason`` with "price_outlier" for the lines priced more than `MAX_PRICE_FACTOR` x off
    their SKU's median that day (a line of a few cents, a cents-for-dollars slip): the lake's
    validation applies the same rule to a whole day and would stop the night on one line."""
    rows = canon.loc[reason == ""]
    if rows.empty:
        return reason
    price = rows["unit_price"]
    median = price.groupby([rows["ts"].dt.date, rows["sku"]]).transform("median")
    ratio = price / median
    bad = (ratio > MAX_PRICE_FACTOR) | (ratio < 1 / MAX_PRICE_FACTOR)
    return reason.mask(bad.reindex(reason.index, fill_value=False), "price_outlier")


def _contract(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns and dtypes exactly as the synthetic feed writes them."""
    out = frame[list(TRANSACTION_COLUMNS)].copy()
    out["transaction_id"] = out["transaction_id"].astype("str")
    out["ts"] = out["ts"].astype("datetime64[ns, UTC]")
    out["sku"] = out["sku"].astype("str")
    out["quantity"] = out["quantity"].astype("int64")
    out["unit_price"] = out["unit_price"].astype("float64")
    out["unit_cost"] = out["unit_cost"].astype("float64")
    out["customer_id"] = out["customer_id"].astype("str")
    return out.sort_values(["ts", "transaction_id"], kind="stable").reset_index(drop=True)


def _with(frame: pd.DataFrame, category: pd.Series | None) -> pd.DataFrame:
    """The feed's rows with their category (by transaction id), where the export has one."""
    if category is None:
        return frame
    return frame.assign(category=frame["transaction_id"].map(category).astype(object))


def _rejects(frame: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    """The rejected source rows as text, with their 1-based row number and reason first."""
    bad = reason != ""
    src = frame.loc[bad].astype(str)
    src = src.rename(columns={c: f"{c}_source" for c in ("source_row", "reason") if c in src})
    src.insert(0, "reason", reason[bad].astype(str))
    src.insert(0, "source_row", (np.flatnonzero(bad.to_numpy()) + 1).astype("int64"))
    return src.reset_index(drop=True)


def _merge(lake: Lake, date: dt.date, new: pd.DataFrame, replace: bool) -> tuple[pd.DataFrame, int]:
    """This file's rows for ``date`` plus, unless replacing, earlier rows with other ids."""
    if replace or not lake.has_partition("raw", FEED, date):
        return new, 0
    old = lake.read_partition("raw", FEED, date)
    missing = [c for c in TRANSACTION_COLUMNS if c not in old.columns]
    if missing:
        raise IngestError(
            f"existing partition {lake.uri(lake.partition_prefix('raw', FEED, date))} lacks "
            f"{', '.join(missing)}; move it to quarantine or re-run with --replace"
        )
    keep = old[~old["transaction_id"].isin(new["transaction_id"])]
    if keep.empty:
        return new, 0
    return pd.concat([_contract(keep), new], ignore_index=True), len(keep)


def ingest_transactions(
    source: Path, mapping: dict[str, Any] | Path, lake: Lake, *, replace: bool = False
) -> IngestReport:
    """Map a POS export onto the transactions feed and write it to ``raw/`` one UTC day a partition.

    Args:
        source: a ``.csv`` (also ``.tsv``/``.txt``) or ``.parquet`` file.
        mapping: the column mapping, as data or a JSON file (see ``load_mapping``).
        lake: where ``raw/transactions`` and ``quarantine/ingest/<stem>/`` are written.
        replace: rewrite each touched date with this file's rows only, instead of merging them by
            transaction id into what is there (use it to correct an earlier ingest).

    Returns:
        What was read, written and rejected.

    Raises:
        IngestError: the mapping is invalid or does not fit the file, or the file is unreadable.
        LakeError: the lake refused a read or write.
    """
    source = Path(source)
    m = load_mapping(mapping)
    frame = _read_source(source, m)
    _check_columns(frame, m, source)
    canon, reason = _canonical(frame, m)
    reason = _price_outliers(canon, reason)
    ok = reason == ""
    good = canon.loc[ok].copy()
    if "transaction_id" in good:
        blank_id = good["transaction_id"].isna()
        if blank_id.any():
            good.loc[blank_id, "transaction_id"] = _content_ids(good.loc[blank_id])
    else:
        good["transaction_id"] = _content_ids(good)
    category = good.set_index("transaction_id")["category"] if "category" in good else None
    good = _contract(good)

    partitions = []
    kept = 0
    dates = sorted(set(good["ts"].dt.date))
    day = good["ts"].dt.date
    for date in dates:
        rows, k = _merge(lake, date, good.loc[day == date], replace)
        kept += k
        partitions.append(lake.write_partition("raw", FEED, date, _contract(rows)))

    # The SKUs' facts the export gives (price; cost if mapped) go to the catalogue, with what it
    # lacks (capacity; cost if not mapped) estimated and marked as assumed. SKUs already there
    # keep their entry: a pricing team may have corrected it.
    horizon = default_world().horizon  # capacity: 1.2 of its horizons (a week) of sales
    horizon_hours = float(horizon.steps * horizon.step_hours)
    catalogue = (
        add_to_catalogue(lake, dates[0], derive_items(_with(good, category), horizon_hours), False)
        if dates
        else []
    )

    counts = reason[~ok].value_counts()
    base = ingest_quarantine(source.stem)
    buf = _rejects(frame, reason).to_parquet(index=False)
    lake.write_bytes(base + "rejects.parquet", buf)
    report = IngestReport(
        source=str(source),
        rows_read=len(frame),
        rows_written=len(good),
        rejected={r: int(counts[r]) for r in REASONS if r != RETURN and r in counts},
        returns=int(counts.get(RETURN, 0)),
        dates=dates,
        skus=sorted(good["sku"].unique().tolist()),
        partitions=partitions,
        rows_kept=kept,
        rejects_uri=lake.uri(base + "rejects.parquet"),
        summary_uri=lake.uri(base + "summary.json"),
        mapping=m.to_dict(),
        catalogue=catalogue[0] if catalogue else "",
    )
    summary = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    lake.write_bytes(base + "summary.json", summary.encode("utf-8"))
    return report
