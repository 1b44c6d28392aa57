"""Every `pricing` command, given a broken input, ends in one clear message and a documented exit
code (`pipeline.errors.ExitCode`) — never a traceback."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.lake import Lake
from pipeline.errors import ExitCode
from sim.history import generate_history
from sim.world import World
from tests.conftest import tiny_world_dict

runner = CliRunner()
PRICING = Path(sys.executable).with_name("pricing")
LAST = dt.date(2026, 1, 9)
TINY_NIGHT = {
    "PRICING_TRAIN_DAYS": "5",
    "PRICING_HOLDOUT_DAYS": "2",
    "PRICING_PPO_TIMESTEPS": "256",
    "PRICING_DQN_TIMESTEPS": "256",
}


def _closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a tiny world file, and nothing of the machine's settings."""
    for var in list(os.environ):
        if var.startswith(("PRICING_", "AWS_")):
            monkeypatch.delenv(var)
    (tmp_path / "world.json").write_text(json.dumps(tiny_world_dict()))
    (tmp_path / "bad-world.json").write_text(json.dumps({**tiny_world_dict(), "segments": "three"}))
    monkeypatch.setenv("PRICING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(result: object, code: ExitCode, *phrases: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == code, output  # type: ignore[attr-defined]
    assert "Traceback" not in output, output
    assert ("stopped at" if code == ExitCode.STOPPED else "error:") in output, output
    for phrase in phrases:
        assert phrase in output, f"{phrase!r} not in:\n{output}"


def _history_without_catalogue(root: Path) -> None:
    """Logs of SKUs that no catalogue in the lake and no world file describes."""
    world = World.model_validate(tiny_world_dict()).expand(4, seed=1)
    lake = Lake.from_uri(str(root / "data" / "lake"))
    for day in generate_history(world, 5, 1, LAST - dt.timedelta(days=4)):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)


# (command line, extra environment, exit code, phrases the message must hold)
CASES = {
    "world: missing file": (
        ["world", "--world", "nope.json"],
        {},
        ExitCode.BAD_INPUT,
        ["nope.json not found", "pricing world --default"],
    ),
    "history: invalid world": (
        ["history", "--world", "bad-world.json", "--days", "1"],
        {},
        ExitCode.BAD_INPUT,
        ["segments"],
    ),
    "history: bad start": (
        ["history", "--world", "world.json", "--start", "yesterday"],
        {},
        ExitCode.BAD_INPUT,
        ["--start", "YYYY-MM-DD"],
    ),
    "ingest: mapping without sku": (
        ["ingest", "--source", "world.json", "--mapping", "world.json"],
        {},
        ExitCode.BAD_INPUT,
        ["mapping"],
    ),
    "train: unknown algorithm": (
        ["train", "--world", "world.json", "--algo", "a2c"],
        {},
        ExitCode.BAD_INPUT,
        ["a2c"],
    ),
    "evaluate: unknown policy": (
        ["evaluate", "--world", "world.json", "--policies", "rule,genius"],
        {},
        ExitCode.BAD_INPUT,
        ["genius"],
    ),
    "evaluate: no champion yet": (
        ["evaluate", "--world", "world.json", "--policies", "models:/pricing-agent@champion"],
        {},
        ExitCode.BAD_INPUT,
        ["champion"],
    ),
    "nightly: bad date": (
        ["nightly", "--date", "2026-02-30"],
        {},
        ExitCode.BAD_INPUT,
        ["--date", "YYYY-MM-DD"],
    ),
    "nightly: inconsistent settings": (
        ["nightly", "--date", "2026-01-09"],
        {"PRICING_TRAIN_DAYS": "5", "PRICING_HOLDOUT_DAYS": "9"},
        ExitCode.BAD_INPUT,
        ["PRICING_HOLDOUT_DAYS"],
    ),
    "nightly: no logs": (
        ["nightly", "--date", "2026-01-09"],
        {**TINY_NIGHT, "PRICING_WORLD_FILE": "world.json"},
        ExitCode.STOPPED,
        ["no raw logs for 2026-01-09", "pricing history", "pricing ingest"],
    ),
    "nightly: tracking server out of reach": (
        ["nightly", "--date", "2026-01-09"],
        {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"},
        ExitCode.UNAVAILABLE,
        ["MLflow tracking server", "out of reach", "MLFLOW_TRACKING_URI"],
    ),
    "nightly: tracking database out of reach": (
        ["nightly", "--date", "2026-01-09"],
        {"MLFLOW_TRACKING_URI": "postgresql+psycopg2://nobody@127.0.0.1:{port}/none"},
        ExitCode.UNAVAILABLE,
        ["tracking database", "out of reach"],
    ),
    "nightly: lake out of reach": (
        ["nightly", "--date", "2026-01-09", "--lake", "s3://bucket/lake"],
        {
            "PRICING_S3_ENDPOINT_URL": "http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
        },
        ExitCode.UNAVAILABLE,
        ["out of reach", "PRICING_S3_ENDPOINT_URL"],
    ),
    "monitor: bad window": (
        ["monitor", "--start", "soon"],
        {},
        ExitCode.BAD_INPUT,
        ["--start"],
    ),
    "promote: manual moves disabled": (
        ["promote", "--version", "1", "--reason", "a reason"],
        {},
        ExitCode.BAD_INPUT,
        ["PRICING_ADMIN_TOKEN"],
    ),
    "promote: wrong token": (
        ["promote", "--version", "1", "--reason", "a reason", "--token", "guess"],
        {"PRICING_ADMIN_TOKEN": "the-real-one"},
        ExitCode.DENIED,
        ["token"],
    ),
    "promote: unknown version": (
        ["promote", "--version", "7", "--reason", "a reason", "--token", "t0ken"],
        {"PRICING_ADMIN_TOKEN": "t0ken"},
        ExitCode.BAD_INPUT,
        ["7"],
    ),
    "rollback: no champion": (
        ["rollback", "--reason", "a reason", "--token", "t0ken"],
        {"PRICING_ADMIN_TOKEN": "t0ken"},
        ExitCode.BAD_INPUT,
        ["champion"],
    ),
    "demo: missing world file": (
        ["demo", "--data-dir", "data"],
        {"PRICING_WORLD_FILE": "nope.json"},
        ExitCode.BAD_INPUT,
        ["nope.json"],
    ),
    "nightly: a list setting not written as JSON": (
        ["nightly", "--date", "2026-01-09"],
        {"PRICING_ALGOS": "ppo"},
        ExitCode.BAD_INPUT,
        ["algos", "JSON"],
    ),
    "serve: invalid service setting": (
        ["serve", "--port", "1"],
        {"PRICING_SERVE_TREATMENT_SHARE": "1.5"},
        ExitCode.BAD_INPUT,
        ["treatment_share"],
    ),
    "replay: no service there": (
        ["replay", "--url", "http://127.0.0.1:9", "--no-nightly"],
        {},
        ExitCode.UNAVAILABLE,
        ["pricing serve", "127.0.0.1:9"],
    ),
    "up: invalid settings": (
        ["up", "--data-dir", "data"],
        {"PRICING_LOCK_URI": "mysql://somewhere/locks"},
        ExitCode.BAD_INPUT,
        ["PRICING_LOCK_URI"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_input_gives_one_clear_message(
    case: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env, code, phrases = CASES[case]
    port = _closed_port()
    for var, value in env.items():
        monkeypatch.setenv(var, value.format(port=port))
    _check(runner.invoke(app, args), code, *phrases)


def test_logs_of_skus_outside_the_catalogue_stop_the_night_with_the_fix(home: Path) -> None:
    _history_without_catalogue(home)
    env = {**TINY_NIGHT, "PRICING_WORLD_FILE": "world.json"}
    res = runner.invoke(app, ["nightly", "--date", LAST.isoformat()], env=env)
    assert res.exit_code == ExitCode.STOPPED, res.output
    assert "Traceback" not in res.output
    assert "stopped at refit" in res.output and "not in the world's catalogue" in res.output
    assert "pricing history" in res.output and "PRICING_WORLD_FILE" in res.output


def test_a_bug_names_the_file_that_holds_its_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sim.world

    def broken(path: object = None) -> None:
        raise RuntimeError("a bug in the world loader")

    monkeypatch.setattr(sim.world, "load_world", broken)
    res = runner.invoke(app, ["world", "--default"])
    assert res.exit_code == ExitCode.INTERNAL and "Traceback" not in res.output
    log = home / "data" / "logs" / "pricing-errors.log"
    assert f"the traceback is in {log}" in res.output
    assert "RuntimeError: a bug in the world loader" in log.read_text()


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PRICING_", "MLFLOW_"))}
    full.update(env)
    return subprocess.run(
        [str(PRICING), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300
    )


def test_the_installed_command_prints_no_traceback_and_documented_codes(home: Path) -> None:
    """Through the console script itself, without a terminal (rich assumes 80 columns)."""
    tracking = f"http://127.0.0.1:{_closed_port()}"
    done = _run(["nightly", "--date", "2026-01-09"], home, MLFLOW_TRACKING_URI=tracking)
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    message = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert f"the MLflow tracking server {tracking} is out of reach" in message  # one line

    done = _run(["nightly", "--dte", "2026-01-09"], home)  # usage errors are bad input too
    assert done.returncode == ExitCode.BAD_INPUT and "No such option" in done.stderr
    assert "Traceback" not in done.stderr

    done = _run([], home)  # no command: the help, no error
    assert done.returncode == ExitCode.OK and "Exit codes" in done.stdout

    done = _run(["--debug", "world", "--world", "nope.json"], home)
    assert done.returncode == ExitCode.BAD_INPUT
    assert "Traceback" in done.stderr and "WorldError" in done.stderr  # --debug shows it
