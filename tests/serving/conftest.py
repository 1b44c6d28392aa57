"""A pricing service over the tiny world: a lake with its catalogue, a registry (SQLite), and
helpers to register a champion."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.data.catalogue import write_catalogue
from pipeline.data.lake import Lake
from pipeline.orchestration.procs import ProcessTree
from pipeline.release.registry import CHAMPION, Registry
from pipeline.settings import Settings
from serving.app import create_app
from serving.config import ServeSettings
from sim.catalogue import Catalogue
from sim.world import World
from tests.conftest import register_tiny_version, tiny_world_dict

ANCHOR = dt.date(2026, 1, 5)  # a Monday: the catalogue's first snapshot starts the seasons
TOKEN = "test-admin-token"
PRICING = str(Path(sys.executable).parent / "pricing")


@dataclass
class Env:
    settings: Settings
    lake: Lake
    world: World

    def registry(self) -> Registry:
        return Registry(self.settings, self.lake)

    def process_env(self, **extra: str) -> dict[str, str]:
        """The environment of a `pricing` process over this data (the machine's MLflow URI
        left out), with ``extra`` on top."""
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        return {
            **env,
            "PRICING_DATA_DIR": str(self.settings.data_dir),
            "PRICING_MODEL_NAME": self.settings.model_name,
            "PRICING_ADMIN_TOKEN": TOKEN,
            **extra,
        }

    def champion(self, seed: int = 0) -> str:
        """Register a tiny PPO version and make it the champion."""
        reg = self.registry()
        version = register_tiny_version(reg, seed, f"2026-01-0{seed + 5}")
        reg.client.set_registered_model_alias(reg.name, CHAMPION, version)
        return version

    def client(self, **serve: object) -> TestClient:
        knobs = {"poll_seconds": 3600.0, "flush_seconds": 0.2, **serve}
        return TestClient(create_app(self.settings, ServeSettings(**knobs)))  # type: ignore[arg-type]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path / "data",
        model_name="serve-agent",
        admin_token=TOKEN,
        mlflow_tracking_uri="",
    )
    lake = Lake.from_uri(settings.lake)
    world = World.model_validate(tiny_world_dict())
    write_catalogue(lake, ANCHOR, Catalogue.of_world(world))
    yield Env(settings, lake, world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def request(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: object = None
    ) -> tuple[int, dict[str, object]]:
        headers = {"Content-Type": "application/json"}
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")


@pytest.fixture
def served(env: Env, tmp_path: Path) -> Iterator[Served]:
    env.champion()
    port = _free_port()
    log = tmp_path / "serve.log"
    process_env = env.process_env(
        PRICING_SERVE_TREATMENT_SHARE="0.5", PRICING_SERVE_FLUSH_SECONDS="0.5"
    )
    cmd = [
        PRICING,
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    with ProcessTree(grace_s=5.0) as tree:
        proc = tree.spawn(cmd, process_env, log)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield Served(port, proc, log)
        # the test stopped it (its workers may take a moment longer under load), or the tree will
        settle = time.monotonic() + 10
        while proc.poll() is not None and tree.pids() and time.monotonic() < settle:
            time.sleep(0.1)
        assert not tree.pids() or proc.poll() is None, tree.pids()
