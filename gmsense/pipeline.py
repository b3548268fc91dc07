"""One licence, end to end: cube -> breaks -> patches -> classes -> recovery -> flags.

:func:`analyse_site` is what each dask task runs. It returns a :class:`SiteResult` and writes
nothing; the scan hands results to the store.
"""

from __future__ import annotations

import numpy as np
import pyproj
import xarray as xr

from gmsense import cube as cubeops
from gmsense.config import Settings
from gmsense.detect.change import detect_breaks
from gmsense.detect.classify import classify_patch
from gmsense.detect.features import add_patch_spectra
from gmsense.detect.patches import extract_patches, grid_transform
from gmsense.errors import ImageryError
from gmsense.records import PatchRecord, SiteResult
from gmsense.recovery import recovery_status, ring_mask, trajectory
from gmsense.rules import evaluate
from gmsense.sites import WGS84, ApprovedWork, Site, reproject_geometry
from gmsense.sources import Source

DETECTION_INDEX = "ndvi"


def _iso(value: np.datetime64) -> str:
    return str(np.datetime64(value, "D")) if not np.isnat(value) else ""


def _cube_crs(cube: xr.Dataset, site_id: str) -> pyproj.CRS:
    crs = cube.rio.crs
    if crs is None:
        raise ImageryError(f"imagery for licence {site_id} has no CRS; write one (rioxarray: ds.rio.write_crs)")
    return pyproj.CRS.from_user_input(crs)


def analyse_cube(site: Site, cube: xr.Dataset, settings: Settings,
                 works: list[ApprovedWork] | None = None) -> SiteResult:
    """Detect, classify and follow the disturbances of one licence in its cube.

    ``works``: the licence's approved work programme (None when it has none).
    """
    crs = _cube_crs(cube, site.site_id)
    local = site.to_crs(crs)
    region = local.buffered(settings.sites.buffer_m)
    season = cubeops.growing_season(cube, settings.season)
    season = cubeops.masked(cubeops.refine_clear(season, settings.mask))
    if season.sizes["time"] == 0:
        raise ImageryError(
            f"licence {site.site_id}: no acquisitions fall in the growing season "
            f"(months {settings.season.start_month}-{settings.season.end_month}); widen --start/--end or the season")
    season = season.load()
    ndvi = cubeops.index(season, DETECTION_INDEX).load()
    clear_share = float(np.isfinite(ndvi.values).mean())
    if clear_share == 0:
        raise ImageryError(f"licence {site.site_id}: every growing-season observation is cloudy or missing")
    breaks = detect_breaks(ndvi, settings.detect, settings.mask.max_scene_dip).load()
    patches, labels = extract_patches(breaks, settings.detect.min_patch_m2)
    add_patch_spectra(patches, labels, season)

    times = ndvi["time"].values.astype("datetime64[ns]")
    years = times.astype("datetime64[Y]").astype(int) + 1970
    latest_season = int(years.max())
    transform = grid_transform(ndvi)
    values = np.asarray(ndvi.values)
    all_geoms = [p.geometry for p in patches]
    records: list[PatchRecord] = []
    geometries = []
    for patch in patches:
        geom = patch.geometry.intersection(region)
        if geom.is_empty or geom.area < settings.detect.min_patch_m2:
            continue
        pmask = labels == patch.label
        klass, confidence = classify_patch(patch, settings.classify)
        ring = ring_mask(patch.geometry, all_geoms, pmask.shape, transform)
        obs = trajectory(values, times, pmask, ring, patch.first_detected, DETECTION_INDEX)
        status, ratio = recovery_status(obs, patch.first_detected, latest_season, settings.recovery)
        seen = np.isfinite(values[:, pmask]).any(axis=1)
        outside = geom.difference(local.geometry).area
        records.append(PatchRecord(
            site_id=site.site_id,
            geometry_wkt=reproject_geometry(geom, crs, WGS84).wkt,
            local_wkt=geom.wkt,
            local_crs=crs.to_string(),
            disturbance_class=klass,
            confidence=confidence,
            first_detected=_iso(patch.first_detected),
            confirmed_on=_iso(patch.confirmed_on),
            last_seen=_iso(times[seen].max()) if seen.any() else _iso(patch.confirmed_on),
            area_m2=round(float(geom.area), 1),
            inside_licence=bool(outside < 1e-6),
            area_outside_m2=round(float(outside), 1),
            recovery_status=status,
            recovery_ratio=ratio,
            metrics={"n_pixels": patch.n_pixels, "magnitude": round(patch.magnitude, 4),
                     **{k: round(float(v), 4) for k, v in patch.shape.items()},
                     **{k: round(float(v), 4) for k, v in patch.spectral.items() if np.isfinite(v)}},
            recovery=obs,
        ))
        geometries.append(geom)
    stats = {"n_dates": int(cube.sizes["time"]), "n_season_dates": int(season.sizes["time"]),
             "clear_share": round(clear_share, 3), "crs": crs.to_string(),
             "first_date": _iso(times.min()), "last_date": _iso(times.max()),
             "last_acquisition": _iso(cube["time"].values.max()),
             "shape": [int(cube.sizes["y"]), int(cube.sizes["x"])]}
    local_works = [w.to_crs(crs) for w in works] if works is not None else None
    flags = evaluate(local, records, geometries, stats["last_date"], settings.rules, local_works)
    return SiteResult(site.site_id, records, flags, stats)


def analyse_site(site: Site, source: Source, settings: Settings, start: str | None = None,
                 end: str | None = None, works: list[ApprovedWork] | None = None) -> SiteResult:
    """Load the licence's cube from ``source`` and analyse it."""
    region = site.buffered(settings.sites.buffer_m)
    cube = source.load(site, region, start, end)
    if cube.sizes.get("time", 0) == 0:
        raise ImageryError(f"licence {site.site_id}: no acquisitions between {start or 'the start'} and {end or 'the end'}")
    return analyse_cube(site, cube, settings, works)
