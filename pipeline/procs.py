"""Child processes that never outlive the command that started them.

Servers such as ``airflow standalone`` start a tree of processes, and some of them leave the
tree's process group on purpose (Airflow runs each task in a group of its own), so neither
``killpg`` nor a parent-death signal reaches all of them. `ProcessTree` therefore tags every
process it starts with an environment variable, which every descendant inherits, and stops the
tree by finding the tagged processes wherever they are:

- `ProcessTree.stop` (Ctrl-C, SIGTERM, normal exit): SIGTERM to every tagged process, SIGKILL to
  what is left after a grace period — bounded in time whatever the servers do;
- a *watchdog* started with the tree, in a session of its own, holds one end of a pipe whose
  other end only the owner holds: when the owner dies in any way — SIGKILL included — the pipe
  closes and the watchdog stops the tree the same way, then exits.

Run as ``python -m pipeline.procs TAG GRACE`` it is that watchdog.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

TAG_VARIABLE = "PRICING_PROCESS_TREE"


def tagged(tag: str, variable: str = TAG_VARIABLE) -> list[int]:
    """The pids of live processes whose environment holds ``variable=tag``."""
    import psutil

    pids = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(variable) == tag:
                pids.append(proc.pid)
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_tagged(tag: str, grace_s: float = 10.0, variable: str = TAG_VARIABLE) -> int:
    """SIGTERM every process tagged ``tag``, SIGKILL the rest after ``grace_s``; returns how many
    were still running at the deadline. Returns within about ``grace_s + 5`` seconds."""
    _signal_all(tagged(tag, variable), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = tagged(tag, variable)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = tagged(tag, variable)
    stubborn = len(left)
    for _ in range(25):  # SIGKILL until none is left (a dying server may still fork)
        if not left:
            break
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.2)
        left = tagged(tag, variable)
    return stubborn


class ProcessTree:
    """Processes started for one command, stopped together: see the module docstring."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self.tag = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.processes: list[subprocess.Popen[bytes]] = []
        env = {k: v for k, v in os.environ.items() if k != TAG_VARIABLE}
        # Its own session: a Ctrl-C or a killpg aimed at the owner's group does not reach it.
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "pipeline.procs", self.tag, str(grace_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )

    def spawn(
        self,
        cmd: list[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in a process group of its own, output appended to ``log``, tagged."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                env={**env, TAG_VARIABLE: self.tag},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every live process of the tree, the ones that left its process groups included."""
        return tagged(self.tag)

    def stop(self) -> None:
        """Stop every process of the tree (bounded: about ``grace_s`` + 5 s) and the watchdog."""
        stop_tagged(self.tag, self.grace_s)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)  # reap, so no zombie is left behind
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            with contextlib.suppress(OSError):
                assert watchdog.stdin is not None
                watchdog.stdin.close()  # the watchdog finds nothing left and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=self.grace_s + 10)

    def __enter__(self) -> ProcessTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _watch(tag: str, grace_s: float) -> None:
    """Block until the owner's end of stdin closes (it exited or was killed), then stop the tree."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    stop_tagged(tag, grace_s)


if __name__ == "__main__":
    _watch(sys.argv[1], float(sys.argv[2]))
