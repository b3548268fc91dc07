"""Large licences in tiles: analyse one tile, then put a licence's tiles back together.

A tile (gmsense.batch.planner.Tile) is read with a margin; its analysis keeps the patches whose
representative point lies in its core, so each patch is kept by one tile, seen whole when it
reaches less than the margin beyond the core. Pieces of one patch kept by neighbouring tiles
(a patch longer than the margin, cut by a tile edge) are joined again. The rules run once on
the whole licence, in :func:`merge_tiles`, after every tile has come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyproj
from shapely import STRtree, wkt
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.batch.planner import Tile
from gmsense.batch.request import ScanRequest
from gmsense.config import Settings
from gmsense.errors import ImageryError
from gmsense.flags import evaluate
from gmsense.geo.sites import WGS84, ApprovedWork, Site, reproject_geometry
from gmsense.pipeline import analyse_cube
from gmsense.records import PatchRecord, SiteResult, same_disturbance

#: Pieces of one patch from neighbouring tiles closer than this are joined, metres (a pixel).
JOIN_DISTANCE_M = 10.0


@dataclass
class TileResult:
    """The patches one tile answers for, and what it saw (picklable)."""

    site_id: str
    tile: Tile
    patches: list[PatchRecord] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def analyse_tile(site: Site, tile: Tile, request: ScanRequest) -> TileResult:
    """Load ``tile.read`` of the licence from the request's source and keep the patches of ``tile.core``
    (the rules wait for the whole licence: :func:`merge_tiles`)."""
    cube = request.source.load(site, tile.read, request.start, request.end)
    if cube.sizes.get("time", 0) == 0:
        raise ImageryError(f"licence {site.site_id} tile {tile.label}: no acquisitions between "
                           f"{request.start or 'the start'} and {request.end or 'the end'}")
    result = analyse_cube(site, cube, request.settings, None, request.classifier)
    crs = pyproj.CRS.from_user_input(result.stats["crs"])
    core = reproject_geometry(tile.core, site.crs, crs)
    kept = [p for p in result.patches if core.contains(wkt.loads(p.local_wkt).representative_point())]
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


def merge_tiles(site: Site, tiles: list[TileResult], settings: Settings,
                works: list[ApprovedWork] | None = None) -> SiteResult:
    """The licence's result from all its tiles: patches joined across tile edges, then the rules."""
    if not tiles:
        raise ValueError(f"licence {site.site_id}: no tiles to merge")
    crs = pyproj.CRS.from_user_input(tiles[0].stats["crs"])
    local = site.to_crs(crs)
    region = local.buffered(settings.sites.buffer_m)
    ordered = sorted(tiles, key=lambda t: t.tile.index)
    records = [p for t in ordered for p in t.patches]
    owner = [t.tile.index for t in ordered for _ in t.patches]
    cores = {t.tile.index: reproject_geometry(t.tile.core, site.crs, crs) for t in ordered}
    geoms = [wkt.loads(p.local_wkt) for p in records]
    # Join pieces of one patch cut by a tile edge: kept by different tiles, close together, each
    # reaching into the other's core, and of one disturbance (a later disturbance of the same
    # ground is a patch of its own). Distinct patches inside one tile are never joined.
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if records:
        tree = STRtree(geoms)
        left, right = tree.query(geoms, predicate="dwithin", distance=JOIN_DISTANCE_M)
        for i, j in zip(left.tolist(), right.tolist(), strict=True):
            if i < j and owner[i] != owner[j] and geoms[i].intersects(cores[owner[j]].buffer(JOIN_DISTANCE_M)) \
                    and geoms[j].intersects(cores[owner[i]].buffer(JOIN_DISTANCE_M)) \
                    and same_disturbance(records[i].first_detected, records[j].first_detected):
                parent[root(j)] = root(i)
    groups: dict[int, list[PatchRecord]] = {}
    for i, record in enumerate(records):
        groups.setdefault(root(i), []).append(record)
    joined = [_join(pieces, crs, region, local.geometry) for pieces in groups.values()]
    joined.sort(key=lambda p: (p.first_detected, p.local_wkt))
    geometries = [wkt.loads(p.local_wkt) for p in joined]
    stats = _merge_stats([t.stats for t in tiles])
    local_works = [w.to_crs(crs) for w in works] if works is not None else None
    flags = evaluate(local, joined, geometries, stats["last_date"], settings.rules, local_works)
    return SiteResult(site.site_id, joined, flags, stats)


def _merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    weights = [p.get("tile_area_m2", 1.0) for p in parts]
    total = sum(weights) or 1.0
    return {
        "n_dates": max(p["n_dates"] for p in parts),
        "n_season_dates": max(p["n_season_dates"] for p in parts),
        "clear_share": round(sum(p["clear_share"] * w for p, w in zip(parts, weights, strict=True)) / total, 3),
        "crs": parts[0]["crs"],
        "first_date": min(p["first_date"] for p in parts),
        "last_date": max(p["last_date"] for p in parts),
        "last_acquisition": max(p["last_acquisition"] for p in parts),
        "tiles": len(parts),
    }
