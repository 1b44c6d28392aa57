"""The service's faults through FastAPI's test client (the SIGTERM under load of a real uvicorn
process is `tests/serving/test_process.py`): the registry out of reach at start, and a champion
reload failing in the middle of traffic. No 5xx, every price answered is logged once."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pandas as pd
import pytest

from pipeline.release.registry import CHAMPION
from tests.conftest import _free_port, register_tiny_version
from tests.serving.conftest import Env

BODY = {"sku": "scarce", "customer_id": "c1", "inventory": 20, "ts": "2026-01-05T10:15:00Z"}


def _logged(env: Env) -> pd.DataFrame:
    dates = env.lake.list_dates("raw", "decisions")
    return pd.concat([env.lake.read_partition("raw", "decisions", d) for d in dates])


def test_registry_out_of_reach_at_start(
    env: Env,
    monkeypatch: pytest.MonkeyPatch,
    fault_row: Any,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    env = Env(env.settings.model_copy(update={"mlflow_tracking_uri": dead}), env.lake, env.world)
    with env.client(treatment_share=1.0) as client:
        answers = [
            client.post("/v1/price", json={**BODY, "customer_id": f"c{i}"}) for i in range(20)
        ]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["policy"] for a in answers} == {"fallback"}
        ready = client.get("/readyz").json()
        assert ready["policy"] == "fallback" and "registry did not answer" in ready["reason"]
    logged = _logged(env)
    assert set(logged["event_id"]) == {a.json()["event_id"] for a in answers}
    fault_row(
        "service: MLflow out of reach at start",
        "tracking URI pointing at a port nobody listens on",
        True,
        0,
        "200s from the rule-based fallback; /readyz: the registry did not answer (…)",
    )


def test_champion_reload_failing_mid_traffic(env: Env, fault_row: Any) -> None:
    first = env.champion(seed=0)
    registry = env.registry()
    with env.client(treatment_share=1.0, poll_seconds=0.1) as client:
        statuses: list[int] = []
        versions: set[str] = set()
        events: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def traffic(seed: int) -> None:
            i = 0
            while not stop.is_set():
                r = client.post("/v1/price", json={**BODY, "customer_id": f"t{seed}-{i}"})
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.add(str(r.json()["model_version"]))
                        events.append(r.json()["event_id"])
                i += 1

        threads = [threading.Thread(target=traffic, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        second = register_tiny_version(registry, 1, "2026-01-07")
        digest = registry.version(second).tags["agent_sha256"]
        for agent in env.settings.artifacts_dir.rglob("agent.zip"):  # damage only the new one
            if hashlib.sha256(agent.read_bytes()).hexdigest() == digest:
                agent.write_bytes(agent.read_bytes()[:-10] + b"corrupted!")
        registry.client.set_registered_model_alias(registry.name, CHAMPION, second)
        deadline = time.monotonic() + 30
        while client.get("/readyz").json().get("failed_loads", 0) < 1:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.1)
        time.sleep(0.5)  # traffic goes on after the failed reload
        stop.set()
        for t in threads:
            t.join(30)
        ready = client.get("/readyz").json()
    assert statuses and set(statuses) == {200}
    assert versions == {first}  # the loaded champion kept answering
    assert f"v{second} failed" in ready["reason"] and f"still serving v{first}" in ready["reason"]
    logged = _logged(env)
    assert logged["event_id"].is_unique and set(events) <= set(logged["event_id"])
    fault_row(
        "service: champion reload failing mid-traffic",
        "the alias moved to a version whose model zip is corrupted, under load",
        True,
        0,
        f"200s from v{first} throughout; /readyz: loading v{second} failed (ModelIntegrityError…); "
        f"still serving v{first}",
    )
