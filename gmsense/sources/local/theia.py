"""THEIA (CNES) Sentinel-2 L2A products, made by MAJA, as a cube (a layout of :mod:`gmsense.sources.local`).

The layout: a folder holding one sub-folder per acquisition, named as THEIA delivers them,
``SENTINEL2{A,B}_YYYYMMDD-hhmmss-mmm_L2A_T{tile}_{C,D}_V{major}-{minor}`` (the imagery path may also
be one such product folder). Each product folder holds one GeoTIFF per band of flat reflectance
(``FRE``, slope-corrected) ``<product>_FRE_B<n>.tif`` and the cloud mask ``MASKS/<product>_CLM_R1.tif``
(10 m) or ``MASKS/<product>_CLM_R2.tif`` (20 m). Zipped products must be unzipped first.

Bands (:data:`THEIA_BANDS`): B2 -> blue, B3 -> green, B4 -> red (10 m); B8A -> nir, B11 -> swir1,
B12 -> swir2 (20 m). When every product of the folder also has the 10 m broad NIR B8, B8 is the
``nir`` band instead of the narrow B8A (as for other Sentinel-2 imagery, see
:func:`gmsense.sources._bands.plan_bands`); ``attrs["nir_band"]`` says which.

Values: int16 reflectance x 10000 (THEIA's ``REFLECTANCE_QUANTIFICATION_VALUE``), -10000 = no data
(:data:`THEIA_NODATA`; the files do not declare it). With ``dn_scale="auto"`` the bands are multiplied
by 1e-4 (a scale in a file's GDAL metadata wins); a number multiplies them as is.
``attrs["dn_scale_applied"]`` records the factor.

Grid: the first product's (by date, then name) 10 m B4 lattice, cropped to the region (as every local
layout). The 20 m bands are resampled onto it **bilinearly** (no-data pixels are left out of the
weights), the 20 m cloud mask by **nearest** neighbour. ``clear`` = CLM == 0 (MAJA's CLM is a bit
field of cloud and cloud-shadow tests; any bit set is not clear) and every band valid. Same-day products
are merged (the first, by name, with all bands valid wins). Pixels are read lazily, one dask task per
date, through the same per-band reader as the GeoTIFF folders (rasterio windows or warping onto the grid).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pyproj
import rasterio
import rasterio.errors
import xarray as xr
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from gmsense.errors import ImageryError
from gmsense.sources._bands import S2_DN_SCALE, BandPlan
from gmsense.sources.local import (
    DateRange,
    DnScale,
    TiffInfo,
    _finish,
    _no_dates,
    _read_band,
    lazy_cube,
    meeting_grid,
    merge_first_valid,
    read_tiff_header,
    region_grid,
)

#: A THEIA Sentinel-2 L2A product name: platform, acquisition date and time, tile, version.
THEIA_PRODUCT = re.compile(r"^SENTINEL2[A-D]_(\d{8})-(\d{6})-(\d{3})_L2A_T(\w{5})_[A-Z]_V\d+-\d+$")
#: Common band name -> THEIA band, in cube order. ``nir`` may become B8 (see the module docstring).
THEIA_BANDS = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8A", "swir1": "B11", "swir2": "B12"}
THEIA_BROAD_NIR = "B8"
#: THEIA's no-data value in the FRE/SRE bands.
THEIA_NODATA = -10000.0
#: Cloud masks, preferred first: 10 m, then 20 m.
CLOUD_MASKS = ("CLM_R1", "CLM_R2")
#: How the 20 m reflectance bands are put onto the 10 m grid.
REFLECTANCE_RESAMPLING = Resampling.bilinear


@dataclass(frozen=True)
class TheiaProduct:
    """One THEIA product folder: its day, the header of each band's FRE file and of its cloud mask."""

    folder: Path
    day: np.datetime64
    bands: dict[str, TiffInfo]  # common name -> FRE band file
    cloud_mask: TiffInfo

    @property
    def reference(self) -> TiffInfo:
        """The 10 m red band: its lattice is the product's grid."""
        return self.bands["red"]

    @property
    def crs(self) -> pyproj.CRS:
        return self.reference.crs

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.reference.bounds


def _product_day(name: str) -> np.datetime64 | None:
    m = THEIA_PRODUCT.match(name)
    if not m:
        return None
    d = m.group(1)
    try:
        return np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:]}", "D")
    except ValueError:
        return None


def theia_product_folders(path: Path) -> list[tuple[np.datetime64, Path]]:
    """``(day, folder)`` of the THEIA product folders in ``path`` (or ``path`` itself when it is one),
    sorted by day, then name."""
    path = Path(path)
    own = _product_day(path.name)
    if own is not None and path.is_dir():
        return [(own, path)]
    found = [(day, p) for p in path.iterdir() if p.is_dir() and (day := _product_day(p.name)) is not None]
    return sorted(found, key=lambda dp: (dp[0], dp[1].name))


def _zipped_products(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir()
                  if p.is_file() and p.suffix.lower() == ".zip" and _product_day(p.stem) is not None)


def is_theia_folder(path: Path) -> bool:
    """True when ``path`` is a THEIA product folder or holds product folders (or zipped products)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return bool(theia_product_folders(path)) or bool(_zipped_products(path))


def _unreadable(folder: Path) -> str:
    return f"download THEIA product {folder.name} again, or remove its folder"


def _band_file(folder: Path, band: str) -> Path | None:
    candidate = folder / f"{folder.name}_FRE_{band}.tif"
    if candidate.is_file():
        return candidate
    found = sorted(folder.glob(f"*_FRE_{band}.tif"))
    return found[0] if found else None


def _file_header(path: Path, day: np.datetime64, common: str, band: str, nodata: float | None,
                 product: Path) -> TiffInfo:
    """The header of one single-band file of THEIA ``product``, read as the band ``common``."""
    info = read_tiff_header(path, day, [band], fix=_unreadable(product))
    return replace(info, plan=BandPlan({common: band}, None, "sentinel-2"), index={band: 1}, nodata={1: nodata},
                   scaling={1: info.scaling[1]} if 1 in info.scaling else {})


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every entry of a product folder and of its MASKS folder."""
    entries = []
    for where in (folder, folder / "MASKS"):
        if where.is_dir():
            with os.scandir(where) as it:
                for e in it:
                    st = e.stat()
                    entries.append((f"{where.name}/{e.name}", st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


def read_product_header(folder: Path, day: np.datetime64, nir: str) -> TheiaProduct:
    """Check that product ``folder`` is complete and read its files' headers (no pixels).

    ``nir``: the THEIA band read as ``nir`` (B8A or B8). Raises :class:`ImageryError` naming the
    product and the missing or unreadable file. Headers are remembered in the process while the
    folder's files keep their names, sizes and modification times (a scan checks them, then reads them).
    """
    return _product_header(folder, day, nir, _signature(folder))


@lru_cache(maxsize=4096)
def _product_header(folder: Path, day: np.datetime64, nir: str, signature: tuple) -> TheiaProduct:
    wanted = {**THEIA_BANDS, "nir": nir}
    files = {common: _band_file(folder, band) for common, band in wanted.items()}
    missing = [wanted[c] for c, f in files.items() if f is None]
    if missing:
        raise ImageryError(
            f"THEIA product {folder} lacks band file(s) {', '.join(f'{folder.name}_FRE_{b}.tif' for b in missing)}; "
            f"every product needs FRE bands {', '.join(wanted.values())}; "
            "download the complete product again, or remove its folder"
        )
    masks = [m for kind in CLOUD_MASKS for m in sorted((folder / "MASKS").glob(f"*_{kind}.tif"))]
    if not masks:
        raise ImageryError(
            f"THEIA product {folder} has no cloud mask MASKS/{folder.name}_CLM_R2.tif (or _CLM_R1.tif); "
            "download the complete product (with its MASKS folder) again, or remove its folder"
        )
    bands = {common: _file_header(path, day, common, wanted[common], THEIA_NODATA, folder)
             for common, path in files.items() if path is not None}
    mask = _file_header(masks[0], day, "clear", "CLM", None, folder)
    for common, info in bands.items():
        if info.crs != bands["red"].crs:
            raise ImageryError(
                f"THEIA product {folder}: band {wanted[common]} is in {info.crs.to_string()}, B4 in "
                f"{bands['red'].crs.to_string()}; a product's files share one CRS, download the product again"
            )
    return TheiaProduct(folder, day, bands, mask)


def _nir_band(products: Sequence[tuple[np.datetime64, Path]]) -> str:
    """B8 when every product has a 10 m FRE B8, else B8A."""
    has_b8 = all(_band_file(folder, THEIA_BROAD_NIR) is not None for _, folder in products)
    return THEIA_BROAD_NIR if products and has_b8 else THEIA_BANDS["nir"]


def theia_products(path: Path) -> list[TheiaProduct]:
    """Every product of the THEIA folder ``path``, checked and described (headers only)."""
    return [read_product_header(folder, day, nir) for day, folder, nir in _listed(path)]


def _listed(path: Path) -> list[tuple[np.datetime64, Path, str]]:
    folders = theia_product_folders(path)
    if not folders:
        zipped = _zipped_products(path)
        raise ImageryError(
            f"imagery folder {path} holds THEIA products only as zip files (e.g. {zipped[0].name}); "
            "unzip them in place (one folder per product)"
        )
    nir = _nir_band(folders)
    return [(day, folder, nir) for day, folder in folders]


def read_product_on_grid(product: TheiaProduct, grid: Any, bands: Sequence[str], scale: float) -> np.ndarray:
    """One product on ``grid``: float32 ``(len(bands) + 1, y, x)``, reflectance bands then clear (0/1).

    Bands without a metadata scale are multiplied by ``scale``; -10000 and pixels outside the files
    are NaN; clear = CLM == 0 and every band finite.
    """
    out = np.empty((len(bands) + 1, grid.height, grid.width), dtype="float32")
    current = product.cloud_mask.path
    try:
        for k, band in enumerate(bands):
            info = product.bands[band]
            current = info.path
            with rasterio.open(info.path) as src:
                values = _read_band(src, info, 1, grid, REFLECTANCE_RESAMPLING)
            s, o = info.scaling.get(1, (scale, 0.0))
            out[k] = values * np.float32(s) + np.float32(o) if (s, o) != (1.0, 0.0) else values
        current = product.cloud_mask.path
        with rasterio.open(current) as src:
            clm = _read_band(src, product.cloud_mask, 1, grid, Resampling.nearest)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise ImageryError(f"imagery file {current} cannot be read ({exc}); {_unreadable(product.folder)}") from exc
    out[len(bands)] = (clm == 0) & np.all(np.isfinite(out[: len(bands)]), axis=0)
    return out


def _read_day(products: Sequence[TheiaProduct], grid: Any, bands: Sequence[str], scale: float) -> np.ndarray:
    layers = [read_product_on_grid(p, grid, bands, scale) for p in products]
    return layers[0] if len(layers) == 1 else merge_first_valid(layers)


def read_theia(path: Path, region: BaseGeometry, region_crs: pyproj.CRS, dates: DateRange, start: str | None,
               end: str | None, dn_scale: DnScale, site_id: str | None) -> xr.Dataset:
    """The THEIA folder ``path`` over ``region`` (in ``region_crs``) as a lazy cube on the 10 m grid
    (see the module docstring); dates filtered by ``dates`` (``start``/``end`` name it in errors)."""
    listed = _listed(path)
    days = np.array([d for d, _, _ in listed], dtype="datetime64[ns]")
    keep = dates.keep(days)
    if not keep.any():
        raise _no_dates(path, days, start, end, site_id)
    reference = read_product_header(listed[0][1], listed[0][0], listed[0][2]).reference
    products = [read_product_header(folder, day, nir) for (day, folder, nir), k in zip(listed, keep, strict=True)
                if k]
    grid = region_grid(reference, region, region_crs, path, site_id)
    used = meeting_grid(products, grid, region, region_crs, path, site_id)

    scale = S2_DN_SCALE if dn_scale == "auto" else float(dn_scale)
    by_day: dict[np.datetime64, list[TheiaProduct]] = {}
    for product in used:
        by_day.setdefault(product.day, []).append(product)
    bands = list(THEIA_BANDS)
    tasks = [dask.delayed(_read_day)(group, grid, bands, scale) for group in by_day.values()]
    image_ids = ["+".join(p.folder.name for p in group) for group in by_day.values()]
    ds = lazy_cube(tasks, np.array(list(by_day)), image_ids, grid, bands)
    extra = {"dn_scale_applied": scale, "product": "THEIA L2A (MAJA), flat reflectance FRE",
             "nir_band": listed[0][2], "resampling_20m": "bilinear (bands), nearest (cloud mask)"}
    return _finish(ds, grid.crs, grid.transform, platform="sentinel-2", path=path, extra=extra)
