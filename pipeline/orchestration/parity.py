"""`pricing parity`: is what is evaluated what is served?

The registry's champion and the rule-based pricer each serve every visitor of a world — two real
pricing services (`pricing serve`), one at a treatment share of 100 %, one at 0 %, over a scratch
copy of the lake's catalogue and the same registry — for whole selling seasons of `pricing
replay`. The simulator evaluates the same two policies *as served* (`sim.served.AsServed`: the
service's exploration and guardrails) on the same seasons' random streams (`replay.season_seed`:
common random numbers), so each SKU-season's served profit is paired with its evaluated profit.

The answer: each policy's profit per SKU-season served and evaluated; the champion/rule ratio
served and evaluated, and their gap in points with a paired bootstrap interval over SKU-seasons —
the two agree when the whole interval lies within ``tolerance`` points (an equivalence test) —
and beside them what the tables report: the ratio of the two policies greedy, without
exploration or guardrails (`pricing evaluate`), on ``episodes`` episodes of their own.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import socket
import subprocess  # nosec B404 (the services it starts: `pricing serve`, no shell)
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.catalogue import catalogue_dates, read_catalogue, season_anchor, write_catalogue
from pipeline.data.lake import Lake, open_lake
from pipeline.errors import PricingError
from pipeline.model.agents import agent_policy
from pipeline.model.evaluation import as_served, baselines, evaluate
from pipeline.orchestration.procs import ProcessTree
from pipeline.orchestration.replay import replay, season_seed
from pipeline.orchestration.service_client import ServiceClient
from pipeline.release.registry import Registry
from pipeline.settings import ServedAs, Settings
from sim.evaluate import rollout
from sim.history import Clock, episode_world
from sim.policies import Policy, RulePolicy
from sim.world import World

ARMS = {"champion": ("treatment", 1.0), "rule": ("control", 0.0)}


class ParityError(PricingError):
    """Parity could not be measured (no champion, a service that did not start)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scratch_lake(src: Lake, root: Path) -> Settings:
    """A data dir of its own for one service, holding the lake's catalogue snapshots (the
    service's season clock starts at the first)."""
    lake = Lake.from_uri(str(root / "lake"))
    for day in catalogue_dates(src):
        found = read_catalogue(src, day)
        assert found is not None
        write_catalogue(lake, day, found[0])
    return Settings(data_dir=root, lake_uri=str(root / "lake"))


def _spawn(
    tree: ProcessTree, settings: Settings, scratch: Settings, knobs: dict[str, str], token: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`pricing serve` started over ``scratch``'s lake and ``settings``' registry, with the
    ``PRICING_SERVE_*`` knobs of the environment and ``knobs`` on top: its process, URL and
    log (see `_answering`)."""
    port = _free_port()
    log = scratch.data_dir / "serve.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PRICING_")},
        **{k: v for k, v in os.environ.items() if k.startswith("PRICING_SERVE_")},
        "PRICING_DATA_DIR": str(scratch.data_dir),
        "PRICING_LAKE_URI": scratch.lake,
        "PRICING_MODEL_NAME": settings.model_name,
        "PRICING_ADMIN_TOKEN": token,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PRICING_SERVE_POLL_SECONDS": "3600",
        **knobs,
    }
    if settings.world_file is not None:
        env["PRICING_WORLD_FILE"] = str(settings.world_file)
    cmd = [str(Path(sys.executable).parent / "pricing"), "serve", "--port", str(port)]
    proc = tree.spawn([*cmd, "--log-level", "warning"], env, log)
    return proc, f"http://127.0.0.1:{port}", log


def _answering(proc: subprocess.Popen[bytes], url: str, log: Path, token: str) -> ServiceClient:
    """The client of a service `_spawn` started, once it answers."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ParityError(f"the pricing service exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):  # nosec B310 (loopback)
                return ServiceClient(url, token)
        except OSError:
            time.sleep(0.5)
    raise ParityError(f"the pricing service did not answer within 180 s; see {log}")


def served_replays(
    settings: Settings,
    world: World,
    runs: dict[str, dict[str, str]],
    seasons: int,
    seed: int,
    say: Callable[[str], None] = print,
    days: int | None = None,
    keep: Path | None = None,
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Each of ``runs`` (a name and its ``PRICING_SERVE_*`` knobs) as a real pricing service of
    its own over a scratch copy of the lake's catalogue and ``settings``' registry, played side
    by side by `pricing replay` for ``seasons`` whole seasons (or ``days`` days) from the first
    that starts after the lake's last decisions, on the same visitors (``seed``) and the
    pipeline's season clock (a service set to another clock meets the world on this one).
    Returns each run's replay figures (with its visitors' rows and the service's last
    ``/readyz``) and the seasons played. The scratch data dirs are deleted, unless ``keep``
    names where to put them (``keep/<run>``)."""
    lake = open_lake(settings)
    dates = lake.list_dates("raw", "decisions")
    scratch_root = keep or Path(tempfile.mkdtemp(prefix="pricing-replays-"))
    token = secrets.token_urlsafe(24)
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, BaseException] = {}
    try:
        with ProcessTree() as tree:
            spawned = {}
            for name, knobs in runs.items():  # all start at once, then each is waited for
                scratch = _scratch_lake(lake, scratch_root / name)
                spawned[name] = (_spawn(tree, settings, scratch, knobs, token), scratch)
            clients = {n: (_answering(*p, token), s) for n, (p, s) in spawned.items()}
            anchor = season_anchor(lake, ServedAs().season_start)
            clock = Clock.of(world, anchor)
            after = dates[-1] + dt.timedelta(days=1) if dates else anchor.date()
            first, start = _first_season_start(clock, after)
            days = days or -(-seasons * clock.steps * clock.step_hours // 24)
            say(
                f"{', '.join(runs)}: {seasons} season(s) of {world.name} from {start} ({days} days)"
            )

            def play(name: str) -> None:
                client, scratch = clients[name]

                def tell(message: str) -> None:
                    say(f"  {name}: {message}")

                try:
                    results[name] = replay(
                        scratch, world, client, start, days, seed, nightly=False, say=tell,
                        anchor=anchor,
                    )  # fmt: skip
                    results[name]["ready"] = client.call("GET", "/readyz")
                except BaseException as err:  # re-raised below, in the caller's thread
                    errors[name] = err

            threads = [threading.Thread(target=play, args=(n,)) for n in runs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for err in errors.values():
                raise err
    finally:
        if keep is None:
            shutil.rmtree(scratch_root, ignore_errors=True)
    return results, list(range(first, first + seasons))


def _first_season_start(clock: Clock, after: dt.date) -> tuple[int, dt.date]:
    """The first season that starts at midnight on or after ``after``."""
    season = 0
    while True:
        start = clock.season_start(season)
        if start.date() >= after and start.time() == dt.time(0):
            return season, start.date()
        season += 1
        if season > 10_000:
            raise ParityError("no selling season starts at midnight: seasons must be whole days")


def _served_episodes(visits: pd.DataFrame, world: World, seasons: list[int]) -> np.ndarray:
    """Served profit of each SKU-season, shape (seasons, K), in the world's SKU order."""
    per = visits.groupby(["season", "sku"])["profit"].sum()
    ids = [s.id for s in world.skus]
    return np.array([[float(per.get((s, k), 0.0)) for k in ids] for s in seasons])


def _paired_gap(
    sc: np.ndarray, sr: np.ndarray, ec: np.ndarray, er: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """(Σsc/Σsr) − (Σec/Σer) in points, with a bootstrap interval over SKU-seasons (resampled
    together: the pairing is the point)."""
    rng = np.random.default_rng(seed)
    n = len(sc)
    gap = 100 * (sc.sum() / sr.sum() - ec.sum() / er.sum())
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = 100 * (
        sc[idx].sum(axis=1) / sr[idx].sum(axis=1) - ec[idx].sum(axis=1) / er[idx].sum(axis=1)
    )
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(gap), float(lo), float(hi)


def parity(
    settings: Settings,
    world: World,
    seasons: int,
    seed: int,
    episodes: int = 300,
    tolerance: float = 3.0,
    served: ServedAs | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Serve, replay and evaluate (see the module); the figures as a dict."""
    served = served or ServedAs()
    lake = open_lake(settings)
    registry = Registry(settings, lake)
    version = registry.champion_version()
    if version is None:
        raise ParityError(
            f"{settings.model_name} has no @champion: run a night that promotes one first"
        )
    label = registry.label(version)
    loaded = registry.load(version)
    agent, trained_in = loaded.model, loaded.world
    knobs = {
        name: {"PRICING_SERVE_TREATMENT_SHARE": repr(share), "PRICING_SERVE_EXPERIMENT": "visitor"}
        for name, (_, share) in ARMS.items()
    }
    say(f"serving v{version} ({label}) and the rule-based pricer to every visitor")
    results, played = served_replays(settings, world, knobs, seasons, seed, say)
    ready = results["champion"]["ready"]
    if ready["policy"] != "champion" or ready["model_version"] != version:
        raise ParityError(f"the service did not serve v{version}: {ready['reason']}")
    anchor = dt.datetime.fromisoformat(ready["season_start"])
    return _figures(
        settings, world, served, (agent, trained_in), label, version, results, played, anchor,
        seed, episodes, tolerance,
    )  # fmt: skip


def _figures(
    settings: Settings,
    world: World,
    served: ServedAs,
    champion: tuple[Any, World],
    label: str,
    version: str,
    results: dict[str, dict[str, Any]],
    played: list[int],
    anchor: dt.datetime,
    seed: int,
    episodes: int,
    tolerance: float,
) -> dict[str, Any]:
    agent, trained_in = champion
    clock = Clock.of(world, anchor)
    served_ep = {n: _served_episodes(results[n]["visits"], world, played) for n in ARMS}
    evaluated: dict[str, list[np.ndarray]] = {n: [] for n in ARMS}
    greedy: dict[str, list[np.ndarray]] = {n: [] for n in ARMS}
    for s in played:
        p = episode_world(world, clock.season_start(s)).compile()
        bases: dict[str, Policy] = {
            "champion": agent_policy(agent, label, trained_in),
            "rule": RulePolicy(p),
        }
        for name, (arm, _) in ARMS.items():
            policy = as_served(world, bases[name], served, arm, name, period0=s * clock.steps)
            evaluated[name].append(rollout(p, policy, p.K, season_seed(seed, s)).profit)
            pure = rollout(p, bases[name], p.K, season_seed(seed, s), greedy=True)
            greedy[name].append(pure.profit)
    sc, sr = served_ep["champion"].reshape(-1), served_ep["rule"].reshape(-1)
    ec, er = (np.concatenate(evaluated[n]) for n in ("champion", "rule"))
    gc, gr = (np.concatenate(greedy[n]) for n in ("champion", "rule"))
    gap, lo, hi = _paired_gap(sc, sr, ec, er, settings.bootstrap_samples, seed)
    table = _standard(world, champion, label, episodes, settings.eval_seed)
    policies = {
        name: {
            "served": float(s.mean()),
            "evaluated_as_served": float(e.mean()),
            "evaluated_greedy": float(g.mean()),
            "served_over_evaluated": float(s.sum() / e.sum()),
        }
        for name, s, e, g in (("champion", sc, ec, gc), ("rule", sr, er, gr))
    }
    return {
        "world": world.name,
        "champion": {"version": version, "label": label},
        "seasons": played,
        "sku_seasons": len(sc),
        "seed": seed,
        "policies": policies,
        "ratio": {
            "served": float(sc.sum() / sr.sum()),
            "evaluated_as_served": float(ec.sum() / er.sum()),
            "evaluated_greedy_same_seasons": float(gc.sum() / gr.sum()),
            "evaluate_table": table,
        },
        "gap_points": gap,
        "gap_ci95": [lo, hi],
        "tolerance_points": tolerance,
        "agree": bool(-tolerance <= lo and hi <= tolerance),
        "replay": {n: {k: v for k, v in results[n].items() if k != "visits"} for n in ARMS},
    }


def _standard(
    world: World, champion: tuple[Any, World], label: str, episodes: int, seed: int
) -> dict[str, Any]:
    """The champion/rule ratio as `pricing evaluate` reports it: both greedy, on ``episodes``
    episodes of their own, with a paired bootstrap interval."""
    policies = {"champion": (agent_policy(champion[0], label, champion[1]), True)}
    policies.update({"rule": baselines(world, ["rule"], episodes)["rule"]})
    ev = evaluate(world, policies, episodes, seed, optimum=False)  # the ratio only
    c, r = ev.results["champion"].profit, ev.results["rule"].profit
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(c), size=(2000, len(c)))
    boot = c[idx].sum(axis=1) / r[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {
        "episodes": episodes,
        "seed": seed,
        "ratio": float(c.sum() / r.sum()),
        "ci95": [float(lo), float(hi)],
    }
