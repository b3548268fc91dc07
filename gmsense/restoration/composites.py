"""``gmsense restoration composites``: yearly growing-season composites from the imagery archive (issue 19).

For each year, every clear growing-season observation of the area (cloud, shadow and snow masked by the
source's own mask; a pixel missing from a date, an ETM+ scan-line gap or outside a scene, is no
observation) is reduced per pixel to one value per band:

- ``median``: the per-band median of the clear observations (NaN where there is none);
- ``medoid``: the clear observation nearest (Euclidean distance over the bands) to that per-band median,
  so every band of a pixel comes from one date (Earth Engine's usual "medoid" composite; Flood 2013's
  medoid, the observation nearest all the others, costs a distance matrix per pixel and is not built).

The output is the folder ``restoration run --imagery`` reads: one ``YYYY.tif`` per year (float32
reflectance bands named by their descriptions, NaN = no clear observation) whose last band,
``clear_count``, holds the number of clear observations behind each pixel (0 where none). A source
(:class:`CompositeSource`: local imagery, :mod:`gmsense.restoration.archive`; Earth Engine,
:mod:`gmsense.sources.earthengine.composites`) gives the grid and each year's composite block by
block, so memory holds one block's observations at a time, however large the area. Blocks that do
not meet the area (the register polygons with their reference rings, or the AOI) are never read and
stay empty (sparse in the file).

Resumable: a year whose file is already there and valid (readable to its last row, on the same grid,
with the same bands, season, method and source recorded in its tags) is skipped. A year is written to a
temporary name and renamed when complete (:func:`gmsense.files.atomic_file`), so an interrupted run
never leaves a partial ``YYYY.tif``; temporary files an interrupted run left are removed on the next.
``composites.json`` records what each year holds.
"""

from __future__ import annotations

import calendar
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.errors
from rasterio.windows import Window as RasterWindow
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gmsense import __version__
from gmsense.config import SeasonSettings
from gmsense.errors import InputError
from gmsense.files import atomic_file, ensure_folder, write_bytes
from gmsense.geo.grid import Grid
from gmsense.geo.sites import WGS84, reproject_geometry

#: The band holding the number of clear observations behind each composite pixel.
COUNT_BAND = "clear_count"
METHODS = ("median", "medoid")
#: Side of the blocks the local source reads, pixels: 256 x 256 px x 40 dates x 7 float32 planes is 73 MB.
BLOCK_PX = 256
MANIFEST = "composites.json"
#: GeoTIFF tags naming what a year file holds; a file whose tags differ from the run's is built again.
TAG = "GMSENSE_COMPOSITE_"
_SEASON = re.compile(r"^(\d{2})-(\d{2}):(\d{2})-(\d{2})$")
#: A temporary file :func:`gmsense.files.atomic_file` writes for ``YYYY.tif``.
_PARTIAL = re.compile(r"^\.\d{4}\.tif\..+\.partial\.tif$")


@dataclass(frozen=True)
class Season:
    """The growing season, from ``start`` to ``end`` (``(month, day)``, both inclusive). A season whose start
    comes after its end runs across New Year and is named by the year it ends in."""

    start: tuple[int, int]
    end: tuple[int, int]

    @classmethod
    def parse(cls, text: str) -> Season:
        """``MM-DD:MM-DD`` (e.g. ``05-01:09-30``); InputError for anything else."""
        m = _SEASON.match(text.strip())
        if not m:
            raise InputError(f"season {text!r} is not MM-DD:MM-DD (e.g. 05-01:09-30)")
        start, end = (int(m.group(1)), int(m.group(2))), (int(m.group(3)), int(m.group(4)))
        for month, day in (start, end):
            try:
                date(2001, month, day)  # no 29 February: the season must exist every year
            except ValueError:
                raise InputError(f"season {text!r}: {month:02d}-{day:02d} is not a day of every year") from None
        if start == end:
            raise InputError(f"season {text!r} starts and ends on the same day")
        return cls(start, end)

    @classmethod
    def of(cls, settings: SeasonSettings) -> Season:
        """The configured season: the first day of ``start_month`` to the last of ``end_month``."""
        return cls((settings.start_month, 1), (settings.end_month, calendar.monthrange(2001, settings.end_month)[1]))

    @property
    def crosses_new_year(self) -> bool:
        return self.start > self.end

    def window(self, year: int) -> tuple[str, str]:
        """The first and last day (ISO, inclusive) of the season of ``year``."""
        first = year - 1 if self.crosses_new_year else year
        return date(first, *self.start).isoformat(), date(year, *self.end).isoformat()

    def __str__(self) -> str:
        return f"{self.start[0]:02d}-{self.start[1]:02d}:{self.end[0]:02d}-{self.end[1]:02d}"


# --------------------------------------------------------------------------------------------
# the reduction


def reduce_stack(values: np.ndarray, clear: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """One composite from a block's observations: ``values`` float32 ``(time, band, y, x)``, ``clear``
    boolean ``(time, y, x)`` (an observation counts where it is clear and every band is finite). Returns
    the composite, float32 ``(band, y, x)`` (NaN where no clear observation), and the number of clear
    observations per pixel, int32 ``(y, x)``. Band by band, so the temporaries are one band's."""
    if method not in METHODS:
        raise InputError(f"unknown composite method {method!r}; choose one of {', '.join(METHODS)}")
    n_bands, shape = values.shape[1], values.shape[2:]
    usable = np.asarray(clear, bool).copy()
    for k in range(n_bands):
        usable &= np.isfinite(values[:, k])
    count = usable.sum(axis=0, dtype="int32")
    median = np.full((n_bands, *shape), np.nan, "float32")
    if values.shape[0] == 0:
        return median, count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no clear observation
        for k in range(n_bands):
            median[k] = np.nanmedian(np.where(usable, values[:, k], np.float32(np.nan)), axis=0)
    if method == "median":
        return median, count
    distance = np.zeros(usable.shape, "float32")
    for k in range(n_bands):
        distance += np.where(usable, (values[:, k] - median[k][None]) ** 2, np.float32(0))
    distance[~usable] = np.inf
    nearest = np.argmin(distance, axis=0)[None]
    del distance
    medoid = np.empty_like(median)
    for k in range(n_bands):
        medoid[k] = np.take_along_axis(values[:, k], nearest, axis=0)[0]
    medoid[:, count == 0] = np.nan
    return medoid, count


# --------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class Window:
    """A block of the output grid: offsets and size in pixels."""

    col_off: int
    row_off: int
    width: int
    height: int

    def bounds(self, grid: Grid) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the block's pixel edges in the grid's CRS."""
        t = grid.transform
        xs = (t.c + t.a * self.col_off, t.c + t.a * (self.col_off + self.width))
        ys = (t.f + t.e * self.row_off, t.f + t.e * (self.row_off + self.height))
        return min(xs), min(ys), max(xs), max(ys)


def block_windows(grid: Grid, side: int = BLOCK_PX) -> list[Window]:
    """``grid`` cut into blocks of ``side`` x ``side`` pixels (smaller at the right and bottom edges), row-major."""
    return [Window(c, r, min(side, grid.width - c), min(side, grid.height - r))
            for r in range(0, grid.height, side) for c in range(0, grid.width, side)]


@dataclass
class Block:
    """One block of a year's composite: ``composite`` float32 ``(band, h, w)``, ``count`` ``(h, w)``, and the
    images whose clear observations it holds (image id -> sensor; empty where the source cannot tell)."""

    window: Window
    composite: np.ndarray
    count: np.ndarray
    images: dict[str, str] = field(default_factory=dict)


class CompositeSource(Protocol):
    """Where composites come from (local imagery, Earth Engine)."""

    #: The reflectance bands of the composites, in file order.
    bands: tuple[str, ...]

    def describe(self) -> str:
        """One line naming the source, recorded in each year's tags (a change rebuilds the years)."""
        ...

    def grid(self, area: BaseGeometry) -> Grid:
        """The output grid over ``area`` (EPSG:4326)."""
        ...

    def windows(self, grid: Grid) -> list[Window]:
        """The blocks the source computes one at a time."""
        ...

    def blocks(self, year: int, start: str, end: str, windows: Sequence[Window], grid: Grid,
               method: str) -> Iterator[Block] | None:
        """The composite of the observations within ``start..end`` (ISO, inclusive) block by block, in
        any order; None when the source has no image of the area in that window at all."""
        ...


# --------------------------------------------------------------------------------------------
# year files


def _profile(grid: Grid, n_bands: int) -> dict[str, Any]:
    tiled = grid.width >= 16 and grid.height >= 16
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": n_bands, "dtype": "float32",
        "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": float("nan"), "compress": "deflate",
        "predictor": 3, "BIGTIFF": "IF_SAFER", "SPARSE_OK": "TRUE"}
    if tiled:
        side = 256 if min(grid.width, grid.height) >= 256 else 16 * (min(grid.width, grid.height) // 16)
        profile.update(tiled=True, blockxsize=side, blockysize=side)
    return profile


def identity_tags(year: int, season: Season, method: str, source: str) -> dict[str, str]:
    """What a year file must record to be reused."""
    return {f"{TAG}YEAR": str(year), f"{TAG}SEASON": str(season), f"{TAG}METHOD": method, f"{TAG}SOURCE": source}


def valid_year_file(path: Path, grid: Grid, bands: Sequence[str], identity: dict[str, str]) -> bool:
    """True when ``path`` is a complete composite of ``grid`` with ``bands`` and the tags ``identity``."""
    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as src:
            if (src.count, src.width, src.height) != (len(bands) + 1, grid.width, grid.height):
                return False
            if src.crs is None or not grid.crs.equals(src.crs.to_wkt()):
                return False
            if not src.transform.almost_equals(grid.transform, precision=1e-6):
                return False
            if list(src.descriptions) != [*bands, COUNT_BAND]:
                return False
            tags = src.tags()
            if any(tags.get(k) != v for k, v in identity.items()):
                return False
            src.read(window=RasterWindow(0, grid.height - 1, grid.width, 1))  # a truncated file fails here
    except (rasterio.errors.RasterioError, OSError):
        return False
    return True


def _remove_partials(folder: Path) -> None:
    for p in folder.iterdir():
        if _PARTIAL.match(p.name):
            p.unlink(missing_ok=True)


def _write_year(path: Path, grid: Grid, bands: Sequence[str], blocks: Iterable[Block], tags: dict[str, str],
                step: Callable[[], None]) -> dict[str, Any]:
    """Write the year's blocks into ``path`` (a temporary file renamed when complete); what it holds."""
    images: dict[str, str] = {}
    observed = 0
    with atomic_file(path) as tmp, rasterio.open(tmp, "w", **_profile(grid, len(bands) + 1)) as dst:
        dst.descriptions = (*bands, COUNT_BAND)
        for block in blocks:
            w = block.window
            where = RasterWindow(w.col_off, w.row_off, w.width, w.height)
            dst.write(np.concatenate([block.composite.astype("float32"),
                                      block.count[None].astype("float32")]), window=where)
            observed += int((block.count > 0).sum())
            images.update(block.images)
            step()
        sensors = Counter(images.values())
        info = {"images": len(images), "sensors": dict(sorted(sensors.items())), "observed_pixels": observed}
        dst.update_tags(**tags, **{f"{TAG}INFO": json.dumps(info, sort_keys=True),
                                   f"{TAG}VERSION": __version__})
    return info


def _info(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as src:
        return json.loads(src.tags().get(f"{TAG}INFO", "{}"))


# --------------------------------------------------------------------------------------------
# the command


@dataclass
class CompositeRun:
    """What :func:`build_composites` did: per year ``written``, ``skipped`` (valid already) or ``no imagery``."""

    out: Path
    grid: Grid
    windows: int
    years: dict[int, str]
    info: dict[int, dict[str, Any]]

    def of(self, status: str) -> list[int]:
        return [y for y, s in self.years.items() if s == status]


def area_windows(source: CompositeSource, grid: Grid, area: BaseGeometry) -> list[Window]:
    """The source's blocks of ``grid`` that meet ``area`` (EPSG:4326)."""
    local = reproject_geometry(area, WGS84, grid.crs)
    return [w for w in source.windows(grid) if local.intersects(box(*w.bounds(grid)))]


def build_composites(source: CompositeSource, area: BaseGeometry, years: Sequence[int], season: Season,
                     method: str, out: Path,
                     progress: Callable[[int, int, int], None] | None = None) -> CompositeRun:
    """Write ``out/YYYY.tif`` for each of ``years`` over ``area`` (EPSG:4326) from ``source`` (see the
    module docstring). ``progress(year, blocks done, blocks in all)`` follows the blocks."""
    if method not in METHODS:
        raise InputError(f"unknown composite method {method!r}; choose one of {', '.join(METHODS)}")
    folder = ensure_folder(out)
    _remove_partials(folder)
    grid = source.grid(area)
    windows = area_windows(source, grid, area)
    total, done = len(windows) * len(years), 0
    run = CompositeRun(folder, grid, len(windows), {}, {})

    def step(year: int) -> Callable[[], None]:
        def advance() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(year, done, total)
        return advance

    for year in years:
        path = folder / f"{year}.tif"
        tags = identity_tags(year, season, method, source.describe())
        if valid_year_file(path, grid, source.bands, tags):
            run.years[year], run.info[year] = "skipped", _info(path)
            done += len(windows)
            if progress is not None:
                progress(year, done, total)
            continue
        path.unlink(missing_ok=True)  # not valid for this run: built again, or absent if there is no imagery
        start, end = season.window(year)
        blocks = source.blocks(year, start, end, windows, grid, method)
        if blocks is None:
            run.years[year], run.info[year] = "no imagery", {}
            done += len(windows)
            if progress is not None:
                progress(year, done, total)
            continue
        run.info[year] = _write_year(path, grid, source.bands, blocks, tags, step(year))
        run.years[year] = "written"
    _write_manifest(run, source, season, method)
    return run


def _write_manifest(run: CompositeRun, source: CompositeSource, season: Season, method: str) -> None:
    t = run.grid.transform
    manifest = {
        "source": source.describe(), "season": str(season), "method": method, "bands": [*source.bands, COUNT_BAND],
        "grid": {"crs": run.grid.crs.to_string(), "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                 "width": run.grid.width, "height": run.grid.height, "blocks_read": run.windows},
        "years": {str(y): {"status": s, **run.info.get(y, {})} for y, s in sorted(run.years.items())},
        "gmsense_version": __version__}
    write_bytes(run.out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
