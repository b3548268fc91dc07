"""The land cover of the metric biomes (every domain but ``classic``; see
:mod:`gmsense.sources.synthetic._biomes`).

The same ingredients as the classic landscape (:func:`gmsense.sources.synthetic._landscape.build_landscape`),
in the biome's amounts and with spatial scales in metres, so a 30 m scene shows the same world as a
10 m one: forest and grassland from a smooth random field (plus sparse shrubs, and meadows above the
tree line on a DEM), fields (blocks outside the licence, or a grid over the whole scene with farm
roads, each field with a crop type and its calendar), lakes with wetland fringes, low areas where
floods go, roads. Covers are rasterised at 2 m and averaged. Field shares are kept sparse (a pixel
touches a few of the hundreds of fields of a cropland plain).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from scipy import sparse
from shapely import affinity
from shapely.geometry import LineString, MultiLineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.sources.synthetic._biomes import Biome
from gmsense.sources.synthetic._landscape import (
    FIELD_GAP_M,
    ROAD_WIDTH_M,
    Field,
    Landscape,
    _field_block,
    _road_line,
    blob,
    fraction,
    logistic,
    smooth_noise,
)
from gmsense.sources.synthetic._terrain import make_terrain

FINE_PIXEL_M = 2.0  # covers and events are rasterised at this size and averaged to the pixel
FARM_ROAD_WIDTH_M = (4.0, 6.0)
TREELINE_QUANTILE = 0.88  # share of the DEM below the tree line (meadows above)
LAPSE_DAYS_PER_100M = 2.5  # green-up later and senescence earlier per 100 m of height
FIELD_SKIP_P = 0.08  # grid cells left as natural cover (shelterbelts, meadows, farmsteads)


def subpixel_for(resolution_m: float) -> int:
    """Sub-pixels per pixel side so that they are about :data:`FINE_PIXEL_M` wide."""
    return max(1, round(resolution_m / FINE_PIXEL_M))


def field_shares(geoms: list[BaseGeometry], shape: tuple[int, int], transform: Affine,
                 subpixel: int) -> sparse.csr_matrix:
    """Share of each pixel covered by each of the disjoint ``geoms``: a sparse (n, y * x) matrix,
    rasterised once at 1/``subpixel`` of the pixel."""
    n_pix = shape[0] * shape[1]
    if not geoms:
        return sparse.csr_matrix((0, n_pix), dtype="float32")
    fine = rasterize([(g, k + 1) for k, g in enumerate(geoms)], out_shape=(shape[0] * subpixel, shape[1] * subpixel),
                     transform=transform @ Affine.scale(1 / subpixel), dtype="int32")
    blocks = fine.reshape(shape[0], subpixel, shape[1], subpixel).transpose(0, 2, 1, 3).reshape(n_pix, -1)
    pix, _ = np.nonzero(blocks)
    labels = blocks[blocks > 0].astype("int64")
    keys, counts = np.unique(labels * n_pix + pix, return_counts=True)
    return sparse.csr_matrix(((counts / subpixel**2).astype("float32"), (keys // n_pix - 1, keys % n_pix)),
                             shape=(len(geoms), n_pix))


def _field_grid(region: BaseGeometry, rng: np.random.Generator, sizes: tuple[tuple[float, float], tuple[float, float]],
                ) -> tuple[list[BaseGeometry], list[LineString]]:
    """Fields tiling ``region`` in a slightly rotated grid, and farm roads along every few grid lines."""
    minx, miny, maxx, maxy = region.bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    half = np.hypot(maxx - minx, maxy - miny) / 2 + 50
    angle = rng.uniform(-8, 8)

    def edges(centre: float, size: tuple[float, float]) -> np.ndarray:
        out = [centre - half]
        while out[-1] < centre + half:
            out.append(out[-1] + rng.uniform(*size))
        return np.array(out)

    xs, ys = edges(cx, sizes[0]), edges(cy, sizes[1])
    col_roads, row_roads = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    lines = [LineString([(x, ys[0]), (x, ys[-1])]) for x in xs[int(rng.integers(0, col_roads))::col_roads]]
    lines += [LineString([(xs[0], y), (xs[-1], y)]) for y in ys[int(rng.integers(0, row_roads))::row_roads]]
    skip = rng.random((xs.size - 1, ys.size - 1)) < FIELD_SKIP_P
    fields = []
    for i in range(xs.size - 1):
        for j in range(ys.size - 1):
            if skip[i, j]:
                continue
            rect = affinity.rotate(box(xs[i], ys[j], xs[i + 1], ys[j + 1]), angle, origin=(cx, cy))
            rect = rect.intersection(region)
            if rect.area > 4_000:
                fields.append(rect.buffer(-FIELD_GAP_M / 2))
    lines = [affinity.rotate(line, angle, origin=(cx, cy)).intersection(region) for line in lines]
    return fields, [ln for ln in lines if isinstance(ln, LineString) and ln.length > 50]


def _point_away(region: BaseGeometry, avoid: BaseGeometry, margin: float, rng: np.random.Generator,
                tries: int = 200) -> Point | None:
    """A random point at least ``margin`` metres inside ``region`` and outside ``avoid``; None if none is found."""
    inner = region.buffer(-margin)
    if inner.is_empty:
        return None
    minx, miny, maxx, maxy = inner.bounds
    for _ in range(tries):
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if inner.contains(p) and not avoid.contains(p):
            return p
    return None


def _lowest_point(terrain: object, transform: Affine, region: BaseGeometry, avoid: BaseGeometry,
                  margin: float) -> Point | None:
    """The lowest pixel centre of the DEM at least ``margin`` inside ``region`` and outside ``avoid``."""
    dem = terrain.dem  # type: ignore[attr-defined]
    order = np.argsort(dem, axis=None)
    rows, cols = np.unravel_index(order, dem.shape)
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    ok = shapely.contains_xy(region.buffer(-margin), xs, ys) & ~shapely.contains_xy(avoid, xs, ys)
    hits = np.flatnonzero(ok)
    return Point(xs[hits[0]], ys[hits[0]]) if hits.size else None


def build_world(region: BaseGeometry, licence: BaseGeometry, shape: tuple[int, int], transform: Affine,
                years: np.ndarray, rng: np.random.Generator, biome: Biome, resolution_m: float,
                latitude: float) -> Landscape:
    """Draw the land cover of a scene of ``biome`` over ``region`` (scene CRS) for the given years."""
    px = 10.0 / resolution_m  # the classic landscape's smoothing scales are pixels at 10 m
    sub = subpixel_for(resolution_m)
    terrain = make_terrain(shape, resolution_m, biome.relief_m, latitude, rng) if biome.relief_m > 0 else None
    road_lines = [_road_line(region, rng) for _ in range(biome.roads)]
    roads = [line.buffer(rng.uniform(*ROAD_WIDTH_M) / 2, cap_style="flat") for line in road_lines]
    blocks: list[BaseGeometry] = []
    if biome.field_layout == "grid":
        blocks, farm_lines = _field_grid(region, rng, biome.field_size_m)
        roads += [line.buffer(rng.uniform(*FARM_ROAD_WIDTH_M) / 2, cap_style="flat") for line in farm_lines]
        road_lines += farm_lines
    elif biome.field_layout == "corner":
        placed = 0
        for corner in rng.permutation(4):  # the first corners with room for fields outside the licence
            block = _field_block(region, licence, int(corner), rng, biome.field_size_m) if placed < biome.field_blocks \
                else []
            blocks += block
            placed += bool(block)

    lakes, wets = [], []
    for _ in range(biome.lakes):
        r_lake, r_wet = rng.uniform(*biome.lake_radius_m), rng.uniform(*biome.wetland_radius_m)
        centre = _point_away(region, unary_union([licence.buffer(r_wet * 0.6), *[w.buffer(r_wet) for w in wets]]),
                             min(r_wet * 0.5, 150.0), rng)
        if centre is None:
            continue
        lakes.append(blob(centre, r_lake, rng, roughness=0.25).difference(licence.buffer(30)))
        wets.append(blob(centre, r_wet, rng, roughness=0.3).difference(licence.buffer(30)))
    water, wet = unary_union(lakes) if lakes else Polygon(), unary_union(wets) if wets else Polygon()
    lows = []
    for k in range(biome.low_areas):
        radius = rng.uniform(*biome.low_radius_m)
        avoid = unary_union([licence.buffer(radius), wet.buffer(20), *lows])
        centre = None
        if terrain is not None:  # the valley floor
            centre = _lowest_point(terrain, transform, region, avoid, radius)
        elif k < len(wets):  # beside a wetland
            c, reach = wets[k].centroid, np.sqrt(wets[k].area / np.pi) + radius
            for direction in rng.uniform(0, 2 * np.pi, 12):
                p = Point(c.x + reach * np.cos(direction), c.y + reach * np.sin(direction))
                if region.buffer(-radius).contains(p) and not avoid.contains(p):
                    centre = p
                    break
        if centre is None:
            centre = _point_away(region, avoid, radius, rng)
        if centre is None:
            continue
        low = blob(centre, radius, rng).difference(wet).difference(licence.buffer(20)).intersection(region)
        if low.area > 1_000:
            lows.append(low)
    low_all = unary_union(lows) if lows else Polygon()
    road = unary_union(roads).difference(wet) if roads else Polygon()
    field_geoms = [f.difference(road.buffer(3)).difference(wet.buffer(10)).difference(low_all.buffer(10))
                   for f in blocks]
    field_geoms = [f for f in field_geoms if f.area > 3_000]
    fields = []
    for g in field_geoms:
        crop = biome.crops[int(rng.integers(len(biome.crops)))]
        fields.append(Field(g, float(rng.uniform(*crop.sow_doy)), float(rng.uniform(*crop.harvest_doy)),
                            float(rng.uniform(*crop.peak)), crop.name))

    water_f = fraction(water, shape, transform, sub)
    wetland_f = fraction(wet.difference(water), shape, transform, sub)
    road_f = fraction(road, shape, transform, sub)
    low_f = fraction(low_all, shape, transform, sub)
    shares = field_shares(field_geoms, shape, transform, sub)
    crop_total = np.asarray(shares.sum(axis=0)).reshape(shape)
    rest = np.clip(1 - water_f - wetland_f - road_f - crop_total, 0, 1)
    grass_share = logistic((smooth_noise(shape, 12 * px, rng) - biome.grass_threshold) / 0.12)
    height = np.zeros(shape)
    if terrain is not None:
        height = terrain.dem - terrain.dem.mean()
        treeline = np.quantile(terrain.dem, TREELINE_QUANTILE)
        grass_share = np.maximum(grass_share, logistic((terrain.dem - treeline) / 25))
    grass_share = np.maximum(grass_share, low_f)  # low areas are wet meadow
    forest_share = 1 - grass_share
    shrub = None
    if biome.shrub_share > 0:
        density = biome.shrub_share * np.clip(0.5 + 0.5 * smooth_noise(shape, 3 * px, rng), 0, 1)
        shrub = (rest * grass_share * density).astype("float32")
        grass_share = grass_share * (1 - density)
    veg_max = biome.grass_vigour * grass_share + biome.forest_vigour * forest_share
    veg_max = veg_max + 0.04 * smooth_noise(shape, 3 * px, rng)
    lapse = LAPSE_DAYS_PER_100M * height / 100
    greenup = biome.greenup_doy + biome.grass_greenup_delay * grass_share + 4 * smooth_noise(shape, 8 * px, rng) + lapse
    senescence = (biome.senescence_doy - biome.grass_senescence_advance * grass_share
                  + 4 * smooth_noise(shape, 8 * px, rng) - lapse)

    year_list = [int(y) for y in years]
    drought_year = int(rng.choice(year_list[1:])) if len(year_list) > 1 else year_list[0]
    year_shift = {y: float(rng.normal(0, 4)) for y in year_list}
    year_vigour = {y: (rng.normal(0, 0.02) + 0.015 * smooth_noise(shape, 15 * px, rng)).astype("float32")
                   for y in year_list}
    field_jitter = {y: rng.normal(0, 4, len(fields)) + rng.normal(0, 3) for y in year_list}
    f32 = np.float32
    lines = [ln for ln in road_lines if not ln.is_empty]
    return Landscape(
        shape=shape, water=water_f.astype(f32), wetland=wetland_f.astype(f32), road=road_f.astype(f32),
        crop=np.zeros((0, *shape), dtype=f32), grass=(rest * grass_share).astype(f32),
        forest=(rest * forest_share).astype(f32), veg_max=veg_max.astype(f32), greenup=greenup.astype(f32),
        senescence=senescence.astype(f32), fields=fields, field_jitter=field_jitter, year_shift=year_shift,
        year_vigour=year_vigour, drought_year=drought_year,
        geometries={"water": water, "wetland": wet.difference(water), "low_area": low_all, "road": road,
                    "fields": unary_union(field_geoms) if field_geoms else Polygon(),
                    "road_lines": MultiLineString(lines) if lines else MultiLineString()},
        biome=biome, shrub=shrub, crop_shares=shares, low_areas=lows, terrain=terrain)


def shift_season(land: Landscape, days: float) -> Landscape:
    """``land`` with green-up, senescence, sowing and harvest ``days`` later (earlier if negative),
    and its snow season shifted with them."""
    if not days:
        return land
    fields = [replace(f, sow_doy=f.sow_doy + days, harvest_doy=f.harvest_doy + days) for f in land.fields]
    return replace(land, greenup=(land.greenup + days).astype("float32"),
                   senescence=(land.senescence + days).astype("float32"), fields=fields, season_shift=float(days))
