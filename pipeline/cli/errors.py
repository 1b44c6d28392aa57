"""From an exception to what the user reads: an exit code (`ExitCode`) and one line naming the
cause and the fix. Errors the project raises for a user to fix (`PricingError` and the
simulator's `WorldError` / `FitError`) carry their own message; a service out of reach is
recognised anywhere in the exception's chain; anything else is a bug, whose traceback goes to a
log file that the message names.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import traceback
from pathlib import Path

from pipeline.errors import ExitCode, PricingError

DEBUG_ENV = "PRICING_DEBUG"  # set (or --debug): tracebacks are shown


# The libraries whose exceptions mean "a service is out of reach", found anywhere in the chain.
_UNREACHABLE = {
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "ConnectTimeout",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "MaxRetryError",
    "NewConnectionError",
    "ReadTimeout",
    "ReadTimeoutError",
    "TimeoutError",
}
_UNREACHABLE_TEXT = ("Max retries exceeded", "Connection refused", "Failed to establish")


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def explain(err: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one-line message for an error that reached the command line."""
    if isinstance(err, PricingError):
        return err.exit_code, str(err)
    chain = _chain(err)
    names = {type(e).__name__ for e in chain}
    modules = " ".join(type(e).__module__ for e in chain)
    text = " ".join(str(e) for e in chain)
    if "sqlalchemy" in modules and "OperationalError" in names:
        return ExitCode.UNAVAILABLE, (
            f"a database is out of reach: {str(err).splitlines()[0]}; check that it runs and "
            "MLFLOW_TRACKING_URI / PRICING_LOCK_URI"
        )
    if names & _UNREACHABLE or any(t in text for t in _UNREACHABLE_TEXT):
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        service = (
            f"the MLflow tracking server {uri}"
            if "mlflow" in modules or uri.startswith("http")
            else "a service"
        )
        return ExitCode.UNAVAILABLE, (
            f"{service} is out of reach ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
            "check that it runs and that its address is right"
        )
    user_errors: list[type[BaseException]] = []
    for module, name in (
        ("sim.world", "WorldError"),
        ("sim.fit", "FitError"),
        ("pydantic", "ValidationError"),
        ("mlflow.exceptions", "MlflowException"),
    ):
        loaded = sys.modules.get(module)  # an exception of a module never imported cannot occur
        if loaded is not None:
            user_errors.append(getattr(loaded, name))
    if isinstance(err, tuple(user_errors)):
        return ExitCode.BAD_INPUT, str(err)
    if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
        return ExitCode.BAD_INPUT, str(err)
    if type(err).__name__ == "SettingsError" and "pydantic_settings" in type(err).__module__:
        return ExitCode.BAD_INPUT, (
            f"invalid setting: {err}; a list or tuple setting is written as JSON, e.g. "
            """PRICING_ALGOS='["ppo"]'"""
        )
    return ExitCode.INTERNAL, f"unexpected {type(err).__name__}: {err}"


def write_traceback(err: BaseException) -> str:
    """Append the traceback to a log file and return its path (under the data dir if writable)."""
    text = "".join(traceback.format_exception(err))
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for folder in (
        Path(os.environ.get("PRICING_DATA_DIR", "data")) / "logs",
        Path(tempfile.gettempdir()),
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "pricing-errors.log"
            with path.open("a") as out:
                out.write(f"--- {stamp} pricing {' '.join(sys.argv[1:])}\n{text}\n")
            return str(path)
        except OSError:
            continue
    return "(nowhere: no writable log folder)"
