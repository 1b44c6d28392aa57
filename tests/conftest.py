from __future__ import annotations

import json
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.lake import Lake
from sim.world import World, default_world


def tiny_world_dict() -> dict:
    """Two small SKUs over two days: every test that needs the exact optimum runs in a second."""
    w = json.loads(default_world().to_json())
    w["name"] = "tiny"
    w["horizon"]["steps"] = 48
    w["skus"] = [
        {
            "id": "scarce",
            "ref_price": 20.0,
            "unit_cost": 9.0,
            "arrival_rate": 6.0,
            "capacity": 25,
            "initial_inventory": 25,
            "restock_every": 24,
            "restock_qty": 10,
            "clearance_target": 0.0,
        },
        {
            "id": "overstock",
            "ref_price": 50.0,
            "unit_cost": 30.0,
            "arrival_rate": 3.0,
            "capacity": 40,
            "initial_inventory": 40,
            "restock_every": 0,
            "restock_qty": 0,
            "clearance_target": 0.8,
        },
    ]
    return w


def register_tiny_version(
    registry: object, seed: int, logical_date: str, experiment_name: str | None = None
) -> str:
    """Train a tiny PPO agent on the tiny world and register it; returns the version number.

    ``registry`` is a `pipeline.release.registry.Registry` (typed loosely so importing this file stays
    light)."""
    import mlflow

    from pipeline.model.train import TrainConfig, train_agent
    from pipeline.release.registry import Registry
    from pipeline.tracking import experiment

    assert isinstance(registry, Registry)
    world = World.model_validate(tiny_world_dict())
    config = TrainConfig(
        timesteps=384, n_envs=8, n_steps=48, batch_size=96, n_epochs=1, seed=seed, net_arch=(16,)
    )
    model = train_agent(world, config)
    with experiment(registry.settings, experiment_name), mlflow.start_run():
        mv = registry.register_candidate(
            model, world, "ppo", {"logical_date": logical_date, "git_commit": "x"}
        )
    return str(mv.version)


@pytest.fixture
def tiny_world() -> World:
    return World.model_validate(tiny_world_dict())


@pytest.fixture
def tiny_world_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_world_dict()))
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server over real HTTP on a free local port, shared by the session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_lake_uri(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """``s3://<fresh bucket>/lake`` on the moto server, with dummy credentials in the environment."""
    import boto3

    # Dummy credentials, and no profile or config file of the machine's user can leak in.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """The same lake API over a local directory and over S3 (moto's server, real HTTP)."""
    if request.param == "local":
        return Lake.from_uri(str(tmp_path / "lake"))
    uri = request.getfixturevalue("s3_lake_uri")
    return Lake.from_uri(uri, endpoint_url=request.getfixturevalue("s3_endpoint"))


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test builds its own Settings: no tracking URI of the machine or an earlier test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ---------------------------------------------------------------------------------------------
# the fault table: every fault-injection case (tests/faults, the service's) records a row, and
# the run prints them all at the end ("what survives what" in the README). Rows are files, so
# that xdist's workers and the controller that prints them share them.
# ---------------------------------------------------------------------------------------------
def _fault_dir(config: pytest.Config) -> Path:
    return Path(config.rootpath) / ".pytest_cache" / "fault-table"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        shutil.rmtree(_fault_dir(session.config), ignore_errors=True)


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``fault_row(fault, injected, survived, lost, sees)``: one row of the fault table."""
    folder = _fault_dir(request.config)
    folder.mkdir(parents=True, exist_ok=True)

    def record(fault: str, injected: str, survived: bool, lost: int, sees: str) -> None:
        row = {"fault": fault, "injected": injected, "survived": survived, "lost": lost}
        row["sees"] = sees
        (folder / f"{uuid.uuid4().hex}.json").write_text(json.dumps(row))

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    rows = [json.loads(p.read_text()) for p in sorted(_fault_dir(config).glob("*.json"))]
    if not rows:
        return
    rows.sort(key=lambda r: r["fault"])
    terminalreporter.section("what survives what (injected faults)")
    terminalreporter.write_line("fault | injected | survived | data lost | the operator sees")
    for r in rows:
        survived = "yes" if r["survived"] else "NO"
        line = f"{r['fault']} | {r['injected']} | {survived} | {r['lost']} | {r['sees']}"
        terminalreporter.write_line(line)
