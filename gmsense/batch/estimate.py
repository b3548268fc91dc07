"""How much memory and time one work unit needs, from its area and the imagery's shape.

Peak memory follows pixels x dates: the cube as loaded (bands x bytes per value + masks, every
date held in memory) plus the analysis' working copies per growing-season date (the season copy
of the bands it needs, the index cube, the screen and the harmonic model) and a few per-pixel
result layers. Time follows season pixel-dates at a measured throughput, plus what the source
takes to deliver the pixels where it says so. The constants were measured on this 2-core machine
(2026-11-29); re-measure them after changing the detector.
"""

from __future__ import annotations

import math
from datetime import date

from shapely.geometry.base import BaseGeometry

from gmsense.config import Settings
from gmsense.sources.shape import ImageryShape, shape_from_cadence

#: Working bytes of :func:`gmsense.pipeline.analyse_cube` per pixel and growing-season date, on top
#: of the cube it is given. Measured with tracemalloc (numpy allocations are traced) on
#: ``gmsense.testutils.make_cube`` cubes: 21-22 B per pixel-season-date on the 60 px cubes of
#: tests/test_plan_estimate.py after the scene sample became row medians taken by slices (the speed
#: branch, when this was 30), 12.8-13.3 B since the scene sample is gathered date-major and a whole
#: licence's sample is its context's stack without copies (2026-11-30, session 11); up to 110 B on a
#: 40 px cube whose planted break covers a large share of it (many pixels reach the exact detector; a
#: few MB in all). 20 keeps the measured cases within 30 % and errs high for large scenes, where the
#: row blocks bound the detector's share.
WORK_BYTES_PER_PIXEL_SEASON_DATE = 20
#: Working bytes per pixel whatever the dates: the per-pixel break layers (same fit).
WORK_BYTES_PER_PIXEL = 150
#: Growing-season pixel-dates :func:`~gmsense.pipeline.analyse_cube` analyses per second on one
#: core (``taskset -c 1``, one BLAS thread): 5.5-7.6 million on ``make_cube`` cubes of 120-400 px
#: square with a planted break every 40 px (a fit over 60-400 px gives 5.5 million and 0.01 s per
#: call), 8-16 million on the synthetic demo licences at 10 m, 2.2-5 million at 30 m (fixed costs
#: and per-patch work weigh more there). Rounded down: real imagery has more candidate breaks.
ANALYSIS_PIXEL_DATES_PER_S = 5e6
#: Seconds per licence whatever its size: fixed analysis costs (0.01-0.05 s) and the scan's own
#: per-licence work (store transaction, task), 0.05 s per licence in ``gmsense bench scale``.
LICENCE_OVERHEAD_S = 0.1
#: Acquisitions per year assumed when the source cannot say (Sentinel-2 A+B: ~73 a year at 5 days).
DATES_PER_YEAR = 75
#: Pixel size assumed when the source cannot say, metres (Sentinel-2).
DEFAULT_RESOLUTION_M = 10.0


def default_shape(settings: Settings, start: str | None, end: str | None) -> ImageryShape:
    """What the planner assumes of imagery a source does not describe: Sentinel-2 at 10 m,
    :data:`DATES_PER_YEAR` acquisitions a year all year round, six float32 bands and ``clear``,
    over ``start..end`` (open ends: the synthetic range of the settings)."""
    first = date.fromisoformat(start or settings.synthetic.start)
    last = date.fromisoformat(end or settings.synthetic.end)
    return shape_from_cadence(first, last, 365.25 / DATES_PER_YEAR, settings.season, DEFAULT_RESOLUTION_M)


def pixels(area: BaseGeometry, resolution_m: float) -> int:
    """Pixels of ``area``'s bounding box (metres) at ``resolution_m``."""
    minx, miny, maxx, maxy = area.bounds
    return math.ceil((maxx - minx) / resolution_m) * math.ceil((maxy - miny) / resolution_m)


def bytes_per_pixel(shape: ImageryShape) -> int:
    """Peak bytes per pixel of a unit: the loaded cube plus the analysis' working copies."""
    return (shape.loaded_dates * shape.bytes_per_pixel_date + shape.season_dates * WORK_BYTES_PER_PIXEL_SEASON_DATE
            + WORK_BYTES_PER_PIXEL)


def estimate_bytes(area: BaseGeometry, shape: ImageryShape) -> int:
    """Peak bytes to analyse ``area`` (its bounding box, metres) with imagery of ``shape``."""
    return pixels(area, shape.resolution_m) * bytes_per_pixel(shape)


def estimate_seconds(area: BaseGeometry, shape: ImageryShape, licences: int = 1) -> float:
    """Seconds on one core to read and analyse ``area`` (its bounding box, metres) with imagery
    of ``shape``, for ``licences`` licences (each adds :data:`LICENCE_OVERHEAD_S`). Reading counts
    only where the source says how fast it delivers."""
    n = pixels(area, shape.resolution_m)
    seconds = licences * LICENCE_OVERHEAD_S + n * shape.season_dates / ANALYSIS_PIXEL_DATES_PER_S
    if shape.read_pixel_dates_per_s:
        seconds += n * shape.loaded_dates / shape.read_pixel_dates_per_s
    return seconds


def core_side_m(memory_limit: int, shape: ImageryShape, margin_m: float, min_core_m: float) -> float:
    """The side (metres) of a square tile core whose read (core plus ``margin_m`` each side) fits
    ``memory_limit`` bytes; never below ``min_core_m`` (below that the margins cost more than the
    core: the budget is then exceeded rather than the licence cut into thousands of tiles)."""
    side_px = math.sqrt(memory_limit / bytes_per_pixel(shape)) - 1  # a pixel for rounding the read up to pixels
    return max(side_px * shape.resolution_m - 2 * margin_m, min_core_m)
