"""SQL helpers for the store's readers.

:func:`unindexed`: a column SQLite must not reach through an index. SQLite's planner, even with
ANALYZE statistics, reads a whole table through an index of low selectivity when a query groups by
that column or ORs conditions each of which some index serves ("MULTI-INDEX OR"), then fetches every
row by its rowid: measured with 100,000 flags, counting flags per licence took 226 ms through
``ix_flags_site_id`` and 122 ms by a scan, and counting the flags pending their first escalation
stage 325 ms through eight index searches and 49 ms by a scan. ``+column`` (SQLite's way of saying
"no index for this term") is written on SQLite only; PostgreSQL plans these well and sees the column.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement


class Unindexed(ColumnElement[Any]):
    """``column``, which SQLite is not to look up through an index (see the module docstring)."""

    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type

    @property
    def _from_objects(self) -> list[Any]:
        return self.column._from_objects


def unindexed(column: Any) -> Unindexed:
    return Unindexed(column)


@compiles(Unindexed)
def _plain(element: Unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(Unindexed, "sqlite")
def _no_index_on_sqlite(element: Unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)
