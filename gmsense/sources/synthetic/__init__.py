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

That is the ``classic`` domain, the world this source always drew. Other domains
(:mod:`gmsense.sources.synthetic._domains`: biome + sensor + clouds + season shift, chosen by name)
draw other worlds for training on many and validating leave-one-domain-out: boreal forest, steppe
grassland, cropland plain, wetland, mountain forest on a DEM with per-date terrain shading
(:mod:`~gmsense.sources.synthetic._world`, :mod:`~gmsense.sources.synthetic._terrain`), with their
own events (:mod:`~gmsense.sources.synthetic._plan`, rendered by
:mod:`~gmsense.sources.synthetic._render`: open pits, dieback, droughts, works along roads and field
edges, winter works, sizes from 0.01 ha trenches to 200 ha clearings), seen at 10, 20 or 30 m, with
or without SWIR or Landsat-like, under clear, normal or cloudy skies
(:mod:`~gmsense.sources.synthetic._sky`).

``synthesize`` returns the cube (the contract of DESIGN.md) and the truth (:func:`truth_frame`).
"""

from __future__ import annotations

import zlib

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from shapely.geometry.base import BaseGeometry

from gmsense.config import Settings, SyntheticSettings
from gmsense.cube.ops import season_year
from gmsense.geo.grid import Grid
from gmsense.geo.sites import Site
from gmsense.sources.synthetic._domains import (
    DOMAINS,
    HALF_YEAR_DAYS,
    MODIFIERS,
    VALIDATION_DOMAINS,
    Domain,
    biome_of,
    domain_named,
    randomised_domain,
    southern_months,
)
from gmsense.sources.synthetic._events import (
    ANTHROPOGENIC,
    HARVEST_REGROWTH_YEARS,
    SCENARIOS,
    SEASON_MONTHS,
    Event,
    plan_events,
    truth_status,
)
from gmsense.sources.synthetic._landscape import (
    ENDMEMBERS,
    SPECTRA,
    SUBPIXEL,
    Landscape,
    build_landscape,
    cover_fractions,
    fraction,
    harvest_dates,
    ordered_matmul,
)
from gmsense.sources.synthetic._plan import plan_world_events
from gmsense.sources.synthetic._render import apply_stamp, make_stamp
from gmsense.sources.synthetic._sky import (
    NOT_CLEAR_SCL,
    TERRAIN_DARK_SHARE,
    apply_snow,
    band_response,
    draw_sky,
    observe,
    scene_classes,
    subpixel_shift,
)
from gmsense.sources.synthetic._world import build_world, shift_season, subpixel_for

__all__ = ["ANTHROPOGENIC", "BAND_NAMES", "DOMAINS", "ENDMEMBERS", "MODIFIERS", "SCENARIOS", "SUBPIXEL",
           "VALIDATION_DOMAINS", "Domain", "Event", "acquisition_dates", "biome_of", "domain_named",
           "randomised_domain", "resolve_domain", "scan_settings", "scene_dates", "synthesize", "truth_frame"]

BAND_NAMES = ("blue", "green", "red", "nir", "swir1", "swir2")

FIRST_OBSERVED_MIN_CLEAR = 0.5  # share of the footprint's pixels that must be clear
SPECTRA_T = SPECTRA.T.astype("float32")  # (bands, endmembers)


def _rng_for(site_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(site_id.encode())])


def acquisition_dates(settings: SyntheticSettings, rng: np.random.Generator,
                      revisit_days: tuple[int, int] = (5, 16)) -> np.ndarray:
    """Acquisitions every 5-15 days (``revisit_days``: ``integers(lo, hi)``) from April to October
    of each year in the settings' range."""
    start, end = np.datetime64(settings.start, "D"), np.datetime64(settings.end, "D")
    dates: list[np.datetime64] = []
    day = start
    while day <= end:
        month = day.astype("datetime64[M]").astype(int) % 12 + 1
        if 4 <= month <= 10:
            dates.append(day)
            day = day + np.timedelta64(int(rng.integers(*revisit_days)), "D")
        else:
            day = np.datetime64(f"{int(season_year(day)) + (month > 10)}-04-01")
    return np.array(dates, dtype="datetime64[ns]")


def scene_dates(site: Site, settings: SyntheticSettings, *, seed: int | None = None,
                domain: str | Domain | None = None) -> tuple[np.ndarray, Domain]:
    """The acquisition dates (datetime64[ns]) and the domain :func:`synthesize` draws for ``site``,
    without drawing anything (the dates are the first draws of the licence's generator)."""
    dom = resolve_domain(site, settings, domain)
    rng = _rng_for(site.site_id, settings.seed if seed is None else seed)
    return acquisition_dates(settings, rng, dom.sensor.revisit_days) + _calendar_offset(dom), dom


def _calendar_offset(dom: Domain) -> np.timedelta64:
    """How much later than drawn a domain's dates are: half a year in the south."""
    return np.timedelta64(HALF_YEAR_DAYS if dom.hemisphere == "south" else 0, "D").astype("timedelta64[ns]")


def _to_southern(cube: xr.Dataset, truth: gpd.GeoDataFrame, offset: np.timedelta64
                 ) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    """A world drawn on the northern calendar, dated ``offset`` later (its truth's dates too)."""
    cube = cube.assign_coords(time=cube["time"].values + offset)
    truth = truth.copy()
    days = np.timedelta64(offset, "D")
    for column in ("start", "first_observed"):
        truth[column] = [str(np.datetime64(v, "D") + days) if isinstance(v, str) and v else v for v in truth[column]]
    return cube, truth


def scan_settings(settings: Settings, domain: str | Domain | None) -> Settings:
    """``settings`` for scanning a scene of ``domain``: a southern world's growing season is the
    configured months six months on (May-September -> November-March); else unchanged."""
    if domain is None or domain_named(domain).hemisphere != "south":
        return settings
    start, end = southern_months(settings.season.start_month, settings.season.end_month)
    return settings.with_overrides({"season.start_month": start, "season.end_month": end})


def scene_grid(region: BaseGeometry, crs: pyproj.CRS, resolution: float) -> Grid:
    """The grid the world is drawn on: ``resolution`` metre pixels on the lattice anchored at the
    CRS origin, covering ``region``'s bounding box (in ``crs``) with no margin."""
    minx, miny, maxx, maxy = region.bounds
    x0, y1 = np.floor(minx / resolution) * resolution, np.ceil(maxy / resolution) * resolution
    nx = int(np.ceil((maxx - x0) / resolution))
    ny = int(np.ceil((y1 - miny) / resolution))
    return Grid(crs, Affine(resolution, 0, x0, 0, -resolution, y1), nx, ny)


def _latitude(site: Site) -> float:
    c = site.geometry.centroid
    return float(pyproj.Transformer.from_crs(site.crs, 4326, always_xy=True).transform(c.x, c.y)[1])


def resolve_domain(site: Site, settings: SyntheticSettings, domain: str | Domain | None = None) -> Domain:
    """The domain of a scene: ``domain``, else the site's ``synthetic_domain`` property, else the
    settings' ``domain`` (default ``classic``)."""
    return domain_named(domain or site.attrs.get("synthetic_domain") or settings.domain)


def synthesize(site: Site, region: BaseGeometry, settings: SyntheticSettings, *, seed: int | None = None,
               scenario: str | None = None, domain: str | Domain | None = None,
               ) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    """A synthetic cube over ``region`` (in ``site.crs``) and the truth of its events.

    The scenario comes from ``scenario``, else the site's ``synthetic_scenario`` property, else
    ``mixed`` (see :func:`gmsense.sources.synthetic._events.plan_events`). Every scenario has the
    full landscape (fields with harvest, water, wetland, road, drought year, misregistration,
    imperfect clouds); ``quiet`` has no disturbance events; ``mining`` has an open pit and a large
    clearing. The domain (:func:`resolve_domain`; :mod:`gmsense.sources.synthetic._domains`) sets
    the world, the sensor (its bands and pixel size: the cube's ``resolution_m``), the clouds and
    the season; ``classic`` is the world this source always drew. The same site, settings, seed
    and domain always give the same scene.
    """
    seed = settings.seed if seed is None else seed
    scenario = scenario or str(site.attrs.get("synthetic_scenario", "mixed"))
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown synthetic scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    dom = resolve_domain(site, settings, domain)
    biome, sensor = dom.biome, dom.sensor
    rng = _rng_for(site.site_id, seed)
    res = dom.resolution(settings.resolution_m)
    grid = scene_grid(region, site.crs, res)
    xs, ys, transform, shape = grid.xs(), grid.ys(), grid.transform, grid.shape
    times = acquisition_dates(settings, rng, sensor.revisit_days)
    years = np.unique(season_year(times))
    if biome.legacy:  # the classic world: its own code paths, sizes in pixels
        scale, subpixel = 1.0, SUBPIXEL
        land = build_landscape(region, site.geometry, shape, transform, years, rng)
        land.biome = biome
        if scenario == "mining":
            events = plan_world_events(site, region, land, years, scenario, rng, biome, transform)
        else:
            events = plan_events(site, region, land, years, scenario, rng)
    else:
        scale, subpixel = 10.0 / res, subpixel_for(res)
        land = build_world(region, site.geometry, shape, transform, years, rng, biome, res, _latitude(site))
        events = plan_world_events(site, region, land, years, scenario, rng, biome, transform)
    land = shift_season(land, dom.season_shift_days)
    stamped = [make_stamp(e, land, shape, transform, subpixel, scale, res) for e in events]
    stamps = [s for s, _ in stamped]
    shadow_offset = np.array([-1.0, -1.0]) * rng.uniform(3, 6, 2) * scale  # shadows fall north-west (pixels)

    refl, scl = _render(land, stamps, times, shadow_offset, rng, dom, scale)
    clear = ~np.isin(scl, NOT_CLEAR_SCL)
    data_vars = {b: (("time", "y", "x"), refl[:, k]) for k, b in enumerate(sensor.bands)}
    data_vars["clear"] = (("time", "y", "x"), clear)
    data_vars["scl"] = (("time", "y", "x"), scl)
    cube = xr.Dataset(data_vars, coords={"time": times, "y": ys, "x": xs},
                      attrs={"source": "synthetic", "platform": sensor.platform, "resolution_m": res,
                             "seed": seed, "scenario": scenario, "drought_year": land.drought_year,
                             "domain": dom.name})
    cube = cube.rio.write_crs(site.crs, inplace=True).rio.write_transform(transform, inplace=True)

    days = times.astype("datetime64[D]")
    harvests = _harvest_events(site, land, years, days)
    all_events = events + harvests
    masks = [full > 0 for _, full in stamped] + _field_masks(land, harvests, shape, transform)
    observed = [first_observed(e.start, m, days, clear) for e, m in zip(all_events, masks, strict=True)]
    last = days[-1] if times.size else np.datetime64(settings.end, "D")
    truth = truth_frame(all_events, site, last, observed, domain=dom.name)
    if dom.hemisphere == "south":
        return _to_southern(cube, truth, _calendar_offset(dom))
    return cube, truth


def _field_masks(land: Landscape, harvests: list[Event], shape: tuple[int, int], transform: Affine,
                 ) -> list[np.ndarray]:
    """Pixels touched by each harvested field (from the sparse field shares when there are any)."""
    if land.crop_shares is None:
        return [fraction(e.geometry, shape, transform) > 0 for e in harvests]
    index = {id(f.geometry): k for k, f in enumerate(land.fields)}
    rows = land.crop_shares.tocsr()
    return [(rows[index[id(e.geometry)]].toarray().reshape(shape) > 0) for e in harvests]


def _render(land: Landscape, stamps: list, times: np.ndarray, shadow_offset: np.ndarray,
            rng: np.random.Generator, dom: Domain, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (time, sensor bands, y, x) and SCL (time, y, x) of every acquisition."""
    sensor, shape = dom.sensor, land.shape
    keep = [BAND_NAMES.index(b) for b in sensor.bands]
    n = times.size
    refl = np.empty((n, len(keep), *shape), dtype="float32")
    scl = np.empty((n, *shape), dtype="uint8")
    days = times.astype("datetime64[D]")
    doys = (days - times.astype("datetime64[Y]")).astype(int) + 1
    date_years = season_year(times)
    for i in range(n):
        sky = draw_sky(shape, int(doys[i]), shadow_offset, rng, clouds=dom.clouds, sensor=sensor, scale=scale,
                       season_shift=land.season_shift)
        cover, grass = cover_fractions(land, float(doys[i]), int(date_years[i]))
        for st in stamps:
            cover[:, st.rows, st.cols] = apply_stamp(st, days[i], grass[:, st.rows, st.cols],
                                                     cover[:, st.rows, st.cols])
        if sky.snow is not None:
            cover = apply_snow(cover, sky.snow, land)
        cover = subpixel_shift(cover, *sky.shift_px)
        surface = ordered_matmul(SPECTRA_T, cover.reshape(cover.shape[0], -1)).reshape(len(BAND_NAMES), *shape)
        dark = None
        if land.terrain is not None:
            light, cast = land.terrain.illumination(float(doys[i]), sensor.overpass_hour)
            surface = surface * subpixel_shift(light, *sky.shift_px)
            dark = subpixel_shift(cast, *sky.shift_px) >= TERRAIN_DARK_SHARE
        scl[i] = scene_classes(cover, surface, sky, dark)
        seen = observe(band_response(surface, sensor), sky, rng, sensor)
        refl[i] = seen if len(keep) == len(BAND_NAMES) else seen[keep]
    return refl, scl


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
                 "recovery_status", "inside_licence", "area_m2", "natural_agent", "domain", "geometry"]


def truth_frame(events: list[Event], site: Site, last_date: np.datetime64,
                first_observed: list[str] | None = None, domain: str = "classic") -> gpd.GeoDataFrame:
    """One row per event, in ``site.crs``: the columns of :data:`TRUTH_COLUMNS`.

    ``disturbance_class`` is the kind for human-made kinds (an ``open_pit`` is a ``clearing``),
    else ``natural``, whose ``natural_agent`` is the kind (fire, flood, windthrow, dieback,
    harvest, drought; "" for human-made events). The geometry is the footprint on ``last_date``
    (a dieback's clusters that have begun). ``recovery_status`` is the status at ``last_date``
    (the scene's last acquisition) by :func:`gmsense.sources.synthetic._events.truth_status`;
    ``first_observed`` per event as from :func:`first_observed` ("" when not given); ``domain``
    the scene's domain.
    """
    observed = first_observed or [""] * len(events)
    extents = [e.extent(last_date) for e in events]
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
            "inside_licence": bool(site.geometry.contains(geom)),
            "area_m2": float(geom.area),
            "natural_agent": e.natural_agent,
            "domain": domain,
            "geometry": geom,
        }
        for e, obs, geom in zip(events, observed, extents, strict=True)
    ]
    return gpd.GeoDataFrame(rows, columns=TRUTH_COLUMNS, geometry="geometry", crs=site.crs)
