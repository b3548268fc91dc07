"""Work units of a scan: large licences split into tiles that fit a memory budget, small ones
grouped so that per-task overhead does not dominate.

A unit's memory and time are estimated from its pixels and the imagery's shape (pixel size,
dates, bands: what the source's ``describe`` says, else Sentinel-2 defaults; see
gmsense.batch.estimate). A licence whose monitoring area would exceed the budget is cut into a
grid of tiles; each tile is read with a margin (``TILE_MARGIN_M``) so a patch crossing the tile
edge is seen whole by at least one tile, and keeps only the patches whose representative point
falls in its core. All pure functions: the scan engine (gmsense.batch.scan) runs the units.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gmsense.batch.estimate import core_side_m, default_shape, estimate_bytes, estimate_seconds
from gmsense.config import Settings
from gmsense.geo.sites import Site
from gmsense.sources.shape import ImageryShape

#: A tile is read this far beyond its core, metres: larger than the longest patch we expect to be
#: cut (trenches up to 500 m) halves, and than the reference ring of recovery (100 m).
TILE_MARGIN_M = 300.0
#: The smallest tile core, metres: a tile is never mostly margin.
MIN_CORE_M = 2 * TILE_MARGIN_M
#: Licences estimated to take less than this (seconds on one core) are grouped: a task costs
#: 0.05-0.12 s of scheduling and store writes per licence (README, bench scale), which would
#: dominate the smallest licences. Larger ones run alone, so a few licences still use every core.
GROUP_MAX_SECONDS = 1.0
#: A group is closed once its licences add up to this (seconds on one core).
GROUP_TARGET_SECONDS = 8.0
#: At most this many licences in one grouped task (a failure re-runs the group's licences).
MAX_GROUP = 16
#: A licence estimated to take at least this long (seconds on one core) is cut into tiles when the
#: scan has more task slots (worker processes) than units, so one large licence uses every worker
#: (issue 16: dask chunks inside a licence; threads inside one task scale 1.1-1.2x on 2 cores, the
#: per-patch Python holding the interpreter lock). Below it the margins and the first pass cost
#: more than the second core gives.
PARALLEL_MIN_SECONDS = 2.0
#: The smallest core of such a split, metres: a tile read with its margins is then at most
#: (1 + 2 * 300 / 1200) = 1.5 times its core in each direction cut.
PARALLEL_MIN_CORE_M = 4 * TILE_MARGIN_M
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
    estimated_bytes: int = 0  # peak memory, bytes
    estimated_seconds: float = 0.0  # reading and analysis on one core, seconds
    #: A tile of a licence that fits the budget whole, cut for idle workers (:func:`spread_over_slots`):
    #: read once and held from the first pass to the analysis (gmsense.batch.tiles.LoadedTile).
    hold: bool = False

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


def shape_reader(settings: Settings, start: str | None, end: str | None,
                 source: Any = None) -> Callable[[Site], ImageryShape]:
    """The imagery shape of each licence: what ``source.describe`` says (a source without that
    method, or one that returns None or fails, gets the defaults of
    gmsense.batch.estimate.default_shape: an estimate never stops a scan; a licence whose imagery is
    unreadable fails when it is loaded, with the reader's error)."""
    fallback = default_shape(settings, start, end)
    describe = getattr(source, "describe", None)

    def shape_of(site: Site) -> ImageryShape:
        if describe is None:
            return fallback
        try:
            return describe(site, start, end) or fallback
        except Exception:
            return fallback

    return shape_of


def plan(sites: list[Site], settings: Settings, memory_limit: int, *, start: str | None = None,
         end: str | None = None, source: Any = None, slots: int = 1) -> list[WorkUnit]:
    """The scan's work units, in the order of ``sites``: tiles for licences over the budget
    (``memory_limit``, bytes), groups of small licences, and single licences otherwise. Each
    licence's imagery is what ``source`` describes (see :func:`shape_reader`). ``slots``: the
    worker processes that run units at once; with fewer units than slots, the longest licences
    are cut into tiles for the idle ones (:func:`spread_over_slots`)."""
    shape_of = shape_reader(settings, start, end, source)
    units: list[WorkUnit] = []
    group: list[Site] = []
    group_bytes, group_peak, group_seconds = 0, 0, 0.0

    def flush() -> None:
        nonlocal group, group_bytes, group_peak, group_seconds
        if group:
            # A group's licences are analysed one after the other: its peak is its largest licence's.
            units.append(WorkUnit(tuple(group), None, group_peak, group_seconds))
        group, group_bytes, group_peak, group_seconds = [], 0, 0, 0.0

    for site in sites:
        area = site.buffered(settings.sites.buffer_m)
        shape = shape_of(site)
        need = estimate_bytes(area, shape)
        if need > memory_limit:
            flush()
            tiles = _tiles(site, area, shape, memory_limit)
            units.extend(WorkUnit((site,), tile, estimate_bytes(tile.read, shape), estimate_seconds(tile.read, shape))
                         for tile in tiles)
        elif (seconds := estimate_seconds(area, shape)) < GROUP_MAX_SECONDS:
            if group_seconds + seconds > GROUP_TARGET_SECONDS or len(group) >= MAX_GROUP:
                flush()
            group.append(site)
            group_bytes += need
            group_peak = max(group_peak, need)
            group_seconds += seconds
        else:
            flush()
            units.append(WorkUnit((site,), None, need, estimate_seconds(area, shape)))
    flush()
    return spread_over_slots(units, slots, area_of=lambda site: site.buffered(settings.sites.buffer_m),
                             shape_of=shape_of)


def spread_over_slots(units: list[WorkUnit], slots: int, *, area_of: Callable[[Site], BaseGeometry],
                      shape_of: Callable[[Site], ImageryShape]) -> list[WorkUnit]:
    """``units`` with the longest single licences (at least :data:`PARALLEL_MIN_SECONDS`, not
    already tiled) cut into tiles while there are fewer units than ``slots``: each licence into as
    many tiles as slots are idle (cores of at least :data:`PARALLEL_MIN_CORE_M`). Tiles give the
    same patches as the whole licence (gmsense.batch.tiles: the scene context is licence-wide)."""
    if slots <= 1 or len(units) >= slots:
        return units
    out = list(units)
    candidates = sorted((u for u in units if u.tile is None and len(u.sites) == 1
                         and u.estimated_seconds >= PARALLEL_MIN_SECONDS), key=lambda u: -u.estimated_seconds)
    for unit in candidates:
        idle = slots - len(out) + 1  # this unit's slot and the idle ones
        if idle < 2:
            break
        site = unit.sites[0]
        area, shape = area_of(site), shape_of(site)
        tiles = _parallel_tiles(area, idle)
        if not tiles:
            continue
        k = out.index(unit)
        out[k:k + 1] = [WorkUnit((site,), tile, estimate_bytes(tile.read, shape), estimate_seconds(tile.read, shape),
                                 hold=True) for tile in tiles]
    return out


def _parallel_tiles(area: BaseGeometry, most: int) -> list[Tile]:
    """``area`` cut into as many tiles as possible, at most ``most`` and at least 2, with cores of
    at least :data:`PARALLEL_MIN_CORE_M` each way; [] when no such cut exists."""
    for n in range(most, 1, -1):
        tiles = tile_area(area, n)
        if len(tiles) > 1 and all(min(t.core.bounds[2] - t.core.bounds[0], t.core.bounds[3] - t.core.bounds[1])
                                  >= PARALLEL_MIN_CORE_M for t in tiles):
            return tiles
    return []


def _tiles(site: Site, area: BaseGeometry, shape: ImageryShape, memory_limit: int) -> list[Tile]:
    """``area`` cut into tiles whose reads (core and margins) fit ``memory_limit``; a warning when
    even the smallest tile does not."""
    core = core_side_m(memory_limit, shape, TILE_MARGIN_M, MIN_CORE_M)
    minx, miny, maxx, maxy = area.bounds
    tiles = tile_grid(area, max(1, math.ceil((maxx - minx) / core)), max(1, math.ceil((maxy - miny) / core)))
    biggest = max(estimate_bytes(t.read, shape) for t in tiles)
    if biggest > memory_limit:
        warnings.warn(f"licence {site.site_id}: a tile of {MIN_CORE_M:.0f} m with its {TILE_MARGIN_M:.0f} m "
                      f"margins needs about {biggest / 1e6:.0f} MB, above the memory limit of "
                      f"{memory_limit / 1e6:.0f} MB; raise the memory limit (memory_limit, --memory-limit "
                      "on the command line)", UserWarning, stacklevel=3)
    return tiles
