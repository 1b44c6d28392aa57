"""The pricing service under load, beside a reference built as the field report's service was.

Sets up a data folder with a champion (PPO, the production network 128x128, trained briefly on the
bundled world: inference cost does not depend on how well it was trained) and a catalogue of
``--skus`` SKUs; starts `pricing serve` (``--workers``, treatment share 100 %: every answer from
the champion, with exploration, guardrails, price holds and the decision log on) and the reference
(`bench/reference_service.py`: one uvicorn worker, FastAPI, SB3 ``model.predict`` per request, no
state and no log). Then, on localhost, one after the other:

- saturated throughput of ``POST /v1/price``, both services: ``wrk`` (Debian's package),
  ``--wrk-seconds`` s, 2 threads, 32 connections, requests spread over 100 SKUs and new customers;
- a fixed 1,000 requests/s for ``--hey-seconds`` s: ``hey -c 4 -q 250`` (Debian's package):
  p50/p99 and errors, both services; and the service again with the same rate sent in bursts of
  20 (``-c 20 -q 50``: hey's workers tick together);
- a ``--skus``-SKU ``POST /v1/prices``, as columns (one list per field) and as items (one object
  per SKU): SKUs per second of the call as a client sees it (JSON both ways), for the first call
  of a period (decides every SKU) and the later ones (held);
- the inference alone, one observation: the exported numpy network vs SB3 ``model.predict``.

Goals: ≥ 2x the reference's saturated throughput; p99 ≤ 5 ms with zero errors at
1,000 requests/s; ≥ 200,000 SKUs/s in the batch; ≥ 10x faster inference.

    python bench/serving.py [--workers 2] [--skus 10000] [--wrk-seconds 15] [--hey-seconds 30]

Requires ``wrk`` and ``hey`` (``apt-get install wrk hey``). Prints a table and ``key=value`` lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.orchestration.procs import ProcessTree  # noqa: E402

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"sku":"sku-%05d","customer_id":"w%d-%d","inventory":%d}', counter %% 100, id, counter,
    5 + counter %% 20)
  return wrk.format("POST", "/v1/price", {["Content-Type"]="application/json"}, body)
end
setup = function(thread) thread:set("id", math.random(1, 1000000)) end
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(data: Path, skus: int, timesteps: int) -> tuple[Path, Path]:
    """A champion and a catalogue in ``data``; returns the agent and world files for the reference."""
    import mlflow

    from pipeline.data.catalogue import write_catalogue
    from pipeline.data.lake import open_lake
    from pipeline.model.artifacts import save_agent
    from pipeline.model.train import TrainConfig, train_agent
    from pipeline.release.registry import CHAMPION, Registry
    from pipeline.settings import Settings
    from pipeline.tracking import experiment
    from sim.catalogue import Catalogue
    from sim.world import load_world

    settings = Settings(data_dir=data)
    lake = open_lake(settings)
    world = load_world(None)
    model = train_agent(world, TrainConfig(timesteps=timesteps, n_envs=16, n_steps=168))
    registry = Registry(settings, lake)
    with experiment(settings, "bench-serving"), mlflow.start_run():
        mv = registry.register_candidate(model, world, "ppo", {"logical_date": "bench"})
    registry.client.set_registered_model_alias(registry.name, CHAMPION, str(mv.version))
    big = world.expand(skus, seed=0)
    big = big.with_skus(
        [s.model_copy(update={"id": f"sku-{i:05d}"}) for i, s in enumerate(big.skus)]
    )
    write_catalogue(lake, dt.datetime.now(dt.UTC).date(), Catalogue.of_world(big))
    agent = data / "reference" / "agent.zip"
    save_agent(model, agent)
    world_file = data / "reference" / "world.json"
    world_file.write_text(big.to_json())
    return agent, world_file


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} not ready in 180 s: {log.read_text()[-2000:]}")


def wrk(url: str, seconds: int, work: Path) -> dict[str, float]:
    script = work / "price.lua"
    script.write_text(WRK_SCRIPT.replace("%%", "%"))
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rate,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(bool(errors)),
    }


def hey(url: str, seconds: int, work: Path, clients: int = 4) -> dict[str, float]:
    """``clients`` workers at 1000/clients requests/s each. hey's workers tick in step, so 20
    workers at 50/s send bursts of 20 requests every 20 ms: that measures the burst's queue more
    than the service."""
    body = work / "body.json"
    body.write_text(json.dumps({"sku": "sku-00001", "customer_id": "hey", "inventory": 12}))
    out = subprocess.run(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(clients),
            "-q",
            str(1000 // clients),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def pct(p: str) -> float:
        m = re.search(rf"{p}% in ([\d.]+) secs", out)
        return float(m.group(1)) * 1000 if m else float("nan")

    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    total = sum(int(v) for v in codes.values())
    errors = (
        total
        - int(codes.get("200", 0))
        + len(re.findall(r"^\s+\[\d+\]\s+Get|Post .*error", out, re.M))
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": float(errors),
        "requests": float(total),
    }


def batch(url: str, skus: int, calls: int, form: str, hours_ahead: int) -> dict[str, float]:
    """``form``: ``columns`` (one list per field) or ``items`` (one object per SKU); each form
    prices its own decision period, so its first call decides every SKU."""
    items = [{"sku": f"sku-{i:05d}", "inventory": 5 + i % 20} for i in range(skus)]
    payload: object = items
    if form == "columns":
        payload = {"sku": [i["sku"] for i in items], "inventory": [i["inventory"] for i in items]}
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    ts = now + dt.timedelta(hours=hours_ahead)

    def call(customer: str) -> float:
        body = json.dumps({"customer_id": customer, "ts": ts.isoformat(), form: payload}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
        elapsed = time.perf_counter() - started  # the call: the client's own parsing is not in it
        answer = json.loads(raw)
        got = answer["columns"]["price"] if form == "columns" else answer["prices"]
        assert len(got) == skus
        return elapsed

    first = call(f"{form}-0")
    later = [call(f"{form}-{i}") for i in range(1, calls + 1)]
    return {"first_skus_per_s": skus / first, "held_skus_per_s": skus / float(np.median(later))}


def inference(agent: Path, world_file: Path) -> dict[str, float]:
    import torch

    from pipeline.model.artifacts import load_agent
    from pipeline.model.numpy_policy import export_policy
    from sim.world import load_world

    torch.set_num_threads(1)
    model = load_agent(agent)
    net = export_policy(model)
    params = load_world(world_file).compile()
    obs = np.zeros((1, params.obs_dim), dtype=np.float32)
    assert (net.actions(obs) == model.predict(obs, deterministic=True)[0]).all()
    n = 2000
    sb3 = min(timeit.repeat(lambda: model.predict(obs, deterministic=True), number=n, repeat=3)) / n
    ours = min(timeit.repeat(lambda: net.actions(obs), number=n, repeat=3)) / n
    return {"sb3_us": sb3 * 1e6, "numpy_us": ours * 1e6, "speedup": sb3 / ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skus", type=int, default=10_000)
    ap.add_argument("--timesteps", type=int, default=20_000)
    ap.add_argument("--wrk-seconds", type=int, default=15)
    ap.add_argument("--hey-seconds", type=int, default=30)
    args = ap.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install wrk hey")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    data = work / "data"
    print(f"preparing a champion and a {args.skus}-SKU catalogue in {data} ...", flush=True)
    agent, world_file = prepare(data, args.skus, args.timesteps)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PRICING_DATA_DIR": str(data), "PRICING_SERVE_TREATMENT_SHARE": "1.0"}
    ours_port, ref_port = _port(), _port()
    bin_dir = Path(sys.executable).parent
    with ProcessTree(grace_s=10.0) as tree:
        ours = tree.spawn(
            [
                str(bin_dir / "pricing"),
                "serve",
                "--port",
                str(ours_port),
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
            ],
            env,
            work / "serve.log",
            cwd=REPO,
        )
        ref = tree.spawn(
            [
                str(bin_dir / "uvicorn"),
                "bench.reference_service:app",
                "--port",
                str(ref_port),
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            env
            | {"PRICING_REFERENCE_AGENT": str(agent), "PRICING_REFERENCE_WORLD": str(world_file)},
            work / "reference.log",
            cwd=REPO,
        )
        wait_ready(f"http://127.0.0.1:{ours_port}/readyz", ours, work / "serve.log")
        wait_ready(f"http://127.0.0.1:{ref_port}/docs", ref, work / "reference.log")
        results: dict[str, dict[str, float]] = {}
        for name, port in (("service", ours_port), ("reference", ref_port)):
            url = f"http://127.0.0.1:{port}/v1/price"
            print(f"wrk against the {name} ...", flush=True)
            results[f"wrk_{name}"] = wrk(url, args.wrk_seconds, work)
            print(f"hey at 1,000 requests/s against the {name} ...", flush=True)
            results[f"hey_{name}"] = hey(url, args.hey_seconds, work)
            if name == "service":
                print("hey at 1,000 requests/s in bursts of 20 ...", flush=True)
                results["hey_bursts"] = hey(url, args.hey_seconds, work, clients=20)
        for hours, form in enumerate(("columns", "items"), start=3):
            print(f"a {args.skus}-SKU batch as {form} ...", flush=True)
            url = f"http://127.0.0.1:{ours_port}/v1/prices"
            results[f"batch_{form}"] = batch(url, args.skus, 5, form, hours)
    results["inference"] = inference(agent, world_file)
    report(args, results)


def report(args: argparse.Namespace, r: dict[str, dict[str, float]]) -> None:
    ws, wr = r["wrk_service"], r["wrk_reference"]
    hs, hr = r["hey_service"], r["hey_reference"]
    print(
        f"\nserving benchmark: {os.cpu_count()} cores, service with {args.workers} worker(s), "
        f"reference with 1; {args.skus} SKUs in the catalogue"
    )
    print(f"{'':34}{'service':>12}{'reference':>12}")
    print(
        f"{'saturated POST /v1/price (req/s)':34}{ws['rps']:12.0f}{wr['rps']:12.0f}"
        f"   ratio {ws['rps'] / wr['rps']:.2f}x (goal >= 2x)"
    )
    print(f"{'  non-2xx':34}{ws['non_2xx']:12.0f}{wr['non_2xx']:12.0f}")
    print(f"{'1,000 req/s: achieved (req/s)':34}{hs['rps']:12.0f}{hr['rps']:12.0f}")
    print(f"{'1,000 req/s: p50 (ms)':34}{hs['p50_ms']:12.2f}{hr['p50_ms']:12.2f}")
    print(f"{'1,000 req/s: p99 (ms)':34}{hs['p99_ms']:12.2f}{hr['p99_ms']:12.2f}   (goal <= 5 ms)")
    print(f"{'1,000 req/s: errors':34}{hs['errors']:12.0f}{hr['errors']:12.0f}   (goal 0)")
    hb = r["hey_bursts"]
    print(
        f"1,000 req/s sent in bursts of 20 (hey -c 20 -q 50): service p50 {hb['p50_ms']:.2f} ms, "
        f"p99 {hb['p99_ms']:.2f} ms, {hb['errors']:.0f} errors"
    )
    for form in ("columns", "items"):
        b = r[f"batch_{form}"]
        print(
            f"batch of {args.skus} SKUs as {form}: {b['first_skus_per_s']:,.0f} SKUs/s deciding, "
            f"{b['held_skus_per_s']:,.0f} SKUs/s held (goal >= 200,000)"
        )
    i = r["inference"]
    print(
        f"inference, one observation: SB3 predict {i['sb3_us']:.1f} us, numpy {i['numpy_us']:.1f} us:"
        f" {i['speedup']:.1f}x (goal >= 10x)"
    )
    print(f"throughput_ratio={ws['rps'] / wr['rps']:.3f}")
    print(f"p99_ms_at_1000={hs['p99_ms']:.3f}")
    print(f"errors_at_1000={hs['errors']:.0f}")
    print(f"batch_skus_per_second={r['batch_columns']['held_skus_per_s']:.0f}")
    print(f"batch_items_skus_per_second={r['batch_items']['held_skus_per_s']:.0f}")
    print(f"inference_speedup={i['speedup']:.2f}")


if __name__ == "__main__":
    main()
