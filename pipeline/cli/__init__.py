"""`pricing`: the one command line of the project.

One module per group of commands, all registered on the app of `pipeline.cli.app`:

| module | commands |
|---|---|
| `data` | `world`, `history`, `ingest` |
| `model` | `train`, `evaluate` |
| `night` | `nightly`, `demo` |
| `release` | `promote`, `rollback` |
| `ops` | `monitor`, `up` |
| `serve` | `serve` (the pricing service, package `serving`) |

`render` prints the tables, `errors` turns exceptions into messages and exit codes.
"""

from __future__ import annotations

import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

from pipeline.cli import data, model, night, ops, release, serve
from pipeline.cli.app import app, console
from pipeline.errors import ExitCode

# importing them registers their commands
COMMAND_MODULES = (data, model, night, release, ops, serve)


def main() -> None:
    """The `pricing` command: usage errors exit 1 like any other bad input (not click's 2, which
    here means a gate stopped the night)."""
    code: object
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as err:
        err.show()  # `pricing` alone: the help, which is no error
        code = ExitCode.OK
    except ClickException as err:
        err.show()
        code = ExitCode.BAD_INPUT
    except typer.Abort:
        console.print("[bold red]interrupted[/]")
        code = ExitCode.INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
