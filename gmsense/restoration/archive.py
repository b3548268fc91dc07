"""The area and the local imagery of ``gmsense restoration composites`` (:mod:`gmsense.restoration.composites`).

Area: the register polygons of the store, each with the reach ``restoration run`` reads around it (the
reference ring, ``restoration.ring_outer_m``, plus a 30 m margin), or the polygons of an AOI file.

:class:`LocalArchive` composes local imagery, any layout :func:`gmsense.sources.local.read_local_cube`
reads: Landsat Collection 2 Level-2 products (TM / ETM+ / OLI, ``QA_PIXEL`` fill, dilated cloud, cirrus,
cloud, shadow and snow masked, TM and ETM+ made OLI-like by ``local.harmonise``), Sentinel-2 SAFE, THEIA or
STAC products, dated GeoTIFFs, a NetCDF/Zarr cube; a folder holding Landsat and Sentinel-2 products reads
both onto the finest lattice. The output grid is the imagery's own lattice over the area. Each block is
read by its own ``read_local_cube`` call over the block's window and the year's season only, so one
block's observations are in memory at a time; a block no acquisition of the year covers is empty without
being read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyproj
import shapely
import xarray as xr
from shapely import wkt
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gmsense.config import Settings
from gmsense.cube.contract import CUBE_BANDS
from gmsense.cube.harmonise import SENSOR_COORD
from gmsense.errors import ImageryError, InputError
from gmsense.geo.grid import Grid, crop_grid
from gmsense.geo.sites import WGS84, _read_frame, reproject_geometry, utm_crs_for
from gmsense.restoration.composites import Block, Window, block_windows, reduce_stack
from gmsense.restoration.run import MARGIN_M
from gmsense.store import Store


def register_area(store: Store, settings: Settings) -> BaseGeometry:
    """The store's register polygons, each grown by the reach of ``restoration run`` (the reference
    ring plus its margin), as one geometry in EPSG:4326."""
    rows = store.register_rows()
    if not rows:
        raise InputError(f"the store {store.location} holds no register polygons: run gmsense register import "
                         "FILE, or give --aoi FILE")
    reach = settings.restoration.ring_outer_m + MARGIN_M
    parts = [reproject_geometry(wkt.loads(r.local_wkt).buffer(reach), pyproj.CRS.from_user_input(r.local_crs),
                                WGS84) for r in rows]
    return shapely.union_all(parts)


def aoi_area(path: Path) -> BaseGeometry:
    """The polygons of an AOI file (GeoJSON, GeoPackage or Shapefile, any CRS) as one geometry in EPSG:4326."""
    frame = _read_frame(Path(path), None, what="AOI polygons", item="AOI")
    if frame.crs is None:
        raise InputError(f"{path}: has no CRS; save the AOI with its CRS (e.g. EPSG:4326)")
    geometry = shapely.union_all(shapely.make_valid(frame.to_crs(WGS84).geometry.dropna().to_numpy()))
    polygons = shapely.get_parts(geometry)
    polygons = [g for g in polygons if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
    if not polygons:
        raise InputError(f"{path}: holds no polygon; the AOI must be polygons (the area to compose)")
    return shapely.union_all(polygons)


@dataclass
class LocalArchive:
    """Local imagery as a :class:`~gmsense.restoration.composites.CompositeSource`."""

    path: Path
    settings: Settings
    layout: str = "auto"
    block_px: int = 256
    bands: tuple[str, ...] = ()
    _footprints: list[tuple[np.datetime64, BaseGeometry]] | None = field(default=None, repr=False)

    def describe(self) -> str:
        local = self.settings.local
        return (f"local {Path(self.path).resolve()} (layout {self.layout}, harmonise {local.harmonise}, "
                f"dn_scale {local.dn_scale})")

    def _read(self, region: BaseGeometry, crs: pyproj.CRS, start: str | None = None,
              end: str | None = None) -> xr.Dataset:
        from gmsense.sources.local import read_local_cube

        local = self.settings.local
        return read_local_cube(self.path, region, crs, start=start, end=end, dn_scale=local.dn_scale,
                               band_names=local.band_names, harmonise_method=local.harmonise, layout=self.layout)

    def grid(self, area: BaseGeometry) -> Grid:
        """The imagery's lattice over ``area``: found by reading the cube (lazily, headers only) over a metre
        of the area the imagery covers."""
        from gmsense.sources.local import imagery_footprint

        footprint, crs = imagery_footprint(self.path, self.layout)
        inside = reproject_geometry(area, WGS84, crs).intersection(footprint)
        if inside.is_empty:
            w, s, e, n = area.bounds
            raise ImageryError(f"imagery {self.path} does not cover the area (lon {w:.4f}..{e:.4f}, lat "
                               f"{s:.4f}..{n:.4f}); point --imagery at imagery of that area")
        if not crs.is_projected:  # the reader puts geographic imagery onto a grid in the region's CRS
            centre = area.centroid
            crs = utm_crs_for(centre.x, centre.y)
            inside = reproject_geometry(area, WGS84, crs)
        probe = inside.representative_point().buffer(0.5)
        cube = self._read(probe, crs)
        self.bands = tuple(b for b in CUBE_BANDS if b in cube.data_vars)
        lattice = Grid.of(cube)
        bounds = reproject_geometry(area, WGS84, lattice.crs).bounds
        return crop_grid(lattice.crs, lattice.transform, bounds, pad=1)

    def windows(self, grid: Grid) -> list[Window]:
        return block_windows(grid, self.block_px)

    def _days(self, grid: Grid, start: str, end: str) -> list[BaseGeometry]:
        from gmsense.sources.local import dated_footprints

        if self._footprints is None:
            self._footprints = dated_footprints(self.path, grid.crs, self.layout)
        first, last = np.datetime64(start, "D"), np.datetime64(end, "D")
        return [geom for day, geom in self._footprints if first <= day <= last]

    def blocks(self, year: int, start: str, end: str, windows: Sequence[Window], grid: Grid,
               method: str) -> Iterator[Block] | None:
        footprints = self._days(grid, start, end)
        if not footprints:
            return None
        covered = shapely.union_all(footprints)
        return (self._block(w, grid, start, end, method, covered) for w in windows)

    def _block(self, window: Window, grid: Grid, start: str, end: str, method: str,
               covered: BaseGeometry) -> Block:
        shape = (window.height, window.width)
        area = box(*window.bounds(grid))
        if covered.intersection(area).area <= 0:  # no acquisition of the season reaches the block
            return Block(window, np.full((len(self.bands), *shape), np.nan, "float32"), np.zeros(shape, "int32"))
        pixel = abs(grid.transform.a)
        cube = self._read(area.buffer(-pixel / 4, join_style="mitre"), grid.crs, start, end)
        cube = _on_window(cube, grid, window).compute()
        n = cube.sizes["time"]
        values = np.full((n, len(self.bands), *shape), np.nan, "float32")
        for k, band in enumerate(self.bands):
            if band in cube.data_vars:  # a band the imagery of this block lacks stays NaN
                values[:, k] = cube[band].transpose("time", "y", "x").values
        clear = cube["clear"].transpose("time", "y", "x").values.astype(bool)
        # an image is named by its id (products, files), else by its day (a NetCDF/Zarr cube); a sensor the
        # cube does not name (Sentinel-2 THEIA, a cube) by the platform
        days = [str(t)[:10] for t in cube["time"].values]
        ids = [str(i) for i in cube["image_id"].values] if "image_id" in cube.coords else days
        platform = str(cube.attrs.get("platform") or "unknown")
        sensors = [platform] * n
        if SENSOR_COORD in cube.coords:
            sensors = [str(s) or platform for s in cube[SENSOR_COORD].values]
        del cube  # its bands are in ``values`` now
        composite, count = reduce_stack(values, clear, method)
        used = clear.copy()
        for k in range(len(self.bands)):
            used &= np.isfinite(values[:, k])
        used = used.any(axis=(1, 2))
        images = {i: s for i, s, u in zip(ids, sensors, used, strict=True) if u}
        return Block(window, composite, count, images)


def _on_window(cube: xr.Dataset, grid: Grid, window: Window) -> xr.Dataset:
    """The part of ``cube`` (on ``grid``'s lattice, around ``window``) that is ``window``'s pixels."""
    xs = grid.xs()[window.col_off:window.col_off + window.width]
    ys = grid.ys()[window.row_off:window.row_off + window.height]
    pixel = abs(grid.transform.a)
    cx, cy = np.asarray(cube["x"].values), np.asarray(cube["y"].values)
    col, row = round(float((xs[0] - cx[0]) / (cx[1] - cx[0]))), round(float((ys[0] - cy[0]) / (cy[1] - cy[0])))
    part = cube.isel(x=slice(col, col + xs.size), y=slice(row, row + ys.size))
    same = (part.sizes["x"], part.sizes["y"]) == (xs.size, ys.size)
    if not (same and np.allclose(part["x"].values, xs, atol=pixel / 100)
            and np.allclose(part["y"].values, ys, atol=pixel / 100)):
        raise ImageryError(f"imagery of the block at column {window.col_off}, row {window.row_off} is not on the "
                           "lattice of the first block; the imagery's grid changed within the archive")
    return part

