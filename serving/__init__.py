"""The pricing service: the champion policy behind an HTTP API (`pricing serve`).

- `serving.config`: the service's settings (``PRICING_SERVE_*``);
- `serving.schemas`: request and answer models (field-level 422s);
- `serving.market`: the live market a request describes, turned into the simulator's observation;
- `serving.champion`: the champion from the registry, followed without restarts, with the rule-based
  pricer as the fallback;
- `serving.decide`: arms, exploration, guardrails, the price held per SKU, arm and period;
- `serving.decision_log`: every price shown joined with its outcome, written to the lake's
  decisions feed;
- `serving.metrics`: Prometheus metrics;
- `serving.service`: the running service, kept current by a background loop;
- `serving.app`: the FastAPI application and its routes.
"""
