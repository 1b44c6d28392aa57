"""How long the DAG processor takes to parse each DAG file, against a parse-time budget.

Each round parses ``dags/`` in a fresh interpreter (as the DAG processor does, with Airflow already
imported), so module caches don't flatter later rounds. Reported per file: the median parse time
over the rounds, its share of the budget, and whether the file pulled in anything heavy. Last
line: ``worst_share_of_budget=<x>`` (below 1 is within budget).

    python bench/dag_parse.py [--rounds 5] [--budget-s 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
HEAVY = ("pipeline", "sim", "mlflow", "torch", "stable_baselines3", "great_expectations", "pandas")
# the one pipeline module a DAG file imports at parse time: names only, standard library only
LIGHT = ("pipeline", "pipeline.contracts")

PARSE = f"""
import json, sys, time
import airflow  # the processor has Airflow loaded before it parses a file
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag({str(DAGS)!r})
total = time.perf_counter() - start
def seconds(d):
    return d.total_seconds() if hasattr(d, "total_seconds") else float(d)
out = {{
    "total_s": total,
    "files": {{s.file.rsplit("/", 1)[-1]: seconds(s.duration) for s in bag.dagbag_stats}},
    "errors": bag.import_errors,
    "heavy": sorted(
        m for m in sys.modules if m.split(".")[0] in {HEAVY!r} and m not in {LIGHT!r}
    ),
}}
print(json.dumps(out, default=str))
"""


def one_round(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", PARSE], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=2.0, help="parse budget per file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [one_round(Path(tmp)) for _ in range(args.rounds)]
    errors = rounds[-1]["errors"]
    if errors:
        raise SystemExit(f"import errors: {errors}")
    files = sorted(rounds[-1]["files"])
    print(f"{args.rounds} rounds, budget {args.budget_s:.2f} s per file")
    print(f"{'file':<22} {'median s':>9} {'share':>7}")
    worst = 0.0
    for name in files:
        median = statistics.median(r["files"][name] for r in rounds)
        share = median / args.budget_s
        worst = max(worst, share)
        print(f"{name:<22} {median:>9.3f} {share:>7.1%}")
    print(f"whole folder: median {statistics.median(r['total_s'] for r in rounds):.3f} s")
    print(f"heavy modules imported while parsing: {rounds[-1]['heavy'] or 'none'}")
    print(f"worst_share_of_budget={worst:.3f}")


if __name__ == "__main__":
    main()
