"""Run inside a mount namespace whose lake directory is a small tmpfs (see test_disk_full.py):
a night on a full disk, on a disk with a few KB left, then on a freed disk. Prints one JSON line
of what happened; the test asserts on it.

    python -m tests.faults.disk_full_child ROOT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pipeline.data.lake import LakeUnavailable, open_lake
from pipeline.nightly.run import run_night
from pipeline.release.registry import Registry
from pipeline.settings import Settings
from tests.faults.night import LAST, night_settings, write_tiny_history


def _fill(lake_dir: Path, leave: int) -> Path:
    """Fill the file system under ``lake_dir`` to ``leave`` bytes free."""
    filler = lake_dir / ".filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    free = os.statvfs(lake_dir).f_bavail * os.statvfs(lake_dir).f_frsize
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - max(0, leave - free)))
    return filler


def _attempt(settings: Settings) -> dict[str, object]:
    try:
        result = run_night(settings, LAST)
        return {"status": result.status, "reason": result.reason}
    except LakeUnavailable as err:
        return {"status": "error", "error": str(err)}


def main(root: Path) -> None:
    settings = night_settings(root, lake_uri=str(root / "lake"), model_name="disk-full")
    lake_dir = root / "lake"
    write_tiny_history(open_lake(settings))
    before = sorted(p.relative_to(lake_dir).as_posix() for p in lake_dir.rglob("*") if p.is_file())
    out: dict[str, object] = {}
    filler = _fill(lake_dir, leave=0)
    out["full"] = _attempt(settings)
    filler.unlink()
    filler = _fill(lake_dir, leave=6000)  # room for the reports, not for everything
    out["almost_full"] = _attempt(settings)
    out["tmp_files"] = [
        p.name for p in lake_dir.rglob(".tmp-*") if not p.name.startswith(".tmp-lock")
    ]
    registry = Registry(settings, open_lake(settings))
    out["champion_while_full"] = registry.champion_version()
    filler.unlink()
    out["freed"] = _attempt(settings)
    out["champion"] = registry.champion_version()
    out["ledger"] = len(registry.ledger.entries())
    after = {p.relative_to(lake_dir).as_posix() for p in lake_dir.rglob("*") if p.is_file()}
    out["raw_kept"] = all(p in after for p in before)
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
