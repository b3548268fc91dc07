"""The scan's local worker processes keep the memory they free (gmsense.batch.workers), on a real
LocalCluster: the variables reach the workers before they start, and a freed array stays in the
worker (its resident memory does not fall back) only when the memory is kept."""

from __future__ import annotations

import os

import pytest
from distributed import Client

from gmsense.batch.scan import dask_client
from gmsense.batch.workers import KEEP_MEMORY_ENV, local_cluster, worker_environ

FREED_MB = 256


def _environ() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in KEEP_MEMORY_ENV}


def _resident_after_freeing() -> tuple[float, float]:
    """Resident MB of this process before an array of FREED_MB is made and after it is freed."""
    import numpy as np
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss / 2**20
    array = np.ones(FREED_MB * 2**20 // 8)
    array.sum()
    del array
    return before, process.memory_info().rss / 2**20


def test_worker_environ_keeps_dasks_own_variables_and_adds_the_malloc_ones() -> None:
    kept, default = worker_environ(True), worker_environ(False)
    assert default.get("OMP_NUM_THREADS") == kept.get("OMP_NUM_THREADS")
    assert all(kept[name] == value for name, value in KEEP_MEMORY_ENV.items())
    assert "MALLOC_MMAP_MAX_" not in default


@pytest.mark.parametrize("keep", [True, False])
def test_workers_keep_freed_memory_only_when_asked(keep: bool) -> None:
    with local_cluster(1, keep_memory=keep) as cluster, Client(cluster) as client:
        environ = client.submit(_environ, pure=False).result()
        before, after = client.submit(_resident_after_freeing, pure=False).result()
    if keep:
        assert environ == KEEP_MEMORY_ENV
        assert after - before > FREED_MB * 0.8
    else:
        assert environ["MALLOC_MMAP_MAX_"] is None
        assert after - before < FREED_MB * 0.2


def test_scan_client_starts_workers_that_keep_memory_and_leaves_this_process_as_it_was(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = _environ()
    with dask_client(workers=1, keep_memory=True) as client:
        assert client.submit(_environ, pure=False).result() == KEEP_MEMORY_ENV
        assert _environ() == before
    # A nanny that restarted a dead worker leaves the variables in this process: a later cluster that
    # should not keep memory starts its workers without them all the same.
    for name, value in KEEP_MEMORY_ENV.items():
        monkeypatch.setenv(name, value)
    with dask_client(workers=1, keep_memory=False) as client:
        assert client.submit(_environ, pure=False).result()["MALLOC_MMAP_MAX_"] is None
    assert _environ() == before

