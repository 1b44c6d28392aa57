"""A full disk under the lake during a night: the lake on a 16 MB tmpfs mounted in a mount
namespace of the test's own (``unshare``), filled to nothing and then to a few KB. The night
stops with a clear error, leaves no half-written object, keeps the raw logs and the champion,
and succeeds once space is freed (`tests/faults/disk_full_child.py` runs the night inside)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _namespace() -> list[str] | None:
    """The unshare prefix that gives this process a private mount namespace, or None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for prefix in ([unshare, "-m"], [unshare, "-r", "-m"]):
        probe = subprocess.run(
            [*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || exit 3"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return prefix
    return None


def test_a_full_disk_under_the_lake(tmp_path: Path, fault_row: Any) -> None:
    prefix = _namespace()
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare -m, or -r -m): cannot mount a tmpfs")
    lake = tmp_path / "lake"
    lake.mkdir()
    repo = Path(__file__).resolve().parents[2]
    script = (
        f"mount -t tmpfs -o size=16m tmpfs {lake} && "
        f"exec {sys.executable} -m tests.faults.disk_full_child {tmp_path}"
    )
    run = subprocess.run(
        [*prefix, "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for attempt in ("full", "almost_full"):
        assert out[attempt]["status"] == "error", out
        assert "the disk is full" in out[attempt]["error"]
    assert out["tmp_files"] == [], "a half-written object was left behind"
    assert out["champion_while_full"] is None
    assert out["freed"]["status"] == "completed", out["freed"]
    assert out["champion"] == "1" and out["ledger"] == 1
    assert out["raw_kept"]
    fault_row(
        "full disk under the lake during a night",
        "tmpfs filled to 0 bytes, then to 6 KB",
        True,
        0,
        "LakeUnavailable (exit 4): cannot write …: the disk is full; nothing was written — free "
        "space under the lake, then re-run the step",
    )
