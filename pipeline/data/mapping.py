"""The column mapping of a point-of-sale export: which source column holds each canonical field
of the transactions feed, and how to read the file (timestamp format and zone, CSV dialect).

A mapping file is JSON, for example::

    {"columns": {"transaction_id": "InvoiceNo", "sku": "StockCode", "quantity": "Quantity",
                 "ts": "InvoiceDate", "unit_price": "UnitPrice", "customer_id": "CustomerID"},
     "ts_format": "%m/%d/%Y %H:%M", "timezone": "Europe/London"}

An optional ``category`` column goes to the catalogue (not the feed): the refit pools the demand
estimates of thin SKUs within their category.

`load_mapping` validates it (a pydantic model) and names the offending key and what is allowed.
"""

from __future__ import annotations

import json
import zoneinfo
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from pipeline.errors import PricingError

CANONICAL = (
    "ts",
    "sku",
    "quantity",
    "unit_price",
    "line_total",
    "unit_cost",
    "line_cost",
    "customer_id",
    "transaction_id",
    "category",
)
REQUIRED = ("ts", "sku", "quantity")

class IngestError(PricingError, ValueError):
    """The source file or the mapping is unusable; the message names the field and the fix."""


class Mapping(BaseModel):
    """A validated column mapping (see the module docstring for the file's format).

    Attributes:
        columns: canonical field -> source column.
        ts_format: strptime pattern of the timestamps, or None for ISO 8601 / inference.
        timezone: IANA zone of naive timestamps; values with an offset keep theirs.
        delimiter: CSV field separator, or None for "," (tab for .tsv).
        decimal: decimal mark of numbers in a CSV.
        encoding: text encoding of a CSV.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: dict[str, str]
    ts_format: str | None = None
    timezone: str = "UTC"
    delimiter: str | None = None
    decimal: str = "."
    encoding: str = "utf-8"

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, cols: Any) -> Any:
        if not isinstance(cols, dict) or not cols:
            raise ValueError(
                "'columns' must be an object of canonical field -> source column, e.g. "
                '{"ts": "InvoiceDate", "sku": "StockCode", "quantity": "Quantity", '
                '"unit_price": "UnitPrice"}'
            )
        for name, src in cols.items():
            if name not in CANONICAL:
                raise ValueError(
                    f"unknown field columns.{name}; canonical fields are {', '.join(CANONICAL)}"
                )
            if not isinstance(src, str) or not src:
                raise ValueError(
                    f"columns.{name} must be the name of a source column (got {src!r})"
                )
        for name in REQUIRED:
            if name not in cols:
                raise ValueError(f"columns.{name} is required (the source column of {name})")
        for a, b in (("unit_price", "line_total"), ("unit_cost", "line_cost")):
            if a in cols and b in cols:
                raise ValueError(f"map either columns.{a} or columns.{b}, not both")
        if "unit_price" not in cols and "line_total" not in cols:
            raise ValueError(
                "columns.unit_price (price per unit) or columns.line_total (quantity x price) "
                "is required"
            )
        return cols

    @field_validator("ts_format")
    @classmethod
    def _ts_format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value and value != "ISO8601":
            raise ValueError(
                f"ts_format must be a strptime pattern such as '%d/%m/%Y %H:%M' (got {value!r})"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError) as err:
            raise ValueError(
                f"unknown timezone {value!r}; use an IANA name such as 'Europe/London' or 'UTC'"
            ) from err
        return value

    @field_validator("delimiter", "decimal", mode="before")
    @classmethod
    def _one_char(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and (not isinstance(value, str) or len(value) != 1):
            raise ValueError(f"{info.field_name!r} must be a single character (got {value!r})")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        if not value:
            raise ValueError("encoding must be a name such as 'utf-8' or 'cp1252'")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The mapping as JSON-ready data, as it would be written in a mapping file."""
        return self.model_dump()


def load_mapping(mapping: dict[str, Any] | Path) -> Mapping:
    """Validate a mapping given as data or as a JSON file.

    Raises:
        IngestError: naming the offending key and what is allowed.
    """
    where = "mapping"
    if isinstance(mapping, Path):
        where = f"mapping {mapping}"
        try:
            text = mapping.read_text(encoding="utf-8")
        except OSError as err:
            raise IngestError(f"{where}: cannot read the file ({err.strerror or err})") from err
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise IngestError(
                f"{where}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
            ) from err
    if not isinstance(mapping, dict):
        raise IngestError(f"{where}: must be a JSON object with a 'columns' object")
    try:
        return Mapping.model_validate(mapping)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            key = first["loc"][0]
            message = f"unknown key {key!r}; allowed keys are {', '.join(Mapping.model_fields)}"
        elif first["type"] == "missing":
            message = f"'{first['loc'][0]}' is required"
        else:
            where_in = ".".join(str(p) for p in first["loc"])
            text = str(first["msg"]).removeprefix("Value error, ")
            message = text if first["type"] == "value_error" else f"{where_in}: {text}"
        raise IngestError(f"{where}: {message}") from None
