"""MLflow tracking: the backend a command talks to, the experiment its runs go to, and the code
version they record.

- `tracking` / `experiment` scope MLflow's fluent API to the settings' backend for a block;
- `require_tracking` checks the backend is there before a long job starts: MLflow retries an
  unreachable server for minutes before it gives up, and a night would find out only after
  training;
- `git_commit` is the lineage tag of every model version.
"""

from __future__ import annotations

import contextlib
import os

# bandit: subprocess runs this project's own servers and git, never a command from input
import subprocess  # nosec B404
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import sqlalchemy as sa

from pipeline.errors import Unavailable
from pipeline.settings import Settings

TIMEOUT_S = 10.0


def require_tracking(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    """Raise `Unavailable` naming the backend if MLflow's tracking store cannot be reached: an
    HTTP server that does not answer its health check, or a database that refuses a connection.
    SQLite files are created on first use and need no check."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        health = uri.rstrip("/") + "/health"
        try:
            # bandit: only http(s) URIs get here
            with urllib.request.urlopen(health, timeout=timeout_s) as resp:  # nosec B310
                if resp.status == 200:
                    return
                problem = f"its health check answered {resp.status}"
        except urllib.error.HTTPError as err:
            problem = f"its health check answered {err.code}"
        except (urllib.error.URLError, OSError) as err:
            problem = str(getattr(err, "reason", err))
        raise Unavailable(
            f"the MLflow tracking server {uri} is out of reach ({problem}); start it, or point "
            "MLFLOW_TRACKING_URI at a running one"
        )
    if uri.startswith(("postgresql", "mysql")):
        engine = sa.create_engine(uri, connect_args={"connect_timeout": int(timeout_s)})
        try:
            with engine.connect():
                return
        except sa.exc.SQLAlchemyError as err:
            first = str(getattr(err, "orig", err)).strip().splitlines()[0]
            raise Unavailable(
                f"MLflow's tracking database {engine.url.render_as_string(hide_password=True)} "
                f"is out of reach ({first}); start it, or fix MLFLOW_TRACKING_URI"
            ) from None
        finally:
            engine.dispose()


def create_tracking_store(settings: Settings) -> None:
    """Create a SQLite tracking store's tables now, in this process: processes that each open a
    fresh file at the same moment race to create them ("table runs already exists")."""
    if settings.tracking_uri.startswith("sqlite:"):
        client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)


@contextlib.contextmanager
def tracking(settings: Settings) -> Iterator[str]:
    """Point MLflow's fluent API at ``settings.tracking_uri`` for the block, then restore.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the process environment;
    left there, it would leak into the next `Settings` built in the same process (an Airflow worker,
    a test session) and point it at the wrong registry.
    """
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        yield settings.tracking_uri
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it


@contextlib.contextmanager
def experiment(settings: Settings, name: str | None = None) -> Iterator[str]:
    """`tracking`, with the experiment selected (created if needed, with its artifacts under
    ``settings.artifacts_dir`` on the embedded SQLite store: MLflow would otherwise write
    ./mlruns in the working directory)."""
    with tracking(settings):
        name = name or settings.experiment
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            location = None
            if settings.tracking_uri.startswith("sqlite:"):
                settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
                location = settings.artifacts_dir.as_uri()
            exp_id = mlflow.create_experiment(name, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        yield str(exp_id)


def git_commit() -> str:
    try:
        # bandit: git from PATH with fixed arguments, without a shell
        out = subprocess.run(  # nosec B603 B607
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
