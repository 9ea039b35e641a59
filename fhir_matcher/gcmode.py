"""Garbage-collector settings for batch work.

A screen allocates millions of small containers (parsed JSON) and keeps a partition of them
alive, so with Python's defaults the collector runs every 700 allocations and keeps walking
the same live objects: about a sixth of a screen's time. Collecting every 50,000 allocations
instead costs little memory (short-lived garbage is freed by reference counting anyway; only
cycles wait for the collector) and gives most of that time back.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

BATCH = (50_000, 20, 100)


def use_batch() -> None:
    """Batch thresholds for this process (worker processes)."""
    gc.set_threshold(*BATCH)


@contextmanager
def batch() -> Iterator[None]:
    """Batch thresholds for the duration of a command; the previous ones after."""
    before = gc.get_threshold()
    gc.set_threshold(*BATCH)
    try:
        yield
    finally:
        gc.set_threshold(*before)
