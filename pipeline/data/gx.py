"""Great Expectations, imported and run quietly.

Importing GX logs hundreds of info lines and warns about its own deprecated imports, none of which
a pricing team can act on; the validation modules import it through this one, inside `quiet_gx`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_gx() -> Iterator[None]:
    """Keep GX's chatter out of task logs: its import logs hundreds of info lines and raises
    deprecation warnings about its own imports, none of which a pricing team can act on."""
    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", category=DeprecationWarning, module="great_expectations"
            )
            yield
    finally:
        gx_logger.setLevel(level)



with quiet_gx():
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.row_conditions import Column

__all__ = [
    "Column",
    "ProgressBarsConfig",
    "RunIdentifier",
    "UpdateDataDocsAction",
    "gx",
    "gxe",
    "quiet_gx",
]
