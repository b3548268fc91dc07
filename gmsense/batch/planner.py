"""Work units of a scan: large licences split into tiles that fit a memory budget, small ones
grouped so that per-task overhead does not dominate.

A unit's memory is estimated from its pixels and the acquisitions the period should hold
(:func:`estimate_bytes`). A licence whose monitoring area would exceed the budget is cut into a
grid of tiles; each tile is read with a margin (``TILE_MARGIN_M``) so a patch crossing the tile
edge is seen whole by at least one tile, and keeps only the patches whose representative point
falls in its core. All pure functions: the scan engine (gmsense.batch.scan) runs the units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import date

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gmsense.config import Settings
from gmsense.geo.sites import Site

#: Bytes held per pixel and acquisition while a unit is analysed: six float32 bands and the clear
#: mask as loaded (25 B), the masked season copy and the index cubes (float32), the harmonic
#: baseline and its residuals. Measured peak / (pixels x dates) on the speed benchmark, rounded up.
BYTES_PER_PIXEL_OBS = 120
#: Acquisitions per year the estimate assumes (Sentinel-2 A+B: ~73 a year at 5 days, fewer clear).
DATES_PER_YEAR = 75
#: A tile is read this far beyond its core, metres: larger than the longest patch we expect to be
#: cut (trenches up to 500 m) halves, and than the reference ring of recovery (100 m).
TILE_MARGIN_M = 300.0
#: The smallest tile core, metres: a tile is never mostly margin.
MIN_CORE_M = 2 * TILE_MARGIN_M
#: Licences smaller than this share of the budget are grouped into one task, up to the budget.
GROUP_SHARE = 0.05
#: At most this many licences in one grouped task (a failure re-runs the group's licences).
MAX_GROUP = 16
#: Memory budget per worker by default: this share of the machine's memory over the workers.
DEFAULT_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Tile:
    """One piece of a licence's monitoring area, in the licence's CRS (metres)."""

    index: int
    count: int
    core: BaseGeometry  # the part this tile answers for
    read: BaseGeometry  # the core plus TILE_MARGIN_M, clipped to the monitoring area

    @property
    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"


@dataclass(frozen=True)
class WorkUnit:
    """What one dask task does: several whole licences, or one tile of one licence."""

    sites: tuple[Site, ...]
    tile: Tile | None = None
    estimated_bytes: int = 0

    @property
    def name(self) -> str:
        if self.tile is not None:
            return f"{self.sites[0].site_id}#{self.tile.label}"
        return self.sites[0].site_id if len(self.sites) == 1 else f"{self.sites[0].site_id}+{len(self.sites) - 1}"


def default_memory_limit(concurrent_tasks: int = 1) -> int:
    """Bytes per task: half of the machine's memory shared by the tasks that run at once."""
    import psutil

    return int(psutil.virtual_memory().total * DEFAULT_MEMORY_SHARE / max(1, concurrent_tasks))


def parse_memory(text: str) -> int:
    """``"4GB"``, ``"512 MiB"``, ``"2e9"`` -> bytes (dask's parser, so the units match dask's)."""
    from dask.utils import parse_bytes

    try:
        value = int(parse_bytes(text))
    except (ValueError, TypeError):
        raise ValueError(f"cannot read the memory size {text!r}; write e.g. 4GB or 512MiB") from None
    if value <= 0:
        raise ValueError(f"the memory size must be positive, not {text!r}")
    return value


def period_years(settings: Settings, start: str | None, end: str | None) -> float:
    """Years of imagery the scan period should hold (the synthetic range when open-ended)."""
    first = date.fromisoformat(start) if start else date.fromisoformat(settings.synthetic.start)
    last = date.fromisoformat(end) if end else date.fromisoformat(settings.synthetic.end)
    return max((last - first).days / 365.25, 0.25)


def estimate_bytes(area: BaseGeometry, resolution_m: float, years: float) -> int:
    """Peak bytes to analyse ``area`` (its bounding box) at ``resolution_m`` over ``years``."""
    minx, miny, maxx, maxy = area.bounds
    pixels = math.ceil((maxx - minx) / resolution_m) * math.ceil((maxy - miny) / resolution_m)
    return int(pixels * DATES_PER_YEAR * years * BYTES_PER_PIXEL_OBS)


def tile_area(area: BaseGeometry, n_tiles: int) -> list[Tile]:
    """Cut ``area``'s bounding box into about ``n_tiles`` near-square cores (those that touch
    ``area``), each read with TILE_MARGIN_M of margin."""
    minx, miny, maxx, maxy = area.bounds
    width, height = maxx - minx, maxy - miny
    cols = max(1, round(math.sqrt(n_tiles * width / max(height, 1e-9))))
    return tile_grid(area, cols, max(1, math.ceil(n_tiles / cols)))


def tile_grid(area: BaseGeometry, cols: int, rows: int) -> list[Tile]:
    """``cols`` x ``rows`` cores over ``area``'s bounding box (those that touch ``area``)."""
    minx, miny, maxx, maxy = area.bounds
    width, height = maxx - minx, maxy - miny
    xs = [minx + width * c / cols for c in range(cols)] + [maxx]
    ys = [miny + height * r / rows for r in range(rows)] + [maxy]
    cores = []
    for r in range(rows):
        for c in range(cols):
            core = box(xs[c], ys[r], xs[c + 1], ys[r + 1])
            if core.intersects(area):
                cores.append(core)
    return [Tile(k, len(cores), core, core.buffer(TILE_MARGIN_M, join_style="mitre").intersection(area))
            for k, core in enumerate(cores)]


def core_side_m(memory_limit: int, resolution_m: float, years: float) -> float:
    """The side of a square tile core whose read (core plus margins) fits ``memory_limit``;
    never below MIN_CORE_M (below that the margins cost more than the core: the budget is then
    exceeded rather than the licence cut into thousands of tiles)."""
    pixels = memory_limit / (DATES_PER_YEAR * years * BYTES_PER_PIXEL_OBS)
    return max(math.sqrt(pixels) * resolution_m - 2 * TILE_MARGIN_M, MIN_CORE_M)


def plan(sites: list[Site], settings: Settings, memory_limit: int, *, start: str | None = None,
         end: str | None = None, resolution_m: float = 10.0) -> list[WorkUnit]:
    """The scan's work units, in the order of ``sites``: tiles for licences over the budget,
    groups of small licences, and single licences otherwise."""
    years = period_years(settings, start, end)
    units: list[WorkUnit] = []
    group: list[Site] = []
    group_bytes = 0

    def flush() -> None:
        nonlocal group, group_bytes
        if group:
            units.append(WorkUnit(tuple(group), None, group_bytes))
        group, group_bytes = [], 0

    for site in sites:
        area = site.buffered(settings.sites.buffer_m)
        need = estimate_bytes(area, resolution_m, years)
        if need > memory_limit:
            flush()
            # Tiles read a margin too: size the cores so that core + margins fit the budget.
            core = core_side_m(memory_limit, resolution_m, years)
            minx, miny, maxx, maxy = area.bounds
            tiles = tile_grid(area, max(1, math.ceil((maxx - minx) / core)), max(1, math.ceil((maxy - miny) / core)))
            biggest = max(estimate_bytes(t.read, resolution_m, years) for t in tiles)
            if biggest > memory_limit:
                warnings.warn(f"licence {site.site_id}: a tile of {MIN_CORE_M:.0f} m with its {TILE_MARGIN_M:.0f} m "
                              f"margins needs about {biggest / 1e6:.0f} MB, above the memory limit of "
                              f"{memory_limit / 1e6:.0f} MB; raise the memory limit (memory_limit, --memory-limit "
                              "on the command line)", UserWarning, stacklevel=2)
            units.extend(WorkUnit((site,), tile, estimate_bytes(tile.read, resolution_m, years)) for tile in tiles)
        elif need < GROUP_SHARE * memory_limit:
            if group_bytes + need > memory_limit or len(group) >= MAX_GROUP:
                flush()
            group.append(site)
            group_bytes += need
        else:
            flush()
            units.append(WorkUnit((site,), None, need))
    flush()
    return units
