"""Child processes that never outlive the command that started them.

Servers such as ``airflow standalone`` start a tree of processes, and some of them leave the
tree's process group on purpose (Airflow runs each task in a group of its own), so neither
``killpg`` nor a parent-death signal reaches all of them. `ProcessTree` starts each process in a
session of its own and finds the tree's processes wherever they are: every process in one of those
sessions (a process group can be left without leaving the session), and every process whose
environment carries the tree's tag (inherited by a descendant that starts a session of its own;
a process that rewrites its title, as Airflow's servers do, may overwrite its environment, which
is why the session comes first). It stops them

- `ProcessTree.stop` (Ctrl-C, SIGTERM, normal exit): SIGTERM to every tagged process, SIGKILL to
  what is left after a grace period — bounded in time whatever the servers do;
- a *watchdog* started with the tree, in a session of its own, holds one end of a pipe whose
  other end only the owner holds: when the owner dies in any way — SIGKILL included — the pipe
  closes and the watchdog stops the tree the same way, then exits.

Run as ``python -m pipeline.orchestration.procs TAG GRACE`` it is that watchdog; the owner tells it each new
session on the pipe, one id a line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal

# bandit: subprocess runs this project's own servers and git, never a command from input
import subprocess  # nosec B404
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path

import psutil

TAG_VARIABLE = "PRICING_PROCESS_TREE"


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def tagged(tag: str, sessions: Collection[int] = (), variable: str = TAG_VARIABLE) -> list[int]:
    """The pids of live processes in one of ``sessions`` or whose environment holds
    ``variable=tag``."""
    pids = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if _session(proc.pid) in sessions or proc.environ().get(variable) == tag:
                pids.append(proc.pid)
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_tagged(
    tag: str,
    sessions: Collection[int] = (),
    grace_s: float = 10.0,
    variable: str = TAG_VARIABLE,
) -> int:
    """SIGTERM every process of the tree (`tagged`), SIGKILL the rest after ``grace_s``; returns
    how many were still running at the deadline. Returns within about ``grace_s + 5`` seconds."""

    def left() -> list[int]:
        return tagged(tag, sessions, variable)

    _signal_all(left(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    running = left()
    while running and time.monotonic() < deadline:
        time.sleep(0.2)
        running = left()
    stubborn = len(running)
    for _ in range(25):  # SIGKILL until none is left (a dying server may still fork)
        if not running:
            break
        _signal_all(running, signal.SIGKILL)
        time.sleep(0.2)
        running = left()
    return stubborn


class ProcessTree:
    """Processes started for one command, stopped together: see the module docstring."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self.tag = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.sessions: set[int] = set()
        env = {k: v for k, v in os.environ.items() if k != TAG_VARIABLE}
        # Its own session: a Ctrl-C or a killpg aimed at the owner's group does not reach it.
        # (bandit: this interpreter, this module, no shell)
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "pipeline.orchestration.procs", self.tag, str(grace_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
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
            # bandit: commands this project builds, without a shell
            proc = subprocess.Popen(  # nosec B603
                cmd,
                env=self.tagged_env(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        self.sessions.add(proc.pid)  # start_new_session: the child leads a session of its pid
        if self._watchdog is not None and self._watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                self._watchdog.stdin.write(f"{proc.pid}\n".encode())
                self._watchdog.stdin.flush()
        return proc

    def tagged_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the tree's tag: for processes that another library starts (a browser
        driver), so that they stop with the tree too."""
        return {**env, TAG_VARIABLE: self.tag}

    def pids(self) -> list[int]:
        """Every live process of the tree, the ones that left its process groups included."""
        return tagged(self.tag, self.sessions)

    def stop(self) -> None:
        """Stop every process of the tree (bounded: about ``grace_s`` + 5 s) and the watchdog."""
        stop_tagged(self.tag, self.sessions, self.grace_s)
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
    """Read the sessions the owner reports until its end of stdin closes (it exited or was
    killed), then stop the tree."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sessions: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        for line in sys.stdin.buffer:
            with contextlib.suppress(ValueError):
                sessions.add(int(line))
    stop_tagged(tag, sessions, grace_s)


if __name__ == "__main__":
    _watch(sys.argv[1], float(sys.argv[2]))
