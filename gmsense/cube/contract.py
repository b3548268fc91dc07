"""The imagery cube contract (DESIGN.md, "Imagery cube") and its checker.

A cube is an :class:`xarray.Dataset` with dims ``(time, y, x)``; one float32 surface-reflectance
variable per band under its common name (:data:`CUBE_BANDS`); a boolean ``clear`` variable;
``x``/``y`` pixel-centre coordinates in metres of a projected CRS recorded the rioxarray way
(``ds.rio.crs``); a sorted, duplicate-free datetime64 ``time``; attrs ``source``, ``platform`` and
``resolution_m``. Other variables (e.g. a source's raw ``scl``) are allowed and not checked.
:func:`validate_cube` checks all of this from metadata only (it never computes dask data).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from gmsense.errors import ImageryError

CUBE_DIMS = ("time", "y", "x")
CUBE_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2", "rededge1", "rededge2", "rededge3")
CUBE_ATTRS = ("source", "platform", "resolution_m")
_METRE_NAMES = {"metre", "meter", "metres", "meters", "m"}


def _fail(what: str, where: str | None) -> ImageryError:
    prefix = f"{where}: " if where else ""
    return ImageryError(f"{prefix}imagery cube is not valid: {what}")


def _check_axis(ds: xr.Dataset, dim: str, where: str | None) -> None:
    if dim not in ds.coords:
        raise _fail(f"no '{dim}' coordinate (pixel centres in metres); assign one", where)
    values = np.asarray(ds[dim].values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        raise _fail(f"'{dim}' must be a 1-D numeric coordinate, got {values.dtype} with shape {values.shape}", where)
    if values.size > 1:
        step = np.diff(values.astype("float64"))
        if not (np.all(step > 0) or np.all(step < 0)):
            raise _fail(f"'{dim}' coordinate is not strictly monotonic; sort it (ds.sortby('{dim}'))", where)


def validate_cube(
    ds: xr.Dataset, *, required: Sequence[str] = ("red", "nir"), where: str | None = None
) -> xr.Dataset:
    """Check that ``ds`` follows the cube contract and return it unchanged.

    ``required`` names bands that must be present (default red and nir, which NDVI needs);
    ``where`` (e.g. an imagery path or site id) prefixes the error message. Raises
    :class:`~gmsense.errors.ImageryError` saying what is off and how to fix it.
    """
    if not isinstance(ds, xr.Dataset):
        raise _fail(f"expected an xarray.Dataset, got {type(ds).__name__}", where)
    bands = [b for b in CUBE_BANDS if b in ds.data_vars]
    if not bands:
        raise _fail(
            f"no band variable; expected some of {', '.join(CUBE_BANDS)}, "
            f"found {', '.join(map(str, ds.data_vars)) or 'none'}",
            where,
        )
    missing = [b for b in required if b not in ds.data_vars]
    if missing:
        raise _fail(f"missing required band(s) {', '.join(missing)}; found {', '.join(bands)}", where)
    for name in [*bands, "clear"]:
        if name not in ds.data_vars:
            raise _fail("no boolean 'clear' variable (usable observation); add one", where)
        var = ds[name]
        if tuple(var.dims) != CUBE_DIMS:
            raise _fail(f"variable '{name}' has dims {tuple(var.dims)}; expected {CUBE_DIMS} (use .transpose)", where)
        if name == "clear":
            if var.dtype != np.bool_:
                raise _fail(f"'clear' must be boolean, got {var.dtype}", where)
        elif var.dtype != np.float32:
            raise _fail(f"band '{name}' must be float32 reflectance, got {var.dtype} (use .astype('float32'))", where)

    if "time" not in ds.coords:
        raise _fail("no 'time' coordinate", where)
    times = np.asarray(ds["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise _fail(f"'time' must be datetime64, got {times.dtype}", where)
    if times.size > 1 and not np.all(np.diff(times) > np.timedelta64(0, "ns")):
        raise _fail("'time' is not sorted ascending without duplicates; sortby('time') and drop duplicates", where)
    _check_axis(ds, "x", where)
    _check_axis(ds, "y", where)

    crs = ds.rio.crs
    if crs is None:
        raise _fail("no CRS; record it with ds.rio.write_crs(crs)", where)
    pcrs = pyproj.CRS.from_user_input(crs.to_wkt())
    if not pcrs.is_projected:
        raise _fail(f"CRS {crs} is not projected; reproject to a metric CRS (e.g. UTM)", where)
    units = {(axis.unit_name or "").lower() for axis in pcrs.axis_info}
    if not units or not units <= _METRE_NAMES:
        raise _fail(f"CRS {crs} has units {', '.join(sorted(units))}; x/y must be metres", where)

    absent = [a for a in CUBE_ATTRS if a not in ds.attrs]
    if absent:
        raise _fail(f"attrs {', '.join(absent)} missing (source, platform, resolution_m are required)", where)
    return ds
