"""Large licences in tiles: analyse one tile, then put a licence's tiles back together.

Every tile sees the licence's scene statistics (gmsense.detect.context), gathered from all its
tiles in a first pass (:func:`tile_sample`, merged by gmsense.detect.context.merge_samples), so
the result does not depend on how the licence is cut. A tile (gmsense.batch.planner.Tile) is read with a margin; its
analysis keeps the patches whose representative point lies in its core, so each patch is kept
by one tile, seen whole when it reaches less than the margin beyond the core. Pieces of one
patch kept by neighbouring tiles (a patch longer than the margin, cut by a tile edge) are
joined again. The rules run once on the whole licence, in :func:`merge_tiles`, after every tile
has come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyproj
import xarray as xr
from shapely import STRtree, wkt
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.batch.planner import Tile
from gmsense.batch.request import ScanRequest
from gmsense.config import SeasonSettings, Settings
from gmsense.cube.ops import season_year
from gmsense.detect.context import SceneContext, SceneSample, merge_samples
from gmsense.errors import NoObservationsError
from gmsense.flags import evaluate
from gmsense.geo.coverage import coverage_stats, merge_counts, observed_counts
from gmsense.geo.grid import grid_transform
from gmsense.geo.layers import LayerSet
from gmsense.geo.sites import WGS84, ApprovedWork, Site, reproject_geometry
from gmsense.pipeline import analyse_cube, licence_sample, season_index
from gmsense.records import PatchRecord, SiteResult

#: Pieces of one patch from neighbouring tiles closer than this are joined, metres: they overlap or
#: touch (tiles' reads overlap), so well under a pixel; patches a pixel apart stay apart, as whole.
JOIN_DISTANCE_M = 0.5


@dataclass
class TileResult:
    """The patches one tile answers for, and what it saw (picklable)."""

    site_id: str
    tile: Tile
    patches: list[PatchRecord] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _owns(core: BaseGeometry, point: Point) -> bool:
    """Whether the tile of box ``core`` answers for a patch with representative ``point``: half-open
    bounds, so a point on the edge between two cores belongs to exactly one."""
    minx, miny, maxx, maxy = core.bounds
    return minx <= point.x < maxx and miny <= point.y < maxy


def _load_tile(site: Site, tile: Tile, request: ScanRequest) -> xr.Dataset:
    cube = request.source.load(site, tile.read, request.start, request.end)
    if cube.sizes.get("time", 0) == 0:
        raise NoObservationsError(f"licence {site.site_id} tile {tile.label}: no acquisitions between "
                                  f"{request.start or 'the start'} and {request.end or 'the end'}")
    return cube


@dataclass
class LoadedTile:
    """A tile's imagery, read once and held on the worker that read it from the first pass to the
    analysis: for licences cut only so that idle workers share them (gmsense.batch.planner
    :func:`~gmsense.batch.planner.spread_over_slots`), which fit the memory budget whole.
    ``prepared``: the growing season as the detector sees it (gmsense.pipeline.season_index), so the
    analysis does not mask it again; ``no_data``: why the tile has no imagery (then both are None)."""

    cube: xr.Dataset | None  # lazy for a lazy source: only ``prepared`` holds pixels
    prepared: tuple[Any, ...] | None
    no_data: str | None = None


def load_tile(site: Site, tile: Tile, request: ScanRequest) -> LoadedTile:
    """Read the growing season of ``tile.read`` into memory and mask it (see :class:`LoadedTile`;
    a lazy cube's other dates are not read: the analysis needs only their times)."""
    try:
        cube = _load_tile(site, tile, request)
    except NoObservationsError as exc:
        return LoadedTile(None, None, str(exc))
    return LoadedTile(cube, season_index(cube, request.settings.for_cube(cube.attrs), site.site_id))


def tile_sample(site: Site, tile: Tile, request: ScanRequest, loaded: LoadedTile | None = None) -> SceneSample:
    """The first pass over a tile: its share of the licence's scene sample (the lattice points of
    its core; gmsense.detect.context). A tile without observations gives an empty sample.
    ``loaded``: the tile already read (:func:`load_tile`); None reads it here."""
    empty = SceneSample(np.empty(0, dtype="datetime64[ns]"), np.empty((0, 0), dtype="float32"))
    if loaded is not None:
        if loaded.no_data is not None:
            return empty
        cube, ndvi = loaded.cube, loaded.prepared[3]
    else:
        try:
            cube = _load_tile(site, tile, request)
            _source, _dates, _season, ndvi = season_index(cube, request.settings, site.site_id)
        except NoObservationsError:
            return empty
    crs = pyproj.CRS.from_user_input(cube.rio.crs)
    region = site.to_crs(crs).buffered(request.settings.sites.buffer_m)
    return licence_sample(ndvi, region, reproject_geometry(tile.core, site.crs, crs))


def analyse_tile(site: Site, tile: Tile, request: ScanRequest, context: SceneContext | None = None, *,
                 threads: int | None = None, loaded: LoadedTile | None = None) -> TileResult:
    """Load ``tile.read`` of the licence from the request's source and keep the patches of ``tile.core``
    (the rules wait for the whole licence: :func:`merge_tiles`). ``context``: the licence's scene
    statistics (the tiles' :func:`tile_sample` merged by
    gmsense.detect.context.merge_samples); without it the tile's own are used, and the result then
    depends on how the licence was cut. A tile without observations (outside the imagery, all
    no-data or cloud) answers no patches and says so in ``stats["no_data"]``. ``threads``: see
    gmsense.pipeline.analyse_cube. ``loaded``: the tile already read (:func:`load_tile`); None
    reads it here."""
    cube = None
    try:
        if loaded is None:
            cube = _load_tile(site, tile, request)
        elif loaded.no_data is not None:
            raise NoObservationsError(loaded.no_data)
        else:
            cube = loaded.cube
        result = analyse_cube(site, cube, request.settings, None, request.classifier, context=context,
                              coverage_within=tile.core, threads=threads,
                              prepared=None if loaded is None else loaded.prepared)
    except NoObservationsError as exc:
        stats: dict[str, Any] = {"no_data": str(exc), "tile_area_m2": float(tile.core.area)}
        if cube is not None:  # its pixels count as unobserved in the licence's coverage
            crs = pyproj.CRS.from_user_input(cube.rio.crs)
            local = site.to_crs(crs)
            stats.update(observed_counts(np.zeros((cube.sizes["y"], cube.sizes["x"]), dtype=bool), grid_transform(cube),
                                         local.geometry, local.buffered(request.settings.sites.buffer_m),
                                         reproject_geometry(tile.core, site.crs, crs)))
        return TileResult(site.site_id, tile, [], stats)
    crs = pyproj.CRS.from_user_input(result.stats["crs"])
    core = reproject_geometry(tile.core, site.crs, crs)
    kept = [p for p in result.patches if _owns(core, wkt.loads(p.local_wkt).representative_point())]
    stats = {**result.stats, "tile_area_m2": float(tile.core.area)}
    return TileResult(site.site_id, tile, kept, stats)


def _join(pieces: list[PatchRecord], crs: pyproj.CRS, region: BaseGeometry, licence: BaseGeometry) -> PatchRecord:
    """One record for pieces of one patch: the union's geometry and areas, the earliest dates,
    the largest piece's class, metrics and recovery."""
    if len(pieces) == 1:
        return pieces[0]
    main = max(pieces, key=lambda p: p.area_m2)
    geom = unary_union([wkt.loads(p.local_wkt) for p in pieces]).intersection(region)
    outside = geom.difference(licence).area
    return PatchRecord(
        site_id=main.site_id, geometry_wkt=reproject_geometry(geom, crs, WGS84).wkt, local_wkt=geom.wkt,
        local_crs=main.local_crs, disturbance_class=main.disturbance_class, confidence=main.confidence,
        first_detected=min(p.first_detected for p in pieces), confirmed_on=min(p.confirmed_on for p in pieces),
        last_seen=max(p.last_seen for p in pieces), area_m2=round(float(geom.area), 1),
        inside_licence=bool(outside < 1e-6), area_outside_m2=round(float(outside), 1),
        recovery_status=main.recovery_status, recovery_ratio=main.recovery_ratio,
        metrics={**main.metrics, "joined_from_tiles": len(pieces)}, recovery=main.recovery,
        natural_agent=main.natural_agent)


def _season(record: PatchRecord, season: SeasonSettings) -> int:
    return int(season_year(np.datetime64(record.first_detected), season))


def merge_tiles(site: Site, tiles: list[TileResult], settings: Settings,
                works: list[ApprovedWork] | None = None, layers: LayerSet | None = None) -> SiteResult:
    """The licence's result from all its tiles: patches joined across tile edges, then the rules
    (``layers``: the protected land around the licence, gmsense.geo.layers)."""
    if not tiles:
        raise ValueError(f"licence {site.site_id}: no tiles to merge")
    counted = [t.stats for t in tiles]
    empty = [t for t in tiles if "no_data" in t.stats]
    if len(empty) == len(tiles):
        raise NoObservationsError(f"licence {site.site_id}: none of its {len(tiles)} tiles has a clear "
                                  f"growing-season observation ({empty[0].stats['no_data']})")
    tiles = [t for t in tiles if "no_data" not in t.stats]
    crs = pyproj.CRS.from_user_input(tiles[0].stats["crs"])
    local = site.to_crs(crs)
    region = local.buffered(settings.sites.buffer_m)
    ordered = sorted(tiles, key=lambda t: t.tile.index)
    records = [p for t in ordered for p in t.patches]
    owner = [t.tile.index for t in ordered for _ in t.patches]
    cores = {t.tile.index: reproject_geometry(t.tile.core, site.crs, crs) for t in ordered}
    geoms = [wkt.loads(p.local_wkt) for p in records]
    # Join pieces of one patch cut by a tile edge: kept by different tiles, close together, each
    # reaching into the other's core, and confirmed in the same season (a patch is the touching
    # pixels of one season: gmsense.detect.patches). Distinct patches inside one tile are never joined.
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if records:
        tree = STRtree(geoms)
        seasons = [_season(r, settings.season) for r in records]
        left, right = tree.query(geoms, predicate="dwithin", distance=JOIN_DISTANCE_M)
        for i, j in zip(left.tolist(), right.tolist(), strict=True):
            if i < j and owner[i] != owner[j] and seasons[i] == seasons[j] \
                    and geoms[i].intersects(cores[owner[j]].buffer(JOIN_DISTANCE_M)) \
                    and geoms[j].intersects(cores[owner[i]].buffer(JOIN_DISTANCE_M)):
                parent[root(j)] = root(i)
    groups: dict[int, list[PatchRecord]] = {}
    for i, record in enumerate(records):
        groups.setdefault(root(i), []).append(record)
    joined = [_join(pieces, crs, region, local.geometry) for pieces in groups.values()]
    joined.sort(key=lambda p: (p.first_detected, p.local_wkt))
    geometries = [wkt.loads(p.local_wkt) for p in joined]
    stats = _merge_stats([t.stats for t in tiles], counted, settings.sites.min_coverage)
    if empty:
        stats["tiles"] += len(empty)
        stats["tiles_without_data"] = [f"{t.tile.label}: {t.stats['no_data']}" for t in
                                       sorted(empty, key=lambda t: t.tile.index)]
    local_works = [w.to_crs(crs) for w in works] if works is not None else None
    local_layers = layers.localised(crs, region) if layers else None
    flags = evaluate(local, joined, geometries, stats["last_date"], settings.rules, local_works, settings.season,
                     local_layers, settings.recovery)
    return SiteResult(site.site_id, joined, flags, stats)


def _merge_stats(parts: list[dict[str, Any]], counted: list[dict[str, Any]], min_coverage: float) -> dict[str, Any]:
    """The licence's stats from its tiles' with observations (``parts``); coverage from the pixel
    counts of every tile's core (``counted``, those without observations too; gmsense.geo.coverage),
    warned about below ``min_coverage`` (0..1)."""
    weights = [p.get("tile_area_m2", 1.0) for p in parts]
    total = sum(weights) or 1.0
    return {
        "n_dates": max(p["n_dates"] for p in parts),
        "n_season_dates": max(p["n_season_dates"] for p in parts),
        "clear_share": round(sum(p["clear_share"] * w for p, w in zip(parts, weights, strict=True)) / total, 3),
        "crs": parts[0]["crs"],
        **({"resolution_m": parts[0]["resolution_m"]} if "resolution_m" in parts[0] else {}),
        "first_date": min(p["first_date"] for p in parts),
        "last_date": max(p["last_date"] for p in parts),
        "last_acquisition": max(p["last_acquisition"] for p in parts),
        "tiles": len(parts),
        **coverage_stats(merge_counts(counted), min_coverage),
        **{key: p[key] for p in parts[:1] for key in ("imagery_warning",) if key in p},
    }


def analyse_in_tiles(site: Site, tiles: list[Tile], request: ScanRequest) -> SiteResult:
    """One licence cut into ``tiles``, in this process: what a scan does with its tiles (first pass,
    context, tiles, merge), one after the other; for checks and notebooks."""
    context = merge_samples([tile_sample(site, tile, request) for tile in tiles], request.settings)
    return merge_tiles(site, [analyse_tile(site, tile, request, context) for tile in tiles], request.settings,
                       request.works_of(site.site_id), request.layers_of(site))
