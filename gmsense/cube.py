"""Cube operations: masking, growing-season selection, per-season composites and spectral indices.

All functions take and return xarray objects following the cube contract (DESIGN.md) and work the
same on numpy- and dask-backed data. Reflectance is unitless surface reflectance (0..1).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import ndimage

from gmsense.config import MaskSettings, SeasonSettings

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2", "rededge1", "rededge2", "rededge3")

#: Index name -> (bands it needs). Formulas in :func:`index`.
INDEX_BANDS: dict[str, tuple[str, ...]] = {
    "ndvi": ("nir", "red"),
    "nbr": ("nir", "swir2"),
    "ndmi": ("nir", "swir1"),
    "bsi": ("swir1", "red", "nir", "blue"),
}


def _grow_masks(not_clear: np.ndarray, radius_px: int) -> np.ndarray:
    """Per date (axis 0), grow a boolean mask by ``radius_px`` pixels (a square window: a
    separable maximum filter, much faster than a disk)."""
    size = (1, 2 * radius_px + 1, 2 * radius_px + 1)
    return ndimage.maximum_filter(not_clear, size=size, mode="constant", cval=False)


def refine_clear(cube: xr.Dataset, settings: MaskSettings) -> xr.Dataset:
    """The cube with a stricter ``clear``: observations within ``cloud_buffer_m`` (a square
    window) of an observed but not-clear pixel (cloud, shadow, snow), and hazy ones (HOT test,
    needs blue and red), are no longer clear. Pixels never observed (outside the image) do not
    grow.
    """
    clear = cube["clear"]
    observed = cube["red"].notnull() if "red" in cube else xr.ones_like(clear)
    radius = round(settings.cloud_buffer_m / float(cube.attrs.get("resolution_m") or _pixel_size(cube)))
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


def _pixel_size(cube: xr.Dataset) -> float:
    return float(abs(cube["x"].values[1] - cube["x"].values[0]))


def masked(cube: xr.Dataset) -> xr.Dataset:
    """Band variables with every not-clear observation set to NaN (``clear`` dropped)."""
    bands = [b for b in BANDS if b in cube]
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


def available_indices(cube: xr.Dataset) -> list[str]:
    """The indices whose bands the cube has."""
    return [n for n, bands in INDEX_BANDS.items() if all(b in cube for b in bands)]


def in_season(time: xr.DataArray | np.ndarray, season: SeasonSettings) -> np.ndarray:
    """Boolean per date: inside the growing-season window (months ``start_month..end_month``)."""
    months = xr.DataArray(np.asarray(time, dtype="datetime64[ns]")).dt.month.values
    return (months >= season.start_month) & (months <= season.end_month)


def growing_season(cube: xr.Dataset | xr.DataArray, season: SeasonSettings) -> xr.Dataset | xr.DataArray:
    """Only the dates inside the growing-season window; winter and snow are never compared."""
    return cube.isel(time=np.flatnonzero(in_season(cube["time"], season)))


def season_year(time: xr.DataArray | np.ndarray) -> np.ndarray:
    """The calendar year of each date (the growing season it belongs to)."""
    return xr.DataArray(np.asarray(time, dtype="datetime64[ns]")).dt.year.values


def clear_fraction(cube: xr.Dataset) -> xr.DataArray:
    """Share of pixels that are clear, per date."""
    return cube["clear"].mean(("y", "x"))
