"""How the data half of a night grows with the catalogue: synthetic history and daily features.

For each catalogue size, in a fresh child process each (so that every peak RSS is its own):

1. ``history``: one day of logs of the expanded bundled world (`pricing history --skus N`),
   simulated a block of SKUs at a time and written to a local lake;
2. ``features (whole day)``: the day read at once and aggregated (`build_features`);
3. ``features (streamed)``: the night's path, part by part (`extract_features`'s partials).

Prints seconds, peak resident memory and per-SKU cost for each; the last line compares the
largest size with the smallest:
``history_per_sku_ratio=… features_per_sku_ratio=… streamed_peak_mb=… whole_peak_mb=…``.

    python bench/scale.py [--skus 1000 10000] [--seed 0] [--plot docs/scaling.png]

``--plot`` draws the per-SKU cost and the peak memory of each step against the catalogue size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = dt.date(2026, 1, 5)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _history(lake_dir: str, skus: int, seed: int) -> dict[str, Any]:
    from pipeline.data.lake import Lake
    from pipeline.data.synthetic import write_history
    from sim.world import default_world, template_of

    templates = default_world()
    world = templates.expand(skus, seed)
    categories = {s.id: template_of(templates, s.id) or s.id for s in world.skus}
    lake = Lake.from_uri(lake_dir)
    started = time.perf_counter()
    written = write_history(lake, world, 1, seed, DAY, categories=categories)
    return {
        "seconds": time.perf_counter() - started,
        "rows": written.decisions,
        "parts": len(lake.part_paths("raw", "decisions", DAY)),
        "peak_mb": _peak_mb(),
    }


def _features(lake_dir: str, streamed: bool) -> dict[str, Any]:
    from pipeline.data.features import (
        build_features,
        decision_partials,
        features_from_partials,
        transaction_partials,
    )
    from pipeline.data.lake import Lake

    lake = Lake.from_uri(lake_dir)
    base = _peak_mb()
    started = time.perf_counter()
    if streamed:
        features = features_from_partials(
            [decision_partials(p) for p in lake.iter_partition("raw", "decisions", DAY)],
            [transaction_partials(p) for p in lake.iter_partition("raw", "transactions", DAY)],
        )
    else:
        features = build_features(
            lake.read_partition("raw", "decisions", DAY),
            lake.read_partition("raw", "transactions", DAY),
        )
    return {
        "seconds": time.perf_counter() - started,
        "rows": len(features),
        "peak_mb": _peak_mb(),
        "base_mb": base,
    }


def _in_child(fn: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return dict(pool.apply(fn, args))


def _plot(rows: dict[int, dict[str, dict[str, Any]]], path: Path) -> None:
    """Per-SKU cost and peak memory of each step against the number of SKUs (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(rows)
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for step in rows[sizes[0]]:
        ms = [1000 * rows[n][step]["seconds"] / n for n in sizes]
        mb = [rows[n][step]["peak_mb"] for n in sizes]
        cost.plot(sizes, ms, marker="o", label=step)
        memory.plot(sizes, mb, marker="o", label=step)
    for ax, title in ((cost, "ms per SKU (flat = linear cost)"), (memory, "peak memory, MB")):
        ax.set_xscale("log")
        ax.set_xlabel("SKUs in the catalogue")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    memory.set_yscale("log")
    cost.legend()
    fig.suptitle("One day of the data half of a night (python bench/scale.py), 2 cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skus", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", type=Path, default=None, help="write the scaling plot (PNG) here")
    args = ap.parse_args()
    if any(n < 1 for n in args.skus):
        ap.error("--skus must be >= 1")
    sizes = sorted(set(args.skus))
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    print(f"{'SKUs':>7} {'step':<22} {'seconds':>8} {'rows':>11} {'peak MB':>8} {'ms/SKU':>7}")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            lake_dir = str(Path(tmp) / "lake")
            steps = {
                "history": _in_child(_history, lake_dir, n, args.seed),
                "features (whole day)": _in_child(_features, lake_dir, False),
                "features (streamed)": _in_child(_features, lake_dir, True),
            }
        rows[n] = steps
        for name, r in steps.items():
            print(
                f"{n:>7,} {name:<22} {r['seconds']:>8.2f} {r['rows']:>11,} "
                f"{r['peak_mb']:>8.0f} {1000 * r['seconds'] / n:>7.2f}",
                flush=True,
            )
    if args.plot is not None:
        _plot(rows, args.plot)
    small, large = rows[sizes[0]], rows[sizes[-1]]

    def per_sku(r: dict[str, Any], n: int) -> float:
        return float(r["seconds"]) / n

    hist = per_sku(large["history"], sizes[-1]) / per_sku(small["history"], sizes[0])
    feat = per_sku(large["features (streamed)"], sizes[-1]) / per_sku(
        small["features (streamed)"], sizes[0]
    )
    print(
        f"history_per_sku_ratio={hist:.2f} features_per_sku_ratio={feat:.2f} "
        f"streamed_peak_mb={large['features (streamed)']['peak_mb']:.0f} "
        f"whole_peak_mb={large['features (whole day)']['peak_mb']:.0f} "
        f"({sizes[-1]:,} vs {sizes[0]:,} SKUs)"
    )


if __name__ == "__main__":
    main()
