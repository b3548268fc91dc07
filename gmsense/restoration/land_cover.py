"""A land-cover map (GeoTIFF of class codes, any CRS) read onto a polygon's imagery grid.

The restoration run compares each pixel with the ring pixels of its own land cover and gives a pit
without a vegetated ring the reference of its land cover in the region
(:mod:`gmsense.restoration.reference`). A national 30 m product fits: the China Land Cover Dataset
(CLCD, annual since 1985; codes 1 cropland, 2 forest, 3 shrub, 4 grassland, 5 water, 6 snow and
ice, 7 barren, 8 impervious, 9 wetland: the default ``restoration.land_cover_vegetated``) or ESA
WorldCover (10 tree cover, 20 shrubland, 30 grassland, 40 cropland, ...). Classes are read by
nearest neighbour; pixels outside the map or at its nodata are class 0 (none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from affine import Affine

from gmsense.errors import InputError
from gmsense.restoration.reference import NO_CLASS


class LandCoverMap:
    """An open land-cover raster; :meth:`read` resamples it onto a grid. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        import rasterio
        from rasterio.errors import RasterioIOError

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"land-cover map {self.path} does not exist; give a GeoTIFF of class codes")
        try:
            self._dataset: Any = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise InputError(f"land-cover map {self.path} is not a raster GDAL can read ({exc})") from None
        if self._dataset.count != 1 or self._dataset.crs is None:
            self._dataset.close()
            raise InputError(f"land-cover map {self.path} must have one band of class codes and a CRS "
                             f"(it has {self._dataset.count} band(s), CRS {self._dataset.crs})")

    def read(self, shape: tuple[int, int], transform: Affine, crs: pyproj.CRS) -> np.ndarray:
        """The classes (int32) on the grid ``shape``/``transform``/``crs``, :data:`NO_CLASS` outside the
        map: only the map's pixels under the grid are read (a national map is large), then warped."""
        from rasterio.crs import CRS
        from rasterio.enums import Resampling
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import Window, from_bounds

        out = np.full(shape, NO_CLASS, dtype=np.int32)
        height, width = shape
        xs, ys = zip(transform * (0, 0), transform * (width, height), strict=True)
        dst_crs = CRS.from_wkt(crs.to_wkt())
        bounds = transform_bounds(dst_crs, self._dataset.crs, min(xs), min(ys), max(xs), max(ys), densify_pts=21)
        window = from_bounds(*bounds, transform=self._dataset.transform).round_offsets().round_lengths()
        pad = 2  # nearest neighbour needs the map's pixels just beyond the grid's edge
        window = Window(window.col_off - pad, window.row_off - pad, window.width + 2 * pad, window.height + 2 * pad)
        full = Window(0, 0, self._dataset.width, self._dataset.height)
        if (window.col_off >= full.width or window.row_off >= full.height or window.col_off + window.width <= 0
                or window.row_off + window.height <= 0):
            return out  # the grid lies outside the map
        window = window.intersection(full)
        nodata = self._dataset.nodata
        reproject(source=self._dataset.read(1, window=window).astype(np.int32), destination=out,
                  src_transform=self._dataset.window_transform(window), src_crs=self._dataset.crs,
                  src_nodata=NO_CLASS if nodata is None else int(nodata), dst_transform=transform,
                  dst_crs=dst_crs, dst_nodata=NO_CLASS, resampling=Resampling.nearest)
        return out

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> LandCoverMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
