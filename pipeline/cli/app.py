"""The `pricing` application: the Typer app every command module registers on, the console, the
options commands share, and the one place errors become messages and exit codes.

Command bodies import heavy modules (pandas, MLflow, SB3, Airflow) where they run, not here, so
that `pricing --help` and a mistyped option answer at once.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer._click.core import Context as ClickContext  # typer vendors click
from typer.core import TyperGroup

from pipeline.cli.errors import DEBUG_ENV, explain, write_traceback
from pipeline.errors import ExitCode
from pipeline.settings import Settings

# Messages go to standard error and are never wrapped: a message cut mid-sentence at 80 columns
# (the width rich assumes without a terminal) reads badly in logs and defeats grep.
console = Console(stderr=True, soft_wrap=True)


class _Commands(TyperGroup):
    """Every command's errors become one message and a documented exit code (`ExitCode`): the
    traceback only with ``--debug`` (or PRICING_DEBUG=1), or in a log file for a bug."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as err:
            code, message = explain(err)
            if os.environ.get(DEBUG_ENV):
                console.print_exception()
            elif code == ExitCode.INTERNAL:
                message += f"; the traceback is in {write_traceback(err)}"
            console.print(f"[bold red]error:[/] {escape(message)}")
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reinforcement-learning dynamic pricing: simulate, train, evaluate. Exit codes: 0 done; "
    "1 bad input or settings; 2 a gate stopped the night, or drift; 3 admin token missing or "
    "wrong; 4 a service out of reach (lake, MLflow, database); 5 a bug (traceback in a file); "
    "130 interrupted.",
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an error (or PRICING_DEBUG=1)")
    ] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


# ------------------------------------------------------------------------------ shared options
WorldOpt = Annotated[
    Path | None,
    typer.Option("--world", help="world file (JSON); default: the bundled default world"),
]
LakeOpt = Annotated[
    str, typer.Option("--lake", help="lake root: a directory, file://PATH or s3://bucket/prefix")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint-url",
        envvar="PRICING_S3_ENDPOINT_URL",
        help="S3-compatible endpoint for s3:// lakes (MinIO, moto); default: AWS",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="PRICING_TOKEN", help="admin token", show_default=False),
]


# ------------------------------------------------------------------------------ helpers
def fail(message: str, code: int = ExitCode.BAD_INPUT) -> NoReturn:
    """Print ``error: message`` (the traceback too with --debug) and exit with ``code``."""
    if os.environ.get(DEBUG_ENV) and sys.exc_info()[0] is not None:
        console.print_exception()  # the error being handled, with --debug
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def say(message: str) -> None:
    """A progress line on standard error, dimmed."""
    console.print(f"[dim]{escape(message)}[/]")


def settings(**overrides: Any) -> Settings:
    """The settings (environment, .env) with the command's options on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        fail(f"invalid settings: {err}")


def parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a date YYYY-MM-DD (got {value!r})")


def parse_time(value: str, option: str) -> dt.datetime:
    """An ISO time, UTC unless it names a zone."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a time such as 2026-02-01T14:00 (got {value!r})")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
