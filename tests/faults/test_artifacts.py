"""Corrupt and truncated model artifacts (the agent's zip, the manifest, the world file) in the
registry's artifact store: refused before anything is unpickled, the champion left in place,
`pricing doctor` naming the version, and a verified version promotable as ever."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stable_baselines3

from pipeline.data.lake import open_lake
from pipeline.model.artifacts import ModelIntegrityError
from pipeline.release.doctor import diagnose
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.conftest import register_tiny_version


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    settings = Settings(data_dir=tmp_path_factory.mktemp("artifacts"), model_name="artifacts")
    reg = Registry(settings, open_lake(settings))
    for seed in range(2):
        register_tiny_version(reg, seed, f"2026-01-0{seed + 1}")
    reg.promote("1", None, "first champion", who="test")
    return reg


def _files_of(reg: Registry, version: str, name: str) -> list[Path]:
    """The stored copies of one artifact of ``version`` (logged model and registered copy)."""
    digest = reg.version(version).tags["agent_sha256"]
    out = []
    for zip_path in reg.settings.data_dir.rglob("agent.zip"):
        if hashlib.sha256(zip_path.read_bytes()).hexdigest() == digest:
            out.append(zip_path.parent / name)
    assert out, f"no stored {name} of v{version}"
    return out


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _manifest(data: bytes) -> bytes:
    manifest = json.loads(data)
    manifest["agent_sha256"] = "0" * 64  # points the check at a file of the attacker's choosing
    return json.dumps(manifest).encode()


DAMAGE: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "model zip, one byte flipped": ("agent.zip", _flip),
    "model zip, truncated": ("agent.zip", lambda d: d[: len(d) // 3]),
    "manifest, hash edited": ("manifest.json", _manifest),
    "world file, truncated": ("world.json", lambda d: d[: len(d) // 2]),
}


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any SB3 load (the unpickling) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an unverified model was unpickled")

    for algo in (stable_baselines3.PPO, stable_baselines3.DQN):
        monkeypatch.setattr(algo, "load", refuse)
    yield


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_champion_is_refused_before_unpickling(
    registry: Registry, damage: str, no_unpickling: None, fault_row: Any
) -> None:
    name, change = DAMAGE[damage]
    files = _files_of(registry, "1", name)
    saved = [f.read_bytes() for f in files]
    try:
        for f in files:
            f.write_bytes(change(f.read_bytes()))
        with pytest.raises(ModelIntegrityError, match="refusing to load"):
            registry.load("1")
        assert registry.champion_version() == "1"  # the champion stays; loading it is refused
        [finding] = [f for f in diagnose(registry).findings if not f.ok]
        assert finding.check == "champion verifiable" and "v1" in finding.detail
    finally:
        for f, data in zip(files, saved, strict=True):
            f.write_bytes(data)
    assert diagnose(registry).healthy
    fault_row(
        f"corrupt artifact: {damage}",
        "bytes of the stored model directory changed",
        True,
        0,
        "ModelIntegrityError: model files hash to …, the registry recorded …; refusing to load "
        "(the service keeps its fallback; `pricing doctor` names the version)",
    )


def test_a_verified_version_replaces_a_damaged_champion(registry: Registry) -> None:
    [zip_path, *_] = _files_of(registry, "1", "agent.zip")
    saved = zip_path.read_bytes()
    zip_path.write_bytes(_flip(saved))
    try:
        registry.promote("2", "1", "v1's files are damaged", who="oncall")
        assert registry.load("2").version == "2" and diagnose(registry).healthy
    finally:
        zip_path.write_bytes(saved)
