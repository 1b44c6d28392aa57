"""`pricing up` (`make up`): Airflow and the MLflow UI on localhost, over the embedded defaults.

Starts ``airflow standalone`` (api-server with the UI, scheduler, dag-processor, triggerer; SQLite
metadata DB in ``<data_dir>/airflow``, the one `pricing nightly --airflow` and `make demo` write)
and an MLflow tracking server on ``<data_dir>/mlflow.db``, waits until both answer, prints the
URLs and the login, and stops both on Ctrl-C. The DAGs run with the caller's ``PRICING_*``
environment, so runs triggered in the UI use the same lake and registry as the CLI.

Every process of the stack (Airflow's components, its executor's workers, the task processes it
starts in groups of their own, MLflow's workers) belongs to one `pipeline.orchestration.procs.ProcessTree`: it
stops in bounded time, and a watchdog stops it if the command that started it is killed.
"""

from __future__ import annotations

import json
import os
import secrets

# bandit: subprocess runs this project's own servers and git, never a command from input
import subprocess  # nosec B404
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PricingError
from pipeline.orchestration import airflow_run
from pipeline.orchestration.procs import ProcessTree
from pipeline.settings import Settings

USER = "admin"


class StackError(PricingError, RuntimeError):
    """A component did not start; the message names it and its log."""


# Executor slots of the embedded Airflow: each is a worker process, and the default (32) would
# start 32 of them on a 2-core laptop. AIRFLOW__CORE__PARALLELISM in the environment wins.
DEFAULT_PARALLELISM = 4


@dataclass
class Component:
    name: str
    url: str
    ready: str  # a URL that answers 200 once the component is up
    log: Path
    process: subprocess.Popen[bytes]


def _password(home: Path) -> str:
    """The admin password: kept in Airflow's password file, created with a random one."""
    path = home / "simple_auth_manager_passwords.json.generated"
    if path.is_file():
        known = json.loads(path.read_text() or "{}")
        if known.get(USER):
            return str(known[USER])
    password = secrets.token_urlsafe(12)
    path.write_text(json.dumps({USER: password}))
    path.chmod(0o600)
    return password


def _answers(url: str) -> bool:
    try:
        # bandit: the health URLs are built here, from http://127.0.0.1 and a port
        with urllib.request.urlopen(url, timeout=3) as resp:  # nosec B310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Stack:
    """The running components and the process tree that holds all their processes."""

    components: list[Component]
    tree: ProcessTree
    password: str

    def stop(self) -> None:
        """SIGTERM every process of the stack, SIGKILL what is left after the tree's grace."""
        self.tree.stop()


def start(
    settings: Settings,
    airflow_port: int = 8080,
    mlflow_port: int = 5000,
    timeout_s: float = 240.0,
    say: Callable[[str], None] = print,
    serve_port: int = 8000,
) -> Stack:
    """Start Airflow standalone, MLflow and the pricing service, and wait until all answer."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    home = airflow_run.configure(data_dir)
    password = _password(home)
    say(f"migrating the Airflow metadata DB in {home}")
    airflow_run.prepare_db()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PRICING_DATA_DIR": str(data_dir),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "AIRFLOW__API__HOST": "127.0.0.1",  # the UI can move the champion: not on the LAN
        "AIRFLOW__API__PORT": str(airflow_port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{airflow_port}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{airflow_port}/execution/",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(DEFAULT_PARALLELISM))
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    components: list[Component] = []
    tree = ProcessTree()
    try:  # whatever happens before the stack is up (Ctrl-C included), nothing is left running
        components.append(
            Component(
                "Airflow",
                f"http://localhost:{airflow_port}",
                f"http://127.0.0.1:{airflow_port}/api/v2/version",
                home / "standalone.log",
                tree.spawn([str(bin_dir / "airflow"), "standalone"], env, home / "standalone.log"),
            )
        )
        mlflow_cmd = [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            settings.tracking_uri,
            "--default-artifact-root",
            settings.artifacts_dir.as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
        ]
        log = data_dir / "mlflow-server.log"
        components.append(
            Component(
                "MLflow",
                f"http://localhost:{mlflow_port}",
                f"http://127.0.0.1:{mlflow_port}/health",
                log,
                tree.spawn(mlflow_cmd, env, log),
            )
        )
        # The service reads the registry through the MLflow server, once it answers: two
        # processes migrating one fresh SQLite store at the same time break its schema.
        _wait_until_up(components[1:], timeout_s, say)
        components.append(_service(tree, env, data_dir, mlflow_port, serve_port))
        _wait_until_up([c for c in components if c.name != "MLflow"], timeout_s, say)
    except BaseException:
        tree.stop()
        raise
    return Stack(components, tree, password)


def _service(
    tree: ProcessTree, env: dict[str, str], data_dir: Path, mlflow_port: int, serve_port: int
) -> Component:
    """`pricing serve` on ``serve_port``, reading the registry through the MLflow server."""
    log = data_dir / "pricing-serve.log"
    cmd = [str(Path(sys.executable).parent / "pricing"), "serve", "--port", str(serve_port)]
    serve_env = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}"}
    return Component(
        "Pricing service",
        f"http://localhost:{serve_port}",
        f"http://127.0.0.1:{serve_port}/readyz",
        log,
        tree.spawn(cmd, serve_env, log),
    )


def _wait_until_up(
    components: list[Component], timeout_s: float, say: Callable[[str], None]
) -> None:
    """Until every component answers; StackError naming the one that exited or is too slow."""
    deadline = time.monotonic() + timeout_s
    pending = list(components)
    while pending:
        for c in list(pending):
            if c.process.poll() is not None:
                raise StackError(
                    f"{c.name} exited with code {c.process.returncode}; its log {c.log} ends:\n"
                    f"{_tail(c.log)}"
                )
            if _answers(c.ready):
                say(f"{c.name} is up at {c.url}")
                pending.remove(c)
        if pending and time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            logs = ", ".join(str(c.log) for c in pending)
            raise StackError(
                f"{names} did not answer within {timeout_s:.0f} s (ports taken? {logs})"
            )
        time.sleep(1.0)
