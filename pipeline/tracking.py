"""The MLflow tracking backend: is it there before a long job starts?

MLflow retries an unreachable server for minutes before it gives up, and a night would find out
only after training. `require_tracking` asks once, with a short timeout, so a command can say at
once which server is out of reach and how to fix it.
"""

from __future__ import annotations

import urllib.error
import urllib.request

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
            with urllib.request.urlopen(health, timeout=timeout_s) as resp:
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
        import sqlalchemy as sa

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
