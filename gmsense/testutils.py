"""Test factories shipped with the package: small cubes with known disturbances.

Used by gmsense's own tests and available to anyone testing code that speaks the cube contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from shapely.geometry import box

from gmsense.geo.sites import Site

VEGETATION = np.array([0.03, 0.06, 0.03, 0.40, 0.18, 0.08], dtype="float32")
SOIL = np.array([0.12, 0.16, 0.20, 0.26, 0.36, 0.30], dtype="float32")
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


@dataclass(frozen=True)
class PlantedBreak:
    """A block of pixels (row and column slices) losing ``fraction`` of its vegetation on ``date``;
    with ``recovered_by`` (ISO date) it grows back linearly in time until then (whole from then on)."""

    rows: slice
    cols: slice
    date: str
    fraction: float = 0.8
    recovered_by: str | None = None


def make_cube(
    ny: int = 24,
    nx: int = 24,
    years: tuple[int, ...] = (2019, 2020, 2021),
    every_days: int = 8,
    breaks: tuple[PlantedBreak, ...] = (),
    noise: float = 0.004,
    cloud_share: float = 0.1,
    seed: int = 0,
    resolution: float = 10.0,
    origin: tuple[float, float] = (600_000.0, 5_290_000.0),
    epsg: int = 32652,
    southern: bool = False,
    calendar_shifts: tuple[float, ...] = (0.0,),
) -> xr.Dataset:
    """A cube (the DESIGN.md contract) of forest with phenology, clouds and planted breaks.

    ``calendar_shifts``: the columns are cut into that many vertical strips of equal width (fields),
    each greening up and senescing that many days later (earlier if negative): crops on their own
    calendars.

    Acquisitions every ``every_days`` days from April to October of each year; with ``southern``,
    from October of the year before to April of each year, the phenology half a year later (the
    southern hemisphere's growing season, across New Year). Cloudy pixels (a random
    ``cloud_share`` per date) are bright and not ``clear``. Breaks apply in order: two on the same
    pixels (the second after the first recovered) are two disturbances.
    """
    rng = np.random.default_rng(seed)
    windows = [(f"{y - 1}-10-01", f"{y}-04-30") if southern else (f"{y}-04-01", f"{y}-10-31") for y in years]
    times = np.concatenate([
        np.arange(np.datetime64(first), np.datetime64(last), np.timedelta64(every_days, "D")) for first, last in windows
    ]).astype("datetime64[ns]")
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int) + 1
    if southern:
        doy = (doy + 182) % 365 + 1
    strip = np.minimum(np.arange(nx) * len(calendar_shifts) // nx, len(calendar_shifts) - 1)
    shift = np.asarray(calendar_shifts, dtype=float)[strip][None, :]  # (1, nx) days
    day = doy[:, None] - shift
    green = 0.3 + 0.65 / (1 + np.exp(-(day - 130) / 8)) * (1 - 1 / (1 + np.exp(-(day - 265) / 10)))
    veg = np.broadcast_to(green[:, None, :], (times.size, ny, nx)).copy()
    for b in breaks:
        after = times >= np.datetime64(b.date)
        if b.recovered_by is None:
            veg[after, b.rows, b.cols] *= 1 - b.fraction
            continue
        start, end = np.datetime64(b.date, "ns"), np.datetime64(b.recovered_by, "ns")
        regrown = np.clip((times - start) / (end - start), 0.0, 1.0)
        veg[:, b.rows, b.cols] *= (1 - np.where(after, b.fraction * (1 - regrown), 0.0))[:, None, None]
    refl = veg[:, None] * VEGETATION[None, :, None, None] + (1 - veg[:, None]) * SOIL[None, :, None, None]
    refl = refl + rng.normal(0, noise, refl.shape)
    clear = rng.random((times.size, ny, nx)) >= cloud_share
    refl = np.where(clear[:, None], refl, 0.6).astype("float32")
    xs = origin[0] + (np.arange(nx) + 0.5) * resolution
    ys = origin[1] - (np.arange(ny) + 0.5) * resolution
    data = {band: (("time", "y", "x"), refl[:, k]) for k, band in enumerate(BANDS)}
    data["clear"] = (("time", "y", "x"), clear)
    cube = xr.Dataset(data, coords={"time": times, "y": ys, "x": xs},
                      attrs={"source": "testutils", "platform": "test", "resolution_m": resolution})
    transform = Affine(resolution, 0, origin[0], 0, -resolution, origin[1])
    return cube.rio.write_crs(f"EPSG:{epsg}").rio.write_transform(transform)


def cube_site(cube: xr.Dataset, site_id: str = "T-1", inset_m: float = 0.0, **attrs: object) -> Site:
    """A licence covering the cube's extent (shrunk by ``inset_m``), in the cube's CRS."""
    x, y = cube["x"].values, cube["y"].values
    half = float(abs(x[1] - x[0])) / 2
    geom = box(x.min() - half + inset_m, y.min() - half + inset_m, x.max() + half - inset_m, y.max() + half - inset_m)
    return Site(site_id, geom, pyproj.CRS.from_user_input(cube.rio.crs), dict(attrs))


def run_cli(*args: object) -> tuple[int, str]:
    """Run ``gmsense ARGS`` in this process; (exit code, output). Unexpected exceptions propagate."""
    from typer.testing import CliRunner

    from gmsense.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def copy_store(source: str | Path, target: str | Path) -> Path:
    """A consistent copy of the SQLite store ``source`` at ``target`` (SQLite's backup API, so
    whatever still sits in the write-ahead log is copied too)."""
    import sqlite3

    target = Path(target)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return target


def coarsen_cube(cube: xr.Dataset, factor: int) -> xr.Dataset:
    """``cube`` seen by a sensor with ``factor`` x larger pixels: reflectance averaged over each
    ``factor`` x ``factor`` block (a pixel integrates its footprint), a block clear only where all its
    pixels are; the grid keeps its origin (edges that do not fill a block are dropped)."""
    from gmsense.cube.contract import CUBE_BANDS
    from gmsense.geo.grid import grid_transform

    transform = grid_transform(cube)
    ny, nx = (cube.sizes["y"] // factor) * factor, (cube.sizes["x"] // factor) * factor
    trimmed = cube.isel(y=slice(0, ny), x=slice(0, nx))
    bands = [b for b in CUBE_BANDS if b in trimmed]
    coarse = trimmed[bands].coarsen(y=factor, x=factor).mean()
    clear = trimmed["clear"].astype("float32").coarsen(y=factor, x=factor).min() > 0.5
    out = coarse.assign(clear=clear)
    out = out.assign_coords(y=coarse["y"].values, x=coarse["x"].values)
    out.attrs = {**cube.attrs, "resolution_m": float(cube.attrs.get("resolution_m", abs(transform.a))) * factor}
    return out.rio.write_crs(cube.rio.crs).rio.write_transform(transform * Affine.scale(factor))


@dataclass(frozen=True)
class PlantedMineLand:
    """A register polygon planted in synthetic annual composites: vegetated (share 1) until
    ``damaged_from`` (year), bare from then on; with ``restoration`` = (first year, year whole) its
    vegetation grows back linearly (share 0 in the first year, ``level`` from the second on), on the
    western ``restored_part`` of its columns only (the rest stays bare); bare again from ``reverted_in``.
    ``bare_ndvi`` is its own bare ground's NDVI and ``ground_ndvi`` its vegetated ground's (None: the
    composites' ``bare_ndvi`` and background). ``geometry`` in the composites' CRS (metres), best on the
    pixel grid."""

    register_id: str
    geometry: object
    damaged_from: int | None = None
    restoration: tuple[int, int] | None = None
    reverted_in: int | None = None
    restored_part: float = 1.0
    level: float = 1.0
    bare_ndvi: float | None = None
    ground_ndvi: float | None = None

    def vegetation(self, year: int) -> float:
        """The restored part's vegetation share (0-1) in ``year``."""
        if self.damaged_from is None or year < self.damaged_from:
            return 1.0
        if self.reverted_in is not None and year >= self.reverted_in:
            return 0.0
        if self.restoration is None:
            return 0.0
        first, whole = self.restoration
        return self.level * float(np.clip((year - first) / (whole - first), 0.0, 1.0))


def write_annual_composites(folder: str | Path, years: tuple[int, ...], plants: tuple[PlantedMineLand, ...], *,
                            size: int = 200, resolution: float = 10.0, origin: tuple[float, float] = (600_000.0,
                            5_290_000.0), epsg: int = 32652, vegetated_ndvi: float | np.ndarray = 0.8,
                            bare_ndvi: float = 0.1, noise: float = 0.02, seed: int = 0,
                            bare_ground: tuple[object, ...] = (), clouds: dict[int, object] | None = None) -> Path:
    """Annual composites ``YYYY.tif`` (bands ``red``, ``nir``; float32 reflectance) of a vegetated
    background (NDVI ``vegetated_ndvi``: one value, or one per pixel, (size, size)) with ``plants`` whose
    NDVI mixes their bare ground and their vegetated ground by their vegetation share each year, plus
    Gaussian noise (NDVI units) per pixel. ``bare_ground``: geometries of unregistered bare land
    (``bare_ndvi``, every year); ``clouds``: year -> a geometry not observed that year (NaN).
    ``size`` x ``size`` pixels of ``resolution`` metres from the north-west corner ``origin``."""
    import rasterio
    from rasterio.features import geometry_mask

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    transform = Affine(resolution, 0, origin[0], 0, -resolution, origin[1])
    shape = (size, size)
    background = np.broadcast_to(np.asarray(vegetated_ndvi, dtype=float), shape)

    def mask_of(geometry: object) -> np.ndarray:
        return geometry_mask([geometry], out_shape=shape, transform=transform, invert=True)

    bare_land = np.zeros(shape, dtype=bool)
    for geometry in bare_ground:
        bare_land |= mask_of(geometry)
    planted = []
    for plant in plants:
        inside = mask_of(plant.geometry)
        minx, _, maxx, _ = plant.geometry.bounds
        cols = origin[0] + (np.arange(size) + 0.5) * resolution
        west = np.broadcast_to(cols < minx + plant.restored_part * (maxx - minx), shape)
        planted.append((plant, inside & west, inside & ~west))
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 2, "dtype": "float32",
               "crs": pyproj.CRS.from_epsg(epsg).to_wkt(), "transform": transform}
    for year in years:
        ndvi = background.copy()
        ndvi[bare_land] = bare_ndvi
        for plant, restored, bare in planted:
            share = plant.vegetation(year)
            soil = bare_ndvi if plant.bare_ndvi is None else plant.bare_ndvi
            ground = background[restored] if plant.ground_ndvi is None else plant.ground_ndvi
            ndvi[restored] = soil + share * (ground - soil)
            if plant.damaged_from is not None and year >= plant.damaged_from:
                ndvi[bare] = soil
            elif plant.ground_ndvi is not None:
                ndvi[bare] = plant.ground_ndvi
        ndvi = np.clip(ndvi + rng.normal(0, noise, shape), -0.9, 0.95)
        red, nir = 0.25 * (1 - ndvi), 0.25 * (1 + ndvi)
        if clouds and year in clouds:
            cloud = mask_of(clouds[year])
            red[cloud], nir[cloud] = np.nan, np.nan
        with rasterio.open(folder / f"{year}.tif", "w", **profile, nodata=float("nan")) as dst:
            dst.write(red.astype("float32"), 1)
            dst.write(nir.astype("float32"), 2)
            dst.descriptions = ("red", "nir")
    return folder


@dataclass(frozen=True)
class CountingSource:
    """A source (gmsense.sources.Source) that appends one line per ``load`` (``site_id``, region's
    bounds) to the file ``log`` and otherwise is ``inner``: how often a scan reads its imagery, also
    when the loads run in worker processes (it pickles with ``inner``)."""

    inner: object
    log: Path
    name: str = "counting"

    def load(self, site: Site, region: object, start: str | None, end: str | None) -> xr.Dataset:
        with Path(self.log).open("a", encoding="utf-8") as out:
            out.write(f"{site.site_id} {tuple(round(v, 1) for v in region.bounds)}\n")  # type: ignore[attr-defined]
        return self.inner.load(site, region, start, end)  # type: ignore[attr-defined]

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        return self.inner.latest_date(site, start, end)  # type: ignore[attr-defined]

    def describe(self, site: Site, start: str | None, end: str | None) -> object:
        describe = getattr(self.inner, "describe", None)
        return None if describe is None else describe(site, start, end)
