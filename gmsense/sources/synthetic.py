"""The embedded default source: a seeded synthetic Sentinel-2-like world with known truth.

Surface reflectance at 10 m (bands blue..swir2) is made by linear mixing of endmember spectra.
Each pixel's cover fractions come from a land-cover map (forest, grassland), a phenology curve
(green-up, peak, senescence), inter-annual variation, and disturbance events rasterised at 2 m
and averaged to 10 m so that narrow trenches and tracks are sub-pixel. Clouds with displaced
shadows, snow outside the growing season, per-date gain and noise complete the picture.

``synthesize`` returns the cube (the contract of DESIGN.md, in the licence's UTM CRS) and the
truth: one row per event with its footprint, class, start date and reclamation speed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from gmsense.config import SyntheticSettings
from gmsense.sites import Site

BAND_NAMES = ("blue", "green", "red", "nir", "swir1", "swir2")

#: Endmember reflectance spectra (blue, green, red, nir, swir1, swir2); typical library values.
ENDMEMBERS: dict[str, np.ndarray] = {
    "green_veg": np.array([0.030, 0.060, 0.030, 0.400, 0.180, 0.080]),
    "dry_veg": np.array([0.060, 0.090, 0.120, 0.250, 0.330, 0.240]),
    "dark_soil": np.array([0.050, 0.070, 0.090, 0.130, 0.200, 0.160]),
    "spoil": np.array([0.130, 0.170, 0.210, 0.270, 0.380, 0.320]),
    "gravel": np.array([0.110, 0.140, 0.170, 0.220, 0.300, 0.260]),
    "char": np.array([0.030, 0.035, 0.035, 0.060, 0.090, 0.080]),
    "snow": np.array([0.850, 0.830, 0.800, 0.700, 0.100, 0.080]),
    "cloud": np.array([0.550, 0.550, 0.560, 0.600, 0.500, 0.400]),
    "water": np.array([0.050, 0.060, 0.040, 0.020, 0.010, 0.005]),
}

MISREGISTRATION_PX = (0.3, 0.6)  # per-date shift between acquisitions, pixels
CLOUD_RIM_PX = 2  # thin cloud edge left unflagged by the scene classification
MISSED_SHADOW_SHARE = 0.25  # dates whose cloud shadows the scene classification misses

#: Sentinel-2 L2A scene classification values used by the synthetic SCL band.
SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_CLOUD_HIGH, SCL_SNOW = 3, 4, 5, 9, 11

SUBPIXEL = 5  # disturbances are rasterised at resolution / SUBPIXEL (2 m at 10 m)

ANTHROPOGENIC = ("trench", "pad", "track", "clearing")
SURFACE = {"trench": "spoil", "pad": "gravel", "track": "gravel", "clearing": "dark_soil", "fire": "char",
           "windthrow": "dry_veg", "flood": "water"}
SCENARIOS = ("mixed", "exploration", "boundary", "quiet")


@dataclass(frozen=True)
class Event:
    """One change on the ground. ``geometry`` in the scene CRS (metres)."""

    event_id: str
    kind: str  # trench | pad | track | clearing | fire
    geometry: BaseGeometry
    start: np.datetime64
    regrowth_years: float  # 0 = no reclamation; years from start to full regrowth otherwise
    duration_days: int = 0  # > 0: the change goes away after this many days (a flood)

    @property
    def disturbance_class(self) -> str:
        return self.kind if self.kind in ANTHROPOGENIC else "natural"


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
            day = np.datetime64(f"{day.astype('datetime64[Y]').astype(int) + 1970 + (month > 10)}-04-01")
    return np.array(dates, dtype="datetime64[ns]")


def _random_point_in(area: BaseGeometry, rng: np.random.Generator) -> Point:
    minx, miny, maxx, maxy = area.bounds
    for _ in range(10_000):
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if area.contains(p):
            return p
    raise ValueError("could not place an event: the licence is too small")


def _trench(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    length, width = rng.uniform(150, 450), rng.uniform(4, 8)
    angle = rng.uniform(0, 180)
    line = LineString([(centre.x - length / 2, centre.y), (centre.x + length / 2, centre.y)])
    return affinity.rotate(line, angle, origin=centre).buffer(width / 2, cap_style="flat")


def _pad(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    side = rng.uniform(25, 45)
    return affinity.rotate(box(centre.x - side / 2, centre.y - side / 2, centre.x + side / 2, centre.y + side / 2),
                           rng.uniform(0, 90), origin=centre)


def _track(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    length, width, bend = rng.uniform(300, 600), rng.uniform(6, 9), rng.uniform(1.6, 3.0)
    s = np.linspace(-0.5, 0.5, 40)
    radius = length / bend
    xs = radius * np.sin(s * bend)
    ys = radius * (1 - np.cos(s * bend))
    line = LineString(np.c_[centre.x + xs, centre.y + ys - ys.mean()])
    return affinity.rotate(line, rng.uniform(0, 360), origin=centre).buffer(width / 2, cap_style="flat")


def _clearing(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    area = rng.uniform(3_000, 15_000)
    aspect = rng.uniform(1.0, 2.0)
    w = np.sqrt(area / aspect)
    rect = box(centre.x - w * aspect / 2, centre.y - w / 2, centre.x + w * aspect / 2, centre.y + w / 2)
    return affinity.rotate(rect, rng.uniform(0, 90), origin=centre)


def _fire(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    radius = rng.uniform(90, 160)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = radius * rng.uniform(0.6, 1.3, angles.size)
    return Polygon(np.c_[centre.x + radii * np.cos(angles), centre.y + radii * np.sin(angles)]).buffer(0)


def _blob(centre: Point, rng: np.random.Generator, radius: tuple[float, float]) -> BaseGeometry:
    r = rng.uniform(*radius)
    angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    radii = r * rng.uniform(0.5, 1.4, angles.size)
    return Polygon(np.c_[centre.x + radii * np.cos(angles), centre.y + radii * np.sin(angles)]).buffer(0)


def _windthrow(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    return _blob(centre, rng, (50, 110))


def _flood(centre: Point, rng: np.random.Generator) -> BaseGeometry:
    return _blob(centre, rng, (80, 160))


_SHAPES = {"trench": _trench, "pad": _pad, "track": _track, "clearing": _clearing, "fire": _fire,
           "windthrow": _windthrow, "flood": _flood}


def _event_start(years: np.ndarray, rng: np.random.Generator) -> np.datetime64:
    """A start date in a growing season after the first (so every event has a baseline)."""
    year = int(rng.choice(years[1:]))
    return np.datetime64(f"{year}-05-20") + np.timedelta64(int(rng.integers(0, 75)), "D")


def plan_events(site: Site, region: BaseGeometry, settings: SyntheticSettings, scenario: str,
                rng: np.random.Generator) -> list[Event]:
    """The events of one scene. Anthropogenic ones are placed by ``scenario``:

    ``exploration``: trenches, pads and a track inside the licence, a fire in the buffer;
    ``boundary``: a clearing and a track crossing the licence boundary, a pad outside it;
    ``quiet``: nothing happens; ``mixed``: a random draw of all kinds, inside and outside.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown synthetic scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    years = np.arange(int(settings.start[:4]), int(settings.end[:4]) + 1)
    if years.size < 2:
        return []
    inner = site.geometry.buffer(-80)
    if inner.is_empty:
        inner = site.geometry
    outside = region.buffer(-100).difference(site.geometry.buffer(120))
    boundary_zone = site.geometry.boundary.buffer(30).intersection(region.buffer(-100))
    plan: list[tuple[str, BaseGeometry]] = []
    if scenario == "exploration":
        plan = [("trench", inner)] * 3 + [("pad", inner)] * 2 + [("track", inner)] + [("fire", outside)]
    elif scenario == "boundary":
        plan = [("clearing", boundary_zone), ("track", boundary_zone), ("pad", outside)]
    elif scenario == "mixed":
        n = int(rng.integers(3, 7))
        kinds = rng.choice(["trench", "pad", "track", "clearing", "fire", "windthrow", "flood"], size=n,
                           p=[0.25, 0.17, 0.17, 0.13, 0.1, 0.1, 0.08])
        plan = [(str(k), inner if rng.random() < 0.7 else outside) for k in kinds]
    events: list[Event] = []
    placed: list[BaseGeometry] = []
    for kind, area in plan:
        if area.is_empty:
            continue
        for _ in range(50):
            geom = _SHAPES[kind](_random_point_in(area, rng), rng).intersection(region.buffer(-20))
            if geom.is_empty or any(geom.buffer(40).intersects(p) for p in placed):
                continue
            break
        else:
            continue
        placed.append(geom)
        regrowth = 0.0 if kind not in ("fire", "windthrow") and rng.random() < 0.5 else float(rng.uniform(1.5, 5.0))
        duration = int(rng.integers(20, 45)) if kind == "flood" else 0
        events.append(Event(f"{site.site_id}-E{len(events) + 1:02d}", kind, geom, _event_start(years, rng), regrowth,
                            duration))
    return events


def _grid(region: BaseGeometry, resolution: float) -> tuple[np.ndarray, np.ndarray, Affine]:
    minx, miny, maxx, maxy = region.bounds
    x0, y1 = np.floor(minx / resolution) * resolution, np.ceil(maxy / resolution) * resolution
    nx = int(np.ceil((maxx - x0) / resolution))
    ny = int(np.ceil((y1 - miny) / resolution))
    xs = x0 + (np.arange(nx) + 0.5) * resolution
    ys = y1 - (np.arange(ny) + 0.5) * resolution
    return xs, ys, Affine(resolution, 0, x0, 0, -resolution, y1)


def _fraction(geom: BaseGeometry, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    """Share of each pixel covered by ``geom``, from a rasterisation at 1/SUBPIXEL of the pixel."""
    fine_shape = (shape[0] * SUBPIXEL, shape[1] * SUBPIXEL)
    fine = rasterize([(geom, 1)], out_shape=fine_shape, transform=transform @ Affine.scale(1 / SUBPIXEL),
                     dtype="uint8")
    return fine.reshape(shape[0], SUBPIXEL, shape[1], SUBPIXEL).mean(axis=(1, 3))


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _phenology(doy: np.ndarray, greenup: float, senescence: float) -> np.ndarray:
    """Green share of peak: logistic green-up and senescence around the given day-of-year."""
    return 1 / (1 + np.exp(-(doy - greenup) / 8)) * (1 - 1 / (1 + np.exp(-(doy - senescence) / 10)))


def _crop_cover(doy: int, sow: float, harvest: float) -> float:
    """Green share of a crop field: bare until sowing, green-up over ~40 days, cut at harvest."""
    if doy < sow or doy > harvest:
        return 0.0
    return float(0.85 * min((doy - sow) / 40.0, 1.0))


def _landscape(site: Site, region: BaseGeometry, scenario: str, rng: np.random.Generator) -> dict:
    """What does not change: an existing road and a lake in every scene; crop fields (sowing and
    harvest day-of-year per field) outside the licence in the ``mixed`` scenario."""
    minx, miny, maxx, maxy = region.bounds
    yy = rng.uniform(miny + 0.2 * (maxy - miny), miny + 0.8 * (maxy - miny))
    road = LineString([(minx, yy), ((minx + maxx) / 2, yy + rng.uniform(-150, 150)), (maxx, yy)]).buffer(3)
    outside = region.buffer(-60).difference(site.geometry.buffer(80))
    lake = None
    if not outside.is_empty:
        lake = Point(*_random_point_in(outside, rng).coords[0]).buffer(rng.uniform(40, 90)).intersection(outside)
    fields = []
    if scenario == "mixed" and not outside.is_empty:
        for _ in range(int(rng.integers(2, 4))):
            c = _random_point_in(outside, rng)
            w, h = rng.uniform(150, 350), rng.uniform(100, 250)
            g = box(c.x - w / 2, c.y - h / 2, c.x + w / 2, c.y + h / 2).intersection(outside)
            if g.area > 5_000 and (lake is None or not g.intersects(lake)):
                fields.append((g, float(rng.uniform(125, 145)), float(rng.uniform(228, 255))))
    return {"road": road.intersection(region), "lake": lake, "fields": fields}


def synthesize(site: Site, region: BaseGeometry, settings: SyntheticSettings, *, seed: int | None = None,
               scenario: str | None = None) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    """A synthetic cube over ``region`` (in ``site.crs``) and the truth of its events.

    The scenario comes from ``scenario``, else the site's ``synthetic_scenario`` property, else
    ``mixed``. The same site, settings and seed always give the same scene.
    """
    seed = settings.seed if seed is None else seed
    scenario = scenario or str(site.attrs.get("synthetic_scenario", "mixed"))
    rng = _rng_for(site.site_id, seed)
    res = settings.resolution_m
    xs, ys, transform = _grid(region, res)
    shape = (ys.size, xs.size)
    times = acquisition_dates(settings, rng)
    events = plan_events(site, region, settings, scenario, rng)

    # Land cover: forest with a canopy-density field, grassland openings.
    cover_noise = _smooth_noise(shape, 12, rng)
    grass = cover_noise > 1.2
    veg_max = np.where(grass, 0.75, 0.88) + 0.04 * _smooth_noise(shape, 3, rng)
    greenup = np.where(grass, 135.0, 128.0) + 4 * _smooth_noise(shape, 8, rng)
    senescence = np.where(grass, 255.0, 268.0) + 4 * _smooth_noise(shape, 8, rng)
    evergreen = np.where(grass, 0.05, 0.35)
    years = times.astype("datetime64[Y]").astype(int) + 1970
    year_list = np.unique(years)
    year_vigour = dict(zip(year_list, rng.normal(0, 0.02, year_list.size), strict=True))
    drought_year = int(rng.choice(year_list))
    year_vigour[drought_year] -= 0.05

    fractions = [(_fraction(e.geometry, shape, transform), e) for e in events]
    landscape = _landscape(site, region, scenario, rng)
    road = _fraction(landscape["road"], shape, transform) if landscape["road"] is not None else np.zeros(shape)
    lake = _fraction(landscape["lake"], shape, transform) if landscape["lake"] is not None else np.zeros(shape)
    fields = [(_fraction(g, shape, transform), sow, harvest) for g, sow, harvest in landscape["fields"]]
    n = times.size
    refl = np.empty((n, len(BAND_NAMES), *shape), dtype="float32")
    scl = np.full((n, *shape), SCL_VEG, dtype="uint8")
    doys = (times - times.astype("datetime64[Y]")).astype("timedelta64[D]").astype(int) + 1
    em = ENDMEMBERS
    for i, (t, doy, year) in enumerate(zip(times, doys, years, strict=True)):
        green_share = evergreen + (1 - evergreen) * _phenology(np.full(shape, doy), greenup, senescence)
        veg = np.clip(veg_max * green_share + year_vigour[year], 0, 1)
        w = {"green_veg": veg, "dry_veg": (1 - veg) * 0.6, "dark_soil": (1 - veg) * 0.4}
        for frac, sow, harvest in fields:
            jitter = int(((year * 7919 + int(sow)) % 13) - 6)  # the harvest moves a few days year to year
            crop = _crop_cover(doy, sow + jitter, harvest + jitter)
            for name in w:
                w[name] = w[name] * (1 - frac)
            w["green_veg"] = w["green_veg"] + frac * crop
            stubble = 0.6 if doy > harvest + jitter else 0.0
            w["dry_veg"] = w["dry_veg"] + frac * (1 - crop) * stubble
            w["dark_soil"] = w["dark_soil"] + frac * (1 - crop) * (1 - stubble)
        for frac, surface in ((road, "gravel"), (lake, "water")):
            for name in w:
                w[name] = w[name] * (1 - frac)
            w[surface] = w.get(surface, 0) + frac
        for frac, e in fractions:
            if t < e.start or (e.duration_days and t > e.start + np.timedelta64(e.duration_days, "D")):
                continue
            age_years = (t - e.start) / np.timedelta64(365, "D")
            regrown = min(age_years / e.regrowth_years, 1.0) if e.regrowth_years > 0 else 0.0
            hit = frac * (1 - regrown)
            for name in w:
                w[name] = w[name] * (1 - hit)
            # Regrowth starts as grass: green in season, dry outside it.
            w["green_veg"] = w["green_veg"] + frac * regrown * 0.8 * green_share
            w["dry_veg"] = w["dry_veg"] + frac * regrown * (1 - 0.8 * green_share)
            w[SURFACE[e.kind]] = w.get(SURFACE[e.kind], 0) + hit
        # Snow in early April and late October.
        snow_prob = 0.9 if doy < 105 or doy > 295 else (0.3 if doy < 115 or doy > 285 else 0.0)
        snow = np.zeros(shape)
        if snow_prob and rng.random() < snow_prob:
            snow = np.clip(0.7 + 0.3 * _smooth_noise(shape, 10, rng), 0, 1)
            for name in w:
                w[name] = w[name] * (1 - snow)
            w["snow"] = snow
        surface_refl = sum(wt[..., None] * em[name] for name, wt in w.items())
        # Clouds with displaced shadows, flagged in SCL.
        cloud = np.zeros(shape, dtype=bool)
        if rng.random() < 0.45:
            cloud = _smooth_noise(shape, rng.uniform(4, 10), rng) > rng.uniform(0.8, 2.0)
        shadow = np.roll(cloud, (int(rng.integers(3, 8)), int(rng.integers(3, 8))), axis=(0, 1)) & ~cloud
        # Thin cloud at the edges: partly cloudy, and the scene classification misses it.
        rim = ndimage.binary_dilation(cloud, iterations=CLOUD_RIM_PX) & ~cloud
        surface_refl = np.where(rim[..., None], 0.7 * surface_refl + 0.3 * em["cloud"], surface_refl)
        surface_refl = np.where(cloud[..., None], em["cloud"], surface_refl)
        surface_refl = np.where(shadow[..., None], surface_refl * 0.35, surface_refl)
        gain = 1 + rng.normal(0, 0.015)
        noisy = surface_refl * gain + rng.normal(0, 0.004, surface_refl.shape)
        # Misregistration: the whole acquisition sits a fraction of a pixel off.
        angle, size = rng.uniform(0, 2 * np.pi), rng.uniform(*MISREGISTRATION_PX)
        offset = (size * np.sin(angle), size * np.cos(angle), 0)
        noisy = ndimage.shift(noisy, offset, order=1, mode="nearest")
        refl[i] = np.moveaxis(noisy, -1, 0).astype("float32")
        scl[i] = np.where(snow > 0.3, SCL_SNOW, np.where(veg > 0.3, SCL_VEG, SCL_BARE))
        if rng.random() >= MISSED_SHADOW_SHARE:
            scl[i][shadow] = SCL_SHADOW
        scl[i][cloud] = SCL_CLOUD_HIGH

    clear = ~np.isin(scl, [SCL_SHADOW, SCL_CLOUD_HIGH, SCL_SNOW])
    data_vars = {b: (("time", "y", "x"), refl[:, k]) for k, b in enumerate(BAND_NAMES)}
    data_vars["clear"] = (("time", "y", "x"), clear)
    data_vars["scl"] = (("time", "y", "x"), scl)
    cube = xr.Dataset(data_vars, coords={"time": times, "y": ys, "x": xs},
                      attrs={"source": "synthetic", "platform": "sentinel-2-like", "resolution_m": res,
                             "seed": seed, "scenario": scenario, "drought_year": drought_year})
    cube = cube.rio.write_crs(site.crs).rio.write_transform(transform)
    harvest_events = [Event(f"{site.site_id}-F{k + 1:02d}", "harvest", g,
                            np.datetime64(f"{int(years.min()) + 1}-01-01") + np.timedelta64(int(h) - 1, "D"), 1.0)
                      for k, (g, _sow, h) in enumerate(landscape["fields"])]
    truth = truth_frame(events + harvest_events, site)
    return cube, truth


def truth_frame(events: list[Event], site: Site) -> gpd.GeoDataFrame:
    """One row per event: id, class, natural kind, start, regrowth, inside licence, footprint."""
    rows = [
        {
            "event_id": e.event_id,
            "site_id": site.site_id,
            "kind": e.kind,
            "disturbance_class": e.disturbance_class,
            "start": pd.Timestamp(e.start).date().isoformat(),
            "regrowth_years": e.regrowth_years,
            "inside_licence": bool(site.geometry.contains(e.geometry)),
            "area_m2": float(e.geometry.area),
            "geometry": e.geometry,
        }
        for e in events
    ]
    columns = ["event_id", "site_id", "kind", "disturbance_class", "start", "regrowth_years",
               "inside_licence", "area_m2", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=site.crs)
