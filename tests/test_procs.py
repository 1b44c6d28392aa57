"""ProcessTree: what a command starts stops with it — also when the command is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.orchestration.procs import ProcessTree, tagged

REPO = Path(__file__).resolve().parents[1]

# A server-like child with two grandchildren that neither a process-group kill nor a
# parent-death signal would reach: one in a session of its own (it keeps the inherited
# environment), one in a process group of its own whose environment no longer shows the tag (as
# when a server rewrites its process title over its environment).
CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    if "--stubborn" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    subprocess.Popen(sleep, start_new_session=True)
    subprocess.Popen(sleep, process_group=0, env={"PATH": os.environ["PATH"]})
    time.sleep(600)
    """
)
FAMILY = 3  # the child and its two grandchildren


def _wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie waiting for its parent counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] == "Z"


def test_stop_ends_the_whole_tree_including_other_sessions(tmp_path: Path) -> None:
    tree = ProcessTree(grace_s=3.0)
    try:
        tree.spawn([sys.executable, "-c", CHILD], dict(os.environ), tmp_path / "child.log")
        assert _wait_for(lambda: len(tree.pids()) == FAMILY), "the family did not start"
        pids = tree.pids()
    finally:
        tree.stop()
    assert all(_gone(pid) for pid in pids)
    assert tagged(tree.tag, tree.sessions) == []


def test_stop_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    tree = ProcessTree(grace_s=1.0)
    try:
        tree.spawn(
            [sys.executable, "-c", CHILD, "--stubborn"], dict(os.environ), tmp_path / "c.log"
        )
        assert _wait_for(lambda: len(tree.pids()) == FAMILY)
    finally:
        started = time.monotonic()
        tree.stop()
    assert tagged(tree.tag, tree.sessions) == []
    assert time.monotonic() - started < 30  # generous bound: the point is that it returns


OWNER = textwrap.dedent(
    """
    import json, os, sys, time
    from pipeline.orchestration.procs import ProcessTree
    tree = ProcessTree(grace_s=2.0)
    tree.spawn([sys.executable, "-c", sys.argv[1]], dict(os.environ), os.devnull)
    while len(tree.pids()) < 3:
        time.sleep(0.1)
    info = {"tag": tree.tag, "sessions": sorted(tree.sessions), "pids": tree.pids()}
    print(json.dumps(info), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGKILL to its process group"])
def test_a_killed_owner_leaves_nothing_running(how: str) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, CHILD],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline())
        if how == "SIGKILL":
            os.kill(owner.pid, signal.SIGKILL)
        else:
            os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)

        def left() -> list[int]:
            return tagged(started["tag"], started["sessions"])

        assert _wait_for(lambda: not left(), timeout=30), f"left running: {left()}"
        assert all(_gone(pid) for pid in started["pids"])
    finally:
        if owner.poll() is None:
            owner.kill()
