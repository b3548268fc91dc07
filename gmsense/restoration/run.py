"""``gmsense restoration run``: every register polygon in the store over the imagery, status rows stored.

The imagery is what the local source reads (gmsense.sources.local): best a folder of annual
composites ``YYYY.tif``; a folder of dated acquisitions or a NetCDF/Zarr cube works too (each
pixel's median growing-season NDVI per year stands for that year). Each polygon is read with its
reference ring around it (``ring_outer_m`` plus one 30 m margin), in the imagery's CRS, and a pit
without a vegetated ring again with its region (``land_cover_radius_m``) for its land-cover
reference; with a land-cover map (``restoration.land_cover``, ``restoration run --land-cover``) its
classes are read onto the same grid. Each polygon's rows are replaced in one transaction, so a
failed polygon leaves its old rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from rasterio.features import geometry_mask
from shapely import STRtree, wkt

from gmsense import __version__
from gmsense.config import Settings
from gmsense.cube.ops import growing_season, masked_index, season_year
from gmsense.errors import ImageryError, InputError
from gmsense.geo.grid import grid_transform
from gmsense.geo.register import RegisterPolygon
from gmsense.geo.sites import WGS84, Site, reproject_geometry
from gmsense.records import RestorationRecord
from gmsense.restoration.land_cover import LandCoverMap
from gmsense.restoration.status import (
    Measures,
    annual_ndvi,
    classify,
    exclusion,
    hold_after_last_observation,
    masks,
    measure,
    outside,
    repeated_years,
    restored_shares,
)
from gmsense.store import RegisterRow, Store

MARGIN_M = 30.0  # read this much beyond the reference ring, metres


def register_polygon(row: RegisterRow) -> RegisterPolygon:
    """A stored register row as a :class:`RegisterPolygon` in its local UTM zone."""
    return RegisterPolygon(row.register_id, row.kind, wkt.loads(row.local_wkt),
                           pyproj.CRS.from_user_input(row.local_crs), dict(row.attrs or {}))


def analyse_polygon(polygon: RegisterPolygon, near: Callable[[float], list[RegisterPolygon]], source: Any,
                    settings: Settings, land_cover: LandCoverMap | None = None) -> list[RestorationRecord]:
    """The yearly records of one polygon (``near(metres)``: the register polygons within that distance
    of it, itself included, left out of its reference ring and of its region)."""
    s = settings.restoration
    reach = s.ring_outer_m + MARGIN_M
    found, polygon_mask, years, date_years, images = _measured(polygon, near(reach), source, settings, land_cover,
                                                               reach)
    if not found.vegetated_ring:  # the land-cover fallback: read the region around the pit
        reach = max(s.land_cover_radius_m, s.ring_outer_m) + MARGIN_M
        found, polygon_mask, years, date_years, images = _measured(polygon, near(reach), source, settings,
                                                                   land_cover, reach)
    trajectory = classify(found.ratio, s)
    shares = restored_shares(found.pixel_ratio, trajectory.statuses, s, polygon_mask)
    trajectory, shares = hold_after_last_observation(trajectory, shares, found.observed_share)
    out = []
    for k, year in enumerate(years):
        names = [str(i) for i in images[date_years == year] if i is not None]
        image_id = "+".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "") if names else None
        out.append(RestorationRecord(
            polygon.register_id, int(year), trajectory.statuses[k], _num(found.polygon_ndvi[k]),
            _num(found.reference_ndvi[k]), _num(found.ratio[k]), _num(shares[k]),
            int(found.n_pixels[k]), int(found.n_reference[k]), trajectory.events[k], image_id,
            observed_share=_num(found.observed_share[k]), reference_source=found.reference_source,
            soil_ndvi=None if found.soil_ndvi is None else _num(found.soil_ndvi)))
    return out


def _measured(polygon: RegisterPolygon, neighbours: list[RegisterPolygon], source: Any, settings: Settings,
              land_cover: LandCoverMap | None, reach_m: float
              ) -> tuple[Measures, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The polygon's :class:`Measures` from the imagery within ``reach_m`` of it (beyond the ring: the
    region a pit without a vegetated ring takes its land-cover reference from), its pixel mask, the
    years, each date's year and its image id."""
    s = settings.restoration
    site = Site(polygon.register_id, polygon.geometry, polygon.crs, {})
    cube = growing_season(source.load(site, polygon.geometry.buffer(reach_m), None, None), settings.season).load()
    if cube.sizes["time"] == 0:
        raise ImageryError(f"register polygon {polygon.register_id}: the imagery has no growing-season dates")
    crs = pyproj.CRS.from_user_input(cube.rio.crs)
    geometry = reproject_geometry(polygon.geometry, polygon.crs, crs)
    excluded = exclusion([reproject_geometry(n.geometry, n.crs, crs) for n in neighbours], s)
    shape = (cube.sizes["y"], cube.sizes["x"])
    transform = grid_transform(cube)
    inside, ring = masks(geometry, excluded, shape, transform, s)
    allowed = outside(excluded, shape, transform)
    region = None
    if reach_m > s.ring_outer_m + MARGIN_M:
        region = allowed & geometry_mask([geometry.buffer(s.land_cover_radius_m)], out_shape=shape,
                                         transform=transform, invert=True)
    classes = None if land_cover is None else land_cover.read(shape, transform, crs)
    ndvi = masked_index(cube, "ndvi").transpose("time", "y", "x").values
    date_years = season_year(cube["time"].values, settings.season)
    years, yearly = annual_ndvi(ndvi, date_years)
    yearly[repeated_years(yearly)] = np.nan
    found = measure(yearly, inside, ring, s, transform, land_cover=classes, allowed=allowed, region=region)
    images = cube["image_id"].values if "image_id" in cube.coords else np.array([None] * date_years.size)
    return found, inside, years, date_years, images


def run_restoration(store: Store, imagery: Path, settings: Settings,
                    progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Analyse every register polygon in ``store`` over ``imagery`` (with the land-cover map of
    ``restoration.land_cover``, if set); returns the run's summary (``run_id``, ``polygons``, ``done``,
    ``failed``: register_id -> error, ``years``, ``reference_sources``: source -> polygons)."""
    from gmsense.sources import get_source

    polygons = [register_polygon(r) for r in store.register_rows()]
    if not polygons:
        raise InputError(f"the store {store.location} holds no register polygons: run gmsense register import FILE")
    s = settings.restoration
    land_cover = None if s.land_cover is None else LandCoverMap(s.land_cover)
    source = get_source("local", settings, imagery)
    tree = STRtree([p.geometry_wgs84 for p in polygons])
    run_id = store.begin_restoration_run(str(Path(imagery).resolve()), s.model_dump(), __version__)
    failed: dict[str, str] = {}
    years: set[int] = set()
    sources: dict[str, int] = {}
    try:
        for n, polygon in enumerate(polygons, start=1):
            def near(metres: float, polygon: RegisterPolygon = polygon) -> list[RegisterPolygon]:
                reach = reproject_geometry(polygon.geometry.buffer(metres), polygon.crs, WGS84)
                return [polygons[i] for i in tree.query(reach)]

            try:
                records = analyse_polygon(polygon, near, source, settings, land_cover)
            except ImageryError as exc:
                failed[polygon.register_id] = str(exc)
            else:
                store.save_restoration(run_id, polygon.register_id, records)
                years.update(r.year for r in records)
                key = (records[0].reference_source if records else None) or "none"
                sources[key] = sources.get(key, 0) + 1
            if progress is not None:
                progress(polygon.register_id, n, len(polygons))
    finally:
        if land_cover is not None:
            land_cover.close()
    summary = {"run_id": run_id, "polygons": len(polygons), "done": len(polygons) - len(failed), "failed": failed,
               "years": [min(years), max(years)] if years else [], "reference_sources": dict(sorted(sources.items()))}
    store.finish_restoration_run(run_id, summary)
    return summary


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 4)
