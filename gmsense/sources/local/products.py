"""Product layouts (Sentinel-2 SAFE, Landsat Collection 2, STAC items) as one cube: the shared reader.

Each layout module (:mod:`~gmsense.sources.local.safe`, :mod:`~gmsense.sources.local.landsat`,
:mod:`~gmsense.sources.local.stac`) turns what the user points at into a list of :class:`Product`:
one acquisition of one tile, with a single-band raster per common band name (a path GDAL opens:
a file, ``/vsizip/...``, ``/vsitar/...`` or ``/vsicurl/...``), the scale and offset its metadata
gives, its no-data value, a mask raster and how to decode it (``scl`` or ``qa_pixel``, see
:func:`gmsense.sources._bands.decode_clear`), its sensor and platform.

:func:`read_products` makes the cube. The grid is the lattice of the finest ``red`` band among the
products (among equals one in the licence's CRS, then the first by date and name), cropped to the region
(as every local layout; imagery in a geographic CRS is reprojected onto a grid in the region's CRS).
Bands on that lattice are read by window; bands on another lattice (20 m Sentinel-2 SWIR, another tile's
UTM zone, a Landsat product under a Sentinel-2 grid) are warped onto it, **bilinear** for reflectance
(no-data left out of the weights) and **nearest** for masks. ``clear`` = the mask says clear and every
band is valid. Same-day products (neighbouring tiles) are merged: per pixel the first product with every
band valid wins, products in the grid's CRS (not warped) first, then by name. One dask task per date reads
the region's window only. The cube carries the ``image_id`` (product names) and ``sensor`` (``MSI``,
``OLI``, ``ETM+``, ``TM``) of each date, so TM / ETM+ dates are harmonised like other Landsat imagery
(:mod:`gmsense.cube.harmonise`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import pyproj
import rasterio
import rasterio.errors
import xarray as xr
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from gmsense.cube.harmonise import ID_SEPARATOR, SENSOR_COORD
from gmsense.errors import ImageryError
from gmsense.sources._bands import REQUIRED_BANDS, BandPlan, decode_clear
from gmsense.sources.local import (
    DateRange,
    MissingMaskWarning,
    TiffInfo,
    _finish,
    _no_dates,
    _read_band,
    lazy_cube,
    meeting_grid,
    merge_first_valid,
    normalise_crs,
    region_grid,
)


def compact_day(digits: str) -> np.datetime64 | None:
    """The day of ``YYYYMMDD`` as product names write it, or None when it is no valid date."""
    try:
        return np.datetime64(f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}", "D")
    except ValueError:
        return None


def products_in(path: Any, is_product: Any) -> list[Any]:
    """The products at ``path`` (a Path): itself when ``is_product(path)``, else its entries that
    are, sorted by name."""
    if is_product(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted((p for p in path.iterdir() if is_product(p)), key=lambda p: p.name)

#: Cube band order of the product layouts.
PRODUCT_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


@dataclass(frozen=True)
class Product:
    """One acquisition of one tile: a header (no pixels) per band and of the mask.

    ``bands``: common name -> :class:`TiffInfo` of the single band read (its ``scaling`` holds the
    metadata's ``(scale, offset)``; ``nodata`` the fill value). ``mask``: the mask raster's header,
    decoded as ``mask_kind``; None when the product has none (then clear = every band valid).
    ``fix``: how to repair the product, for messages about an unreadable file.
    """

    name: str
    day: np.datetime64
    bands: dict[str, TiffInfo]
    mask: TiffInfo | None
    mask_kind: str | None
    sensor: str
    platform: str
    fix: str = "download the product again, or remove it"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> TiffInfo:
        """The red band: the finest red lattice of the products is the cube's grid."""
        return self.bands["red"]

    @property
    def crs(self) -> pyproj.CRS:
        return self.reference.crs

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.reference.bounds


def band_header(href: str, day: np.datetime64, name: str, *, nodata: float | None,
                scaling: tuple[float, float] | None, fix: str, band: int = 1) -> TiffInfo:
    """The header of band ``band`` of raster ``href`` (any path GDAL opens), read as the source band ``name``.

    ``nodata``: the fill value when the file declares none (the file's own wins). ``scaling``: the
    ``(scale, offset)`` from the product's metadata (None: no scaling). Unreadable rasters (a corrupt
    JP2, a missing driver, a broken zip) raise :class:`ImageryError` ending with ``fix``.
    """
    try:
        with rasterio.open(href) as src:
            if src.crs is None:
                raise ImageryError(f"imagery file {href} has no CRS; {fix}")
            if band > src.count:
                raise ImageryError(f"imagery file {href} has {src.count} band(s), not band {band}; {fix}")
            declared = src.nodatavals[band - 1]
            return TiffInfo(
                path=href, day=day, crs=normalise_crs(src.crs), transform=src.transform,  # type: ignore[arg-type]
                width=src.width, height=src.height, plan=BandPlan({name: name}, None, "unknown"),
                index={name: band}, nodata={band: declared if declared is not None else nodata},
                scaling={band: scaling} if scaling and scaling != (1.0, 0.0) else {},
            )
    except ImageryError:
        raise
    except Exception as exc:  # rasterio raises several types for bad files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageryError(f"imagery file {href} cannot be read ({type(exc).__name__}: {first}); {fix}") from exc


def read_product_on_grid(product: Product, grid: Any, bands: Sequence[str]) -> np.ndarray:
    """One product on ``grid``: float32 ``(len(bands) + 1, y, x)``, reflectance bands then clear (0/1)."""
    out = np.empty((len(bands) + 1, grid.height, grid.width), dtype="float32")
    current: Any = product.name
    try:
        for k, band in enumerate(bands):
            info = product.bands[band]
            current = info.path
            idx = next(iter(info.index.values()))
            with rasterio.open(info.path) as src:
                values = _read_band(src, info, idx, grid, Resampling.bilinear)
            scale, offset = info.scaling.get(idx, (1.0, 0.0))
            out[k] = values * np.float32(scale) + np.float32(offset) if (scale, offset) != (1.0, 0.0) else values
        valid = np.all(np.isfinite(out[: len(bands)]), axis=0)
        if product.mask is None or product.mask_kind is None:
            out[len(bands)] = valid
        else:
            current = product.mask.path
            idx = next(iter(product.mask.index.values()))
            with rasterio.open(product.mask.path) as src:
                mask = _read_band(src, product.mask, idx, grid, Resampling.nearest)
            out[len(bands)] = decode_clear(product.mask_kind, mask) & valid
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise ImageryError(f"imagery file {current} cannot be read ({exc}); {product.fix}") from exc
    return out


def _read_day(products: Sequence[Product], grid: Any, bands: Sequence[str]) -> np.ndarray:
    layers = [read_product_on_grid(p, grid, bands) for p in products]
    return layers[0] if len(layers) == 1 else merge_first_valid(layers)


def _finest_first(products: Sequence[Product], region_crs: pyproj.CRS) -> Product:
    """The product whose red band has the smallest pixels; among equals, one in the licence's CRS (so tiles of
    another UTM zone are warped onto the licence's zone, not the other way), then the first by date and name."""
    def size(p: Product) -> float:
        t = p.reference.transform
        return round(abs(t.a) * abs(t.e), 6) if not p.crs.is_geographic else float("inf")
    return min(products, key=lambda p: (size(p), p.crs != region_crs, p.day, p.name))


def common_bands(products: Sequence[Product], path: Any) -> list[str]:
    """The cube bands every product has (in :data:`PRODUCT_BANDS` order); warns about bands left out
    and raises :class:`ImageryError` when red or nir is not in every product."""
    found = [b for b in PRODUCT_BANDS if all(b in p.bands for p in products)]
    missing = [b for b in REQUIRED_BANDS if b not in found]
    if missing:
        lacking = next(p for p in products if any(b not in p.bands for b in missing))
        raise ImageryError(f"imagery {path}: product {lacking.name} lacks band(s) {', '.join(missing)} "
                           f"(it has {', '.join(lacking.bands) or 'none'}); every product needs red and nir")
    dropped = sorted({b for p in products for b in p.bands} - set(found))
    if dropped:
        warnings.warn(f"imagery {path}: band(s) {', '.join(dropped)} are not in every product and are left out",
                      UserWarning, stacklevel=3)
    return found


def read_products(products: Sequence[Product], path: Any, region: BaseGeometry, region_crs: pyproj.CRS,
                  dates: DateRange, start: str | None, end: str | None, site_id: str | None, *,
                  extra: dict[str, Any]) -> xr.Dataset:
    """``products`` over ``region`` (in ``region_crs``) as a lazy cube (see the module docstring); dates
    filtered by ``dates`` (``start``/``end`` name it in errors); ``extra`` joins the cube's attrs."""
    if not products:
        raise ImageryError(f"imagery {path} holds no product")
    days = np.array([p.day for p in products], dtype="datetime64[ns]")
    keep = dates.keep(days)
    if not keep.any():
        raise _no_dates(path, days, start, end, site_id)
    reference = _finest_first(products, region_crs).reference  # of all products: the grid does not depend on the dates
    chosen = [p for p, k in zip(products, keep, strict=True) if k]
    grid = region_grid(reference, region, region_crs, path, site_id)
    used = meeting_grid(chosen, grid, region, region_crs, path, site_id)
    used = sorted(used, key=lambda p: (p.day, p.name))
    bands = common_bands(used, path)
    no_mask = [p.name for p in used if p.mask is None]
    if no_mask:
        warnings.warn(f"imagery {path}: {len(no_mask)} product(s) without a mask (SCL, QA_PIXEL), e.g. {no_mask[0]}; "
                      "clear = all bands observed, clouds are not masked", MissingMaskWarning, stacklevel=3)

    by_day: dict[np.datetime64, list[Product]] = {}
    for product in sorted(used, key=lambda p: (p.day, p.crs != grid.crs, p.name)):  # unwarped tiles first
        by_day.setdefault(product.day, []).append(product)
    tasks = [dask.delayed(_read_day)(group, grid, bands) for group in by_day.values()]
    image_ids = [ID_SEPARATOR.join(p.name for p in group) for group in by_day.values()]
    sensors = ["|".join(sorted({p.sensor for p in group})) for group in by_day.values()]
    ds = lazy_cube(tasks, np.array(list(by_day)), image_ids, grid, bands)
    ds = ds.assign_coords({SENSOR_COORD: ("time", np.asarray(sensors, dtype=object).astype(str))})
    platforms = {p.platform for p in used}
    platform = platforms.pop() if len(platforms) == 1 else "+".join(sorted(platforms))
    extra = {**extra, "resampling": "bilinear (reflectance), nearest (masks) onto the finest red band's lattice"}
    return _finish(ds, grid.crs, grid.transform, platform=platform, path=path, extra=extra)
