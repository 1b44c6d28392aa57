"""The production stack as local processes: Airflow (api-server, scheduler, dag-processor, Celery
worker) on PostgreSQL with Redis as the Celery broker, and an MLflow tracking server on PostgreSQL.

Nothing here imports Airflow: every Airflow and MLflow process gets an environment built from
scratch, so the in-process DAG tests of the same session (which point ``AIRFLOW_HOME`` at a
SQLite home of their own) cannot leak into it, nor it into them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.contracts import PROMOTION_POOL, PROMOTION_POOL_DOC
from pipeline.orchestration.procs import ProcessTree

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")  # trust auth: the first that connects is used
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 5
AIRFLOW_DB = "pricing_it_airflow"
MLFLOW_DB = "pricing_it_mlflow"
API_PORT = 18080
MLFLOW_PORT = 15000
WORKER_LOG_PORT = 18793  # the Celery worker's log server; the default 8793 may be taken
API_URL = f"http://127.0.0.1:{API_PORT}"
MLFLOW_URL = f"http://127.0.0.1:{MLFLOW_PORT}"
ADMIN_USER = "admin"
GRACE_S = 10  # between SIGTERM and SIGKILL at teardown


# Variables of the calling process that must not reach the stack's processes.
_FOREIGN_PREFIXES = ("AIRFLOW", "PRICING_", "MLFLOW_", "_AIRFLOW", "AWS_")


class StackError(RuntimeError):
    """The stack could not start, or a step of it failed; the message carries the process logs."""


def _bin(name: str) -> str:
    """An executable of the interpreter's environment (the venv), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` is not installed next to {sys.executable} nor on PATH")
    return found


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"<unreadable: {err}>"
    return "\n".join(text.splitlines()[-lines:])


# ---- PostgreSQL and Redis ---------------------------------------------------------------------
def pg_user() -> str:
    """The PostgreSQL role to connect as; fails (does not skip) when the server is unreachable."""
    import psycopg2

    errors = []
    for user in PG_USERS:
        try:
            psycopg2.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=5
            ).close()
            return user
        except psycopg2.Error as err:
            errors.append(f"{user}: {str(err).strip()}")
    raise StackError(
        f"PostgreSQL at {PG_HOST}:{PG_PORT} is required by the integration tests and refused "
        f"every role tried ({'; '.join(errors)})"
    )


def pg_url(user: str, db: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{user}@{PG_HOST}:{PG_PORT}/{db}"


@contextlib.contextmanager
def _pg_admin(user: str) -> Iterator[Any]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def recreate_databases(user: str, *names: str) -> None:
    with _pg_admin(user) as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')


def drop_databases(user: str, *names: str) -> None:
    with _pg_admin(user) as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_query(user: str, db: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def flush_redis_db() -> None:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5).flushdb()
    except redis.RedisError as err:
        raise StackError(
            f"Redis at {REDIS_HOST}:{REDIS_PORT} is required by the integration tests (the Celery "
            f"broker) and is unreachable: {err}"
        ) from err


def redis_keys() -> list[str]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
    return sorted(k.decode() for k in client.keys("*"))


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise StackError(
                f"port {port} is already in use: another stack (a leftover of an interrupted "
                "run?) is listening there"
            )


# ---- HTTP -------------------------------------------------------------------------------------
def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One JSON request; returns (status, decoded body or text). Never raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


# ---- processes --------------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """The running stack. ``env`` is what every Airflow process (and so every task) gets."""

    root: Path
    pg_user: str
    env: dict[str, str]
    password: str
    services: list[Service] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    tree: ProcessTree | None = None

    @property
    def home(self) -> Path:
        return self.root / "airflow"

    @property
    def data_dir(self) -> Path:
        return self.root / "pricing"

    # -- process control
    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Service:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if self.tree is None:
            # Every process the stack starts, and every process those start (Celery's forks,
            # Airflow's task processes in groups of their own), stops with it — also when the
            # test process is killed: the tree's watchdog stops them then.
            self.tree = ProcessTree(grace_s=GRACE_S)
        # cwd is not the repo: no ./.env of a developer is read by the settings
        proc = self.tree.spawn(list(args), env or self.env, log, cwd=self.root)
        service = Service(name, proc, log)
        self.services.append(service)
        self.logs.append(log)
        return service

    def run(self, name: str, *args: str, timeout: float = 180.0) -> None:
        """A one-shot command; raises with its output (and the stack's logs) when it fails."""
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs.append(log)
        with log.open("ab") as out:
            try:
                done = subprocess.run(
                    args,
                    env=self.env,
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                self.fail(f"`{' '.join(args[:3])}` did not finish within {timeout:.0f} s")
        if done.returncode != 0:
            self.fail(f"`{' '.join(args[:3])}` exited with {done.returncode}")

    def check_alive(self) -> None:
        for s in self.services:
            if s.proc.poll() is not None:
                self.fail(f"{s.name} exited with {s.proc.returncode}")

    def wait_for(
        self, what: str, ready: Callable[[], bool], deadline_s: float, every_s: float = 1.0
    ) -> None:
        """Poll ``ready`` until it is true; fail (with every log) on timeout or a dead process."""
        end = time.monotonic() + deadline_s
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError):
                if ready():
                    return
            if time.monotonic() > end:
                self.fail(f"{what}: not ready within {deadline_s:.0f} s")
            time.sleep(every_s)

    def stop(self) -> None:
        """SIGTERM every process of the stack, SIGKILL what is left after a grace period."""
        started = time.monotonic()
        if self.tree is not None:
            self.tree.stop()
            self.tree = None
        print(f"stack stopped in {time.monotonic() - started:.1f} s", flush=True)
        self.services.clear()

    # -- diagnostics
    def task_logs(self) -> list[Path]:
        return sorted((self.home / "logs").rglob("*.log"))

    def report(self, lines: int = 60) -> str:
        parts = []
        for log in [*self.logs, *self.task_logs()]:
            parts.append(f"----- {log.relative_to(self.root)} (last {lines} lines) -----")
            parts.append(tail(log, lines))
        return "\n".join(parts)

    def fail(self, message: str) -> None:
        raise StackError(f"{message}\n\n{self.report()}")

    # -- the API
    def token(self) -> str:
        status, body = http(
            "POST",
            f"{API_URL}/auth/token",
            {"username": ADMIN_USER, "password": self.password},
        )
        if status not in (200, 201) or not isinstance(body, dict):
            self.fail(f"POST /auth/token answered {status}: {body}")
        return str(body["access_token"])


def _airflow_env(root: Path, user: str, pricing: dict[str, str]) -> tuple[dict[str, str], str]:
    home = root / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    passwords_file = home / "passwords.json"
    passwords_file.write_text(json.dumps({ADMIN_USER: password}))
    base = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    pythonpath = os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH", "")) if p)
    env = {
        **base,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{API_URL}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(user, AIRFLOW_DB),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not installed
        "AIRFLOW__CELERY__RESULT_BACKEND": pg_url(user, AIRFLOW_DB, "db+postgresql+psycopg2"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__API__BASE_URL": f"{API_URL}/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(WORKER_LOG_PORT),
        # Only the runs a test triggers: un-pausing the nightly DAG must not also start the
        # scheduled run of yesterday (a night without logs).
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        **pricing,
    }
    return env, password


@contextlib.contextmanager
def production_stack(
    root: Path, pricing: dict[str, str], workers: int = 1, concurrency: int = 2
) -> Iterator[Stack]:
    """Fresh databases and broker DB, then MLflow and Airflow up and healthy; torn down after.

    ``pricing`` is the ``PRICING_*`` environment of the tasks (lake, world, budgets); ``workers``
    Celery workers run ``concurrency`` tasks each."""
    user = pg_user()
    flush_redis_db()
    for port in (API_PORT, MLFLOW_PORT, *(WORKER_LOG_PORT + i for i in range(workers))):
        check_port_free(port)
    recreate_databases(user, AIRFLOW_DB, MLFLOW_DB)
    env, password = _airflow_env(
        root,
        user,
        {
            **pricing,
            "MLFLOW_TRACKING_URI": MLFLOW_URL,
            "PRICING_LOCK_URI": pg_url(user, MLFLOW_DB),
            # manual champion moves (the pricing_promote DAG) are refused without it
            "PRICING_ADMIN_TOKEN": secrets.token_urlsafe(16),
        },
    )
    stack = Stack(root=root, pg_user=user, env=env, password=password)
    atexit.register(stack.stop)  # should the test process be interrupted before the teardown
    try:
        _start(stack, workers, concurrency)
        yield stack
    finally:
        stack.stop()
        atexit.unregister(stack.stop)
        with contextlib.suppress(Exception):
            flush_redis_db()
        drop_databases(user, AIRFLOW_DB, MLFLOW_DB)


def _start(stack: Stack, workers: int = 1, concurrency: int = 2) -> None:
    airflow = _bin("airflow")
    artifacts = stack.root / "mlartifacts"
    artifacts.mkdir(exist_ok=True)
    mlflow_env = {
        k: v for k, v in stack.env.items() if not k.startswith(("AIRFLOW", "PRICING_", "MLFLOW_"))
    }
    # MLflow creates its schema while the Airflow database migrates.
    stack.start(
        "mlflow-server",
        _bin("mlflow"),
        "server",
        "--backend-store-uri",
        pg_url(stack.pg_user, MLFLOW_DB),
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(MLFLOW_PORT),
        "--workers",
        "2",
        env=mlflow_env,
    )
    stack.run("airflow-db-migrate", airflow, "db", "migrate", timeout=300)
    stack.run("airflow-pools-set", airflow, "pools", "set", PROMOTION_POOL, "1", PROMOTION_POOL_DOC)
    stack.start("airflow-api-server", airflow, "api-server", "--port", str(API_PORT))
    stack.start("airflow-scheduler", airflow, "scheduler")
    stack.start("airflow-dag-processor", airflow, "dag-processor")
    started = [
        stack.start(
            "airflow-celery-worker" + (f"-{i + 1}" if i else ""),
            airflow,
            "celery",
            "worker",
            "--concurrency",
            str(concurrency),
            *(("--celery-hostname", f"worker{i + 1}@%h") if workers > 1 else ()),
            # each worker serves its task logs on a port of its own
            env={**stack.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(WORKER_LOG_PORT + i)},
        )
        for i in range(workers)
    ]

    def mlflow_ready() -> bool:
        return http("GET", f"{MLFLOW_URL}/health", timeout=5)[0] == 200

    def airflow_healthy() -> bool:
        status, body = http("GET", f"{API_URL}/api/v2/monitor/health", timeout=5)
        if status != 200 or not isinstance(body, dict):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor")
        return all((body.get(p) or {}).get("status") == "healthy" for p in parts)

    def worker_ready() -> bool:
        return all(" ready." in w.log.read_text(errors="replace") for w in started)

    stack.wait_for("the MLflow server (/health)", mlflow_ready, deadline_s=120)
    stack.wait_for("Airflow (api-server health)", airflow_healthy, deadline_s=180)
    stack.wait_for("the Celery workers", worker_ready, deadline_s=120)
