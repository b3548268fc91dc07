"""A scan's plan before anything is fetched: its work units, memory and time per licence, totals
for the whole request, and warnings for licences that would take long or not fit the budget."""

from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass
from typing import Any

from gmsense.batch.planner import MIN_CORE_M, TILE_MARGIN_M, WorkUnit, plan
from gmsense.config import Settings
from gmsense.geo.sites import Site

#: A licence whose units add up to more than this on one core gets a warning, seconds.
LONG_LICENCE_S = 3600.0


@dataclass(frozen=True)
class PlanRow:
    """One line of a plan: one licence (whole or in tiles) or a group of small licences run as one unit."""

    site_ids: tuple[str, ...]
    units: int
    tiles: int  # 0: not tiled
    bytes_per_unit: int  # the largest unit's peak memory, bytes
    seconds_per_unit: float  # the longest unit, seconds on one core
    seconds: float  # all its units, seconds on one core

    @property
    def name(self) -> str:
        return self.site_ids[0] if len(self.site_ids) == 1 else f"{self.site_ids[0]} +{len(self.site_ids) - 1}"


@dataclass(frozen=True)
class ScanPlan:
    """The rows of a plan (in the order of the licences), its units, and the budget it was made for."""

    rows: list[PlanRow]
    units: list[WorkUnit]
    memory_limit: int  # bytes per task
    workers: int  # tasks running at once
    warnings: list[str]

    @property
    def licences(self) -> int:
        return sum(len(r.site_ids) for r in self.rows)

    @property
    def tiles(self) -> int:
        return sum(r.tiles for r in self.rows)

    @property
    def core_seconds(self) -> float:
        return sum(u.estimated_seconds for u in self.units)

    @property
    def wall_seconds(self) -> float:
        """Seconds until the last unit ends when ``workers`` run the units, longest first."""
        return wall_seconds([u.estimated_seconds for u in self.units], self.workers)

    def as_dict(self) -> dict[str, Any]:
        """The whole plan, JSON-ready (bytes, seconds)."""
        return {
            "memory_limit_bytes": self.memory_limit, "workers": self.workers,
            "totals": {"licences": self.licences, "units": len(self.units), "tiles": self.tiles,
                       "core_hours": round(self.core_seconds / 3600, 4),
                       "wall_hours": round(self.wall_seconds / 3600, 4),
                       "peak_unit_bytes": max((u.estimated_bytes for u in self.units), default=0)},
            "warnings": self.warnings,
            "licences": [{"site_ids": list(r.site_ids), "units": r.units, "tiles": r.tiles,
                          "bytes_per_unit": r.bytes_per_unit, "seconds_per_unit": round(r.seconds_per_unit, 3),
                          "seconds": round(r.seconds, 3)} for r in self.rows],
            "units": [{"name": u.name, "site_ids": [s.site_id for s in u.sites],
                       "tile": u.tile.label if u.tile else None, "bytes": u.estimated_bytes,
                       "seconds": round(u.estimated_seconds, 3)} for u in self.units],
        }


def wall_seconds(durations: list[float], workers: int) -> float:
    """When the last of ``durations`` (seconds) ends on ``workers`` workers, each taking the longest
    waiting one as it becomes free."""
    free = [0.0] * max(1, workers)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def forecast(sites: list[Site], settings: Settings, memory_limit: int, workers: int, *, start: str | None = None,
             end: str | None = None, source: Any = None) -> ScanPlan:
    """The plan :func:`gmsense.batch.scan.run_scan` would make for ``sites`` (see
    :func:`gmsense.batch.planner.plan`), with a warning for each licence over :data:`LONG_LICENCE_S`
    on one core or whose smallest tile still needs more than ``memory_limit`` bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # over-budget tiles are reported below, with numbers
        units = plan(sites, settings, memory_limit, start=start, end=end, source=source)
    rows: list[PlanRow] = []
    by_site: dict[str, list[WorkUnit]] = {}
    for unit in units:
        if unit.tile is None:
            rows.append(_row((unit,)))
        else:
            tiles = by_site.setdefault(unit.sites[0].site_id, [])
            tiles.append(unit)
            if len(tiles) == unit.tile.count:
                rows.append(_row(tuple(tiles)))
    notes = [note for row in rows for note in _warnings(row, memory_limit)]
    return ScanPlan(rows, units, memory_limit, workers, notes)


def _row(units: tuple[WorkUnit, ...]) -> PlanRow:
    return PlanRow(tuple(s.site_id for s in units[0].sites), len(units), len(units) if units[0].tile else 0,
                   max(u.estimated_bytes for u in units), max(u.estimated_seconds for u in units),
                   sum(u.estimated_seconds for u in units))


def _warnings(row: PlanRow, memory_limit: int) -> list[str]:
    out = []
    units = f"{row.tiles} tiles" if row.tiles else "1 unit"
    if row.bytes_per_unit > memory_limit:
        out.append(f"licence {row.name}: a tile of {MIN_CORE_M:.0f} m with its {TILE_MARGIN_M:.0f} m margins needs "
                   f"about {format_bytes(row.bytes_per_unit)}, above the memory limit of {format_bytes(memory_limit)} "
                   f"({units}); raise the memory limit or split the licence")
    if row.seconds > LONG_LICENCE_S:
        out.append(f"licence {row.name}: about {format_seconds(row.seconds)} on one core ({units} of up to "
                   f"{format_bytes(row.bytes_per_unit)} and {format_seconds(row.seconds_per_unit)} each)")
    return out


def format_bytes(n: float) -> str:
    """``1_500_000_000`` -> ``"1.5 GB"`` (decimal units, as memory limits are written)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def format_seconds(s: float) -> str:
    """``45`` -> ``"45 s"``, ``5400`` -> ``"1.5 h"``."""
    if s < 90:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
