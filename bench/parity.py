"""What is evaluated is what is served: each world's night, then its champions served through
real pricing services, and the experiment designs' answers against the arms served alone.

For each world (the bundled one and two others): 28 days of the rule-based pricer's logs
(`pricing history`), a night on the last day with the exact plan and PPO (`pricing nightly`),
then each of the two candidates in turn as the champion: `pricing parity` — the champion and the
rule each serve every visitor of the world through a service of their own for ``--seasons``
whole seasons, evaluated as served on the same seasons' visitors — giving the champion/rule
ratio served vs evaluated (their gap in points, 95 % CI), and beside it the ratio the tables
report (greedy, `pricing evaluate`).

Then, on the first world with its exact plan as the champion, the experiment designs at 50 %
for ``--design-seasons`` seasons on the same visitors: the champion alone and the rule alone
(the truth: their profit per visitor), and ``visitor``, ``sku``, ``switchback`` (a season per
block) and ``switchback`` by day (24 h blocks, 2 h washout), each with its treatment effect and
95 % interval over its own units. The last line:
``parity_gap_max_points=… switchback_vs_alone_points=… visitor_bias_points=…``.

    python bench/parity.py [--worlds default clearance flash_sales] [--seasons 4]
        [--design-seasons 12] [--ppo-timesteps 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.data.lake import open_lake  # noqa: E402
from pipeline.orchestration.parity import parity, served_replays  # noqa: E402
from pipeline.release.registry import CHAMPION, Registry  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from sim.world import World, load_world  # noqa: E402

PRICING = str(Path(sys.executable).parent / "pricing")
WORLDS = {
    "default": None,
    "clearance": REPO / "examples" / "worlds" / "clearance.json",
    "flash_sales": REPO / "examples" / "worlds" / "flash_sales.json",
}
HISTORY_DAYS = 28
START = dt.date(2026, 1, 5)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 2):  # 2: the gate kept the rule (both candidates registered)
        raise SystemExit(
            f"{' '.join(cmd[1:3])} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def night(root: Path, world_file: Path | None, ppo_timesteps: int) -> Settings:
    """History and one night in ``root``: the planner and PPO registered for the last day."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PRICING_", "MLFLOW_"))},
        "PRICING_DATA_DIR": str(root),
        "PRICING_ALGOS": '["planner","ppo"]',
        "PRICING_PPO_TIMESTEPS": str(ppo_timesteps),
        "COLUMNS": "120",
    }
    world = ["--world", str(world_file)] if world_file else []
    lake = str(root / "lake")
    _run(
        [PRICING, "history", *world, "--days", str(HISTORY_DAYS), "--seed", "1", "--lake", lake],
        env,
    )
    last = START + dt.timedelta(days=HISTORY_DAYS - 1)
    _run([PRICING, "nightly", "--date", last.isoformat(), "--data-dir", str(root)], env)
    return Settings(data_dir=root)


def champions(settings: Settings) -> dict[str, str]:
    """The night's registered version of each algorithm."""
    reg = Registry(settings, open_lake(settings))
    last = (START + dt.timedelta(days=HISTORY_DAYS - 1)).isoformat()
    out = {}
    for algo in ("planner", "ppo"):
        mv = reg.find_version(last, algo)
        if mv is not None:
            out[algo] = str(mv.version)
    return out


def crown(settings: Settings, version: str) -> None:
    reg = Registry(settings, open_lake(settings))
    reg.client.set_registered_model_alias(reg.name, CHAMPION, version)


def designs(settings: Settings, world: World, seasons: int, say: Any) -> dict[str, Any]:
    half = {"PRICING_SERVE_TREATMENT_SHARE": "0.5"}
    runs = {
        "champion alone": {"PRICING_SERVE_TREATMENT_SHARE": "1.0"},
        "rule alone": {"PRICING_SERVE_TREATMENT_SHARE": "0.0"},
        "visitor": {**half, "PRICING_SERVE_EXPERIMENT": "visitor"},
        "sku": {**half, "PRICING_SERVE_EXPERIMENT": "sku"},
        "switchback (season)": {**half, "PRICING_SERVE_EXPERIMENT": "switchback"},
        "switchback (day)": {
            **half,
            "PRICING_SERVE_EXPERIMENT": "switchback",
            "PRICING_SERVE_SWITCHBACK_HOURS": "24",
            "PRICING_SERVE_WASHOUT_HOURS": "2",
        },
    }
    results, played = served_replays(settings, world, runs, seasons, seed=11, say=say)
    alone = {
        name: float(results[name]["visits"]["profit"].mean())
        for name in ("champion alone", "rule alone")
    }
    truth = alone["champion alone"] / alone["rule alone"] - 1
    out: dict[str, Any] = {"seasons": played, "alone": alone, "truth": truth, "designs": {}}
    for name in ("visitor", "sku", "switchback (season)", "switchback (day)"):
        e = results[name]["effect"]
        overall = results[name]["overall"]
        out["designs"][name] = {
            "effect": e["effect"] if e else None,
            "ci95": e["ci95"] if e else None,
            "units": e["units"] if e else None,
            "conversion": {a: overall[a].get("conversion") for a in overall},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    ap.add_argument("--seasons", type=int, default=4, help="seasons of each parity run")
    ap.add_argument("--design-seasons", type=int, default=12, help="seasons of the designs")
    ap.add_argument("--ppo-timesteps", type=int, default=1_000_000)
    args = ap.parse_args()
    started = time.perf_counter()
    rows, design_result = [], None
    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp:
        for name in args.worlds:
            root = Path(tmp) / name
            world = load_world(WORLDS[name])
            print(f"{name}: history and a night ...", flush=True)
            settings = night(root, WORLDS[name], args.ppo_timesteps)
            os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
            for algo, version in champions(settings).items():
                crown(settings, version)
                f = parity(settings, world, args.seasons, seed=7, say=lambda m: None)
                rows.append((name, algo, f))
                r = f["ratio"]
                print(
                    f"  {algo}: served {r['served']:.3f} vs evaluated as served "
                    f"{r['evaluated_as_served']:.3f} (gap {f['gap_points']:+.2f} points "
                    f"[{f['gap_ci95'][0]:+.2f}, {f['gap_ci95'][1]:+.2f}]); table "
                    f"{r['evaluate_table']['ratio']:.3f}",
                    flush=True,
                )
            if design_result is None and "planner" in champions(settings):
                crown(settings, champions(settings)["planner"])
                print(f"{name}: experiment designs, {args.design_seasons} seasons ...", flush=True)
                design_result = (
                    name,
                    designs(settings, world, args.design_seasons, lambda m: None),
                )
            os.environ.pop("MLFLOW_TRACKING_URI", None)
    report(rows, design_result, time.perf_counter() - started)


def report(rows: list[Any], design: Any, seconds: float) -> None:
    print()
    print("| world | champion | SKU-seasons | served | evaluated as served | gap (points) [95 % CI] "
          "| served / evaluated (champion, rule) | table (greedy) [95 % CI] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, algo, f in rows:
        r, p, t = f["ratio"], f["policies"], f["ratio"]["evaluate_table"]
        print(
            f"| {name} | {algo} | {f['sku_seasons']} | {r['served']:.3f} | "
            f"{r['evaluated_as_served']:.3f} | {f['gap_points']:+.2f} "
            f"[{f['gap_ci95'][0]:+.2f}, {f['gap_ci95'][1]:+.2f}] | "
            f"{p['champion']['served_over_evaluated']:.4f}, "
            f"{p['rule']['served_over_evaluated']:.4f} | {t['ratio']:.3f} "
            f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}] |"
        )
    gap = max(abs(f["gap_points"]) for _, _, f in rows) if rows else float("nan")
    line = f"parity_gap_max_points={gap:.2f}"
    if design is not None:
        name, d = design
        print()
        print(f"{name}, exact plan as champion, {len(d['seasons'])} seasons at 50 %: arms alone "
              f"{d['truth']:+.1%} profit per visitor (champion {d['alone']['champion alone']:.3f}, "
              f"rule {d['alone']['rule alone']:.3f})")  # fmt: skip
        print()
        print("| design | treatment effect [95 % CI] | units (treatment, control) | vs arms alone "
              "(points) | conversion (control, treatment) |")  # fmt: skip
        print("|---|---|---|---|---|")
        for design_name, e in d["designs"].items():
            if e["effect"] is None:
                print(f"| {design_name} | — | — | — | — |")
                continue
            conv = e["conversion"]
            ci = f"[{e['ci95'][0]:+.1%}, {e['ci95'][1]:+.1%}]" if e["ci95"] else "[—]"
            print(
                f"| {design_name} | {e['effect']:+.1%} {ci} | "
                f"{e['units']['treatment']}, {e['units']['control']} | "
                f"{100 * (e['effect'] - d['truth']):+.1f} | "
                f"{conv.get('control') or 0:.1%}, {conv.get('treatment') or 0:.1%} |"
            )
        for key, design_name in (
            ("switchback_vs_alone_points", "switchback (season)"),
            ("visitor_bias_points", "visitor"),
        ):
            e = d["designs"][design_name]["effect"]
            line += f" {key}={100 * (e - d['truth']):+.1f}" if e is not None else f" {key}=n/a"
    print(f"\n({seconds / 60:.1f} min)")
    print(line)


if __name__ == "__main__":
    main()
