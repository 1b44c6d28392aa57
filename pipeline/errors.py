"""The errors a user can cause, and the exit codes the `pricing` command gives them.

Every error the project raises for something a user can fix derives from `PricingError` and
says, in its message, what is wrong and how to fix it. The command line prints that message,
without a traceback, and exits with the error's code (`ExitCode`). Standard library only, so
that any module can import it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every `pricing` command (docs/cli.md lists them)."""

    OK = 0
    BAD_INPUT = 1  # bad data, file, option or setting: the message names it and the fix
    STOPPED = 2  # a gate stopped the night, or the monitor found drift
    DENIED = 3  # the admin token is missing or wrong
    UNAVAILABLE = 4  # a service is out of reach: the lake (S3), MLflow's server, a database
    INTERNAL = 5  # a bug: the message says where the traceback was written
    INTERRUPTED = 130  # Ctrl-C


class PricingError(Exception):
    """Something a user can fix; the message says what and how."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class Unavailable(PricingError):
    """A service the command needs is out of reach (or refused the credentials)."""

    exit_code = ExitCode.UNAVAILABLE
