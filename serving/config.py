"""The service's settings: environment variables with the ``PRICING_SERVE_`` prefix.

The lake, the registry and the admin token are the pipeline's (`pipeline.settings.Settings`); the
A/B split, exploration and guardrails (`pipeline.settings.ServedAs`) are read by the night too, which
evaluates candidates as they will be served.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.settings import ServedAs


class ServeSettings(ServedAs):
    """Every knob of the pricing service; invalid values fail at start, naming the variable.
    The A/B split, exploration and guardrails are `ServedAs`'s, which the night reads too."""

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
