"""Where the fault cases strike inside a champion move, and the ledger they read after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mlflow import MlflowClient

from pipeline.release.registry import Registry


@contextlib.contextmanager
def after_alias_moves(fault: Callable[[], None]) -> Iterator[None]:
    """Within the block, every alias move really happens, then ``fault`` strikes (the lake or
    the tracking server goes down) before the move's next step; restored on leaving."""
    move = MlflowClient.set_registered_model_alias

    def move_then_fault(self: MlflowClient, *args: Any, **kwargs: Any) -> None:
        move(self, *args, **kwargs)
        fault()

    MlflowClient.set_registered_model_alias = move_then_fault  # type: ignore[method-assign]
    try:
        yield
    finally:
        MlflowClient.set_registered_model_alias = move  # type: ignore[method-assign]


def ledger_moves(registry: Registry) -> list[tuple[str, str]]:
    """The ledger as (action, to_version) pairs, oldest first."""
    return [(e.action, e.to_version) for e in registry.ledger.entries()]
