"""Building big things without the cyclic garbage collector in the way.

CPython's collector runs every few hundred new container objects and, every so often, walks
every object alive. Building a big KB's catalog (100,000 live versions, a few objects each) set
it off hundreds of times over a growing heap: reading 100,000 live versions took 1.8 s with it
and 0.5 s without, a start's imports 7 s and 5.5 s (benchmarks/RESULTS.md). What such a build
makes is plain values, tuples, dicts and arrays, without reference cycles, so nothing is lost by
collecting later; and what a start builds lives as long as the process, so :func:`settle` takes
it out of the collector's sight for good (``gc.freeze``), which keeps later collections as
small as the live conversation's objects.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_resume = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection for the body (nested and concurrent uses: until the last ends);
    the collector's previous state is restored after."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


def settle() -> None:
    """Everything alive now is long-lived (a process's start is done): keep the collector from
    walking it again. Objects freed by reference counting are still freed."""
    gc.freeze()
