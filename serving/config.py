"""The service's settings: environment variables with the ``PRICING_SERVE_`` prefix.

The lake, the registry and the admin token are the pipeline's (`pipeline.settings.Settings`).
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """Every knob of the pricing service; invalid values fail at start, naming the variable."""

    model_config = SettingsConfigDict(
        env_prefix="PRICING_SERVE_", env_file=".env", extra="ignore", frozen=True
    )

    # A/B split
    treatment_share: float = Field(
        0.05, ge=0.0, le=1.0, description="share of customers priced by the champion"
    )
    salt: str = Field("pricing-ab-1", min_length=1, description="salt of the customer hash")
    # exploration
    epsilon: float = Field(
        0.05, ge=0.0, le=1.0, description="treatment: chance of a uniformly random price move"
    )
    epsilon_min: float = Field(0.01, ge=0.0, le=1.0, description="floor of the decaying epsilon")
    epsilon_halflife_hours: float = Field(
        168.0, gt=0.0, description="epsilon halves every this many hours of service"
    )
    control_epsilon: float = Field(
        0.02, ge=0.0, le=1.0, description="control: exploration of the rule-based pricer"
    )
    explore_skus: tuple[str, ...] = Field(
        (), description="SKU ids or category prefixes ('backpack-') that may explore; empty: all"
    )
    # guardrails
    margin_floor: float = Field(
        0.05, ge=0.0, le=1.0, description="never price below unit cost x (1 + margin_floor)"
    )
    max_step_levels: int = Field(
        2, ge=0, description="largest price move per decision period, in ladder steps"
    )
    min_price_ratio: float = Field(0.0, ge=0.0, description="lowest price / reference price")
    max_price_ratio: float = Field(10.0, gt=0.0, description="highest price / reference price")
    # the season clock
    season_start: dt.datetime | None = Field(
        None,
        description="start of a selling season (UTC); seasons repeat every horizon; default: "
        "midnight of the lake's first catalogue snapshot",
    )
    # models and catalogue
    poll_seconds: float = Field(30.0, gt=0.0, description="how often the champion alias is read")
    clusters: bool = Field(
        False,
        description="price each SKU by its cluster's champion (the lake's latest clusters "
        "snapshot; nights run with PRICING_CLUSTERS); SKUs without one get the service's own",
    )
    # the decision log
    outcome_window_seconds: float = Field(
        1800.0, gt=0.0, description="outcomes reported later are refused; default outcome: view"
    )
    flush_seconds: float = Field(5.0, gt=0.0, description="how often due decisions are written")
    writer_id: str = Field("", description="names this process's part files; default: host-pid")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.min_price_ratio >= self.max_price_ratio:
            raise ValueError(
                "PRICING_SERVE_MIN_PRICE_RATIO must be below PRICING_SERVE_MAX_PRICE_RATIO"
            )
        if self.epsilon_min > self.epsilon:
            raise ValueError("PRICING_SERVE_EPSILON_MIN must not exceed PRICING_SERVE_EPSILON")
        return self
