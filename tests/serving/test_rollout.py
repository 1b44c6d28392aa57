"""The staged rollout: advance while the guardrails hold, back to 0 % when one trips, every step
in the ledger."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.contracts import ROLLOUT_LEDGER_PATH
from pipeline.ops.rollout import decide
from sim.feeds import PURCHASE, VIEW
from tests.serving.conftest import PRICING, Env, Served

DAY = dt.date(2026, 1, 6)


def _served_log(
    n: int, share: float, conv: tuple[float, float], cost: tuple[float, float], seed: int = 0
) -> pd.DataFrame:
    """Visitors split by ``share``; each arm converts exactly at its rate (a chance dip is not
    what these cases test), at a unit cost per arm (price 10)."""
    rng = np.random.default_rng(seed)
    treated = rng.random(n) < share
    arm = np.where(treated, "treatment", "control")
    bought = np.zeros(n, dtype=bool)
    for mask, rate in ((~treated, conv[0]), (treated, conv[1])):
        rows = rng.permutation(np.flatnonzero(mask))
        bought[rows[: round(rate * len(rows))]] = True
    return pd.DataFrame(
        {
            "ab_arm": arm,
            "outcome": np.where(bought, PURCHASE, VIEW),
            "quantity": bought.astype(int),
            "price_shown": 10.0,
            "unit_cost": np.where(treated, cost[1], cost[0]),
        }
    )


@pytest.mark.parametrize(
    ("share", "log", "action", "new", "phrase"),
    [
        (0.05, dict(share=0.05, conv=(0.1, 0.1), cost=(6, 6)), "advance", 0.10, "hold"),
        (0.50, dict(share=0.50, conv=(0.1, 0.1), cost=(6, 6)), "hold", 0.50, "last stage"),
        (0.05, dict(share=0.30, conv=(0.1, 0.1), cost=(6, 6)), "stop", 0.0, "sample-ratio"),
        (0.25, dict(share=0.25, conv=(0.12, 0.06), cost=(6, 6)), "stop", 0.0, "conversion loss"),
        (0.25, dict(share=0.25, conv=(0.1, 0.1), cost=(6, 9.9)), "stop", 0.0, "margin"),
    ],
)
def test_the_guardrails_decide_the_next_share(
    env: Env, share: float, log: dict, action: str, new: float, phrase: str
) -> None:
    env.lake.write_partition("raw", "decisions", DAY, _served_log(20_000, **log))
    d = decide(env.lake, [DAY], share, margin_floor=0.05)
    assert (d.action, d.new_share) == (action, new), d.reasons
    assert phrase in " ".join(d.reasons)


def test_too_few_visitors_hold_the_share(env: Env) -> None:
    env.lake.write_partition("raw", "decisions", DAY, _served_log(300, 0.05, (0.1, 0.0), (6, 6)))
    d = decide(env.lake, [DAY], 0.05, margin_floor=0.05)
    assert (d.action, d.new_share) == ("hold", 0.05) and "too few" in d.reasons[0]


def test_a_rollout_step_moves_the_service_and_is_in_the_ledger(
    env: Env, served: Served, tmp_path: Path
) -> None:
    env.lake.write_partition("raw", "decisions", DAY, _served_log(20_000, 0.5, (0.1, 0.1), (6, 6)))
    cmd = [PRICING, "rollout", "--url",
           f"http://127.0.0.1:{served.port}", "--date", DAY.isoformat()]  # fmt: skip
    run_env = env.process_env()
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "50% → 50%" in done.stderr
    )  # messages go to stderr; the served fixture runs at 50 %: the last stage
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/readyz") as r:
        assert json.loads(r.read())["treatment_share"] == 0.5
    # a log that trips a guardrail stops the rollout: share 0, exit 2, in the ledger
    env.lake.write_partition(
        "raw",
        "decisions",
        DAY,
        _served_log(20_000, 0.5, (0.1, 0.1), (6, 10.5)),  # sold at a loss
    )
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/readyz") as r:
        assert json.loads(r.read())["treatment_share"] == 0.0
    entries = env.lake.read_bytes(ROLLOUT_LEDGER_PATH).decode().splitlines()
    assert [json.loads(e)["action"] for e in entries] == ["rollout-hold", "rollout-stop"]
