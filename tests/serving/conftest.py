"""A pricing service over the tiny world: a lake with its catalogue, a registry (SQLite), and
helpers to register a champion."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.data.catalogue import write_catalogue
from pipeline.data.lake import Lake
from pipeline.release.registry import CHAMPION, Registry
from pipeline.settings import Settings
from serving.app import create_app
from serving.config import ServeSettings
from sim.catalogue import Catalogue
from sim.world import World
from tests.conftest import register_tiny_version, tiny_world_dict

ANCHOR = dt.date(2026, 1, 5)  # a Monday: the catalogue's first snapshot starts the seasons
TOKEN = "test-admin-token"


@dataclass
class Env:
    settings: Settings
    lake: Lake
    world: World

    def registry(self) -> Registry:
        return Registry(self.settings, self.lake)

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
