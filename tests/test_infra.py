"""The production stack in infra/: docker-compose, Prometheus and Grafana files, checked without a
Docker engine (`docker compose config` runs only where the Compose CLI is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.settings import Settings

INFRA = Path(__file__).resolve().parents[1] / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "pushgateway",
    "prometheus",
    "grafana",
    "inference",
}
AIRFLOW_SERVICES = sorted(s for s in REQUIRED_SERVICES if s.startswith("airflow-"))
# Variables with the PRICING_ prefix that are not Settings fields, and who reads them.
PRICING_NOT_SETTINGS = {
    "PRICING_NIGHTLY_CRON": "dags/pricing_nightly.py",
    "PRICING_NIGHTLY_RETRY_DELAY_S": "dags/pricing_nightly.py",
    "PRICING_MONITOR_CRON": "dags/pricing_monitor.py",
    "PRICING_ROLLOUT_CRON": "dags/pricing_rollout.py",
    "PRICING_CLUSTERS": "dags/pricing_nightly.py",
}
# What the pipeline needs to run against the stack, in every worker and the inference service.
PIPELINE_ENV = {
    "PRICING_DATA_DIR",
    "PRICING_LAKE_URI",
    "PRICING_S3_ENDPOINT_URL",
    "PRICING_ADMIN_TOKEN",
    "PRICING_LOCK_URI",
    "PRICING_PUSHGATEWAY_URL",
    "MLFLOW_TRACKING_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
MONITOR_METRICS = {
    "pricing_monitor_psi",
    "pricing_monitor_psi_max",
    "pricing_monitor_drift",
    "pricing_monitor_decisions",
    "pricing_monitor_conversion",
    "pricing_monitor_revenue",
    "pricing_monitor_gross_profit",
    "pricing_monitor_margin",
    "pricing_monitor_exploration_rate",
    "pricing_monitor_action_share",
    "pricing_monitor_last_run_timestamp_seconds",
    "pricing_parity_alarm",
    "pricing_parity_mismatch_rate",
    "pricing_parity_reward_gap",
    "pricing_parity_reward_gap_low",
    "pricing_parity_reward_gap_high",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
# ...unless the variable names a file (e.g. the auth manager's passwords file): a path, no secret.
NOT_SECRET_NAME = re.compile(r"_FILE$")
# A whole value that is one required reference: ${VAR:?message}
REQUIRED_REF = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]*\}$")
URL_CREDENTIALS = re.compile(r"://([^:/@\s]+):([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _settings_env_names() -> set[str]:
    from serving.config import ServeSettings

    return {f"PRICING_{name.upper()}" for name in Settings.model_fields} | {
        f"PRICING_SERVE_{name.upper()}" for name in ServeSettings.model_fields
    }


def test_every_required_service_exists(compose: dict[str, Any], services: dict) -> None:
    assert "version" not in compose, "Compose spec: no top-level version key"
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_pricing_variables_are_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    known = _settings_env_names() | set(PRICING_NOT_SETTINGS)
    for name, service in services.items():
        for var in _env(service):
            if var.startswith("PRICING_"):
                assert var in known, (
                    f"{name}: {var} is not a field of pipeline.settings.Settings "
                    f"(fields: {sorted(_settings_env_names())})"
                )


def test_workers_and_inference_get_the_pipeline_env(services: dict) -> None:
    for name in [*AIRFLOW_SERVICES, "inference"]:
        if name == "airflow-init":
            continue
        env = _env(services[name])
        missing = PIPELINE_ENV - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["PRICING_LAKE_URI"].startswith("s3://pricing/")
        assert env["PRICING_LOCK_URI"].startswith("postgresql+psycopg2://")
        assert env["PRICING_LOCK_URI"].endswith("/mlflow")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # the DAG files read their schedules when the dag-processor parses them
    assert set(PRICING_NOT_SETTINGS) <= set(_env(services["airflow-dag-processor"]))


def test_airflow_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
        for secret in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
            assert REQUIRED_REF.match(env[secret]), f"{name}: {secret} must come from .env"
    init = json.dumps(services["airflow-init"].get("command"))
    assert "airflow db migrate" in init
    assert "airflow pools set pricing_promotion 1" in init


def test_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["airflow-worker"]
    assert "container_name" not in worker, "a container_name prevents --scale airflow-worker=N"
    assert not worker.get("ports"), "published ports collide when workers are scaled"
    assert "celery worker" in json.dumps(worker.get("command"))


def test_inference_is_behind_the_serving_profile(services: dict) -> None:
    inference = services["inference"]
    assert inference.get("profiles") == ["serving"]
    assert inference["command"][:2] == ["pricing", "serve"]


def test_no_literal_secrets(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for var, value in _env(service).items():
            if SECRET_NAME.search(var) and not NOT_SECRET_NAME.search(var):
                assert REQUIRED_REF.match(value), (
                    f"{name}: {var} must be a ${{VAR:?...}} reference to infra/.env, not a literal"
                )
            for _user, password in URL_CREDENTIALS.findall(value):
                assert REQUIRED_REF.match(password), f"{name}: {var} has a literal password"
        for part in json.dumps(service.get("command", "")).split():
            for _user, password in URL_CREDENTIALS.findall(part):
                assert password.startswith("${"), f"{name}: literal password in its command"


def test_env_example_lists_every_required_variable() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))
    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    missing = required - set(example)
    assert not missing, f".env.example lacks {sorted(missing)}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "change-me", f".env.example: {key} must be a placeholder"


def test_prometheus_scrapes_pushgateway_and_inference() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for name, job in jobs.items()
    }
    push = next(name for name, t in targets.items() if "pushgateway:9091" in t)
    assert jobs[push].get("honor_labels") is True
    assert any("inference:8000" in t for t in targets.values())


def test_prometheus_alerts_on_served_parity() -> None:
    """The alert rules file is loaded, and pages on the served-parity gauge the monitor pushes."""
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    rules = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert "pricing_parity_alarm" in alerts["PricingServedParity"]["expr"]
    compose = (INFRA / "docker-compose.yml").read_text()
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose


def _dashboard() -> dict[str, Any]:
    return json.loads((INFRA / "grafana" / "dashboards" / "pricing.json").read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def _service_metrics() -> dict[str, set[str]]:
    """The pricing service's metric families (serving/metrics.py) and the series names each
    exposes (a counter's ``_total``, a histogram's ``_bucket``/``_count``/``_sum``)."""
    from prometheus_client.metrics import MetricWrapperBase

    from serving import metrics

    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
                out[family.name] = {family.name + s for s in suffixes.get(family.type, ("",))}
    return out


def test_grafana_dashboard_queries_the_monitor_metrics() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "pricing-monitor"
    service = _service_metrics()
    known = MONITOR_METRICS | {name for names in service.values() for name in names}
    seen: set[str] = set()
    for panel in _panels(dashboard):
        exprs = [t["expr"] for t in panel.get("targets", []) if "expr" in t]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            # metric names, not label values such as job="pricing_monitor"
            unquoted = re.sub(r'"[^"]*"', '""', expr)
            names = set(re.findall(r"\bpricing_[a-z0-9_]+", unquoted))
            assert names, f"panel {panel['title']!r}: {expr} names no monitor metric"
            unknown = names - known
            assert not unknown, f"panel {panel['title']!r} queries unknown metrics {unknown}"
            seen |= names
    assert seen >= MONITOR_METRICS, f"no panel for {sorted(MONITOR_METRICS - seen)}"
    missing = [family for family, names in service.items() if not names & seen]
    assert not missing, f"no panel for the service's {missing}"


def test_grafana_psi_panel_has_the_drift_threshold() -> None:
    psi = [
        p
        for p in _panels(_dashboard())
        if any(re.search(r"\bpricing_monitor_psi\{", t["expr"]) for t in p["targets"])
    ]
    assert psi
    steps = psi[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert any(step["value"] == 0.2 for step in steps)
    assert psi[0]["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {ds["uid"] for ds in datasources["datasources"]}
    for panel in _panels(_dashboard()):
        assert panel["datasource"]["uid"] in uids
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.yml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers and providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    return [docker, "compose"] if probe.returncode == 0 else None


@pytest.mark.parametrize("profile", [[], ["--profile", "serving"]], ids=["default", "serving"])
def test_docker_compose_config_parses(profile: list[str]) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker compose CLI is not installed")
    args = [*cli, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), *profile, "config", "-q"]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr


def test_docker_compose_names_a_missing_secret(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker compose CLI is not installed")
    env_file = tmp_path / "no-secret.env"
    env_file.write_text(
        "\n".join(
            line
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("AIRFLOW_JWT_SECRET=")
        )
    )
    environ = {k: v for k, v in os.environ.items() if k != "AIRFLOW_JWT_SECRET"}
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=environ,
    )
    assert result.returncode != 0
    assert "set AIRFLOW_JWT_SECRET in infra/.env" in result.stderr
