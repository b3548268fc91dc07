"""One pool of worker threads for the analysis' array work, kept between calls.

The analysis splits its array work (masking, the scene sample's medians, the detector) into blocks
run in threads: numpy and the compiled kernels release the GIL. A thread pool started per step
costs more than the threads: a new thread must take the GIL to report that it has started, and
while the pool's first threads run Python between their array calls that waits up to the
interpreter's switch interval (``sys.getswitchinterval()``, 5 ms), for every thread of every
step, about a tenth of the benchmark licence's analysis. The pool here starts its threads once
per process.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0
_worker = threading.local()


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool, at least ``threads`` workers (made anew in a forked child, whose copy
    of the parent's pool has no threads behind it)."""
    global _pool, _pool_size, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < threads:
            old = _pool if _pool_pid == os.getpid() else None
            _pool_size = max(threads, _pool_size if old is not None else 0, os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="gmsense-array",
                                       initializer=_mark_worker)
            _pool_pid = os.getpid()
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _mark_worker() -> None:
    _worker.active = True


def parallel_map(func: Callable[[Item], Result], items: Sequence[Item], threads: int) -> list[Result]:
    """``[func(item) for item in items]``, on at most ``threads`` threads of the shared pool at
    once (each takes the next item when it finishes one), in the items' order.

    Inline, in the calling thread, for one thread or one item, and when called from a pool thread
    (nested work never waits for the pool it runs on). The first error of ``func`` is raised."""
    if threads <= 1 or len(items) <= 1 or getattr(_worker, "active", False):
        return [func(item) for item in items]
    results: list[Result | None] = [None] * len(items)
    next_index = itertools.count()  # its next() is atomic: each item is taken once

    def drain() -> None:
        while (k := next(next_index)) < len(items):
            results[k] = func(items[k])

    pool = _shared_pool(threads)
    workers = [pool.submit(drain) for _ in range(min(threads, len(items)))]
    for worker in workers:
        worker.result()
    return results  # type: ignore[return-value]
