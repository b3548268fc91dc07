"""The one pixel grid of gmsense: a CRS, an affine transform and a size in pixels.

Every source puts its cube on a :class:`Grid`: the local reader crops the imagery's own lattice
(:func:`crop_grid`), the Earth Engine source asks ``computePixels`` for the same crop of a lattice
anchored at the CRS origin (its request JSON and cache key are small functions of a Grid in
:mod:`gmsense.sources.earthengine._fetch`), and the synthetic world is drawn on one. The detectors
read the grid back from a cube's pixel-centre coordinates (:func:`grid_transform`, :meth:`Grid.of`).

Coordinates are in the grid's CRS, projected metres wherever gmsense analyses (a local reader may
hold a geographic grid only while it reprojects). ``transform`` maps (col, row) of a pixel's
upper-left corner to CRS coordinates; pixel centres are at (col + 0.5, row + 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyproj
from affine import Affine

from gmsense.errors import ImageryError

if TYPE_CHECKING:
    import xarray as xr


@dataclass(frozen=True)
class Grid:
    """A north-up (or south-up) pixel grid: ``transform`` maps (col, row) to ``crs`` coordinates (metres).

    A small frozen dataclass rather than odc-geo's ``GeoBox`` (checked: odc-geo 0.5.3). GeoBox
    would fit the shape, but its crop (``GeoBox.enclosing``) projects the region into pixel space and
    floors and ceils it without the 1e-9 tolerance of :func:`crop_grid`, so a bound a rounding error
    past a pixel edge would gain a pixel: other cubes, and other Earth Engine cache keys (which name
    the grid) for caches already on disk. It also wraps the CRS in its own type where every source
    compares and reprojects plain :class:`pyproj.CRS` objects, and would add a dependency for about
    forty lines.

    Picklable: the dask tasks that read imagery take it as an argument.
    """

    crs: pyproj.CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, cube: xr.Dataset | xr.DataArray) -> Grid:
        """The grid of a cube: its CRS (rioxarray's ``cube.rio.crs``) and the transform of its x/y
        pixel-centre coordinates (:func:`grid_transform`). Raises ImageryError when it has no CRS."""
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        crs = cube.rio.crs
        if crs is None:
            raise ImageryError("the cube has no CRS; write one (rioxarray: ds.rio.write_crs)")
        return cls(pyproj.CRS.from_user_input(crs), grid_transform(cube), int(cube.sizes["x"]), int(cube.sizes["y"]))

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels: the shape of a ``(y, x)`` array on this grid."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the pixel edges, CRS units."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def xs(self) -> np.ndarray:
        """Pixel-centre x coordinates (CRS units), left to right."""
        return self.transform.c + self.transform.a * (np.arange(self.width) + 0.5)

    def ys(self) -> np.ndarray:
        """Pixel-centre y coordinates (CRS units), top row first."""
        return self.transform.f + self.transform.e * (np.arange(self.height) + 0.5)


def crop_grid(crs: pyproj.CRS, transform: Affine, bounds: Sequence[float], pad: int = 1) -> Grid:
    """The part of the lattice of ``transform`` covering ``bounds`` (minx, miny, maxx, maxy) plus ``pad`` pixels.

    ``bounds`` are in ``crs`` units (metres). The result may extend beyond any image on that
    lattice (those pixels are NaN in the cube). A rotated lattice raises ImageryError.
    """
    if transform.b != 0 or transform.d != 0:
        raise ImageryError(
            "imagery grid is rotated; warp it to a north-up grid first (gdalwarp -t_srs <its CRS>)"
        )
    minx, miny, maxx, maxy = bounds
    cols = [(x - transform.c) / transform.a for x in (minx, maxx)]
    rows = [(y - transform.f) / transform.e for y in (miny, maxy)]
    col0, col1 = math.floor(min(cols) + 1e-9) - pad, math.ceil(max(cols) - 1e-9) + pad
    row0, row1 = math.floor(min(rows) + 1e-9) - pad, math.ceil(max(rows) - 1e-9) + pad
    return Grid(crs, transform @ Affine.translation(col0, row0), col1 - col0, row1 - row0)


def grid_transform(da: xr.DataArray | xr.Dataset) -> Affine:
    """The affine transform of a cube from its x/y pixel-centre coordinates (metres). A cube one
    pixel wide or high takes its pixel size from ``attrs["resolution_m"]``; without it, that is an
    error rather than a guess."""
    x, y = da["x"].values, da["y"].values
    if x.size > 1:
        dx = float(x[1] - x[0])
    elif "resolution_m" in da.attrs:
        dx = float(da.attrs["resolution_m"])
    else:
        raise ImageryError("a cube one pixel wide needs attrs['resolution_m'] to tell its pixel size")
    dy = float(y[1] - y[0]) if y.size > 1 else -abs(dx)
    return Affine(dx, 0, float(x[0]) - dx / 2, 0, dy, float(y[0]) - dy / 2)
