"""What a worker process of the clustered night runs first.

A light module on purpose: a spawned worker imports it to run its initializer, and the watch on
its owner must start before the seconds of importing the night's libraries (longer on a busy
machine), so that a worker whose owner is killed meanwhile does not go on to train.
"""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this process (at once, whatever it is doing) as soon as ``parent`` is no longer its
    parent: the initializer of a pool's worker processes, which otherwise go on with their task
    when their owner is killed."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_start(parent: int, threads: int) -> None:
    """A night worker ends with its owner (see `exit_with_parent`), and its math libraries get
    ``threads`` threads (the workers share the cores)."""
    exit_with_parent(parent)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
