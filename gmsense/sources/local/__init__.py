"""Local imagery -> the cube contract (DESIGN.md, "Imagery cube" and "Local imagery").

These layouts are read by :func:`read_local_cube`:

1. a folder of per-acquisition GeoTIFF/COG files whose names start with an ISO date
   (``2021-06-14_S2L2A.tif``). Band descriptions name the bands (see
   :mod:`gmsense.sources._bands`; files without any band description take the names of the
   setting ``local.band_names``, in band order), GDAL scale/offset and nodata are honoured, a mask band
   (``SCL``, ``QA_PIXEL``, ``clear`` or ``cloud``) gives ``clear``. Files of the same date are
   merged (first file, by name, with a valid pixel wins). The grid is the first file's (by date,
   then name; the first of the whole folder, so the grid does not depend on ``start``/``end``);
   files on another grid or CRS are warped onto it (bilinear for reflectance, nearest for masks).
   Pixels are read lazily, one dask task per date, and only the window of the region.
2. a folder of annual composites named ``YYYY.tif`` (e.g. best-available-pixel composites): read
   as layout 1, each year dated at :data:`COMPOSITE_MONTH_DAY` (15 July, inside the default
   May-September growing season), with ``attrs["composite"] = "annual"``. A band value of exactly 0
   is the composites' fill value (no data). Without a mask band, ``clear`` is "every band valid"
   and no :class:`MissingMaskWarning` is given: such composites are cloud-screened when they are made.
3. a folder of THEIA/MAJA Sentinel-2 L2A product folders (see :mod:`gmsense.sources.local.theia`).
4. a NetCDF (``.nc``) or Zarr (``.zarr``) store already shaped like a cube (dims ``time, y, x``),
   opened lazily with its CRS from the grid-mapping variable.
5. imagery as delivered, through one product reader (:mod:`gmsense.sources.local.products`):
   Sentinel-2 L2A SAFE folders or zips (:mod:`~gmsense.sources.local.safe`), Landsat Collection 2
   Level-2 folders or tars (:mod:`~gmsense.sources.local.landsat`), STAC catalogues, collections,
   items or ItemCollections (:mod:`~gmsense.sources.local.stac`).

The layout is detected from the path, or named (``layout``; :mod:`gmsense.sources.local.layouts`).

In layouts 1-4, the output grid is the imagery's own (no resampling) cropped to the region's bounding box
plus one pixel, extended with NaN where the imagery does not reach; imagery in a geographic CRS is
reprojected (nearest) onto a grid in the region's CRS.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pyproj
import rasterio
import rasterio.errors
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gmsense._numeric import as_slice
from gmsense.cube.contract import validate_cube
from gmsense.cube.harmonise import ATTR_METHOD, DEFAULT_METHOD, SENSOR_COORD, harmonise, sensor_of, with_sensor
from gmsense.errors import ImageryError
from gmsense.geo.grid import Grid, crop_grid
from gmsense.sources._bands import (
    REQUIRED_BANDS,
    BandPlan,
    accepted_names,
    decode_clear,
    default_dn_scaling,
    looks_like_dn,
    missing_required,
    plan_bands,
)

#: File names the folder layout reads: an ISO date first, a GeoTIFF suffix.
DATED_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
#: Annual composites: the year alone (``2005.tif``).
ANNUAL_FILE = re.compile(r"^(\d{4})\.tiff?$", re.IGNORECASE)
#: The date an annual composite stands for: mid growing season (inside the default May-September
#: window of :class:`gmsense.config.SeasonSettings`), so each year gives one in-season observation.
COMPOSITE_MONTH_DAY = "07-15"
TIFF_SUFFIXES = (".tif", ".tiff")
STORE_SUFFIXES = (".nc", ".nc4", ".netcdf", ".zarr")
#: How many acquisitions are sampled (eagerly, region window only) to decide ``dn_scale="auto"``.
DN_SAMPLE_DATES = 8
#: ... and at most this many pixels each way, around the window's centre: a store chunked along
#: space with every date in a chunk (as Zarr cubes often are) is otherwise read whole for the guess.
DN_SAMPLE_PIXELS = 256

DnScale = float | Literal["auto"]


class MissingMaskWarning(UserWarning):
    """Imagery without a mask band: ``clear`` only means "all bands observed"."""


class RescaledImageryWarning(UserWarning):
    """Imagery whose every band of every image spans exactly 0..1: rescaled per image, not reflectance."""


#: Most bytes (float32) in one dask chunk of a cube read from a NetCDF / Zarr store: the region's
#: window is read in as few chunks of about equal height as fit, each with every date and whole rows
#: (a whole number of the store's own chunk rows), straight from the file. Cut into the store's small
#: chunks (100 x 100 px) the large licence's read took 2x longer, in dask's tasks and in gluing the
#: pieces together; one 170 MB chunk per band was slower again (medians of 5 shuffled reads, 2026-11-30:
#: 64 MiB 2.3 / 0.9 s for the whole / half licence, 128 MiB 3.6 / 0.9 s, 256 MiB 4.5 / 1.1 s).
READ_CHUNK_BYTES = 64 * 2**20
RESCALED_TOLERANCE = 1e-6  # a band's maximum "is 1" this close to it
RESCALED_MIN = 0.1  # and its minimum below this (0 itself is often the files' no-data value)
RESCALED_AT_MAX = 0.005  # and few pixels at 1 (clipped reflectance saturates whole clouds at 1)
RESCALED_CHECK_MAX_BYTES = 64 * 2**20  # files up to this size are read whole for the check (site exports)


# --------------------------------------------------------------------------------------------
# small pure helpers: CRS, dates, messages (the grid: gmsense.geo.grid)


def normalise_crs(crs: Any) -> pyproj.CRS:
    """``crs`` (anything pyproj/rasterio understands) as a pyproj CRS, by EPSG code when it has one.

    A CRS bound to WGS 84 by a null TOWGS84 (GDAL's way of writing ETRS89-based CRSs) is unwrapped,
    and an explicit ``AUTHORITY["EPSG", code]`` in the WKT is honoured, so the Romania cubes'
    "ETRS89 / LAEA Europe" comes out as EPSG:3035.
    """
    wkt = crs.to_wkt() if hasattr(crs, "to_wkt") else crs
    pc = pyproj.CRS.from_user_input(wkt)
    if pc.is_bound:
        params = [p.value for p in (pc.coordinate_operation.params if pc.coordinate_operation else [])]
        if all(v == 0 for v in params):
            pc = pc.source_crs
    code = pc.to_epsg()
    if code is None:
        ident = pc.to_json_dict().get("id") or {}
        if ident.get("authority") == "EPSG":
            code = int(ident["code"])
    return pyproj.CRS.from_epsg(code) if code else pc


def _geographic_target(src_crs: pyproj.CRS, src_grid: tuple[Affine, int, int], region_bounds: Sequence[float],
                       region_crs: pyproj.CRS) -> Grid:
    """A square-pixel grid in ``region_crs`` over ``region_bounds`` for imagery in a geographic CRS."""
    transform, width, height = src_grid
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * width, top + transform.e * height
    dst, _, _ = calculate_default_transform(
        src_crs.to_wkt(), region_crs.to_wkt(), width, height,
        left=min(left, right), bottom=min(top, bottom), right=max(left, right), top=max(top, bottom),
    )
    res = abs(dst.a)
    res = float(f"{res:.2g}") if res > 0 else 10.0  # 8.98e-5 deg at 47 N -> ~6.8 m -> 6.8
    origin = Affine(res, 0.0, 0.0, 0.0, -res, 0.0)
    return crop_grid(region_crs, origin, region_bounds)


def transform_bounds(bounds: Sequence[float], src: pyproj.CRS, dst: pyproj.CRS) -> tuple[float, ...]:
    """``(minx, miny, maxx, maxy)`` in ``src`` as the bounds of their reprojection to ``dst``."""
    if src == dst:
        return tuple(bounds)
    transformer = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return tuple(transformer.transform_bounds(*bounds, densify_pts=21))


def _to_crs(geom: BaseGeometry, src: pyproj.CRS, dst: pyproj.CRS) -> BaseGeometry:
    if src == dst:
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny, 1e-9) / 20
    transformer = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(shapely.segmentize(geom, step), transformer.transform, interleaved=False)


def _lonlat(bounds: Sequence[float], crs: pyproj.CRS) -> str:
    w, s, e, n = transform_bounds(bounds, crs, pyproj.CRS.from_epsg(4326))
    return f"lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f} (EPSG:4326)"


def _who(site_id: str | None) -> str:
    return f"licence {site_id}" if site_id else "the region"


def _not_covered(path: Path, footprint: Sequence[float], crs: pyproj.CRS, region: BaseGeometry,
                 region_crs: pyproj.CRS, site_id: str | None) -> ImageryError:
    return ImageryError(
        f"imagery {path} does not cover {_who(site_id)}; it covers {_lonlat(footprint, crs)}, "
        f"{'the licence' if site_id else 'the region'} is at {_lonlat(region.bounds, region_crs)}; "
        "point the imagery path at imagery of that area or check the licence CRS"
    )


@dataclass(frozen=True)
class DateRange:
    """Inclusive date filter; a bare date as ``end`` includes that whole day."""

    start: np.datetime64 | None
    end_exclusive: np.datetime64 | None

    def keep(self, times: np.ndarray) -> np.ndarray:
        """Boolean: which of ``times`` (datetime64) are inside the range."""
        times = np.asarray(times, dtype="datetime64[ns]")
        ok = np.ones(times.shape, bool)
        if self.start is not None:
            ok &= times >= self.start
        if self.end_exclusive is not None:
            ok &= times < self.end_exclusive
        return ok


def parse_range(start: str | None, end: str | None) -> DateRange:
    """:class:`DateRange` from ISO strings; raises :class:`ImageryError` on a bad date."""
    def parse(value: str | None, what: str) -> pd.Timestamp | None:
        if value is None or value == "":
            return None
        try:
            return pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ImageryError(f"{what} date {value!r} is not an ISO date (YYYY-MM-DD)") from exc

    t0, t1 = parse(start, "start"), parse(end, "end")
    if t1 is not None:
        t1 = t1 + pd.Timedelta(days=1) if t1 == t1.normalize() else t1 + pd.Timedelta(nanoseconds=1)
    def to64(t: pd.Timestamp | None) -> np.datetime64 | None:
        return None if t is None else np.datetime64(t.tz_localize(None) if t.tzinfo else t, "ns")

    return DateRange(to64(t0), to64(t1))


def _range_text(start: str | None, end: str | None) -> str:
    return f"{start or '...'}..{end or '...'}"


def _no_dates(path: Path, available: np.ndarray, start: str | None, end: str | None,
              site_id: str | None) -> ImageryError:
    days = np.asarray(available, dtype="datetime64[D]")
    have = f"{days.min()}..{days.max()}" if days.size else "none"
    return ImageryError(
        f"imagery {path} has no acquisition within {_range_text(start, end)} for {_who(site_id)}; "
        f"it has {have}; widen the date range (start/end)"
    )


def _missing_bands(path: Path, missing: list[str], found: Sequence[str], where: str = "") -> ImageryError:
    return ImageryError(
        f"imagery {path}{where} lacks band(s) {', '.join(missing)} (found: {', '.join(found) or 'none'}); "
        f"required {', '.join(REQUIRED_BANDS)}; accepted names: {accepted_names()}; "
        "name the bands in the band descriptions or variable names"
    )


def _finish(ds: xr.Dataset, crs: pyproj.CRS, transform: Affine, *, platform: str, path: Path,
            extra: dict[str, Any]) -> xr.Dataset:
    ds.x.attrs.update(units="metre", long_name="x (pixel centre)")
    ds.y.attrs.update(units="metre", long_name="y (pixel centre)")
    ds = ds.rio.write_crs(crs).rio.write_transform(transform)
    ds.attrs.update(source="local", platform=platform,
                    resolution_m=float((abs(transform.a) + abs(transform.e)) / 2), path=str(path), **extra)
    return ds


# --------------------------------------------------------------------------------------------
# layout (a): a folder of dated GeoTIFFs


@dataclass(frozen=True)
class TiffInfo:
    """What the header of one dated GeoTIFF says. Band indexes are 1-based."""

    path: Path  # or a GDAL path (/vsizip/..., /vsicurl/...) for product layouts
    day: np.datetime64
    crs: pyproj.CRS
    transform: Affine
    width: int
    height: int
    plan: BandPlan
    index: dict[str, int]  # source band name -> band index
    nodata: dict[int, float | None]
    scaling: dict[int, tuple[float, float]] = field(default_factory=dict)  # from metadata, where given
    #: Band indexes whose value 0 is a fill value (no data) besides ``nodata`` (annual composites).
    zero_fill: frozenset[int] = frozenset()

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return Grid(self.crs, self.transform, self.width, self.height).bounds


def dated_files(folder: Path) -> list[tuple[np.datetime64, Path]]:
    """``(day, path)`` of the GeoTIFFs in ``folder`` whose names start with a valid ISO date, or of
    the annual composites ``YYYY.tif`` (dated ``YYYY-``:data:`COMPOSITE_MONTH_DAY`), sorted."""
    found = []
    for p in folder.iterdir():
        if not (p.is_file() and p.suffix.lower() in TIFF_SUFFIXES):
            continue
        m, annual = DATED_FILE.match(p.name), ANNUAL_FILE.match(p.name)
        if not (m or annual):
            continue
        try:
            day = np.datetime64(m.group(1) if m else f"{annual.group(1)}-{COMPOSITE_MONTH_DAY}", "D")
        except ValueError:
            continue
        found.append((day, p))
    return sorted(found, key=lambda dp: (dp[0], dp[1].name))


def is_annual_series(files: Sequence[tuple[np.datetime64, Path]]) -> bool:
    """True when ``files`` (from :func:`dated_files`) are annual composites ``YYYY.tif``; raises
    :class:`ImageryError` when a folder mixes them with per-acquisition files."""
    annual = [bool(ANNUAL_FILE.match(p.name)) for _, p in files]
    if any(annual) and not all(annual):
        one = next(p for (_, p), a in zip(files, annual, strict=True) if not a)
        raise ImageryError(
            f"imagery folder {one.parent} mixes annual composites (YYYY.tif) with per-acquisition files "
            f"(e.g. {one.name}); keep one kind per folder"
        )
    return bool(files) and all(annual)


def _band_scaling(src: rasterio.io.DatasetReader, idx: int) -> tuple[float, float] | None:
    """``(scale, offset)`` of band ``idx`` from GDAL metadata, or None when the file names none."""
    scale, offset = src.scales[idx - 1], src.offsets[idx - 1]
    if (scale, offset) == (1.0, 0.0):
        tags = {k.lower(): v for k, v in src.tags(idx).items()}
        try:
            scale = float(tags.get("scale_factor", tags.get("scale", 1.0)))
            offset = float(tags.get("add_offset", tags.get("offset", 0.0)))
        except ValueError:
            return None
    return None if (scale, offset) == (1.0, 0.0) else (float(scale), float(offset))


def read_tiff_header(path: Path, day: np.datetime64, band_names: Sequence[str] | None = None, *,
                     fix: str = "replace or remove it") -> TiffInfo:
    """Open ``path`` and describe it; corrupt files and files without a CRS raise :class:`ImageryError`.

    ``band_names`` name the bands, in band order, of a file without any band description (the
    descriptions win when there are some). ``fix`` ends the message about an unreadable file.
    """
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise ImageryError(
                    f"imagery file {path} has no CRS; write one (e.g. gdal_edit.py -a_srs EPSG:32652 {path.name})"
                )
            names = list(src.descriptions)
            if band_names and not any(names):
                if len(band_names) != src.count:
                    raise ImageryError(
                        f"imagery file {path} has {src.count} band(s) without descriptions but the setting "
                        f"local.band_names names {len(band_names)} ({', '.join(band_names)}); "
                        "give one name per band, in band order"
                    )
                names = list(band_names)
            plan = plan_bands(names, sensor_of(path.name))
            index = {name: i + 1 for i, name in reversed(list(enumerate(names))) if name}
            used = [*plan.bands.values(), *([plan.mask[1]] if plan.mask else [])]
            scaling = {}
            for name in plan.bands.values():
                s = _band_scaling(src, index[name])
                if s is not None:
                    scaling[index[name]] = s
            return TiffInfo(
                path=path, day=day, crs=normalise_crs(src.crs), transform=src.transform,
                width=src.width, height=src.height, plan=plan, index=index,
                nodata={index[n]: src.nodatavals[index[n] - 1] for n in used}, scaling=scaling,
            )
    except ImageryError:
        raise
    except Exception as exc:  # rasterio raises several types for bad files
        raise ImageryError(
            f"imagery file {path} cannot be read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {fix}"
        ) from exc


def _aligned(info: TiffInfo, grid: Grid) -> tuple[int, int] | None:
    """``(col, row)`` of the grid origin in the file's pixels when both share one lattice, else None."""
    t, g = info.transform, grid.transform
    if info.crs != grid.crs or not (math.isclose(t.a, g.a) and math.isclose(t.e, g.e)) or t.b or t.d:
        return None
    col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(col), round(row)


def _read_band(src: rasterio.io.DatasetReader, info: TiffInfo, idx: int, grid: Grid,
               resampling: Resampling) -> np.ndarray:
    """Band ``idx`` of ``src`` on ``grid`` as float32, NaN where nodata or outside the file."""
    out = np.full((grid.height, grid.width), np.nan, dtype="float32")
    offset = _aligned(info, grid)
    if offset is not None:
        col, row = offset
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + grid.width, info.width), min(row + grid.height, info.height)
        if c1 <= c0 or r1 <= r0:
            return out
        data = src.read(idx, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
        out[r0 - row:r1 - row, c0 - col:c1 - col] = data.astype("float32").filled(np.nan)
        return _drop_fill(out, info, idx)
    nodata = info.nodata.get(idx)
    if idx in info.zero_fill and (nodata is None or np.isnan(nodata)):
        nodata = 0.0  # the fill value, so warping does not blend it into its neighbours
    reproject(
        source=rasterio.band(src, idx), destination=out,
        src_crs=src.crs, src_transform=src.transform, src_nodata=nodata,
        dst_crs=grid.crs.to_wkt(), dst_transform=grid.transform, dst_nodata=np.nan,
        resampling=resampling,
    )
    return _drop_fill(out, info, idx)


def _drop_fill(values: np.ndarray, info: TiffInfo, idx: int) -> np.ndarray:
    """``values`` with the nodata value of band ``idx`` (and 0 for a zero-fill band) set to NaN, in place.

    The nodata value is the file's, or one the layout knows when the file declares none (THEIA's -10000).
    """
    nodata = info.nodata.get(idx)
    if nodata is not None and not np.isnan(nodata):
        values[values == np.float32(nodata)] = np.nan
    if idx in info.zero_fill:
        values[values == 0] = np.nan
    return values


def read_tiff_on_grid(info: TiffInfo, grid: Grid, bands: Sequence[str],
                      fallback: tuple[float, float]) -> np.ndarray:
    """One file on ``grid``: float32 ``(len(bands) + 1, y, x)``: reflectance bands, then clear (0/1).

    Bands without a metadata scale/offset get ``fallback`` (scale, offset). A pixel with any band
    NaN is not clear; without a mask band clear means "all bands observed".
    """
    out = np.empty((len(bands) + 1, grid.height, grid.width), dtype="float32")
    try:
        with rasterio.open(info.path) as src:
            for k, band in enumerate(bands):
                idx = info.index[info.plan.bands[band]]
                scale, offset = info.scaling.get(idx, fallback)
                values = _read_band(src, info, idx, grid, Resampling.bilinear)
                out[k] = values * np.float32(scale) + np.float32(offset) if (scale, offset) != (1.0, 0.0) else values
            valid = np.all(np.isfinite(out[: len(bands)]), axis=0)
            if info.plan.mask is None:
                clear = valid
            else:
                kind, name = info.plan.mask
                clear = decode_clear(kind, _read_band(src, info, info.index[name], grid, Resampling.nearest)) & valid
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise ImageryError(f"imagery file {info.path} cannot be read ({exc}); replace or remove it") from exc
    out[len(bands)] = clear
    return out


def merge_first_valid(layers: Sequence[np.ndarray]) -> np.ndarray:
    """Merge same-date ``(bands + 1, y, x)`` stacks: per pixel the first with all bands finite wins."""
    out = np.full_like(layers[0], np.nan)
    out[-1] = 0.0
    filled = np.zeros(layers[0].shape[1:], dtype=bool)
    for layer in layers:
        take = np.all(np.isfinite(layer[:-1]), axis=0) & ~filled
        out[:, take] = layer[:, take]
        filled |= take
    return out


def _read_date(infos: Sequence[TiffInfo], grid: Grid, bands: Sequence[str],
               fallback: tuple[float, float]) -> np.ndarray:
    layers = [read_tiff_on_grid(info, grid, bands, fallback) for info in infos]
    return layers[0] if len(layers) == 1 else merge_first_valid(layers)


def _require_dated_files(folder: Path) -> list[tuple[np.datetime64, Path]]:
    files = dated_files(folder)
    if not files:
        raise ImageryError(
            f"imagery folder {folder} has no GeoTIFF named YYYY-MM-DD*.tif (or YYYY.tif for annual composites) "
            "and no product of another layout (THEIA SENTINEL2A_YYYYMMDD-hhmmss-mmm_L2A_T*_*_V*, Sentinel-2 "
            "S2*_MSIL2A_*.SAFE or .zip, Landsat LC08_L2SP_*_02_T1 or .tar, a STAC catalog.json); "
            "name each acquisition by its date (e.g. 2021-06-14_S2L2A.tif)"
        )
    return files


def _is_theia(path: Path) -> bool:
    from gmsense.sources.local.theia import is_theia_folder

    return is_theia_folder(path)


def check_imagery(path: Path, layout: str = "auto") -> None:
    """A cheap check before a scan starts (headers only, no pixels): the path exists and is imagery of a
    layout :func:`read_local_cube` reads (``layout``, or detected: see
    :mod:`gmsense.sources.local.layouts`), complete and readable. Raises ImageryError."""
    _check(Path(path), layout)


def _check(path: Path, layout: str) -> str:
    """:func:`check_imagery`; returns the layout."""
    from gmsense.sources.local.layouts import PRODUCT_LAYOUTS, detect_layout, layout_products

    if not path.exists():
        raise ImageryError(f"imagery path {path} does not exist; check the imagery path")
    kind = detect_layout(path, layout)
    if kind == "cube":
        _open_store(path).close()
    elif kind == "theia":
        from gmsense.sources.local.theia import theia_products

        theia_products(path)
    elif kind in PRODUCT_LAYOUTS:
        layout_products(path, kind)
    else:
        files = _require_dated_files(path)
        is_annual_series(files)
        for day, file in files:
            read_tiff_header(file, day)
    return kind


def _store_footprint(path: Path) -> tuple[BaseGeometry, pyproj.CRS, np.ndarray]:
    """A NetCDF/Zarr cube's pixel-edge bounds, CRS and days (headers and coordinates only)."""
    with _open_store(path) as ds:
        ds = ds.rename({k: v for k, v in _DIM_ALIASES.items() if k in ds.dims and v not in ds.dims})
        crs = _store_crs(ds)
        if crs is None:
            raise ImageryError(f"imagery store {path} has no CRS; record one (rioxarray: ds.rio.write_crs)")
        t = _store_transform(ds, path)
        width, height = ds.sizes["x"], ds.sizes["y"]
        days = np.asarray(ds["time"].values, dtype="datetime64[D]") if "time" in ds.coords else np.array(
            [], dtype="datetime64[D]")
    return box(*Grid(crs, t, width, height).bounds), crs, days


def _headers(path: Path, kind: str) -> list[Any]:
    """The acquisitions of a file or product layout as headers with ``day``, ``bounds`` and ``crs`` (no pixels):
    the dated GeoTIFFs, or each product's red band."""
    from gmsense.sources.local.layouts import PRODUCT_LAYOUTS, layout_products

    if kind == "theia":
        from gmsense.sources.local.theia import theia_products

        return [p.reference for p in theia_products(path)]
    if kind in PRODUCT_LAYOUTS:
        return [p.reference for p in layout_products(path, kind)]
    return [read_tiff_header(file, day) for day, file in _require_dated_files(path)]


def imagery_footprint(path: Path, layout: str = "auto") -> tuple[BaseGeometry, pyproj.CRS]:
    """The extent of local imagery (headers only): the union of the dated GeoTIFFs' (or products' red
    bands') bounds in the first file's CRS, or a NetCDF/Zarr cube's pixel-edge bounds in its CRS (metres)."""
    path = Path(path)
    kind = _check(path, layout)
    if kind == "cube":
        footprint, crs, _ = _store_footprint(path)
        return footprint, crs
    infos = _headers(path, kind)
    crs = infos[0].crs
    return shapely.union_all([box(*transform_bounds(i.bounds, i.crs, crs)) for i in infos]), crs


def dated_footprints(path: Path, crs: pyproj.CRS, layout: str = "auto") -> list[tuple[np.datetime64, BaseGeometry]]:
    """``(day, footprint in crs)`` of every acquisition of local imagery (headers only, as
    :func:`imagery_footprint`), by day: what a reader would find over an area on a day."""
    path = Path(path)
    kind = _check(path, layout)
    if kind == "cube":
        footprint, own, days = _store_footprint(path)
        moved = box(*transform_bounds(footprint.bounds, own, crs))
        return [(day, moved) for day in sorted(days)]
    found = [(np.datetime64(i.day, "D"), box(*transform_bounds(i.bounds, i.crs, crs))) for i in _headers(path, kind)]
    return sorted(found, key=lambda df: df[0])


def latest_date(path: Path, start: str | None = None, end: str | None = None, layout: str = "auto") -> str | None:
    """The newest acquisition date of the imagery within ``start..end`` (ISO), from file or
    product names, a STAC catalogue's items or the store's time coordinate; None when there is none."""
    from gmsense.sources.local.layouts import PRODUCT_LAYOUTS, detect_layout, layout_days

    path = Path(path)
    kind = detect_layout(path, layout)
    if kind == "cube":
        with _open_store(path) as ds:
            days = np.asarray(ds["time"].values, dtype="datetime64[ns]")
    elif kind == "theia":
        from gmsense.sources.local.theia import theia_product_folders

        days = np.array([d for d, _ in theia_product_folders(path)], dtype="datetime64[ns]")
    elif kind in PRODUCT_LAYOUTS:
        days = layout_days(path, kind)
    else:
        days = np.array([d for d, _ in dated_files(path)], dtype="datetime64[ns]")
    days = days[parse_range(start, end).keep(days)] if days.size else days
    return str(days.max().astype("datetime64[D]")) if days.size else None


def region_grid(reference: TiffInfo, region: BaseGeometry, region_crs: pyproj.CRS, path: Path,
                site_id: str | None) -> Grid:
    """The output grid: ``reference``'s lattice over the region's bounding box plus a pixel, or, for
    imagery in a geographic CRS, a square-pixel grid in the (projected) region CRS."""
    if reference.crs.is_geographic:
        if not region_crs.is_projected:
            raise ImageryError(f"imagery {path} and {_who(site_id)} are both in a geographic CRS; "
                               "give the licence areas a projected CRS (metres)")
        return _geographic_target(reference.crs, (reference.transform, reference.width, reference.height),
                                  region.bounds, region_crs)
    return crop_grid(reference.crs, reference.transform, transform_bounds(region.bounds, region_crs, reference.crs))


def meeting_grid(infos: Sequence[Any], grid: Grid, region: BaseGeometry, region_crs: pyproj.CRS, path: Path,
                 site_id: str | None) -> list[Any]:
    """The ``infos`` (anything with ``crs`` and ``bounds``) whose footprint meets ``grid``; raises the
    "does not cover" :class:`ImageryError` when none meets the region itself."""
    region_g = _to_crs(region, region_crs, grid.crs)
    grid_box = box(*grid.bounds)
    used = [i for i in infos if box(*transform_bounds(i.bounds, i.crs, grid.crs)).intersects(grid_box)]
    if not used or not any(box(*transform_bounds(i.bounds, i.crs, grid.crs)).intersects(region_g) for i in used):
        crs = infos[0].crs
        fp = [transform_bounds(i.bounds, i.crs, crs) for i in infos]
        footprint = (min(b[0] for b in fp), min(b[1] for b in fp), max(b[2] for b in fp), max(b[3] for b in fp))
        raise _not_covered(path, footprint, crs, region, region_crs, site_id)
    return used


def lazy_cube(tasks: Sequence[Any], times: np.ndarray, image_ids: Sequence[str], grid: Grid,
              bands: Sequence[str]) -> xr.Dataset:
    """The cube of one ``dask.delayed`` task per date, each returning float32 ``(len(bands) + 1, y, x)``
    on ``grid``: reflectance bands, then clear (0/1)."""
    h, w, nb = grid.height, grid.width, len(bands)
    cube = da.stack([da.from_delayed(task, shape=(nb + 1, h, w), dtype="float32") for task in tasks])
    data_vars: dict[str, Any] = {b: (("time", "y", "x"), cube[:, k]) for k, b in enumerate(bands)}
    data_vars["clear"] = (("time", "y", "x"), cube[:, nb] > 0.5)
    return xr.Dataset(data_vars, coords={"time": np.asarray(times, dtype="datetime64[ns]"), "y": grid.ys(),
                                         "x": grid.xs(), "image_id": ("time", list(image_ids))})


def _read_folder(folder: Path, region: BaseGeometry, region_crs: pyproj.CRS, dates: DateRange,
                 start: str | None, end: str | None, dn_scale: DnScale, site_id: str | None,
                 band_names: Sequence[str] | None = None) -> xr.Dataset:
    files = _require_dated_files(folder)
    annual = is_annual_series(files)
    days = np.array([d for d, _ in files], dtype="datetime64[ns]")
    keep = dates.keep(days)
    if not keep.any():
        raise _no_dates(folder, days, start, end, site_id)
    reference = read_tiff_header(files[0][1], files[0][0], band_names)
    infos = [read_tiff_header(p, d, band_names) for (d, p), k in zip(files, keep, strict=True) if k]
    if annual:
        infos = [replace(i, zero_fill=frozenset(i.index[n] for n in i.plan.bands.values())) for i in infos]

    grid = region_grid(reference, region, region_crs, folder, site_id)
    used = meeting_grid(infos, grid, region, region_crs, folder, site_id)

    # bands present in every file used
    common = [b for b in used[0].plan.bands if all(b in i.plan.bands for i in used)]
    missing = missing_required(common)
    if missing:
        lacking = next(i for i in used if missing_required(i.plan.bands))
        if not lacking.index:
            raise ImageryError(
                f"imagery {folder}: the bands of {lacking.path.name} have no descriptions, so their meaning is "
                "unknown; name them, in band order, in the setting local.band_names (e.g. [blue, green, red, nir, "
                "swir16, swir22]; open_imagery(..., band_names=[...]) in Python) or write band descriptions"
            )
        raise _missing_bands(folder, missing_required(lacking.plan.bands), list(lacking.plan.bands),
                             f" ({lacking.path.name})")
    dropped = sorted({b for i in used for b in i.plan.bands} - set(common))
    if dropped:
        warnings.warn(f"imagery {folder}: band(s) {', '.join(dropped)} are not in every file and are left out",
                      UserWarning, stacklevel=3)
    no_mask = [i.path.name for i in used if i.plan.mask is None]
    if no_mask and not annual:  # annual composites are cloud-screened when they are made
        warnings.warn(
            f"imagery {folder}: {len(no_mask)} file(s) without a mask band (SCL, QA_PIXEL, clear, cloud), "
            f"e.g. {no_mask[0]}; clear = all bands observed, clouds are not masked",
            MissingMaskWarning, stacklevel=3,
        )
    platforms = {i.plan.platform for i in used}
    platform = platforms.pop() if len(platforms) == 1 else "unknown"

    by_day: dict[np.datetime64, list[TiffInfo]] = {}
    for info in used:
        by_day.setdefault(info.day, []).append(info)
    fallback, extra = _folder_scaling(by_day, grid, common, dn_scale, platform)
    if annual:
        extra |= {"composite": "annual", "composite_date": f"YYYY-{COMPOSITE_MONTH_DAY}",
                  "clear_from": "mask band" if not no_mask else
                  "valid pixels (every band finite and non-zero; composites are cloud-screened when made)"}

    tasks = [dask.delayed(_read_date)(group, grid, common, fallback) for group in by_day.values()]
    image_ids = ["+".join(i.path.name for i in group) for group in by_day.values()]
    ds = with_sensor(lazy_cube(tasks, np.array(list(by_day)), image_ids, grid, common))
    return _finish(ds, grid.crs, grid.transform, platform=platform, path=folder, extra=extra)


def _folder_scaling(by_day: dict[np.datetime64, list[TiffInfo]], grid: Grid, bands: Sequence[str],
                    dn_scale: DnScale, platform: str) -> tuple[tuple[float, float], dict[str, Any]]:
    """``(scale, offset)`` for bands without metadata scaling, and the attrs recording it."""
    if dn_scale != "auto":
        return (float(dn_scale), 0.0), {"dn_scale_applied": float(dn_scale)}
    checked = [b for b in ("red", "nir") if b in bands]
    unscaled = [i for group in by_day.values() for i in group
                if any(i.index[i.plan.bands[b]] not in i.scaling for b in checked)]
    if not unscaled:
        return (1.0, 0.0), {}
    step = max(1, len(unscaled) // DN_SAMPLE_DATES)
    dn = False
    for info in unscaled[::step][:DN_SAMPLE_DATES]:
        sample = read_tiff_on_grid(info, grid, checked, (1.0, 0.0))[: len(checked)]
        if np.isfinite(sample).any():
            dn = looks_like_dn(sample)
            break
    if not dn:
        return (1.0, 0.0), {}
    scale, offset = default_dn_scaling(platform)
    extra: dict[str, Any] = {"dn_scale_applied": scale}
    if offset:
        extra["dn_offset_applied"] = offset
    return (scale, offset), extra


# --------------------------------------------------------------------------------------------
# layout (b): a NetCDF / Zarr cube

_DIM_ALIASES = {"lon": "x", "longitude": "x", "easting": "x", "lat": "y", "latitude": "y", "northing": "y",
                "date": "time", "t": "time"}


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path.is_dir() and any(
        (path / marker).exists() for marker in (".zgroup", ".zmetadata", "zarr.json")))


def _open_store(path: Path, *, lazy: bool = False) -> xr.Dataset:
    """The store as a dask-backed dataset in its own chunks; ``lazy``: its variables not yet dask
    arrays but xarray's lazily indexed arrays (nothing read until a window of them is chunked or
    loaded: see :func:`_read_chunks`)."""
    chunks = None if lazy else {}
    try:
        if _is_zarr(path):
            # Stores written without consolidated metadata are read from their array metadata.
            has_consolidated = (path / ".zmetadata").exists() or (
                (path / "zarr.json").exists() and '"consolidated_metadata"' in (path / "zarr.json").read_text())
            return xr.open_dataset(path, engine="zarr", chunks=chunks, decode_coords="all",
                                   consolidated=has_consolidated)
        return xr.open_dataset(path, chunks=chunks, decode_coords="all")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageryError(
            f"imagery store {path} cannot be opened ({type(exc).__name__}: {first}); "
            "it must be a NetCDF (.nc) or Zarr (.zarr) cube with dims time, y, x"
        ) from exc


def _store_crs(ds: xr.Dataset) -> pyproj.CRS | None:
    crs = ds.rio.crs
    if crs is None:
        for name in ("spatial_ref", "crs"):
            if name in ds.variables:
                attrs = ds[name].attrs
                try:
                    crs = pyproj.CRS.from_cf(attrs) if "grid_mapping_name" in attrs else pyproj.CRS.from_user_input(
                        attrs.get("crs_wkt") or attrs.get("spatial_ref") or attrs["epsg_code"])
                except (KeyError, pyproj.exceptions.CRSError):
                    continue
                break
    return None if crs is None else normalise_crs(crs)


def _store_transform(ds: xr.Dataset, path: Path) -> Affine:
    xs, ys = np.asarray(ds.x.values, "float64"), np.asarray(ds.y.values, "float64")
    if xs.size < 2 or ys.size < 2:
        raise ImageryError(f"imagery store {path} has fewer than 2 pixels along x or y; cannot tell its resolution")
    dx, dy = (xs[-1] - xs[0]) / (xs.size - 1), (ys[-1] - ys[0]) / (ys.size - 1)
    if not (np.allclose(np.diff(xs), dx, rtol=1e-6) and np.allclose(np.diff(ys), dy, rtol=1e-6)):
        raise ImageryError(f"imagery store {path} has irregular x/y spacing; regrid it to a regular grid")
    return Affine(dx, 0.0, xs[0] - dx / 2, 0.0, dy, ys[0] - dy / 2)


def _window(have: np.ndarray, want: np.ndarray, tolerance: float) -> tuple[slice, tuple[int, int]] | None:
    """Where the regular coordinates ``want`` fall on the regular coordinates ``have`` (the same
    lattice, within ``tolerance``): the slice of ``have`` they overlap and how many of ``want`` lie
    before and after it; None when the lattices differ or do not overlap."""
    if want.size == 0 or have.size < 2:
        return None
    step = (have[-1] - have[0]) / (have.size - 1)
    offset = (want[0] - have[0]) / step
    first = round(offset)
    if abs(offset - first) * abs(step) > tolerance or (want.size > 1 and abs(want[1] - want[0] - step) > tolerance):
        return None
    lo, hi = max(first, 0), min(first + want.size, have.size)
    if hi <= lo:
        return None
    return slice(lo, hi), (lo - first, first + want.size - hi)


def _padded(var: xr.DataArray, widths: dict[str, tuple[int, int]], band: bool) -> xr.DataArray:
    """``var`` extended by ``widths`` pixels: a band with NaN (as float32 when it holds integers:
    not observed there), a mask with 0 (its bands already say the pixel is not observed)."""
    if band and var.dtype.kind != "f":
        var = var.astype("float32")
    out = var.pad(widths, constant_values=np.nan if var.dtype.kind == "f" else 0)
    out.encoding = dict(var.encoding)
    return out


def _native_chunks(var: xr.DataArray) -> dict[str, int]:
    """The store's own chunk size of ``var`` along each dim (the whole dim where it has none)."""
    preferred = var.encoding.get("preferred_chunks") or {}
    return {dim: int(preferred.get(dim, size)) for dim, size in var.sizes.items()}


def _read_chunks(ds: xr.Dataset, limit: int | None = None) -> dict[str, int]:
    """Dask chunks to read ``ds`` (lazily indexed: :func:`_open_store`) in: every date and whole
    rows, in as few chunks of about equal height as keep each float32 chunk under ``limit`` bytes
    (:data:`READ_CHUNK_BYTES`) where the store's chunk rows allow (a whole number of them, at least one)."""
    limit = READ_CHUNK_BYTES if limit is None else limit
    sizes = ds.sizes
    height = sizes["y"]
    total = 4 * sizes["time"] * sizes["x"] * height
    if total <= limit:
        return {"time": -1, "y": -1, "x": -1}
    native = max([_native_chunks(v).get("y", 1) for v in ds.data_vars.values()] or [1])
    rows = -(-height // -(-total // max(limit, 1)))  # ceil(height / number of chunks)
    if native < height:
        up = -(-rows // native) * native
        rows = up if total // height * up <= limit else max(native, rows // native * native)
    return {"time": -1, "y": int(max(1, rows)), "x": -1}


def _lattice_window(ds: xr.Dataset, grid: Grid) -> xr.Dataset | None:
    """The part of ``ds`` (lazily indexed: :func:`_open_store`) that ``grid`` covers when ``grid`` is
    on the store's lattice, still lazily indexed (a slice of it reads only that slice); None
    when it is not on the lattice."""
    columns = _window(ds.x.values, grid.xs(), abs(grid.transform.a) / 4)
    rows = _window(ds.y.values, grid.ys(), abs(grid.transform.e) / 4)
    return None if columns is None or rows is None else ds.isel(x=columns[0], y=rows[0])


def _on_lattice(ds: xr.Dataset, grid: Grid, bands: Sequence[str] = ()) -> xr.Dataset:
    """``ds`` (lazily indexed: :func:`_open_store`) reindexed onto ``grid`` (same lattice) as dask
    arrays, NaN where it has no pixel. A grid on the store's lattice is cut from it by slices,
    read in the chunks of :func:`_read_chunks` and padded where it reaches past it (a
    nearest-neighbour reindex of a dask array gathers every chunk pixel by pixel: 4-5 times slower
    to read); the reindex (in the store's chunks) is for the rest. ``bands``: the variables that
    are reflectance bands."""
    xs, ys = grid.xs(), grid.ys()
    tol_x, tol_y = abs(grid.transform.a) / 4, abs(grid.transform.e) / 4
    columns, rows = _window(ds.x.values, xs, tol_x), _window(ds.y.values, ys, tol_y)
    if columns is not None and rows is not None:
        window = ds.isel(x=columns[0], y=rows[0])
        window = window.chunk(_read_chunks(window))
        if columns[1] != (0, 0) or rows[1] != (0, 0):
            window = xr.Dataset({name: _padded(var, {"x": columns[1], "y": rows[1]}, name in bands)
                                 for name, var in window.data_vars.items()}, attrs=window.attrs)
        return window.assign_coords(y=ys, x=xs)
    native = xr.Dataset({name: var.chunk(_native_chunks(var)) for name, var in ds.data_vars.items()},
                        attrs=ds.attrs)
    out = native.reindex(y=ys, method="nearest", tolerance=tol_y).reindex(x=xs, method="nearest", tolerance=tol_x)
    return out.assign_coords(y=ys, x=xs)


def _read_store(path: Path, region: BaseGeometry, region_crs: pyproj.CRS, dates: DateRange,
                start: str | None, end: str | None, dn_scale: DnScale, site_id: str | None) -> xr.Dataset:
    ds = _open_store(path, lazy=True)
    ds = ds.rename({k: v for k, v in _DIM_ALIASES.items() if k in ds.dims and v not in ds.dims})
    if not {"time", "y", "x"} <= set(ds.dims):
        raise ImageryError(f"imagery store {path} has dims {tuple(ds.dims)}; a cube needs time, y, x")
    plan = plan_bands(str(v) for v in ds.data_vars)
    missing = missing_required(plan.bands)
    if missing:
        raise _missing_bands(path, missing, [str(v) for v in ds.data_vars])
    crs = _store_crs(ds)
    if crs is None:
        raise ImageryError(
            f"imagery store {path} has no CRS; add a grid-mapping variable (ds.rio.write_crs(crs)) and save again"
        )
    if not np.issubdtype(ds.time.dtype, np.datetime64):
        raise ImageryError(f"imagery store {path}: time is {ds.time.dtype}, not dates; encode time as CF dates")
    order = np.argsort(ds.time.values, kind="stable")
    ds = ds.isel(time=as_slice(order))
    times = ds.time.values
    unique = np.concatenate([[True], times[1:] != times[:-1]]) if times.size else np.ones(0, bool)
    if not unique.all():
        warnings.warn(f"imagery store {path}: {int((~unique).sum())} duplicate time(s); the first is kept",
                      UserWarning, stacklevel=3)
    keep = dates.keep(times) & unique
    if not keep.any():
        raise _no_dates(path, times, start, end, site_id)
    ds = ds.isel(time=as_slice(np.flatnonzero(keep)))
    names = [*plan.bands.values(), *([plan.mask[1]] if plan.mask else [])]
    ds = ds[names]
    for name in names:
        ds[name] = ds[name].transpose("time", "y", "x")

    transform = _store_transform(ds, path)
    footprint = Grid(crs, transform, ds.sizes["x"], ds.sizes["y"]).bounds
    region_s = _to_crs(region, region_crs, crs)
    if not box(*footprint).intersects(region_s):
        raise _not_covered(path, footprint, crs, region, region_crs, site_id)

    lazy = None
    if crs.is_geographic:
        if not region_crs.is_projected:
            raise ImageryError(f"imagery {path} and {_who(site_id)} are both in a geographic CRS; "
                               "give the licence areas a projected CRS (metres)")
        grid = _geographic_target(crs, (transform, ds.sizes["x"], ds.sizes["y"]), region.bounds, region_crs)
        ds = _reproject_store(ds, crs, grid)
    else:
        grid = crop_grid(crs, transform, transform_bounds(region.bounds, region_crs, crs))
        lazy = _lattice_window(ds, grid)
        ds = _on_lattice(ds, grid, list(plan.bands.values()))

    bands = {common: ds[src].astype("float32") for common, src in plan.bands.items()}
    scaled_in_file = any("scale_factor" in ds[src].encoding or "add_offset" in ds[src].encoding
                         for src in plan.bands.values())
    # The guess reads its sample from the store itself where it can: through the dask chunks it
    # would read every date of the chunks around the centre, a good part of the window.
    sample_from = bands if lazy is None else {common: lazy[src] for common, src in plan.bands.items()}
    scale, offset, extra = _store_scaling(sample_from, dn_scale, plan.platform, scaled_in_file)
    if (scale, offset) != (1.0, 0.0):
        bands = {k: (v * np.float32(scale) + np.float32(offset)).astype("float32") for k, v in bands.items()}
    valid = None
    for v in bands.values():
        finite = np.isfinite(v)
        valid = finite if valid is None else valid & finite
    if plan.mask is None:
        warnings.warn(f"imagery store {path} has no mask variable (SCL, QA_PIXEL, clear, cloud); "
                      "clear = all bands observed, clouds are not masked", MissingMaskWarning, stacklevel=3)
        clear = valid
    else:
        kind, name = plan.mask
        clear = xr.apply_ufunc(partial(decode_clear, kind), ds[name], dask="parallelized",
                               output_dtypes=[bool]) & valid
    out = xr.Dataset({**bands, "clear": clear.astype(bool)})
    out = out.drop_vars([c for c in out.coords if c not in ("time", "y", "x")])
    return _finish(out, grid.crs, grid.transform, platform=plan.platform, path=path, extra=extra)


def _reproject_store(ds: xr.Dataset, crs: pyproj.CRS, grid: Grid) -> xr.Dataset:
    """A geographic store reprojected (nearest) onto ``grid``; only the part around the grid is read."""
    w, s, e, n = transform_bounds(grid.bounds, grid.crs, crs)
    xs, ys = ds.x.values, ds.y.values
    dx, dy = abs(xs[1] - xs[0]), abs(ys[1] - ys[0])
    sub = ds.sel(x=slice(*sorted((w - 2 * dx, e + 2 * dx))[:: 1 if xs[1] > xs[0] else -1]),
                 y=slice(*sorted((s - 2 * dy, n + 2 * dy))[:: 1 if ys[1] > ys[0] else -1]))
    out = {}
    for name, var in sub.data_vars.items():
        values = var.astype("float32").compute()
        values = values.rio.write_crs(crs).rio.write_nodata(np.nan)
        out[name] = values.rio.reproject(grid.crs, transform=grid.transform, shape=(grid.height, grid.width),
                                         resampling=Resampling.nearest, nodata=np.nan)
    res = xr.Dataset(out)
    return res.assign_coords(x=grid.xs(), y=grid.ys()).chunk({"time": 1})


def _store_scaling(bands: dict[str, xr.DataArray], dn_scale: DnScale, platform: str,
                   scaled_in_file: bool) -> tuple[float, float, dict[str, Any]]:
    if dn_scale != "auto":
        return float(dn_scale), 0.0, {"dn_scale_applied": float(dn_scale)}
    if scaled_in_file:
        return 1.0, 0.0, {}
    n = bands["red"].sizes["time"]
    pick = np.unique(np.linspace(0, n - 1, min(n, DN_SAMPLE_DATES)).round().astype(int))
    first = {dim: max(0, (bands["red"].sizes[dim] - DN_SAMPLE_PIXELS) // 2) for dim in ("y", "x")}
    centre = {dim: slice(start, start + DN_SAMPLE_PIXELS) for dim, start in first.items()}
    sample = np.concatenate([np.asarray(bands[b].isel(time=pick, **centre).values, "float32").ravel()
                             for b in ("red", "nir")])
    if not np.isfinite(sample).any():  # the centre is outside the imagery: the whole window then
        sample = np.concatenate([np.asarray(bands[b].isel(time=pick).values, "float32").ravel()
                                 for b in ("red", "nir")])
    if not looks_like_dn(sample):
        return 1.0, 0.0, {}
    scale, offset = default_dn_scaling(platform)
    extra: dict[str, Any] = {"dn_scale_applied": scale}
    if offset:
        extra["dn_offset_applied"] = offset
    return scale, offset, extra


# --------------------------------------------------------------------------------------------
# public entry point


def read_local_cube(
    path: Path,
    region: BaseGeometry,
    region_crs: pyproj.CRS,
    *,
    start: str | None = None,
    end: str | None = None,
    dn_scale: DnScale = "auto",
    site_id: str | None = None,
    band_names: Sequence[str] | None = None,
    harmonise_method: str = DEFAULT_METHOD,
    layout: str = "auto",
) -> xr.Dataset:
    """Read local imagery over ``region`` into the cube contract (see the module docstring).

    ``region``: the monitoring area (licence + buffer) in ``region_crs`` (projected, metres).
    ``start``/``end``: inclusive ISO dates. ``dn_scale``: ``"auto"`` multiplies band values that
    look like digital numbers (99th percentile of red/nir > 2) and carry no metadata scale by 1e-4
    (Sentinel-2; Landsat C2 ``SR_B*`` get 2.75e-5 and -0.2) and records ``attrs["dn_scale_applied"]``;
    a number multiplies bands without a metadata scale as is (THEIA products: see
    :mod:`gmsense.sources.local.theia`). ``site_id`` is named in errors. ``band_names``: the names,
    in band order, of the bands of GeoTIFFs that have no band descriptions (e.g. ``["blue", "green",
    "red", "nir", "swir16", "swir22"]``); descriptions win where a file has them.

    Files named after a Landsat product (``2005-06-20_LE07_L2SP_....tif``: ``LT04``/``LT05`` TM,
    ``LE07`` ETM+, ``LC08``/``LC09`` OLI) give the cube a ``sensor`` coordinate on ``time``, TM / ETM+
    files are read with their own ``SR_B*`` numbering, and their dates are made OLI-like by
    ``harmonise_method`` (setting ``local.harmonise``; ``"none"`` keeps them as they are; see
    :mod:`gmsense.cube.harmonise`). A cube recorded as harmonised already is left as it is.

    ``layout``: ``"auto"`` detects the layout (see :mod:`gmsense.sources.local.layouts`), or one of
    ``folder, theia, safe, landsat, stac, cube`` names it.

    Returns a dataset with dims ``(time, y, x)``, float32 reflectance bands under their common
    names (NaN = not observed), boolean ``clear``, ``x``/``y`` pixel centres in metres of the
    imagery's projected CRS (``ds.rio.crs``), and attrs ``source="local"``, ``platform``,
    ``resolution_m``, ``path``. Raises :class:`~gmsense.errors.ImageryError` with a one-line
    message for everything the user can fix.
    """
    from gmsense.sources.local.layouts import PRODUCT_LAYOUTS, detect_layout, layout_products

    path = Path(path)
    if not path.exists():
        raise ImageryError(f"imagery path {path} does not exist; check the imagery path"
                           + (f" for licence {site_id}" if site_id else ""))
    region_crs = normalise_crs(region_crs)
    dates = parse_range(start, end)
    kind = detect_layout(path, layout)
    if kind == "cube":
        cube = _read_store(path, region, region_crs, dates, start, end, dn_scale, site_id)
    elif kind == "theia":
        from gmsense.sources.local.theia import read_theia

        cube = read_theia(path, region, region_crs, dates, start, end, dn_scale, site_id)
    elif kind in PRODUCT_LAYOUTS:
        from gmsense.sources.local.products import read_products

        cube = read_products(layout_products(path, kind, dn_scale), path, region, region_crs, dates, start, end,
                             site_id, extra={"layout": kind})
    else:
        cube = _read_folder(path, region, region_crs, dates, start, end, dn_scale, site_id, band_names)
    if SENSOR_COORD in cube.coords and cube.attrs.get(ATTR_METHOD) in (None, "none"):
        cube = harmonise(cube, harmonise_method)
    if rescaled_per_image(cube) or (kind == "folder" and files_rescaled(tuple(sorted(path.glob("*.tif"))))):
        cube.attrs["rescaled_per_image"] = 1
        warnings.warn(
            f"imagery {path}: every band of every sampled image reaches exactly 1 at its brightest pixel and about 0 "
            "at its darkest, so the values look min-max rescaled per image, not reflectance; breaks in the index "
            "trajectories are still found, but the signatures that read reflectance (fire, water, bare soil) and the "
            "learned model do not hold on them, "
            "so expect patches labelled uncertain (use surface reflectance if you have it)",
            RescaledImageryWarning, stacklevel=2)
    return validate_cube(cube, where=f"imagery {path}")


def files_rescaled(files: tuple[Path, ...]) -> bool:
    """:func:`rescaled_per_image`'s test on whole files (a licence's window may miss an image's brightest
    pixel): up to :data:`DN_SAMPLE_DATES` of ``files`` (evenly spread), each at most
    :data:`RESCALED_CHECK_MAX_BYTES` (larger scenes are not read whole for a warning), every band
    read with its no-data masked. Remembered per file list, sizes and modification times, so the many
    windows of one folder (tiles, register polygons) read the files once."""
    stats = [(f, f.stat()) for f in files]
    return _files_rescaled(tuple((str(f), s.st_size, s.st_mtime_ns) for f, s in stats))


@functools.lru_cache(maxsize=16)
def _files_rescaled(stamp: tuple[tuple[str, int, int], ...]) -> bool:
    import rasterio

    small = [Path(name) for name, size, _ in stamp if size <= RESCALED_CHECK_MAX_BYTES]
    if len(small) < 2 or len(small) < len(stamp):
        return False
    pick = np.unique(np.linspace(0, len(small) - 1, min(len(small), DN_SAMPLE_DATES)).round().astype(int))
    for k in pick:
        try:
            with rasterio.open(small[k]) as src:
                bands = src.read(masked=True).astype("float64").filled(np.nan)
        except rasterio.errors.RasterioError:
            return False
        if bands.shape[0] < 2:
            return False
        values = bands.reshape(bands.shape[0], 1, -1)
        values = np.where(values == 0, np.nan, values)  # such exports write no data as 0
        if not _rescaled(values):
            return False
    return True


def _rescaled(values: np.ndarray) -> bool:
    """The test of :func:`rescaled_per_image` on ``values`` (band, date, pixel; NaN: no data)."""
    seen = np.isfinite(values)
    if not seen.any(axis=2).all():
        return False
    low = np.where(seen, values, np.inf).min(axis=2)
    high = np.where(seen, values, -np.inf).max(axis=2)
    at_max = (np.abs(np.where(seen, values, 0.0) - 1) <= RESCALED_TOLERANCE).sum(axis=2)
    few = at_max <= np.maximum(1, RESCALED_AT_MAX * seen.sum(axis=2))
    return bool(np.all(low < RESCALED_MIN) and np.all(np.abs(high - 1) <= RESCALED_TOLERANCE) and np.all(few))


def rescaled_per_image(cube: xr.Dataset) -> bool:
    """Whether every band of up to :data:`DN_SAMPLE_DATES` dates (evenly spread) has its maximum at exactly 1
    (within :data:`RESCALED_TOLERANCE`) in at most :data:`RESCALED_AT_MAX` of its pixels (one pixel is the
    image's maximum; reflectance clipped at 1 saturates whole clouds) and its minimum below
    :data:`RESCALED_MIN` over the cube's window: images min-max rescaled one by one (as some compositing
    tools export them; their 0 is then often read as no data). At least two dates and two bands; reads
    the sampled dates."""
    bands = [b for b in ("blue", "green", "red", "nir", "swir1", "swir2") if b in cube.data_vars]
    n = cube.sizes.get("time", 0)
    if n < 2 or len(bands) < 2 or any(cube[b].chunks is not None for b in bands):
        return False  # a lazy cube (a Zarr or NetCDF store) is not read for a warning
    pick = np.unique(np.linspace(0, n - 1, min(n, DN_SAMPLE_DATES)).round().astype(int))
    sample = cube[bands].isel(time=pick)
    return _rescaled(sample.to_array().values.reshape(len(bands), pick.size, -1))  # (band, date, pixel)
