"""The embedded default source: a seeded synthetic Sentinel-2 L2A-like world with known truth.

Surface reflectance at 10 m (bands blue..swir2, unitless 0..1) over the licence's monitoring
area, in the licence's UTM CRS, is a linear mixture of endmember spectra (green and dry
vegetation, litter, black soil, bright spoil, gravel, water, snow, char). The cover fractions come
from:

- the landscape (:mod:`gmsense.sources.synthetic._landscape`): forest, grassland, cropland in
  rectangular fields with field-specific sowing and harvest dates, a lake with a wetland fringe,
  a gravel road; phenology per cover, inter-annual variation and one drought year;
- events (:mod:`gmsense.sources.synthetic._events`): trenches, drill pads, tracks and clearings
  rasterised at 2 m and averaged (so narrow ones are sub-pixel), with none, slow or fast
  regrowth; fire scars, floods and windthrow as natural confounders.

Each acquisition (every 5-15 days, April-October) then gets: snow in early April and late
October; a sub-pixel misregistration (0.3-0.6 px in a random direction, bilinear); cloud with
thin, brightened edges and a shadow displaced from it; per-date atmospheric gain, haze offset
and noise. The ``scl`` variable is Sentinel-2-like scene classification (3 shadow, 4 vegetation,
5 bare, 6 water, 8/9 cloud, 11 snow) and imperfect, as real SCL is: cloud rims (optical depth
below one half) stay classed as clear, and on some dates shadows are missed wholly or partly.
``clear`` is derived from ``scl`` only.

``synthesize`` returns the cube (the contract of DESIGN.md) and the truth (:func:`truth_frame`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from gmsense.config import SyntheticSettings
from gmsense.cube.ops import season_year
from gmsense.geo.grid import Grid
from gmsense.geo.sites import Site
from gmsense.sources.synthetic._events import (
    ANTHROPOGENIC,
    HARVEST_REGROWTH_YEARS,
    SCENARIOS,
    Event,
    event_effect,
    plan_events,
    truth_status,
)
from gmsense.sources.synthetic._landscape import (
    CLOUD_SPECTRUM,
    EM,
    ENDMEMBERS,
    FOREST_EVERGREEN,
    SPECTRA,
    SUBPIXEL,
    Landscape,
    build_landscape,
    cover_fractions,
    fraction,
    harvest_dates,
    smooth_noise,
)

__all__ = ["ANTHROPOGENIC", "BAND_NAMES", "ENDMEMBERS", "SCENARIOS", "SUBPIXEL", "Event", "acquisition_dates",
           "synthesize", "truth_frame"]

BAND_NAMES = ("blue", "green", "red", "nir", "swir1", "swir2")

#: Sentinel-2 L2A scene classification values used by the synthetic SCL band.
SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_SNOW = 3, 4, 5, 6, 8, 9, 11
NOT_CLEAR_SCL = (SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, 10, SCL_SNOW)

SEASON_MONTHS = (5, 9)  # growing season of the truth's ``first_observed`` (May-September)
FIRST_OBSERVED_MIN_CLEAR = 0.5  # share of the footprint's pixels that must be clear

CLOUDY_DATE_PROB = 0.45
OVERCAST_PROB = 0.08
CLOUD_RIM = 0.35  # half-width of the cloud edge, in standard deviations of the cloud field
CLOUD_FLAG_ALPHA = 0.5  # cloud optical share from which SCL flags cloud (thinner rims pass as clear)
CLOUD_HIGH_ALPHA = 0.85
SHADOW_DARKENING = 0.6  # share of the light a full shadow removes
SHADOW_FLAG_CHOICES = (0.5, 0.85, np.inf)  # shadow share SCL needs: flagged, cores only, missed
SHADOW_FLAG_PROBS = (0.55, 0.25, 0.2)
MISREGISTRATION_PX = (0.3, 0.6)
GAIN_SD = 0.02
HAZE_PATH = np.array([0.025, 0.016, 0.010, 0.005, 0.0015, 0.0008])  # path reflectance per unit haze
NOISE_SD, NOISE_REL = 0.003, 0.01
SNOW_SCL_FRACTION = 0.4
VEG_NDVI = 0.35
SPECTRA_T = SPECTRA.T.astype("float32")  # (bands, endmembers)


def _rng_for(site_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(site_id.encode())])


def acquisition_dates(settings: SyntheticSettings, rng: np.random.Generator) -> np.ndarray:
    """Acquisitions every 5-15 days from April to October of each year in the settings' range."""
    start, end = np.datetime64(settings.start, "D"), np.datetime64(settings.end, "D")
    dates: list[np.datetime64] = []
    day = start
    while day <= end:
        month = day.astype("datetime64[M]").astype(int) % 12 + 1
        if 4 <= month <= 10:
            dates.append(day)
            day = day + np.timedelta64(int(rng.integers(5, 16)), "D")
        else:
            day = np.datetime64(f"{int(season_year(day)) + (month > 10)}-04-01")
    return np.array(dates, dtype="datetime64[ns]")


def scene_grid(region: BaseGeometry, crs: pyproj.CRS, resolution: float) -> Grid:
    """The grid the world is drawn on: ``resolution`` metre pixels on the lattice anchored at the
    CRS origin, covering ``region``'s bounding box (in ``crs``) with no margin."""
    minx, miny, maxx, maxy = region.bounds
    x0, y1 = np.floor(minx / resolution) * resolution, np.ceil(maxy / resolution) * resolution
    nx = int(np.ceil((maxx - x0) / resolution))
    ny = int(np.ceil((y1 - miny) / resolution))
    return Grid(crs, Affine(resolution, 0, x0, 0, -resolution, y1), nx, ny)


@dataclass(frozen=True)
class Sky:
    """The per-date atmosphere and geometry of one acquisition (pixel units, unitless shares)."""

    shift_px: tuple[float, float]  # (dy, dx) misregistration of the ground
    cloud: np.ndarray  # cloud optical share 0..1 (y, x)
    shadow: np.ndarray  # shadow share 0..1 (y, x)
    shadow_flag: float  # shadow share from which SCL flags shadow (inf: missed)
    snow: np.ndarray | None  # snow cover share 0..1 before canopy masking, or None
    gain: float
    haze: float


def _snow_probability(doy: int) -> float:
    """Chance of snow on the ground: early April (fading by ~20 April) and late October."""
    spring = np.clip((112 - doy) / 20, 0, 0.95)
    autumn = np.clip((doy - 285) / 15, 0, 0.95)
    return float(max(spring, autumn))


def draw_sky(shape: tuple[int, int], doy: int, shadow_offset: np.ndarray, rng: np.random.Generator) -> Sky:
    """Snow, clouds, shadows, misregistration and atmosphere of one date."""
    angle = rng.uniform(0, 2 * np.pi)
    magnitude = rng.uniform(*MISREGISTRATION_PX)
    shift = (float(magnitude * np.sin(angle)), float(magnitude * np.cos(angle)))
    snow = None
    if rng.random() < _snow_probability(doy):
        depth = 0.8 if doy < 180 else 0.6
        snow = np.clip(depth + 0.35 * smooth_noise(shape, 10, rng), 0, 1)
    cloud = np.zeros(shape, dtype="float32")
    if rng.random() < CLOUDY_DATE_PROB:
        threshold = rng.uniform(-1.0, 0.0) if rng.random() < OVERCAST_PROB else rng.uniform(0.6, 2.2)
        field = smooth_noise(shape, rng.uniform(3, 10), rng)
        cloud = np.clip((field - threshold + CLOUD_RIM) / (2 * CLOUD_RIM), 0, 1).astype("float32")
    offset = shadow_offset * rng.uniform(0.7, 1.3)
    shadow = ndimage.shift(cloud, offset, order=1, mode="constant", cval=0.0) if cloud.any() else cloud
    shadow_flag = float(rng.choice(SHADOW_FLAG_CHOICES, p=SHADOW_FLAG_PROBS))
    gain = float(1 + rng.normal(0, GAIN_SD))
    haze = float(rng.gamma(2.0, 0.15))
    return Sky(shift, cloud, shadow, shadow_flag, snow, gain, haze)


def _apply_snow(cover: np.ndarray, snow: np.ndarray, land: Landscape) -> np.ndarray:
    """Snow on the ground, partly hidden under the evergreen canopy."""
    visible = snow * (1 - 0.6 * land.forest * FOREST_EVERGREEN * land.veg_max)
    cover = cover * (1 - visible)
    cover[EM["snow"]] += visible
    return cover


def _scene_classes(cover: np.ndarray, surface: np.ndarray, sky: Sky) -> np.ndarray:
    """Sentinel-2-like SCL (uint8) of one date, with its imperfections (see module docstring)."""
    nir, red = surface[3], surface[2]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.where(ndvi > VEG_NDVI, SCL_VEG, SCL_BARE).astype("uint8")
    scl[cover[EM["water"]] > 0.5] = SCL_WATER
    scl[cover[EM["snow"]] > SNOW_SCL_FRACTION] = SCL_SNOW
    scl[sky.shadow >= sky.shadow_flag] = SCL_SHADOW
    scl[sky.cloud >= CLOUD_FLAG_ALPHA] = SCL_CLOUD_MEDIUM
    scl[sky.cloud >= CLOUD_HIGH_ALPHA] = SCL_CLOUD_HIGH
    return scl


def _observe(surface: np.ndarray, sky: Sky, rng: np.random.Generator) -> np.ndarray:
    """Ground reflectance (bands, y, x) -> what the sensor reports: shadow, cloud, gain, haze, noise."""
    lit = surface * (1 - SHADOW_DARKENING * sky.shadow)
    seen = lit * (1 - sky.cloud) + CLOUD_SPECTRUM[:, None, None] * sky.cloud
    seen = seen * sky.gain + sky.haze * HAZE_PATH[:, None, None]
    noise = rng.standard_normal(seen.shape, dtype="float32")
    return seen + noise * (NOISE_SD + NOISE_REL * seen)


def subpixel_shift(stack: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Shift the last two axes of ``stack`` by (``dy``, ``dx``) pixels, bilinearly, edges repeated:
    ``out[..., i, j] = stack[..., i - dy, j - dx]`` (as ``scipy.ndimage.shift(order=1)``, faster)."""
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    pad = max(abs(iy), abs(ix)) + 2
    padded = np.pad(stack, [(0, 0)] * (stack.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    ny, nx = stack.shape[-2:]

    def window(oy: int, ox: int) -> np.ndarray:
        return padded[..., pad - oy : pad - oy + ny, pad - ox : pad - ox + nx]

    top = window(iy, ix) * (1 - fx) + window(iy, ix + 1) * fx
    bottom = window(iy + 1, ix) * (1 - fx) + window(iy + 1, ix + 1) * fx
    return top * (1 - fy) + bottom * fy


def _window(footprint: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """The rows and columns (with ``margin`` pixels) where ``footprint`` is non-zero."""
    rows, cols = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def _severity(event: Event, shape: tuple[int, int]) -> np.ndarray | None:
    """Patchy severity (0..1) for windthrow and fire; None (uniform) for the others."""
    if event.kind not in ("windthrow", "fire"):
        return None
    rng = np.random.default_rng(event.severity_seed)
    field = smooth_noise(shape, 1.5 if event.kind == "windthrow" else 3.0, rng)
    if event.kind == "windthrow":
        return np.clip(0.6 + 0.5 * field, 0, 1)  # gaps and fully thrown patches
    return np.clip(0.85 + 0.2 * field, 0.4, 1)


def synthesize(site: Site, region: BaseGeometry, settings: SyntheticSettings, *, seed: int | None = None,
               scenario: str | None = None) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    """A synthetic cube over ``region`` (in ``site.crs``) and the truth of its events.

    The scenario comes from ``scenario``, else the site's ``synthetic_scenario`` property, else
    ``mixed`` (see :func:`gmsense.sources.synthetic._events.plan_events`). Every scenario has the
    full landscape (fields with harvest, water, wetland, road, drought year, misregistration,
    imperfect clouds); ``quiet`` has no disturbance events. The same site, settings and seed
    always give the same scene.
    """
    seed = settings.seed if seed is None else seed
    scenario = scenario or str(site.attrs.get("synthetic_scenario", "mixed"))
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown synthetic scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = _rng_for(site.site_id, seed)
    res = settings.resolution_m
    grid = scene_grid(region, site.crs, res)
    xs, ys, transform, shape = grid.xs(), grid.ys(), grid.transform, grid.shape
    times = acquisition_dates(settings, rng)
    years = np.unique(season_year(times))
    land = build_landscape(region, site.geometry, shape, transform, years, rng)
    events = plan_events(site, region, land, years, scenario, rng)
    footprints = [fraction(e.geometry, shape, transform) for e in events]
    severities = [_severity(e, shape) for e in events]
    windows = [_window(f) for f in footprints]
    shadow_offset = np.array([-1.0, -1.0]) * rng.uniform(3, 6, 2)  # shadows fall north-west (pixels)

    n = times.size
    refl = np.empty((n, len(BAND_NAMES), *shape), dtype="float32")
    scl = np.empty((n, *shape), dtype="uint8")
    days = times.astype("datetime64[D]")
    doys = (days - times.astype("datetime64[Y]")).astype(int) + 1
    date_years = season_year(times)
    for i in range(n):
        sky = draw_sky(shape, int(doys[i]), shadow_offset, rng)
        cover, grass = cover_fractions(land, float(doys[i]), int(date_years[i]))
        for event, foot, sev, (rows, cols) in zip(events, footprints, severities, windows, strict=True):
            cover[:, rows, cols] = event_effect(event, foot[rows, cols], None if sev is None else sev[rows, cols],
                                                days[i], grass[:, rows, cols], cover[:, rows, cols])
        if sky.snow is not None:
            cover = _apply_snow(cover, sky.snow, land)
        cover = subpixel_shift(cover, *sky.shift_px)
        surface = (SPECTRA_T @ cover.reshape(cover.shape[0], -1)).reshape(len(BAND_NAMES), *shape)
        scl[i] = _scene_classes(cover, surface, sky)
        refl[i] = _observe(surface, sky, rng)

    clear = ~np.isin(scl, NOT_CLEAR_SCL)
    data_vars = {b: (("time", "y", "x"), refl[:, k]) for k, b in enumerate(BAND_NAMES)}
    data_vars["clear"] = (("time", "y", "x"), clear)
    data_vars["scl"] = (("time", "y", "x"), scl)
    cube = xr.Dataset(data_vars, coords={"time": times, "y": ys, "x": xs},
                      attrs={"source": "synthetic", "platform": "sentinel-2-like", "resolution_m": res,
                             "seed": seed, "scenario": scenario, "drought_year": land.drought_year})
    cube = cube.rio.write_crs(site.crs, inplace=True).rio.write_transform(transform, inplace=True)

    harvests = _harvest_events(site, land, years, days)
    all_events = events + harvests
    masks = footprints + [fraction(e.geometry, shape, transform) for e in harvests]
    observed = [first_observed(e.start, m > 0, days, clear) for e, m in zip(all_events, masks, strict=True)]
    last = days[-1] if n else np.datetime64(settings.end, "D")
    return cube, truth_frame(all_events, site, last, observed)


def _harvest_events(site: Site, land: Landscape, years: np.ndarray, days: np.ndarray) -> list[Event]:
    """One ``harvest`` event per crop field: its first harvest inside the scene's dates."""
    out = []
    if days.size == 0:
        return out
    for k, (f, dates) in enumerate(zip(land.fields, harvest_dates(land, years), strict=True)):
        inside = dates[(dates >= days[0]) & (dates <= days[-1])]
        if inside.size:
            out.append(Event(f"{site.site_id}-H{k + 1:02d}", "harvest", f.geometry, inside[0],
                             HARVEST_REGROWTH_YEARS))
    return out


def first_observed(start: np.datetime64, footprint: np.ndarray, days: np.ndarray, clear: np.ndarray) -> str:
    """ISO date of the first acquisition on/after ``start``, in May-September, on which at least
    half of the footprint's pixels (any coverage) are clear; "" if there is none."""
    if not footprint.any():
        return ""
    months = days.astype("datetime64[M]").astype(int) % 12 + 1
    candidates = np.flatnonzero((days >= np.datetime64(start, "D")) & (months >= SEASON_MONTHS[0])
                                & (months <= SEASON_MONTHS[1]))
    for t in candidates:
        if clear[t][footprint].mean() >= FIRST_OBSERVED_MIN_CLEAR:
            return str(days[t])
    return ""


TRUTH_COLUMNS = ["event_id", "site_id", "kind", "disturbance_class", "start", "first_observed", "regrowth_years",
                 "recovery_status", "inside_licence", "area_m2", "geometry"]


def truth_frame(events: list[Event], site: Site, last_date: np.datetime64,
                first_observed: list[str] | None = None) -> gpd.GeoDataFrame:
    """One row per event, in ``site.crs``: the columns of :data:`TRUTH_COLUMNS`.

    ``recovery_status`` is the status at ``last_date`` (the scene's last acquisition) by
    :func:`gmsense.sources.synthetic._events.truth_status`; ``first_observed`` per event as from
    :func:`first_observed` ("" when not given).
    """
    observed = first_observed or [""] * len(events)
    rows = [
        {
            "event_id": e.event_id,
            "site_id": site.site_id,
            "kind": e.kind,
            "disturbance_class": e.disturbance_class,
            "start": pd.Timestamp(e.start).date().isoformat(),
            "first_observed": obs,
            "regrowth_years": float(e.regrowth_years),
            "recovery_status": truth_status(e, last_date),
            "inside_licence": bool(site.geometry.contains(e.geometry)),
            "area_m2": float(e.geometry.area),
            "geometry": e.geometry,
        }
        for e, obs in zip(events, observed, strict=True)
    ]
    return gpd.GeoDataFrame(rows, columns=TRUTH_COLUMNS, geometry="geometry", crs=site.crs)
