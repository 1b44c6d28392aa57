"""The command-line guide (docs/cli.md, linked from the README) runs top to bottom as written,
on a tiny world.

Each command of the section's first ``bash`` block runs in a fresh shell in an empty folder, as
a new user would paste it. What differs from the guide is only the size of the work: after
`pricing world --default > my-world.json` the file is replaced by the tests' tiny world (two
SKUs, two days), the training and evaluation sizes in the commands are cut (``SIZES``), and the
night's budgets come from the environment (``NIGHT``), as any deployment would set them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_world_dict

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "cli.md"  # "The command line", linked from the README
BIN = Path(sys.executable).parent

SIZES = {
    "--skus 50": "--skus 8",
    "--timesteps 200000": "--timesteps 4096",
    "--episodes 600": "--episodes 20",
}
NIGHT = {
    "PRICING_TRAIN_DAYS": "6",
    "PRICING_HOLDOUT_DAYS": "2",
    "PRICING_PPO_TIMESTEPS": "4096",
    "PRICING_DQN_TIMESTEPS": "1000",
    "PRICING_N_ENVS": "8",
    "PRICING_EVAL_EPISODES": "20",
    "PRICING_BOOTSTRAP_SAMPLES": "200",
    "PRICING_FIDELITY_MAX_CONVERSION_ERROR": "0.2",
    "PRICING_FIDELITY_MAX_DEVIANCE_RATIO": "20",
}
# Exit codes a command may end with and still have run as documented.
ALLOWED = {"pricing monitor": {0, 2}}  # 2: drift found, as the README says


def command_line_section(text: str) -> list[str]:
    """The commands of the guide's first ``bash`` block, continuation lines joined."""
    section = text.split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block in the command-line section"
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(pending)
        pending = ""
    return commands


def test_the_section_is_what_this_test_runs() -> None:
    commands = command_line_section(GUIDE.read_text())
    assert commands[0].startswith("pricing world --default > my-world.json")
    names = {c.split()[1] for c in commands}
    assert {"world", "history", "train", "evaluate", "nightly", "monitor", "ingest"} <= names
    for size in SIZES:
        assert any(size in c for c in commands), f"{size!r} is no longer in the guide"


@pytest.mark.integration
def test_the_readme_command_line_runs_top_to_bottom(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PRICING_", "MLFLOW_", "AIRFLOW", "AWS_"))
    }
    env.update(NIGHT)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    (tmp_path / "examples").symlink_to(REPO / "examples")
    outputs = {}
    for command in command_line_section(GUIDE.read_text()):
        for written, run in SIZES.items():
            command = command.replace(written, run)
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        took = time.monotonic() - started
        print(f"{took:6.1f} s  {command}")
        name = " ".join(command.split()[:2])
        allowed = ALLOWED.get(name, {0})
        assert done.returncode in allowed, (
            f"`{command}` exited {done.returncode} after {took:.0f} s:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        outputs[command] = done.stdout + done.stderr
        if command.startswith("pricing world --default > my-world.json"):
            assert json.loads((tmp_path / "my-world.json").read_text())["skus"]
            (tmp_path / "my-world.json").write_text(json.dumps(tiny_world_dict()))

    lake = tmp_path / "data" / "lake"
    assert sorted(p.name for p in (lake / "catalogue").iterdir()) == ["date=2026-01-05"]
    catalogue = json.loads((lake / "catalogue/date=2026-01-05/catalogue.json").read_text())
    assert len(catalogue["skus"]) == 8  # `--skus`: the night refits these, not the world's
    through_airflow = next(text for c, text in outputs.items() if "--airflow" in c)
    assert "pricing_nightly: success" in through_airflow and "% of optimal" in through_airflow
    assert re.search(r"v\d+ ppo", through_airflow) and re.search(r"v\d+ planner", through_airflow)
    assert (tmp_path / "data" / "airflow" / "airflow.db").is_file()  # what `make up` shows
    assert (tmp_path / "report.json").is_file() and (tmp_path / "data/pos-lake/raw").is_dir()
