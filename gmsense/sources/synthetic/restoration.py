"""A synthetic restoration world: a register of legacy mine land over a vegetated landscape, with dated
restoration works, annual Landsat-like composites and the truth per polygon per year.

The measuring stick of issue 19 (``gmsense bench restoration``). It lives with the sources, before the
restoration stage, so it cannot read the status classifier (:mod:`gmsense.restoration.status`): the
truth follows the issue's definitions on the vegetation the generator plants, not the classifier's
rules on NDVI ratios.

**Landscape.** Voronoi cells of about 3 km2, each one land cover drawn from ``cover_mix`` (forest,
shrubland, grassland; each cell its own peak-season NDVI level within the cover's range), with a
smooth per-pixel texture, per-cover inter-annual variation (and drought years that hit grass hardest),
a few roads and unregistered villages (bare ground nobody restores). Rendered at 10 m and averaged to
30 m (pixels at edges mix), per-pixel noise (``noise``, NDVI units) per year, occasional gaps (NaN):
cloud blobs, and SLC-off-like stripes in 2003-2012.

**Register.** ``polygons`` irregular polygons (radially perturbed, elongated, 1-30 ha log-uniform;
kinds open pit, waste dump, tailings, each with its bare NDVI), at least :data:`MIN_GAP_M` apart.
Each is damaged in a year (60 % before the archive begins) and follows one scenario of
:data:`SCENARIOS`:

- ``planting`` (terracing, topsoil and planting): a greening ramp over 3-8 years to 80-100 % of the
  surrounding cover;
- ``succession`` (natural): starts 1-6 years after damage, 15-35 years to 50-100 %, slow at first;
- ``failure``: works on a date, no greening;
- ``reversion``: a planting ramp to 85-100 %, held 2-6 years, then damaged again (residual cover 0-15 %);
- ``partial``: a planting ramp on 25-70 % of the polygon (a part cut by a straight line), the rest bare;
- ``untreated``: damaged, nothing done.

The vegetation of a part in a year is its cover ``f`` relative to the land cover around it (1 before
damage, 0 when bare; small yearly jitter once greening); its NDVI is ``bare + f (cover - bare)`` with the
pixel's own cover NDVI of that year.

**Truth** per polygon and year (:func:`true_statuses`), with ``F`` the polygon's area-weighted ``f``:

- none before the damage year (intact ground);
- ``restored`` once ``F >= 0.8`` (:data:`RESTORED_COVER`) in two consecutive seasons (the issue's
  definition: vegetation at >= 80 % of the reference of the same land cover nearby), until the
  polygon is damaged again, then ``reverted`` (which it stays);
- ``under_restoration`` during a greening ramp (the years after works began, while the planted
  vegetation is still growing: a sustained greening trend), or at reference for the first season;
- ``damaged`` otherwise (bare, failed works, a stalled partial restoration, untreated).

The true restored area of a polygon in a year is the area of its parts restored by the same rule (a
part's ``f >= 0.8`` in two consecutive seasons, kept until the polygon is damaged again).

Outputs (:func:`write_restoration_world`): ``composites/YYYY.tif`` (bands ``red``, ``nir``, float32,
NaN for gaps), ``register.gpkg`` (the register importer's columns; counties are blocks of the landscape,
cities group counties), ``truth.csv`` (per polygon and year), ``polygons.csv`` (the scenario of each) and
``landcover.tif``: a 30 m land-cover map in CLCD codes (:data:`LAND_COVER_CODES`: forest 2, shrubland 3,
grassland 4; villages and roads 8, impervious; the register's pits 7, barren, as a map made after they
were dug shows them), the majority class of each pixel's 10 m cells. It is exact where a real map is not
(CLCD's overall accuracy is about 80 %), and it says nothing of a cell's NDVI level or of the land under
a pit: it is drawn from the landscape, not from the truth, and uses no random draw (the worlds of a seed
are the same with or without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
from affine import Affine
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

#: Land covers: (lowest, highest) peak-season NDVI of a cell, inter-annual sd, drought factor.
COVERS: dict[str, tuple[float, float, float, float]] = {
    "forest": (0.74, 0.88, 0.015, 0.96),
    "shrubland": (0.58, 0.74, 0.03, 0.90),
    "grassland": (0.45, 0.66, 0.045, 0.82),
}
#: Register kinds drawn, their shares and bare-ground NDVI range.
KIND_BARE: dict[str, tuple[float, float, float]] = {
    "open_pit": (0.45, 0.04, 0.14), "waste_dump": (0.30, 0.08, 0.20), "tailings": (0.25, 0.00, 0.10)}
#: Scenarios and their shares.
SCENARIOS: dict[str, float] = {"planting": 0.35, "succession": 0.15, "failure": 0.15, "reversion": 0.12,
                               "partial": 0.15, "untreated": 0.08}
MEASURES = {"planting": "terracing, topsoil and planting", "succession": "natural succession",
            "failure": "terracing and planting", "reversion": "terracing and planting",
            "partial": "terracing and planting (part)", "untreated": "none"}
RESTORED_COVER = 0.8  # the 80 % of the reference
RESTORED_SEASONS = 2
MIN_GAP_M = 80.0  # between register polygons
FINE_M = 10.0  # rendering resolution; composites average it to ``resolution``
STATUS_NAMES = ("damaged", "under_restoration", "restored", "reverted")
#: Land-cover map codes (CLCD): the covers, bare ground nobody restores, the register's pits.
LAND_COVER_CODES = {"forest": 2, "shrubland": 3, "grassland": 4, "barren": 7, "impervious": 8}


@dataclass(frozen=True)
class WorldSpec:
    """What to draw. ``cover_mix``: land cover -> share of the landscape's cells."""

    polygons: int = 200
    first_year: int = 1995
    last_year: int = 2024
    seed: int = 1001
    cover_mix: tuple[tuple[str, float], ...] = (("forest", 0.45), ("shrubland", 0.25), ("grassland", 0.30))
    resolution: float = 30.0
    noise: float = 0.03
    gap_year_share: float = 0.3  # share of years with cloud-gap blobs
    polygons_per_county: int = 40
    epsg: int = 32652
    origin: tuple[float, float] = (600_000.0, 5_300_000.0)

    @property
    def years(self) -> list[int]:
        return list(range(self.first_year, self.last_year + 1))


@dataclass(frozen=True)
class Ramp:
    """Greening from ``start`` (cover 0) over ``years`` to ``target`` (cover share), shape exponent ``power``."""

    start: int
    years: int
    target: float
    power: float

    def cover(self, year: int) -> float:
        if year <= self.start:
            return 0.0
        return self.target * min((year - self.start) / self.years, 1.0) ** self.power

    def greening(self, year: int) -> bool:
        return self.start < year <= self.start + self.years and self.target > 0.1


@dataclass
class Part:
    """A part of a polygon (share of its area) with its ramp (None: stays bare)."""

    geometry: BaseGeometry
    share: float
    ramp: Ramp | None
    jitter: dict[int, float] = field(default_factory=dict)


@dataclass
class MineLand:
    register_id: str
    kind: str
    scenario: str
    geometry: BaseGeometry
    cover: str  # land cover at its centroid (the reference it is restored to)
    bare_ndvi: float
    damaged: int
    parts: list[Part]
    redamaged: int | None = None
    residual: float = 0.0
    works: int | None = None  # year works were done (failure: no greening)
    county: str = ""
    city: str = ""
    mineral_class: str = "metal"

    def part_cover(self, part: Part, year: int) -> float:
        """``f`` of ``part`` in ``year`` (1 before damage)."""
        if year < self.damaged:
            return 1.0
        if self.redamaged is not None and year >= self.redamaged:
            return self.residual
        value = part.ramp.cover(year) if part.ramp else 0.0
        if value > 0:
            value = float(np.clip(value + part.jitter.get(year, 0.0), 0.0, 1.0))
        return value

    def cover_share(self, year: int) -> float:
        """``F``: the polygon's area-weighted cover in ``year``."""
        return sum(p.share * self.part_cover(p, year) for p in self.parts)

    def greening(self, year: int) -> bool:
        if year < self.damaged or (self.redamaged is not None and year >= self.redamaged):
            return False
        return any(p.ramp is not None and p.ramp.greening(year) for p in self.parts)


def true_statuses(land: MineLand, years: list[int]) -> tuple[list[str | None], list[float]]:
    """The true status and restored area (m2) of ``land`` in each of ``years`` (module docstring)."""
    first = min(land.damaged, years[0])
    state: str | None = None
    parts_restored = [False] * len(land.parts)  # each part restored (as the polygon: kept until lost)
    out: dict[int, tuple[str | None, float]] = {}
    for year in range(first, years[-1] + 1):
        if year < land.damaged:
            out[year] = (None, 0.0)
            continue
        high = land.cover_share(year) >= RESTORED_COVER
        was_high = year - 1 >= land.damaged and land.cover_share(year - 1) >= RESTORED_COVER
        lost = land.redamaged is not None and year >= land.redamaged
        if state in ("restored", "reverted") and lost:
            status = "reverted"
        elif state == "restored" or (high and was_high and not lost):
            status = "restored"
        elif (land.greening(year) or high) and not lost:
            status = "under_restoration"
        else:
            status = "damaged"
        for k, part in enumerate(land.parts):
            reached = (year - 1 >= land.damaged and land.part_cover(part, year) >= RESTORED_COVER
                       and land.part_cover(part, year - 1) >= RESTORED_COVER)
            parts_restored[k] = not lost and (parts_restored[k] or reached)
        area = sum(p.geometry.area for p, done in zip(land.parts, parts_restored, strict=True) if done)
        out[year] = (status, area)
        state = status
    return [out[y][0] for y in years], [out[y][1] for y in years]


# --------------------------------------------------------------------------------------------
# drawing


def _irregular(rng: np.random.Generator, centre: tuple[float, float], area_m2: float) -> Polygon:
    """A star-shaped irregular polygon of ``area_m2`` around ``centre``."""
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, 7):
        radius += rng.normal(0, 0.22 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.clip(radius, 0.45, None)
    aspect = rng.uniform(1.0, 2.2)
    xs, ys = radius * np.cos(theta) * aspect, radius * np.sin(theta)
    shape = Polygon(zip(xs, ys, strict=True)).buffer(0)
    shape = affinity.rotate(shape, rng.uniform(0, 180), origin=(0, 0))
    shape = affinity.scale(shape, math.sqrt(area_m2 / shape.area), math.sqrt(area_m2 / shape.area), origin=(0, 0))
    return affinity.translate(shape, *centre)


def _cut(geometry: BaseGeometry, share: float, angle: float) -> BaseGeometry:
    """The part of ``geometry`` on one side of a straight line at ``angle`` holding ``share`` of its area."""
    rotated = affinity.rotate(geometry, -angle, origin="centroid", use_radians=True)
    minx, miny, maxx, maxy = rotated.bounds
    lo, hi = minx, maxx
    for _ in range(40):
        mid = (lo + hi) / 2
        if rotated.intersection(box(minx - 1, miny - 1, mid, maxy + 1)).area < share * rotated.area:
            lo = mid
        else:
            hi = mid
    part = rotated.intersection(box(minx - 1, miny - 1, hi, maxy + 1))
    return affinity.rotate(part, angle, origin=geometry.centroid, use_radians=True)


def _ramp(rng: np.random.Generator, start: int, years: tuple[int, int], target: tuple[float, float],
          power: tuple[float, float]) -> Ramp:
    return Ramp(start, int(rng.integers(years[0], years[1] + 1)), float(rng.uniform(*target)),
                float(rng.uniform(*power)))


def _draw_land(rng: np.random.Generator, k: int, geometry: BaseGeometry, spec: WorldSpec, cover: str) -> MineLand:
    kinds = list(KIND_BARE)
    kind = kinds[rng.choice(len(kinds), p=[KIND_BARE[k][0] for k in kinds])]
    bare = float(rng.uniform(*KIND_BARE[kind][1:]))
    names = list(SCENARIOS)
    scenario = names[rng.choice(len(names), p=list(SCENARIOS.values()))]
    first, last = spec.first_year, spec.last_year
    span = last - first + 1
    if rng.random() < 0.6:
        damaged = first - int(rng.integers(1, 11))
    else:
        damaged = first + int(rng.integers(0, max(1, int(0.4 * span))))
    damaged = min(damaged, last - 1)
    start = int(rng.integers(max(damaged + 1, first - 5), max(damaged + 2, last)))
    ramp: Ramp | None = None
    parts_share = 1.0
    redamaged, residual, works = None, 0.0, None
    if scenario == "planting":
        ramp = _ramp(rng, start, (3, 8), (0.8, 1.0), (0.7, 1.5))
    elif scenario == "succession":
        ramp = _ramp(rng, damaged + int(rng.integers(1, 7)), (15, 35), (0.5, 1.0), (1.0, 2.0))
    elif scenario == "failure":
        works = start
    elif scenario == "reversion":
        ramp = _ramp(rng, start, (3, 6), (0.85, 1.0), (0.7, 1.3))
        redamaged = ramp.start + ramp.years + int(rng.integers(2, 7))
        residual = float(rng.uniform(0.0, 0.15))
    elif scenario == "partial":
        ramp = _ramp(rng, start, (3, 8), (0.85, 1.0), (0.7, 1.5))
        parts_share = float(rng.uniform(0.25, 0.7))
    if ramp is not None:
        works = ramp.start
    if parts_share < 1.0:
        planted = _cut(geometry, parts_share, rng.uniform(0, 2 * np.pi))
        rest = geometry.difference(planted)
        parts = [Part(planted, planted.area / geometry.area, ramp), Part(rest, rest.area / geometry.area, None)]
    else:
        parts = [Part(geometry, 1.0, ramp)]
    for part in parts:
        part.jitter = {y: float(rng.normal(0, 0.015)) for y in range(damaged, last + 1)}
    mineral = ("energy", "metal", "non_metal")[int(rng.integers(0, 3))]
    return MineLand(f"R{k:04d}", kind, scenario, geometry, cover, bare, damaged, parts, redamaged, residual, works,
                    mineral_class=mineral)


@dataclass
class World:
    """A drawn world: the register, the land-cover map and what renders each year."""

    spec: WorldSpec
    lands: list[MineLand]
    width_m: float
    height_m: float
    cell_cover: np.ndarray  # per Voronoi cell: cover index
    cell_level: np.ndarray  # per Voronoi cell: NDVI level
    cell_of: np.ndarray  # fine grid: Voronoi cell index
    texture: np.ndarray  # fine grid: static NDVI texture
    bare_texture: np.ndarray
    villages: np.ndarray  # fine grid: unregistered bare ground (bool)
    year_factor: dict[str, dict[int, float]]
    counties: list[tuple[str, str, BaseGeometry]]

    @property
    def covers(self) -> list[str]:
        return [c for c, _ in self.spec.cover_mix]

    @property
    def transform(self) -> Affine:
        return Affine(FINE_M, 0, self.spec.origin[0], 0, -FINE_M, self.spec.origin[1])


def draw_world(spec: WorldSpec) -> World:
    """Draw the landscape, the register and its scenarios from ``spec`` (seeded)."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(spec.seed)
    side = math.sqrt(spec.polygons) * 1000.0
    width_m = height_m = math.ceil(side / (FINE_M * 3 * 10)) * FINE_M * 3 * 10
    x0, y0 = spec.origin
    covers = [c for c, _ in spec.cover_mix]
    shares = np.array([s for _, s in spec.cover_mix], dtype=float)
    n_cells = max(4, int(width_m * height_m / 3e6))
    seeds_xy = rng.uniform([0, 0], [width_m, height_m], (n_cells, 2))
    cell_cover = rng.choice(len(covers), n_cells, p=shares / shares.sum())
    cell_level = np.array([rng.uniform(*COVERS[covers[c]][:2]) for c in cell_cover])
    nx, ny = int(width_m / FINE_M), int(height_m / FINE_M)
    gx, gy = np.meshgrid((np.arange(nx) + 0.5) * FINE_M, (np.arange(ny) + 0.5) * FINE_M)
    tree = cKDTree(seeds_xy)
    cell_of = tree.query(np.column_stack([gx.ravel(), gy.ravel()]))[1].reshape(ny, nx).astype(np.int32)
    del gx, gy
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (ny, nx)).astype("float32"), 3)
    texture *= 0.03 / max(float(texture.std()), 1e-6)
    bare_texture = rng.normal(0, 0.025, (ny, nx)).astype("float32")
    # register polygons: rejection sampling, MIN_GAP_M apart, 200 m from the edges
    lands: list[MineLand] = []
    placed: list[BaseGeometry] = []
    tries = 0
    while len(lands) < spec.polygons:
        tries += 1
        if tries > spec.polygons * 200:
            raise RuntimeError(f"could not place {spec.polygons} polygons in {width_m:.0f} m x {height_m:.0f} m")
        area = math.exp(rng.uniform(math.log(1e4), math.log(3e5)))
        centre = (rng.uniform(0, width_m), rng.uniform(0, height_m))
        local = _irregular(rng, centre, area)
        minx, miny, maxx, maxy = local.bounds
        if minx < 200 or miny < 200 or maxx > width_m - 200 or maxy > height_m - 200:
            continue
        if any(local.distance(g) < MIN_GAP_M for g in placed if g.bounds[0] < maxx + 400 and g.bounds[2] > minx - 400):
            continue
        placed.append(local)
        cx, cy = local.centroid.x, local.centroid.y
        cover = covers[cell_cover[int(tree.query([cx, cy])[1])]]
        geometry = affinity.translate(local, x0, y0 - height_m)
        lands.append(_draw_land(rng, len(lands) + 1, geometry, spec, cover))
    # roads and villages: unregistered bare ground
    villages = np.zeros((ny, nx), dtype=bool)
    from rasterio.features import geometry_mask

    bare_shapes = []
    for _ in range(max(1, int(width_m / 4000))):
        a, b = rng.uniform(0, width_m, 2)
        bare_shapes.append(LineString([(x0 + a, y0), (x0 + b, y0 - height_m)]).buffer(rng.uniform(5, 12)))
    for _ in range(max(1, spec.polygons // 10)):
        p = Point(x0 + rng.uniform(0, width_m), y0 - rng.uniform(0, height_m))
        if all(p.distance(land.geometry) > 250 for land in lands):
            bare_shapes.append(p.buffer(rng.uniform(80, 200)))
    if bare_shapes:
        transform = Affine(FINE_M, 0, x0, 0, -FINE_M, y0)
        villages = geometry_mask(bare_shapes, out_shape=(ny, nx), transform=transform, invert=True)
    # inter-annual variation per cover, with drought years
    year_factor: dict[str, dict[int, float]] = {}
    drought = {y: rng.random() < 0.1 for y in spec.years}
    for cover in covers:
        sd, dry = COVERS[cover][2], COVERS[cover][3]
        year_factor[cover] = {y: float(np.clip(rng.normal(1.0, sd), 0.85, 1.08)) * (dry if drought[y] else 1.0)
                              for y in spec.years}
    # counties: blocks of the landscape (about polygons_per_county each), cities pair them
    n_counties = max(2, round(spec.polygons / spec.polygons_per_county))
    cols = max(1, round(math.sqrt(n_counties)))
    rows = math.ceil(n_counties / cols)
    counties = []
    for k in range(n_counties):
        r, c = divmod(k, cols)
        last_in_row = k == n_counties - 1
        right = width_m if (c == cols - 1 or last_in_row) else (c + 1) * width_m / cols
        block = box(x0 + c * width_m / cols, y0 - (r + 1) * height_m / rows, x0 + right, y0 - r * height_m / rows)
        counties.append((f"C{k + 1:02d}", f"City{k // 2 + 1}", block))
    for land in lands:
        point = land.geometry.representative_point()
        county = next((c for c in counties if c[2].covers(point)), counties[-1])
        land.county, land.city = county[0], county[1]
    return World(spec, lands, width_m, height_m, cell_cover, cell_level, cell_of, texture, bare_texture,
                 villages, year_factor, counties)


# --------------------------------------------------------------------------------------------
# rendering


def _land_masks(world: World) -> list[list[tuple[tuple[slice, slice], np.ndarray]]]:
    """Per polygon, per part: the fine-grid window and the part's mask in it."""
    from rasterio.features import geometry_mask

    x0, y0 = world.spec.origin
    ny, nx = world.cell_of.shape
    out = []
    for land in world.lands:
        minx, miny, maxx, maxy = land.geometry.bounds
        c0, c1 = max(0, int((minx - x0) / FINE_M) - 1), min(nx, int((maxx - x0) / FINE_M) + 2)
        r0, r1 = max(0, int((y0 - maxy) / FINE_M) - 1), min(ny, int((y0 - miny) / FINE_M) + 2)
        transform = Affine(FINE_M, 0, x0 + c0 * FINE_M, 0, -FINE_M, y0 - r0 * FINE_M)
        window = (slice(r0, r1), slice(c0, c1))
        parts = []
        for part in land.parts:
            if part.geometry.is_empty:
                parts.append((window, np.zeros((r1 - r0, c1 - c0), dtype=bool)))
                continue
            parts.append((window, geometry_mask([part.geometry], out_shape=(r1 - r0, c1 - c0), transform=transform,
                                                invert=True)))
        out.append(parts)
    return out


def true_ndvi(world: World, year: int, masks: list[Any] | None = None, pits: bool = True) -> np.ndarray:
    """The noise-free NDVI of the fine grid in ``year``; with ``pits`` False, the ground each register
    polygon's cover is relative to (the land under it as it would be without the pit: every part's
    NDVI is ``bare + f (ground - bare)`` with this ``ground``). Diagnostics only: a ring reference
    cannot see it for a pit dug before the archive began."""
    covers = world.covers
    factor = np.array([world.year_factor[covers[c]][year] for c in world.cell_cover], dtype="float32")
    level = (world.cell_level.astype("float32") * factor)[world.cell_of]
    ndvi = np.clip(level + world.texture, 0.2, 0.92)
    ndvi[world.villages] = 0.18 + world.bare_texture[world.villages]
    if not pits:
        return ndvi
    masks = masks if masks is not None else _land_masks(world)
    for land, parts in zip(world.lands, masks, strict=True):
        for part, (window, mask) in zip(land.parts, parts, strict=True):
            f = land.part_cover(part, year)
            if f >= 1.0:
                continue
            here = ndvi[window]
            bare = land.bare_ndvi + world.bare_texture[window][mask]
            here[mask] = bare + f * (here[mask] - bare)
    return ndvi


def at_resolution(world: World, fine: np.ndarray) -> np.ndarray:
    """A fine-grid array averaged to the composites' ``spec.resolution`` (as the composites are)."""
    k = round(world.spec.resolution / FINE_M)
    ny, nx = fine.shape[0] // k, fine.shape[1] // k
    return fine[:ny * k, :nx * k].reshape(ny, k, nx, k).mean(axis=(1, 3))


def ground_ndvi(world: World, year: int) -> np.ndarray:
    """The noise-free NDVI of the land under every register polygon without it (:func:`true_ndvi` with
    ``pits`` False) on the composites' grid: what a perfect reference of each pixel would read."""
    return at_resolution(world, true_ndvi(world, year, pits=False))


def _gaps(rng: np.random.Generator, world: World, year: int, shape: tuple[int, int]) -> np.ndarray:
    """Pixels without a clear observation in ``year``'s composite."""
    gap = np.zeros(shape, dtype=bool)
    res = world.spec.resolution
    if rng.random() < world.spec.gap_year_share:
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            radius = rng.uniform(300, 1500) / res
            gap |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    if 2003 <= year <= 2012 and rng.random() < 0.5:  # Landsat 7 SLC-off stripes
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        gap |= ((xx + 0.2 * yy + rng.uniform(0, 17)) % 17) < 2
    return gap


def land_cover_map(world: World) -> np.ndarray:
    """The world's land-cover map at ``spec.resolution`` (module docstring): per pixel the majority
    CLCD code of its 10 m cells."""
    from rasterio.features import geometry_mask

    codes = np.array([LAND_COVER_CODES[c] for c in world.covers], dtype=np.uint8)
    fine = codes[world.cell_cover][world.cell_of]
    fine[world.villages] = LAND_COVER_CODES["impervious"]
    pits = geometry_mask([land.geometry for land in world.lands], out_shape=fine.shape, transform=world.transform,
                         invert=True)
    fine[pits] = LAND_COVER_CODES["barren"]
    k = round(world.spec.resolution / FINE_M)
    ny, nx = fine.shape[0] // k, fine.shape[1] // k
    blocks = fine[:ny * k, :nx * k].reshape(ny, k, nx, k).transpose(0, 2, 1, 3).reshape(ny, nx, k * k)
    counts = np.stack([(blocks == code).sum(axis=-1) for code in sorted(set(LAND_COVER_CODES.values()))], axis=-1)
    return np.array(sorted(set(LAND_COVER_CODES.values())), dtype=np.uint8)[counts.argmax(axis=-1)]


def write_restoration_world(folder: str | Path, spec: WorldSpec) -> dict[str, Any]:
    """Draw the world of ``spec`` and write it into ``folder`` (module docstring); returns the paths
    (``composites``, ``register``, ``truth``, ``polygons``, ``land_cover``) and the world's size."""
    import geopandas as gpd
    import rasterio

    folder = Path(folder)
    composites = folder / "composites"
    composites.mkdir(parents=True, exist_ok=True)
    world = draw_world(spec)
    masks = _land_masks(world)
    k = round(spec.resolution / FINE_M)
    ny, nx = world.cell_of.shape
    shape = (ny // k, nx // k)
    transform = Affine(spec.resolution, 0, spec.origin[0], 0, -spec.resolution, spec.origin[1])
    profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": 2, "dtype": "float32",
               "crs": pyproj.CRS.from_epsg(spec.epsg).to_wkt(), "transform": transform, "nodata": float("nan"),
               "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}
    rng = np.random.default_rng(spec.seed + 7919)
    for year in spec.years:
        ndvi = at_resolution(world, true_ndvi(world, year, masks))
        ndvi = np.clip(ndvi + rng.normal(0, spec.noise, shape), -0.5, 0.95).astype("float32")
        brightness = rng.uniform(0.18, 0.3, shape).astype("float32")
        red, nir = brightness * (1 - ndvi), brightness * (1 + ndvi)
        gap = _gaps(rng, world, year, shape)
        red[gap], nir[gap] = np.nan, np.nan
        with rasterio.open(composites / f"{year}.tif", "w", **profile) as dst:
            dst.write(red, 1)
            dst.write(nir, 2)
            dst.descriptions = ("red", "nir")
    land_cover = folder / "landcover.tif"
    with rasterio.open(land_cover, "w", **{**profile, "count": 1, "dtype": "uint8", "nodata": 0}) as dst:
        dst.write(land_cover_map(world), 1)
    rows, truth = [], []
    for land in world.lands:
        rows.append({"register_id": land.register_id, "kind": land.kind, "mineral_class": land.mineral_class,
                     "responsible_party": "none: historical", "province": "SYN", "city": land.city,
                     "county": land.county, "planned_measure": MEASURES[land.scenario], "geometry": land.geometry})
        statuses, areas = true_statuses(land, spec.years)
        for year, status, area in zip(spec.years, statuses, areas, strict=True):
            truth.append({"register_id": land.register_id, "year": year, "status": status,
                          "cover": round(land.cover_share(year), 4), "restored_m2": round(area, 1),
                          "area_m2": round(land.geometry.area, 1), "county": land.county})
    register = folder / "register.gpkg"
    gpd.GeoDataFrame(rows, crs=f"EPSG:{spec.epsg}").to_file(register, layer="register")
    truth_path, polygons_path = folder / "truth.csv", folder / "polygons.csv"
    pd.DataFrame(truth).to_csv(truth_path, index=False)
    pd.DataFrame([{"register_id": land.register_id, "kind": land.kind, "scenario": land.scenario,
                   "land_cover": land.cover, "area_m2": round(land.geometry.area, 1), "county": land.county,
                   "damaged": land.damaged, "works": land.works, "redamaged": land.redamaged,
                   "planted_share": round(land.parts[0].share, 3) if land.parts[0].ramp else 0.0,
                   "ramp_years": land.parts[0].ramp.years if land.parts[0].ramp else None,
                   "ramp_target": round(land.parts[0].ramp.target, 3) if land.parts[0].ramp else None}
                  for land in world.lands]).to_csv(polygons_path, index=False)
    return {"composites": composites, "register": register, "truth": truth_path, "polygons": polygons_path,
            "land_cover": land_cover, "size_px": list(shape),
            "extent_km": [round(world.width_m / 1000, 2), round(world.height_m / 1000, 2)]}
