"""Live metrics (prometheus-client). With several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by
`pricing serve` before they start, and /metrics aggregates every worker's files."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter("pricing_requests_total", "HTTP requests", ["endpoint", "status"])
LATENCY = Histogram(
    "pricing_request_seconds", "request latency", ["endpoint"], buckets=LATENCY_BUCKETS
)
ANSWERS = Counter("pricing_answers_total", "prices answered", ["policy", "arm"])
ACTIONS = Counter("pricing_actions_total", "price moves decided", ["arm", "action"])
EXPLORED = Counter("pricing_explored_total", "decisions that explored", ["arm"])
CLIPS = Counter("pricing_guardrail_clips_total", "decisions a guardrail changed", ["arm"])
FALLBACKS = Counter("pricing_fallback_answers_total", "treatment answers by the fallback pricer")
RELOADS = Counter("pricing_model_reloads_total", "champion loads", ["result"])
OUTCOMES = Counter("pricing_outcomes_total", "outcomes reported", ["arm", "outcome"])
REVENUE = Counter("pricing_revenue_total", "revenue of reported purchases", ["arm"])
MARGIN = Counter("pricing_margin_total", "margin of reported purchases", ["arm"])
SHARE = Gauge("pricing_treatment_share", "share of customers in treatment", multiprocess_mode="max")
EPSILON = Gauge("pricing_epsilon", "treatment exploration rate now", multiprocess_mode="max")
CHAMPION = Gauge(
    "pricing_champion_version", "version served in treatment (0: fallback)", multiprocess_mode="max"
)
WAITING = Gauge(
    "pricing_decisions_waiting", "decisions waiting for outcome or export", multiprocess_mode="max"
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
