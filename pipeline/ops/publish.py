"""Where the monitor publishes a window: a report in the lake, metrics in MLflow and on the
Prometheus Pushgateway, and the watermark that says where the next window starts.

- ``reports/monitor/date=D/hour=HH.json``: the window's report;
- the MLflow run "monitor D" in the experiment ``pricing-monitor``, one point per hour;
- gauges ``pricing_monitor_*`` (job ``pricing_monitor``), when ``PRICING_PUSHGATEWAY_URL`` is set;
- ``reports/monitor/watermark.json``: the end of the last published window.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import mlflow
from mlflow.entities import Metric
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from pipeline.contracts import MONITOR_EXPERIMENT, MONITOR_PREFIX, MONITOR_WATERMARK
from pipeline.data.lake import Lake, open_lake
from pipeline.settings import Settings
from pipeline.tracking import experiment

EXPERIMENT = MONITOR_EXPERIMENT
PUSH_JOB = "pricing_monitor"


WATERMARK = MONITOR_WATERMARK


def report_path(start: dt.datetime, end: dt.datetime) -> str:
    """``date=D/hour=HH.json`` for a clock hour; other windows name their end too."""
    day = f"{MONITOR_PREFIX}/date={start.date().isoformat()}"
    if start.minute == start.second == start.microsecond == 0 and end - start == dt.timedelta(
        hours=1
    ):
        return f"{day}/hour={start.hour:02d}.json"
    return f"{day}/{start.strftime('%H%M%S')}-{end.strftime('%Y%m%dT%H%M%S')}.json"


def watermark(settings: Settings, lake: Lake | None = None) -> dt.datetime | None:
    """The end of the last window the monitor published, or None."""
    lake = lake or open_lake(settings)
    if not lake.exists(WATERMARK):
        return None
    end = dt.datetime.fromisoformat(json.loads(lake.read_bytes(WATERMARK))["end"])
    return end if end.tzinfo else end.replace(tzinfo=dt.UTC)


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    k, d = report["kpis"], report["drift"]
    out: dict[str, float] = {"decisions": float(k["decisions"])}
    for name in ("conversion", "revenue", "gross_profit", "margin", "exploration_rate"):
        if k.get(name) is not None:
            out[name] = float(k[name])
    for action, share in k.get("action_share", {}).items():
        out[f"action_share_{action}"] = float(share)
    for feature, value in d.get("psi", {}).items():
        out[f"psi_{feature}"] = float(value)
    if "max_psi" in d:
        out["psi_max"] = float(d["max_psi"])
    out["drift"] = 1.0 if d.get("status") == "drift" else 0.0
    out.update({f"parity_{k}": v for k, v in _parity(report).items()})
    return out


def _parity(report: dict[str, Any]) -> dict[str, float]:
    """The last night's served parity as numbers (none when it was not judged)."""
    parity = report.get("parity") or {}
    if not parity.get("judged"):
        return {}
    gap, ci = parity.get("gap"), parity.get("gap_ci95") or (None, None)
    numbers = {
        "alarm": 1.0 if parity.get("alarm") else 0.0,
        "mismatch_rate": parity.get("mismatch_rate"),
        "reward_gap": gap,
        "reward_gap_low": ci[0],
        "reward_gap_high": ci[1],
    }
    # an estimate that could not be made (no support: the report says null) is left out, and
    # the alarm, which it raised, still goes out
    return {k: float(v) for k, v in numbers.items() if v is not None}


def log_to_mlflow(settings: Settings, report: dict[str, Any]) -> str:
    """Metrics of the window in the MLflow run "monitor D" (one run per UTC day; step = hour)."""
    start = dt.datetime.fromisoformat(report["window"]["start"])
    end = dt.datetime.fromisoformat(report["window"]["end"])
    day = start.date().isoformat()
    with experiment(settings, EXPERIMENT) as exp_id:
        client = mlflow.MlflowClient()
        runs = client.search_runs([exp_id], f"tags.monitor_date = '{day}'", max_results=1)
        if runs:
            run_id = str(runs[0].info.run_id)
        else:
            run = client.create_run(exp_id, run_name=f"monitor {day}", tags={"monitor_date": day})
            run_id = str(run.info.run_id)
        stamp = int(end.timestamp() * 1000)
        metrics = [Metric(k, v, stamp, start.hour) for k, v in _metrics(report).items()]
        client.log_batch(run_id, metrics=metrics)
        if report.get("champion"):
            client.set_tag(run_id, "champion", report["champion"])
    return run_id


def push_metrics(settings: Settings, report: dict[str, Any]) -> None:
    """Gauges ``pricing_monitor_*`` to the Pushgateway (job ``pricing_monitor``)."""
    registry = CollectorRegistry()
    k, d = report["kpis"], report["drift"]

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"pricing_monitor_{name}", doc, labels, registry=registry)

    plain = {
        "decisions": ("prices shown in the window", k["decisions"]),
        "conversion": ("purchases per price shown", k.get("conversion")),
        "revenue": ("revenue in the window", k.get("revenue")),
        "gross_profit": ("revenue minus the unit cost of units sold", k.get("gross_profit")),
        "margin": ("gross profit / revenue", k.get("margin")),
        "exploration_rate": (
            "share of prices shown off the favoured action",
            k.get("exploration_rate"),
        ),
        "psi_max": ("largest market-feature PSI", d.get("max_psi")),
        "drift": ("1 when a market feature drifted", 1.0 if d.get("status") == "drift" else 0.0),
        "last_run_timestamp_seconds": ("when the monitor last ran", time.time()),
    }
    for name, (doc, value) in plain.items():
        if value is not None:
            gauge(name, doc).set(float(value))
    shares = gauge("action_share", "share of prices shown per action", ("action",))
    for action, share in k.get("action_share", {}).items():
        shares.labels(action=action).set(float(share))
    psis = gauge("psi", "population stability index vs the champion's training data", ("feature",))
    for feature, value in d.get("psi", {}).items():
        psis.labels(feature=feature).set(float(value))
    docs = {
        "alarm": "1 when the served champion does not do or earn what its evaluation says",
        "mismatch_rate": "share of unexplored served decisions not the champion's own",
        "reward_gap": "served earnings vs the simulator's, relative (last night)",
        "reward_gap_low": "lower end of the 95 % interval of the reward gap",
        "reward_gap_high": "upper end of the 95 % interval of the reward gap",
    }
    for name, value in _parity(report).items():
        Gauge(f"pricing_parity_{name}", docs[name], registry=registry).set(value)
    push_to_gateway(
        settings.pushgateway_url,
        job=PUSH_JOB,
        registry=registry,
        grouping_key={"model": settings.model_name},
        timeout=10,
    )


def publish_window(
    settings: Settings, lake: Lake, report: dict[str, Any], start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    """Write the window's report, log and push its metrics, move the watermark to ``end`` (never
    back); returns where each went."""
    path = report_path(start, end)
    lake.write_bytes(path, json.dumps(report, indent=2, allow_nan=False).encode())
    where: dict[str, Any] = {"report_uri": lake.uri(path)}
    where["mlflow_run_id"] = log_to_mlflow(settings, report)
    if settings.pushgateway_url:
        push_metrics(settings, report)
        where["pushed_to"] = settings.pushgateway_url
    last = watermark(settings, lake)
    if last is None or end > last:
        lake.write_bytes(WATERMARK, json.dumps({"end": end.isoformat()}).encode())
    return where
