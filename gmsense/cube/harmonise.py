"""Cross-sensor harmonisation of Landsat TM / ETM+ surface reflectance to OLI (issue 19, long archive).

Landsat 5 TM, Landsat 7 ETM+ and Landsat 8/9 OLI measure the same six reflective bands, but OLI's
bands are narrower, so the same ground gives slightly different surface reflectance, and an index
series crossing 2013 shifts for that reason alone. :func:`harmonise` makes the TM and ETM+ dates of
a cube OLI-like with a published per-band linear transform, ``OLI = intercept + slope x ETM+``,
and leaves every other date (OLI, unknown or mixed sensor) unchanged.

The sensor of each date is the cube's ``sensor`` coordinate on ``time`` (:data:`SENSOR_COORD`),
which the sources fill from what they know of each image (:func:`sensor_of`): the Earth Engine
``system:id`` (``LANDSAT/LT05/C02/T1_L2/LT05_...``) and the Landsat product name a local file is
named after (``2005-06-20_LE07_L2SP_119027_...tif``). The transform applied is recorded in the
cube's attrs (:data:`ATTR_METHOD`, :data:`ATTR_CITATION`, ...).

Coefficients: Roy, D.P., Kovalskyy, V., Zhang, H.K., Vermote, E.F., Yan, L., Kumar, S.S., Egorov, A.,
2016. Characterization of Landsat-7 to Landsat-8 reflective wavelength and normalized difference
vegetation index continuity. Remote Sensing of Environment 185, 57-70,
https://doi.org/10.1016/j.rse.2015.12.024, Table 2 (ETM+ -> OLI surface reflectance, per band):

* ``roy2016_ols`` (the default): the ordinary-least-squares fit, as the Earth Engine community
  tutorial "Landsat ETM+ to OLI Harmonization" (google/earthengine-community,
  ``tutorials/landsat-etm-to-oli-harmonization``) transcribes Table 2, which also applies it to TM
  ("the coefficients for transforming ETM+ to OLI applies to TM as well"); the same numbers are
  reprinted in PMC8113344, Table 3. Roy et al. fitted ETM+ and OLI pairs a day apart over the
  conterminous United States (the 2013 underfly), so TM is carried by the same transform as ETM+.
* ``roy2016_rma``: the reduced-major-axis fit of the same table, as the LandTrendr scripts
  (``harmonizationRoy``) transcribe it and use it, i.e. ``OLI = intercept + slope x ETM+``
  (they invert it, ``(OLI - intercept) / slope``, to take OLI to ETM+).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

#: The coordinate on ``time`` naming the sensor of each date.
SENSOR_COORD = "sensor"
TM, ETM, OLI = "TM", "ETM+", "OLI"
#: Sensors whose dates :func:`harmonise` transforms; OLI is the reference and stays as it is.
HARMONISED_SENSORS = (TM, ETM)
#: Landsat product / Earth Engine id prefixes (USGS Landsat Collection 2 product identifier
#: ``LXSS_...``: L, sensor C OLI/TIRS, O OLI, E ETM+, T TM, then the satellite number) -> sensor.
#: Landsat 9 carries OLI-2, cross-calibrated to Landsat 8's OLI; both are the reference.
SENSOR_OF_PREFIX = {"LT04": TM, "LT05": TM, "LE07": ETM, "LC08": OLI, "LO08": OLI, "LC09": OLI, "LO09": OLI}
_PREFIX = re.compile(r"(?<![A-Z0-9])(" + "|".join(SENSOR_OF_PREFIX) + r")(?![A-Z0-9])")
#: What joins the image ids of one day in a cube's ``image_id`` coordinate (both sources use it),
#: and the sensors of a day whose images came from different sensors.
ID_SEPARATOR = "+"

#: Band order of the coefficient tables.
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")

ROY_2016 = ("Roy, D.P., Kovalskyy, V., Zhang, H.K., Vermote, E.F., Yan, L., Kumar, S.S., Egorov, A., 2016. "
            "Characterization of Landsat-7 to Landsat-8 reflective wavelength and normalized difference "
            "vegetation index continuity. Remote Sensing of Environment 185, 57-70. "
            "https://doi.org/10.1016/j.rse.2015.12.024")

ATTR_METHOD = "harmonise"
ATTR_CITATION = "harmonise_citation"
ATTR_FORM = "harmonise_form"
ATTR_SENSORS = "harmonise_sensors"
ATTR_DATES = "harmonised_dates"
ATTR_MIXED = "harmonise_skipped_mixed_dates"


@dataclass(frozen=True)
class Transform:
    """``OLI = intercept + slope x TM/ETM+`` per band (reflectance 0..1)."""

    name: str
    slopes: dict[str, float]
    intercepts: dict[str, float]
    citation: str
    source: str

    def apply(self, band: str, values: np.ndarray) -> np.ndarray:
        """``values`` of ``band`` made OLI-like (NaN stays NaN)."""
        return self.intercepts[band] + self.slopes[band] * np.asarray(values)

    def invert(self, band: str, values: np.ndarray) -> np.ndarray:
        """OLI ``values`` of ``band`` as TM/ETM+ would see them (the inverse of :meth:`apply`)."""
        return (np.asarray(values) - self.intercepts[band]) / self.slopes[band]


#: Published transforms by setting value (``earthengine.harmonise`` / ``local.harmonise``).
TRANSFORMS: dict[str, Transform] = {
    "roy2016_ols": Transform(
        name="roy2016_ols",
        slopes=dict(zip(BANDS, (0.8474, 0.8483, 0.9047, 0.8462, 0.8937, 0.9071), strict=True)),
        intercepts=dict(zip(BANDS, (0.0003, 0.0088, 0.0061, 0.0412, 0.0254, 0.0172), strict=True)),
        citation=ROY_2016,
        source="Table 2, OLS regression ETM+ -> OLI surface reflectance",
    ),
    "roy2016_rma": Transform(
        name="roy2016_rma",
        slopes=dict(zip(BANDS, (0.9785, 0.9542, 0.9825, 1.0073, 1.0171, 0.9949), strict=True)),
        intercepts=dict(zip(BANDS, (-0.0095, -0.0016, -0.0022, -0.0021, -0.0030, 0.0029), strict=True)),
        citation=ROY_2016,
        source="Table 2, reduced major axis (RMA) regression ETM+ -> OLI surface reflectance",
    ),
}
#: Setting values: a transform's name, or ``none``.
METHODS = (*TRANSFORMS, "none")
DEFAULT_METHOD = "roy2016_ols"


def sensor_of(image_id: str) -> str:
    """The sensor (``TM``, ``ETM+``, ``OLI``) of one date from its image id(s): an Earth Engine
    ``system:id`` or a local file name, several joined by :data:`ID_SEPARATOR` when same-day images
    were merged. A day merging images of different sensors gives them joined by ``|``
    (``ETM+|OLI``); an id naming no Landsat sensor (or one day mixing such an id with a known one)
    gives ``""``."""
    sensors = []
    for part in str(image_id).split(ID_SEPARATOR):
        found = {SENSOR_OF_PREFIX[m] for m in _PREFIX.findall(part.upper())}
        one = found.pop() if len(found) == 1 else ""
        if one not in sensors:
            sensors.append(one)
    if len(sensors) == 1:
        return sensors[0]
    return "|".join(sorted(sensors)) if all(sensors) else ""


def sensors_of(image_ids: Iterable[str]) -> list[str]:
    """:func:`sensor_of` of every date."""
    return [sensor_of(i) for i in image_ids]


def with_sensor(cube: xr.Dataset, image_ids: Sequence[str] | None = None) -> xr.Dataset:
    """``cube`` with a :data:`SENSOR_COORD` coordinate on ``time`` from ``image_ids`` (default: the
    cube's ``image_id`` coordinate) when at least one date's sensor is known; unchanged otherwise."""
    if image_ids is None:
        if "image_id" not in cube.coords:
            return cube
        image_ids = [str(v) for v in cube["image_id"].values]
    sensors = sensors_of(image_ids)
    if not any(sensors):
        return cube
    return cube.assign_coords({SENSOR_COORD: ("time", np.asarray(sensors, dtype=object).astype(str))})


def harmonise(cube: xr.Dataset, method: str = DEFAULT_METHOD, sensors: Sequence[str] | None = None) -> xr.Dataset:
    """``cube`` with the reflectance of its TM and ETM+ dates made OLI-like by ``method`` (a key of
    :data:`TRANSFORMS`; ``"none"`` records that nothing was applied).

    ``sensors``: the sensor of each date (default: the cube's :data:`SENSOR_COORD` coordinate; no
    coordinate means no date is TM/ETM+). Only the bands of :data:`BANDS` the cube has are
    transformed (float32 kept, NaN stays NaN, lazily for dask-backed cubes); ``clear`` and every
    other variable are unchanged, and so are dates of OLI, unknown or mixed sensors (a day merging
    images of two sensors is counted in ``attrs["harmonise_skipped_mixed_dates"]``). The attrs
    record the method, its citation and form, the sensors transformed and how many dates were.
    A cube already harmonised is refused (:class:`ValueError`): the transform must apply once.
    """
    if method not in METHODS:
        raise ValueError(f"unknown harmonisation {method!r}; choose one of {', '.join(METHODS)}")
    done = cube.attrs.get(ATTR_METHOD)
    if done not in (None, "none"):
        raise ValueError(f"the cube is already harmonised ({done}); harmonise the imagery once")
    if sensors is None:
        sensors = ([str(s) for s in cube[SENSOR_COORD].values] if SENSOR_COORD in cube.coords
                   else [""] * cube.sizes["time"])
    if len(sensors) != cube.sizes["time"]:
        raise ValueError(f"{len(sensors)} sensors for {cube.sizes['time']} dates")
    out = cube.copy()
    if method == "none":
        out.attrs[ATTR_METHOD] = "none"
        return out
    transform = TRANSFORMS[method]
    hit = np.isin(np.asarray(sensors, dtype=str), HARMONISED_SENSORS)
    mixed = sum(1 for s in sensors if "|" in s and any(h in s.split("|") for h in HARMONISED_SENSORS))
    if hit.any():
        which = xr.DataArray(hit, dims=("time",), coords={"time": cube["time"]})
        for band in BANDS:
            if band not in out.data_vars:
                continue
            var = out[band]
            moved = (var * np.float32(transform.slopes[band]) + np.float32(transform.intercepts[band])).astype(
                var.dtype)
            out[band] = xr.where(which, moved, var, keep_attrs=True).transpose(*var.dims).astype(var.dtype)
    out.attrs.update({ATTR_METHOD: method, ATTR_CITATION: transform.citation,
                      ATTR_FORM: f"OLI = intercept + slope x TM/ETM+ per band ({transform.source})",
                      ATTR_SENSORS: ",".join(HARMONISED_SENSORS), ATTR_DATES: int(hit.sum())})
    if mixed:
        out.attrs[ATTR_MIXED] = int(mixed)
    return out
