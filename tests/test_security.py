"""The security pass, kept: bandit over the source clean (each exception justified where it
occurs), admin tokens compared in constant time and never written to a log, placeholder secrets
refused, MLflow behind its login as infra/ runs it, and the stack's UIs published on the loopback
only. (A tampered model is refused before unpickling: tests/faults/test_artifacts.py.)"""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.settings import PLACEHOLDERS, Settings

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ("pipeline", "serving", "sim", "dags")


def test_bandit_finds_nothing() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bandit", "-q", "-r", *SOURCE, "-c", "pyproject.toml", "-f", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(run.stdout)
    found = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
    ]
    assert not found, "\n".join(found)
    assert report["metrics"]["_totals"]["loc"] > 10_000  # it did scan the source


def _compared_tokens(tree: ast.AST) -> list[int]:
    """Lines where something named like a token is compared with == or !=."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(o, ast.Eq | ast.NotEq) for o in node.ops
        ):
            names = [ast.unparse(x) for x in (node.left, *node.comparators)]
            if any("token" in n.lower() for n in names) and not any(
                n in ("None", "''", '""') for n in names
            ):
                lines.append(node.lineno)
    return lines


def test_tokens_are_compared_in_constant_time() -> None:
    offenders = []
    for package in SOURCE:
        for path in (ROOT / package).rglob("*.py"):
            for line in _compared_tokens(ast.parse(path.read_text())):
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"compare tokens with hmac.compare_digest: {offenders}"


@pytest.mark.parametrize("value", [*sorted(PLACEHOLDERS), "Change-Me "])
def test_placeholder_admin_tokens_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="PRICING_ADMIN_TOKEN is a placeholder"):
        Settings(admin_token=value)


def test_env_example_placeholders_would_not_start() -> None:
    example = (ROOT / "infra/.env.example").read_text()
    token = next(
        line.split("=", 1)[1]
        for line in example.splitlines()
        if line.startswith("PRICING_ADMIN_TOKEN=")
    )
    with pytest.raises(ValidationError):
        Settings(admin_token=token)


def test_unauthenticated_uis_listen_on_the_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())
    for name in ("mlflow", "prometheus", "pushgateway"):
        for port in compose["services"][name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    from pipeline.orchestration import local_stack

    text = Path(local_stack.__file__).read_text()
    assert '"AIRFLOW__API__HOST": "127.0.0.1"' in text and '"127.0.0.1",' in text


def test_the_admin_token_never_reaches_a_log(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.config import ServeSettings

    secret = "s3cret-admin-token-that-must-not-leak"
    settings = Settings(data_dir=tmp_path, admin_token=secret, mlflow_tracking_uri="")
    caplog.set_level(logging.DEBUG)
    app = create_app(settings, ServeSettings(poll_seconds=3600.0, flush_seconds=0.2))
    with TestClient(app) as client:
        wrong = client.post("/admin/flush", headers={"Authorization": f"Bearer {secret}-wrong"})
        right = client.post("/admin/flush", headers={"Authorization": f"Bearer {secret}"})
    assert wrong.status_code in (401, 403) and secret not in wrong.text
    assert right.status_code == 200
    assert secret not in caplog.text


def test_mlflow_behind_auth_as_infra_runs_it(tmp_path: Path) -> None:
    """infra/ runs MLflow's basic-auth app with infra/mlflow/basic_auth.ini: a request without a
    login is refused, and the pipeline, logged in as infra/'s workers are, registers and
    promotes. (The user store is SQLite here, PostgreSQL in infra/.)"""
    import configparser
    import urllib.error
    import urllib.request
    import uuid

    from pipeline.data.lake import open_lake
    from pipeline.release.registry import Registry
    from tests.conftest import register_tiny_version
    from tests.mlflow_server import MlflowServer

    config = configparser.ConfigParser()
    config.read(ROOT / "infra/mlflow/basic_auth.ini")
    assert config["mlflow"]["database_uri"].endswith("@postgres:5432/mlflow")
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'users.db'}"
    ini = tmp_path / "basic_auth.ini"
    with ini.open("w") as fh:
        config.write(fh)
    password = uuid.uuid4().hex
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(
        tmp_path / "mlflow",
        auth_config=ini,
        env={
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        },
    )
    server.start()
    try:
        search = f"{server.url}/api/2.0/mlflow/registered-models/search"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(search, timeout=10)  # nosec B310: a test server on 127.0.0.1
        assert refused.value.code == 401
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_USERNAME", config["mlflow"]["admin_username"])
            mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
            settings = Settings(
                data_dir=tmp_path / "data", model_name="auth-test", mlflow_tracking_uri=server.url
            )
            reg = Registry(settings, open_lake(settings))
            version = register_tiny_version(reg, 0, "2026-01-01")
            reg.promote(version, None, "first champion", who="test")
            assert reg.champion_version() == version
            mp.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
            with pytest.raises(Exception, match=r"401|nauthorized|credentials"):
                Registry(settings, open_lake(settings)).champion_version()
    finally:
        server.kill()
