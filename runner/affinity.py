"""Pinning the measuring process to one CPU (less host jitter); ``ab rev=`` pins itself so that the
child processes it starts inherit it."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the block on ``cpu`` alone (no-op with None), then restore the previous affinity."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)
