"""Holding off Python's cyclic garbage collector while a step makes many short-lived objects.

A semester's rows (tuples, dicts) count towards the collector's thresholds, so building them
sets off full collections that walk the whole heap: the semester's snapshot, and in a
long-lived process earlier semesters' objects too. Rows hold no cycles and are freed by
reference counting, so holding collections off for a bounded step only delays freeing any
cyclic garbage made meanwhile (an exception's traceback, say) until the collector is back on.
The other use is loading the code location (``definitions.py``), whose objects live as long
as the process: they are frozen once loaded rather than walked by every later collection, and
any cyclic garbage made while they load is frozen with them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The collector off for the block. A caller that turned it off itself keeps it off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
