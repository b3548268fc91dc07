"""The shared pool of worker threads (gmsense._parallel)."""

from __future__ import annotations

import threading
import time

import pytest

from gmsense._parallel import parallel_map


def test_results_in_the_items_order_on_several_threads() -> None:
    items = list(range(40))
    assert parallel_map(lambda i: i * i, items, threads=3) == [i * i for i in items]


def test_at_most_the_threads_asked_for_run_at_once() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def task(_: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1

    parallel_map(task, list(range(30)), threads=2)
    assert peak <= 2
    parallel_map(task, list(range(30)), threads=1)
    assert peak <= 2


def test_one_thread_or_nested_work_runs_in_the_calling_thread() -> None:
    caller = threading.get_ident()
    assert set(parallel_map(lambda _: threading.get_ident(), [1, 2, 3], threads=1)) == {caller}

    def outer(_: int) -> set[int]:
        me = threading.get_ident()
        assert me != caller
        return set(parallel_map(lambda _: threading.get_ident(), [1, 2, 3], threads=4)) - {me}

    assert parallel_map(outer, [1, 2], threads=2) == [set(), set()], "nested work ran on other threads"


def test_an_error_in_one_item_is_raised() -> None:
    def task(i: int) -> int:
        if i == 7:
            raise ValueError("item 7")
        return i

    with pytest.raises(ValueError, match="item 7"):
        parallel_map(task, list(range(20)), threads=2)
    assert parallel_map(task, [1, 2, 3], threads=2) == [1, 2, 3], "the pool still works after an error"
