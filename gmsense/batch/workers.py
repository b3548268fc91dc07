"""The scan's local worker processes, and the memory they keep between tasks.

On a virtual machine whose balloon driver hands free memory back to the host (virtio-balloon free
page reporting), a page a process freed is returned to the host about a second later, and the next
first touch of it costs the host's fault: measured on this project's 2-core VM, 2-10 s per GiB after
1-6 s idle against 0.13 s per GiB for memory the process kept. glibc gives every block larger than
32 MiB back to the system on free (``mmap``), so each licence or tile a worker analyses writes its
bands, masks and indices into fresh pages: the large licence of ``gmsense bench speed`` took 7.96 s
on one worker (median of 5 rounds), 3.85 s once the worker kept its memory (README, Benchmarks).

:data:`KEEP_MEMORY_ENV` makes glibc serve every block from one heap that is never trimmed
(``MALLOC_ARENA_MAX`` 1, ``MALLOC_MMAP_MAX_`` 0, ``MALLOC_TRIM_THRESHOLD_`` 1 TiB; see mallopt(3)):
a worker then holds on to its peak and reuses it for the next unit. The peak is what the planner
bounds (gmsense.batch.planner.default_memory_limit: half the machine shared by the tasks that run at
once), under dask's spill and pause thresholds (60 % and 80 % of a worker's memory limit). The
variables must be in a process's environment when it starts, so they reach the workers of the
cluster :func:`local_cluster` starts (``gmsense scan --workers N``) and the workers of an external
cluster only if it was started with them (``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1099511627776 dask worker ...``). A scan in threads of its own process (no
``--workers``, no ``--scheduler``) is left as it is: the same settings made through glibc's ``mallopt`` in
such a process made its first scan of the large licence slower (17-21 s against 13-17 s, three fresh
processes each; one arena for every thread) and only its later ones faster (6-8 s against 7-11 s), while
worker processes gained on the first scan too (a fresh 2-worker cluster per scan: 11-20 s against 18-22 s).
Setting ``scan.keep_worker_memory: false`` leaves the workers as dask starts them
(``MALLOC_TRIM_THRESHOLD_`` 65536: memory handed back as soon as it is freed).
"""

from __future__ import annotations

import os
from typing import Any

import dask
from distributed import LocalCluster

#: glibc malloc tunables (mallopt(3), "Environment variables") that keep freed memory in the process.
KEEP_MEMORY_ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                                   "MALLOC_TRIM_THRESHOLD_": str(2**40)}
#: dask's setting whose variables a nanny puts in its worker's environment before starting it
#: (https://distributed.dask.org/en/stable/worker-memory.html#automatically-trim-memory).
PRE_SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"


#: This process's own values of those variables, from before any cluster of it started (see :func:`local_cluster`).
_OWN_ENVIRON: dict[str, str | None] = {name: os.environ.get(name) for name in KEEP_MEMORY_ENV}


def _restore_own_environ() -> None:
    for name, value in _OWN_ENVIRON.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def worker_environ(keep_memory: bool) -> dict[str, Any]:
    """The environment the local cluster's nannies give their workers before they start: dask's own
    (``distributed.nanny.pre-spawn-environ``) and, with ``keep_memory``, :data:`KEEP_MEMORY_ENV` over it."""
    environ = dict(dask.config.get(PRE_SPAWN_ENVIRON, {}) or {})
    return {**environ, **KEEP_MEMORY_ENV} if keep_memory else environ


def local_cluster(workers: int, keep_memory: bool = True, **kwargs: Any) -> LocalCluster:
    """A LocalCluster of ``workers`` single-threaded worker processes whose memory is kept between
    tasks when ``keep_memory`` (module docstring). ``kwargs`` go to LocalCluster."""
    kwargs = {"threads_per_worker": 1, "processes": True, "dashboard_address": ":0", **kwargs}
    # A nanny puts its pre-spawn variables in this process's os.environ (its workers inherit them), where
    # they stay for every process started later, and a nanny that restarts a dead worker puts them there
    # again: this process's own values are put back before and after the workers start.
    _restore_own_environ()
    try:
        with dask.config.set({PRE_SPAWN_ENVIRON: worker_environ(keep_memory)}):
            return LocalCluster(n_workers=workers, **kwargs)
    finally:
        _restore_own_environ()
