"""A scan's plan before anything is fetched: its work units, memory and time per licence, totals
for the whole request, and warnings for licences that would take long or not fit the budget. With
the Earth Engine source it also counts the requests the scan would send (computePixels and listing
pages, from the fetcher's own tile planner) and the largest request's size by the service's rule."""

from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass
from typing import Any

from gmsense.batch.planner import MIN_CORE_M, TILE_MARGIN_M, WorkUnit, plan, shape_reader
from gmsense.config import Settings
from gmsense.geo.sites import Site

#: A licence whose units add up to more than this on one core gets a warning, seconds.
LONG_LICENCE_S = 3600.0


@dataclass(frozen=True)
class Requests:
    """Earth Engine requests of a work unit (or several), counted without making any: computePixels
    requests (images x tiles per image of the fetcher's planner), listing pages (computeValue), and
    the largest computePixels request's size by the service's rule, bytes."""

    pixels: int = 0
    listing: int = 0
    largest_bytes: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.pixels + other.pixels, self.listing + other.listing,
                        max(self.largest_bytes, other.largest_bytes))


@dataclass(frozen=True)
class PlanRow:
    """One line of a plan: one licence (whole or in tiles) or a group of small licences run as one unit."""

    site_ids: tuple[str, ...]
    units: int
    tiles: int  # 0: not tiled
    bytes_per_unit: int  # the largest unit's peak memory, bytes
    seconds_per_unit: float  # the longest unit, seconds on one core
    seconds: float  # all its units, seconds on one core
    requests: Requests | None = None  # Earth Engine only

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
    unit_requests: list[Requests] | None = None  # Earth Engine only: one per unit

    @property
    def requests(self) -> Requests | None:
        """The Earth Engine requests of the whole scan (None for other sources)."""
        if self.unit_requests is None:
            return None
        return sum(self.unit_requests, Requests())

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
        """The whole plan, JSON-ready (bytes, seconds); Earth Engine request counts where known."""
        totals = {"licences": self.licences, "units": len(self.units), "tiles": self.tiles,
                  "core_hours": round(self.core_seconds / 3600, 4), "wall_hours": round(self.wall_seconds / 3600, 4),
                  "peak_unit_bytes": max((u.estimated_bytes for u in self.units), default=0)}
        licences = [{"site_ids": list(r.site_ids), "units": r.units, "tiles": r.tiles,
                     "bytes_per_unit": r.bytes_per_unit, "seconds_per_unit": round(r.seconds_per_unit, 3),
                     "seconds": round(r.seconds, 3), **_requests_dict(r.requests)} for r in self.rows]
        units = [{"name": u.name, "site_ids": [s.site_id for s in u.sites], "tile": u.tile.label if u.tile else None,
                  "bytes": u.estimated_bytes, "seconds": round(u.estimated_seconds, 3),
                  **_requests_dict(self.unit_requests[k] if self.unit_requests else None)}
                 for k, u in enumerate(self.units)]
        return {"memory_limit_bytes": self.memory_limit, "workers": self.workers,
                "totals": {**totals, **_requests_dict(self.requests)}, "warnings": self.warnings,
                "licences": licences, "units": units}


def _requests_dict(requests: Requests | None) -> dict[str, Any]:
    if requests is None:
        return {}
    from gmsense.sources.earthengine._fetch import REQUEST_BYTE_LIMIT

    return {"pixel_requests": requests.pixels, "listing_requests": requests.listing,
            "largest_request_bytes": requests.largest_bytes, "request_byte_limit": REQUEST_BYTE_LIMIT}


def wall_seconds(durations: list[float], workers: int) -> float:
    """When the last of ``durations`` (seconds) ends on ``workers`` workers, each taking the longest
    waiting one as it becomes free."""
    free = [0.0] * max(1, workers)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def forecast(sites: list[Site], settings: Settings, memory_limit: int, workers: int, *, start: str | None = None,
             end: str | None = None, source: Any = None, slots: int = 1) -> ScanPlan:
    """The plan :func:`gmsense.batch.scan.run_scan` would make for ``sites`` (see
    :func:`gmsense.batch.planner.plan`), with a warning for each licence over :data:`LONG_LICENCE_S`
    on one core or whose smallest tile still needs more than ``memory_limit`` bytes. ``slots``: the
    scan's worker processes (a lone long licence is cut into tiles for them, as the scan does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # over-budget tiles are reported below, with numbers
        units = plan(sites, settings, memory_limit, start=start, end=end, source=source, slots=slots)
    unit_requests = earthengine_requests(units, settings, start, end, source)
    requests_of = {id(u): r for u, r in zip(units, unit_requests or [], strict=False)}
    rows: list[PlanRow] = []
    by_site: dict[str, list[WorkUnit]] = {}
    for unit in units:
        if unit.tile is None:
            rows.append(_row((unit,), requests_of))
        else:
            tiles = by_site.setdefault(unit.sites[0].site_id, [])
            tiles.append(unit)
            if len(tiles) == unit.tile.count:
                rows.append(_row(tuple(tiles), requests_of))
    notes = [note for row in rows for note in _warnings(row, memory_limit)]
    return ScanPlan(rows, units, memory_limit, workers, notes, unit_requests)


def earthengine_requests(units: list[WorkUnit], settings: Settings, start: str | None, end: str | None,
                         source: Any) -> list[Requests] | None:
    """The Earth Engine requests of each unit (None unless ``source`` is Earth Engine): every licence
    (or tile) of a unit is one load (gmsense.sources.earthengine.load_cube) over its monitoring area
    (or the tile's read area): the listing's pages, then the images the source expects
    (``source.describe``) x the tiles :func:`gmsense.sources.earthengine._fetch.plan_requests` cuts its
    grid into. Images the listing skips (not clear enough) make the real count smaller."""
    if getattr(source, "name", None) != "earthengine":
        return None
    shape_of = shape_reader(settings, start, end, source)
    return [sum((_load_requests(site, unit.tile.read if unit.tile else site.buffered(settings.sites.buffer_m),
                                settings, start, end, shape_of(site).dates) for site in unit.sites), Requests())
            for unit in units]


def _load_requests(site: Site, region: Any, settings: Settings, start: str | None, end: str | None,
                   images: int) -> Requests:
    """The requests of one load over ``region``: as load_cube builds its grid and lists its pages."""
    from gmsense.sources.earthengine import date_window, licence_grid, listing_pages, page_months
    from gmsense.sources.earthengine import graphs as ee_graphs
    from gmsense.sources.earthengine._fetch import plan_requests

    spec = ee_graphs.SPECS[settings.earthengine.collection]
    grid = licence_grid(region, site.crs, spec.resolution_m)
    pixels = plan_requests(grid.width, grid.height, spec.bytes_per_pixel, images)
    pages = listing_pages(*date_window(spec, start, end), page_months(spec))
    return Requests(pixels.requests, len(pages), pixels.largest_request_bytes)


def requests_line(result: ScanPlan) -> str | None:
    """One line of the Earth Engine requests of the scan (None for other sources)."""
    requests = result.requests
    if requests is None:
        return None
    from gmsense.sources.earthengine._fetch import REQUEST_BYTE_LIMIT

    return (f"Earth Engine requests: {requests.pixels:,} computePixels (images x tiles per image), "
            f"{requests.listing:,} listing pages; the largest request is {requests.largest_bytes:,} bytes "
            f"(limit {REQUEST_BYTE_LIMIT:,})")


def _row(units: tuple[WorkUnit, ...], requests_of: dict[int, Requests]) -> PlanRow:
    known = [requests_of[id(u)] for u in units if id(u) in requests_of]
    return PlanRow(tuple(s.site_id for s in units[0].sites), len(units), len(units) if units[0].tile else 0,
                   max(u.estimated_bytes for u in units), max(u.estimated_seconds for u in units),
                   sum(u.estimated_seconds for u in units), sum(known, Requests()) if known else None)


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
