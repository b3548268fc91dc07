"""Cube operations: masking, growing-season selection, per-season composites and spectral indices.

All functions take and return xarray objects following the cube contract (DESIGN.md) and work the
same on numpy- and dask-backed data. Reflectance is unitless surface reflectance (0..1).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import xarray as xr

from gmsense._parallel import parallel_map
from gmsense.config import MaskSettings, SeasonSettings
from gmsense.cube.contract import CUBE_BANDS

#: Index name -> (bands it needs). Formulas in :func:`index`.
INDEX_BANDS: dict[str, tuple[str, ...]] = {
    "ndvi": ("nir", "red"),
    "nbr": ("nir", "swir2"),
    "ndmi": ("nir", "swir1"),
    "bsi": ("swir1", "red", "nir", "blue"),
}


def _dilate(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """``out[i] = any(mask[i - radius : i + radius + 1])`` along ``axis`` (False beyond the edges),
    by doubling a forward window: a few ORs of shifted slices instead of one per offset."""
    n = mask.shape[axis]
    width = 2 * radius + 1

    def part(start: int | None, stop: int | None) -> tuple[slice, ...]:
        return (slice(None),) * axis + (slice(start, stop),)

    shape = list(mask.shape)
    shape[axis] = n + 2 * radius
    window = np.zeros(shape, dtype=bool)
    window[part(radius, radius + n)] = mask
    total = n + 2 * radius
    covered = 1  # window[i] is any(padded[i : i + covered])
    while covered < width:
        step = min(covered, width - covered)
        window[part(0, total - step)] |= window[part(step, None)]
        covered += step
    return window[part(0, n)]


def _grow_masks(not_clear: np.ndarray, radius_px: int) -> np.ndarray:
    """Per date (axis 0), grow a boolean mask by ``radius_px`` pixels (a square window, separable:
    the same as ``ndimage.maximum_filter`` with a (1, 2r + 1, 2r + 1) box and constant False
    edges); dates with nothing to grow are skipped."""
    grown = np.zeros(not_clear.shape, dtype=bool)
    dates = np.flatnonzero(not_clear.reshape(not_clear.shape[0], -1).any(axis=1))
    if dates.size:
        grown[dates] = _dilate(_dilate(not_clear[dates], radius_px, 1), radius_px, 2)
    return grown


def refine_clear(cube: xr.Dataset, settings: MaskSettings) -> xr.Dataset:
    """The cube with a stricter ``clear``: observations within ``cloud_buffer_m`` (a square
    window) of an observed but not-clear pixel (cloud, shadow, snow), and hazy ones (HOT test,
    needs blue and red), are no longer clear. Pixels never observed (outside the image) do not
    grow.
    """
    radius = _buffer_pixels(cube, settings)
    if not any(cube[v].chunks is not None for v in ("clear", "red", "blue") if v in cube):
        return cube.assign(clear=_refine_clear_numpy(cube, radius, settings.haze_hot_threshold))
    clear = cube["clear"]
    observed = cube["red"].notnull() if "red" in cube else xr.ones_like(clear)
    if radius > 0:
        bad = (observed & ~clear).transpose("time", "y", "x")
        if bad.chunks is not None:
            import dask.array as dsa

            grown = dsa.map_overlap(_grow_masks, bad.data, depth={0: 0, 1: radius, 2: radius},
                                    boundary="none", dtype=bool, radius_px=radius)
        else:
            grown = _grow_masks(bad.values, radius)
        clear = clear & ~xr.DataArray(grown, dims=bad.dims, coords=bad.coords)
    if settings.haze_hot_threshold is not None and "blue" in cube and "red" in cube:
        hot = cube["blue"] - 0.5 * cube["red"] - 0.08
        clear = clear & ~(hot > settings.haze_hot_threshold)
    return cube.assign(clear=clear.transpose(*cube["clear"].dims))


def _refine_clear_numpy(cube: xr.Dataset, radius: int, haze_threshold: float | None) -> xr.DataArray:
    """:func:`refine_clear`'s new ``clear`` for numpy-backed cubes, with fewer passes and copies."""
    dims = ("time", "y", "x")
    clear_da = cube["clear"].transpose(*dims)
    clear = np.asarray(clear_da.values, dtype=bool)
    red = np.asarray(cube["red"].transpose(*dims).values) if "red" in cube else None
    if radius > 0:
        bad = ~clear if red is None else ~np.isnan(red) & ~clear
        clear = clear & ~_grow_masks(bad, radius)
    else:
        clear = clear.copy()
    if haze_threshold is not None and red is not None and "blue" in cube:
        hot = red * 0.5
        np.subtract(np.asarray(cube["blue"].transpose(*dims).values), hot, out=hot)
        np.subtract(hot, 0.08, out=hot)
        clear &= ~(hot > haze_threshold)
    return xr.DataArray(clear, dims=dims, coords=clear_da.coords).transpose(*cube["clear"].dims)


def _buffer_pixels(cube: xr.Dataset, settings: MaskSettings) -> int:
    """The cloud buffer ``cloud_buffer_m`` in pixels of the cube's grid."""
    return round(settings.cloud_buffer_m / float(cube.attrs.get("resolution_m") or _pixel_size(cube)))


def season_ndvi(cube: xr.Dataset, dates: np.ndarray, settings: MaskSettings, refine: bool = True,
                threads: int = 1) -> tuple[xr.DataArray, xr.DataArray]:
    """For a numpy-backed cube with nir and red: the refined ``clear`` (:func:`refine_clear`; as it
    is without ``refine``) and ``masked_index(..., "ndvi")`` of the dates ``dates`` (indices into
    ``time``), the same values, in one compiled pass per date that reads the bands in place (no
    copy of the season first); dates split among ``threads`` threads. Both (time, y, x)."""
    from gmsense.cube._kernels import season_ndvi_kernel

    dims = ("time", "y", "x")
    nir, red = (np.asarray(cube[b].transpose(*dims).values) for b in ("nir", "red"))
    clear = np.asarray(cube["clear"].transpose(*dims).values, dtype=bool)
    use_haze = refine and settings.haze_hot_threshold is not None and "blue" in cube
    blue = np.asarray(cube["blue"].transpose(*dims).values) if use_haze else red
    haze = np.array([0.5, 0.08, settings.haze_hot_threshold if use_haze else 0.0], dtype=red.dtype)
    dates = np.asarray(dates, dtype="int64")
    ndvi = np.empty((dates.size, *clear.shape[1:]), dtype="float32")
    refined = np.empty(ndvi.shape, dtype=bool)
    edges = np.linspace(0, dates.size, max(1, min(threads, dates.size)) + 1).round().astype(int)

    def run(first_last: tuple[int, int]) -> None:
        first, last = first_last
        season_ndvi_kernel(nir, red, blue, clear, dates, first, last, _buffer_pixels(cube, settings), haze,
                           use_haze, refine, ndvi, refined)

    parallel_map(run, list(pairwise(edges)), len(edges) - 1)
    coords = xr.Dataset(coords=cube["clear"].coords).isel(time=dates).coords
    return (xr.DataArray(refined, dims=dims, coords=coords, name="clear"),
            xr.DataArray(ndvi, dims=dims, coords=coords, name="ndvi"))


def _pixel_size(cube: xr.Dataset) -> float:
    return float(abs(cube["x"].values[1] - cube["x"].values[0]))


def masked(cube: xr.Dataset) -> xr.Dataset:
    """Band variables with every not-clear observation set to NaN (``clear`` dropped)."""
    bands = [b for b in CUBE_BANDS if b in cube]
    return cube[bands].where(cube["clear"])


def _normalised_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    total = a + b
    return ((a - b) / total.where(total != 0)).astype("float32")


def index(cube: xr.Dataset, name: str) -> xr.DataArray:
    """A spectral index from (already masked) reflectance.

    ``ndvi`` (nir-red)/(nir+red); ``nbr`` (nir-swir2)/(nir+swir2); ``ndmi`` (nir-swir1)/(nir+swir1);
    ``bsi`` ((swir1+red)-(nir+blue))/((swir1+red)+(nir+blue)), the bare soil index of Rikimaru et al.
    (2002). Raises KeyError naming the missing bands when the cube lacks them.
    """
    if name not in INDEX_BANDS:
        raise KeyError(f"unknown index {name!r}; known: {', '.join(INDEX_BANDS)}")
    missing = [b for b in INDEX_BANDS[name] if b not in cube]
    if missing:
        raise KeyError(f"index {name} needs bands {', '.join(missing)} which the imagery lacks")
    if name == "ndvi":
        out = _normalised_difference(cube["nir"], cube["red"])
    elif name == "nbr":
        out = _normalised_difference(cube["nir"], cube["swir2"])
    elif name == "ndmi":
        out = _normalised_difference(cube["nir"], cube["swir1"])
    else:
        out = _normalised_difference(cube["swir1"] + cube["red"], cube["nir"] + cube["blue"])
    return out.rename(name)


def masked_index(cube: xr.Dataset, name: str) -> xr.DataArray:
    """``index(masked(cube), name)`` without masking every band: the index of the raw reflectance,
    NaN where not ``clear``. The same values; numpy-backed cubes take one fused pass."""
    if name != "ndvi" or "nir" not in cube or "red" not in cube or any(
            cube[v].chunks is not None for v in ("nir", "red", "clear")):
        return index(cube, name).where(cube["clear"])
    dims = cube["nir"].dims
    nir, red = np.asarray(cube["nir"].values), np.asarray(cube["red"].values)
    total = nir + red
    out = np.subtract(nir, red)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, total, out=out)
    out[total == 0] = np.nan
    out[~np.asarray(cube["clear"].transpose(*dims).values, dtype=bool)] = np.nan
    return xr.DataArray(out.astype("float32", copy=False), dims=dims, coords=cube["nir"].coords, name=name)


def available_indices(cube: xr.Dataset) -> list[str]:
    """The indices whose bands the cube has."""
    return [n for n, bands in INDEX_BANDS.items() if all(b in cube for b in bands)]


def in_season(time: xr.DataArray | np.ndarray, season: SeasonSettings) -> np.ndarray:
    """Boolean per date: inside the growing-season window (months ``start_month..end_month``; a
    window whose start comes after its end runs across New Year, e.g. October to April)."""
    months = np.asarray(time, dtype="datetime64[ns]").astype("datetime64[M]").astype("int64") % 12 + 1
    if season.crosses_new_year:
        return (months >= season.start_month) | (months <= season.end_month)
    return (months >= season.start_month) & (months <= season.end_month)


def growing_season(cube: xr.Dataset | xr.DataArray, season: SeasonSettings) -> xr.Dataset | xr.DataArray:
    """Only the dates inside the growing-season window; winter and snow are never compared."""
    return cube.isel(time=np.flatnonzero(in_season(cube["time"], season)))


def season_year(time: xr.DataArray | np.ndarray | np.datetime64, season: SeasonSettings | None = None) -> np.ndarray:
    """The growing season (int64 year) each date belongs to: its calendar year, or, for a season
    running across New Year (``season.crosses_new_year``, e.g. October to April in the southern
    hemisphere), the year it ends in (October 2020 to April 2021 is season 2021). The same shape
    as ``time`` (a 0-d array for one date: ``int(season_year(date))``). Plain numpy, no xarray
    accessor, so it is cheap in per-patch loops."""
    stamps = np.asarray(time, dtype="datetime64[ns]")
    if season is not None and season.crosses_new_year:
        months = stamps.astype("datetime64[M]") + np.timedelta64(12 - season.start_month + 1, "M")
        return months.astype("datetime64[Y]").astype("int64") + 1970
    return stamps.astype("datetime64[Y]").astype("int64") + 1970


def ring_pixels(ring_m: tuple[float, float], pixel_m: float, min_inner: int = 0) -> tuple[int, int]:
    """A ring from ``ring_m[0]`` to ``ring_m[1]`` metres out as dilation steps of a ``pixel_m``
    grid: the inner edge rounded, at least ``min_inner`` steps out, the outer at least one step
    beyond it (a ring is never empty)."""
    inner = max(round(ring_m[0] / pixel_m), min_inner)
    return inner, max(round(ring_m[1] / pixel_m), inner + 1)


def scale_pixels(metres: float, pixel_m: float, minimum: float = 1.0) -> float:
    """A length in metres in pixels of a ``pixel_m`` grid, at least ``minimum`` (a filter scale or
    a reach narrower than a pixel looks at one pixel)."""
    return max(metres / pixel_m, minimum)


def day_of_year(times: np.ndarray) -> np.ndarray:
    """Day of the year (1-366, int) of each datetime64 in ``times``."""
    times = np.asarray(times)
    return (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int) + 1


def season_days(times: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Days (int) from 1 January of each date's season ``years`` (:func:`season_year`) to the date: the
    day of the year less one, negative before New Year in a season across it (November 2020 in season
    2021), so the count runs on through a season and the same days of two seasons compare."""
    days = np.asarray(times).astype("datetime64[D]")
    new_year = (np.asarray(years, dtype="int64") - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    return (days - new_year).astype(int)


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` elementwise (numpy), NaN where ``a + b`` is 0 or a value is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b != 0, (a - b) / (a + b), np.nan)
