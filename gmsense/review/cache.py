"""Figures of the review app that only scans and licence imports change, kept between requests.

The green-survey ranking's licence figures (gmsense.outputs.scorecards.licence_figures) and the values
of the queue's filter form cost a pass over every licence and patch of a scope; they are kept per key
while :func:`scan_stamp` stays the same. The stamp is the latest licence update (``sites.updated_at``:
every licence write sets it) and the latest scan unit finished (``scan_units.finished_at``: every
patch and every new or re-checked flag is written in the transaction that finishes its licence's
unit): two MAX()es read from indexes (revision 0013). A decision changes a flag's status, never the
stamp: figures that count statuses are computed at every request, not kept here. Each server process
keeps its own values; they are checked against the database at every use, so several processes never
disagree for longer than a request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import func, select

from gmsense.store import ScanUnitRow, SiteRow, Store

T = TypeVar("T")


def scan_stamp(store: Store) -> tuple[Any, ...]:
    """What changes whenever a scan or a licence import writes: (latest licence update, latest unit finished)."""
    with store.session() as s:
        return (s.scalar(select(func.max(SiteRow.updated_at))), s.scalar(select(func.max(ScanUnitRow.finished_at))))


class ScanCache:
    """Values by key, each kept with the stamp it was computed at and used while the stamp holds; the
    ``size`` most recently used keys are kept. Safe to share between threads (two threads missing the
    same key both compute it; either result is right)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._kept: OrderedDict[Hashable, tuple[tuple[Any, ...], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of ``key``: kept, or ``compute()`` when the store changed since (or never kept)."""
        stamp = scan_stamp(store)  # read before computing: a write meanwhile makes the next use recompute
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == stamp:
                self._kept.move_to_end(key)
                return kept[1]
        value = compute()
        with self._lock:
            self._kept[key] = (stamp, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return value


class DerivedCache:
    """Values derived from one object (``source``: e.g. figures a :class:`ScanCache` keeps) and a
    hashable ``key`` of everything else they depend on: a value is used only while it is asked for
    with the very same source object and an equal key, so a source computed again (a scan) or any
    change of the key's inputs computes it again. The ``size`` most recently used keys are kept."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._kept: OrderedDict[Hashable, tuple[object, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: object, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] is source:
                self._kept.move_to_end(key)
                return kept[1]
        value = compute()
        with self._lock:
            self._kept[key] = (source, value)  # holding the source: its id is never reused meanwhile
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return value
