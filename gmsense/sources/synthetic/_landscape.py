"""The synthetic landscape: endmembers, land cover, phenology, and per-date cover fractions.

Everything is on the scene grid (the licence's UTM CRS, metres; ``transform`` maps pixel
indices to x/y). A pixel's surface is a linear mixture of the endmembers of :data:`ENDMEMBERS`;
:func:`cover_fractions` returns, for one acquisition date, the endmember fractions of the
undisturbed landscape as an array ``(len(ENDMEMBERS), y, x)`` summing to 1 per pixel.

Land cover (fractions rasterised at 2 m and averaged, so edges are mixed pixels):

- forest (boreal/temperate, part evergreen) and grassland openings from a smooth random field;
- cropland: a block of rectangular fields in one corner of the scene, each with its own sowing
  and harvest day (varying by a few days between years), bare black soil before sowing, a green
  crop, senescence and stubble after harvest, every year;
- open water (a lake), a wetland fringe around it and a low area next to it (where floods go);
- an existing gravel road crossing the scene.

Inter-annual variation: each year shifts green-up and changes vigour (scene-wide and in a smooth
per-pixel field); one drought year lowers vigour (grass, crops and wetland most) and brings
senescence forward.

:func:`build_landscape` draws the classic world (sizes in pixels, unchanged); the other biomes are
drawn by :func:`gmsense.sources.synthetic._world.build_world` into the same :class:`Landscape`,
whose per-date :func:`cover_fractions` (with the biome's phenology and drought parameters, sparse
shrubs and sparse field shares) serve both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.sources.synthetic._biomes import CLASSIC, Biome

#: Endmember reflectance spectra (blue, green, red, nir, swir1, swir2); typical library values.
ENDMEMBERS: dict[str, np.ndarray] = {
    "green_veg": np.array([0.030, 0.060, 0.030, 0.400, 0.180, 0.080]),
    "dry_veg": np.array([0.060, 0.090, 0.120, 0.250, 0.330, 0.240]),
    "litter": np.array([0.045, 0.065, 0.085, 0.200, 0.280, 0.210]),
    "dark_soil": np.array([0.040, 0.055, 0.070, 0.110, 0.170, 0.140]),
    "spoil": np.array([0.130, 0.170, 0.210, 0.270, 0.380, 0.320]),
    "gravel": np.array([0.110, 0.140, 0.170, 0.220, 0.300, 0.260]),
    "water": np.array([0.040, 0.050, 0.030, 0.015, 0.008, 0.005]),
    "snow": np.array([0.850, 0.830, 0.800, 0.700, 0.100, 0.080]),
    "char": np.array([0.030, 0.035, 0.035, 0.060, 0.090, 0.080]),
}
EM_NAMES = tuple(ENDMEMBERS)
EM = {name: k for k, name in enumerate(EM_NAMES)}
#: (n_endmembers, n_bands) matrix: reflectance = fractions @ SPECTRA.
SPECTRA = np.stack([ENDMEMBERS[n] for n in EM_NAMES])
#: Top-of-cloud reflectance (not an endmember of the ground).
CLOUD_SPECTRUM = np.array([0.550, 0.550, 0.560, 0.600, 0.500, 0.400])

SUBPIXEL = 5  # covers and disturbances are rasterised at resolution / SUBPIXEL (2 m at 10 m)

FIELD_GAP_M = 6.0  # grass margins / farm tracks between fields
ROAD_WIDTH_M = (6.0, 8.0)


def mix(**parts: float | np.ndarray) -> np.ndarray:
    """An endmember fraction vector (or stack) from named parts, e.g. ``mix(spoil=0.7, dark_soil=0.3)``."""
    shape = np.broadcast_shapes(*(np.shape(v) for v in parts.values()))
    out = np.zeros((len(EM_NAMES), *shape), dtype="float32")
    for name, value in parts.items():
        out[EM[name]] = value
    return out


def logistic(x: np.ndarray | float) -> np.ndarray:
    """1 / (1 + exp(-x)), overflow-safe."""
    return 0.5 * (1 + np.tanh(np.asarray(x, dtype="float64") / 2))


def phenology(doy: float, greenup: np.ndarray | float, senescence: np.ndarray | float) -> np.ndarray:
    """Green share of peak (0..1): logistic green-up and senescence around the given day-of-year."""
    return (logistic((doy - greenup) / 8) * (1 - logistic((doy - senescence) / 10))).astype("float32")


def smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field smoothed by ``sigma`` pixels."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def fraction(geom: BaseGeometry, shape: tuple[int, int], transform: Affine, subpixel: int = SUBPIXEL) -> np.ndarray:
    """Share of each pixel covered by ``geom`` (scene CRS), rasterised at 1/``subpixel`` of the pixel."""
    if geom.is_empty:
        return np.zeros(shape)
    fine_shape = (shape[0] * subpixel, shape[1] * subpixel)
    fine = rasterize([(geom, 1)], out_shape=fine_shape, transform=transform @ Affine.scale(1 / subpixel),
                     dtype="uint8")
    return fine.reshape(shape[0], subpixel, shape[1], subpixel).mean(axis=(1, 3))


def blob(centre: Point, radius: float, rng: np.random.Generator, n: int = 28, roughness: float = 0.35) -> Polygon:
    """An irregular, roughly round polygon of mean radius ``radius`` metres."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = ndimage.gaussian_filter1d(rng.standard_normal(n), 1.5, mode="wrap")
    radii = radius * np.clip(1 + roughness * wobble / (wobble.std() + 1e-12), 0.35, 1.8)
    return Polygon(np.c_[centre.x + radii * np.cos(angles), centre.y + radii * np.sin(angles)]).buffer(0)


@dataclass(frozen=True)
class Field:
    """One crop field: footprint (scene CRS) and its calendar (day of year)."""

    geometry: BaseGeometry
    sow_doy: float
    harvest_doy: float
    peak: float
    crop: str = "crop"


@dataclass
class Landscape:
    """Static land cover of a scene and its per-pixel phenology parameters."""

    shape: tuple[int, int]
    water: np.ndarray  # pixel fractions (0..1) of each cover
    wetland: np.ndarray
    road: np.ndarray
    crop: np.ndarray  # (n_fields, y, x)
    grass: np.ndarray  # natural cover: grassland share of the remainder
    forest: np.ndarray
    veg_max: np.ndarray
    greenup: np.ndarray
    senescence: np.ndarray
    fields: list[Field]
    field_jitter: dict[int, np.ndarray]  # year -> per-field shift of sowing/harvest, days
    year_shift: dict[int, float]  # year -> green-up shift, days
    year_vigour: dict[int, np.ndarray]  # year -> per-pixel vigour change (green share units)
    drought_year: int
    geometries: dict[str, BaseGeometry] = field(default_factory=dict)  # water, wetland, low_area, road, fields
    biome: Biome = CLASSIC
    shrub: np.ndarray | None = None  # pixel share of sparse shrubs (taken from the grassland), or None
    crop_shares: Any = None  # scipy.sparse (n_fields, y * x) field shares replacing ``crop`` when given
    low_areas: list[BaseGeometry] = field(default_factory=list)  # where floods go (the low area of classic)
    terrain: Any = None  # gmsense.sources.synthetic._terrain.Terrain, or None (flat)
    season_shift: float = 0.0  # days green-up, senescence, sowing, harvest and snow are shifted by

    @property
    def natural(self) -> np.ndarray:
        """Pixel share of forest + grassland (what is not water, wetland, road or crop)."""
        return self.forest + self.grass

    def no_go(self, margin_m: float = 30.0, exclude: tuple[str, ...] = ()) -> BaseGeometry:
        """Where human-made disturbances are not placed: water, wetland, low area, fields, road
        (but those named in ``exclude``)."""
        parts = [self.geometries[k] for k in ("water", "wetland", "low_area", "road", "fields") if k not in exclude]
        return unary_union([p for p in parts if not p.is_empty]).buffer(margin_m)


def _edge_point(region: BaseGeometry, side: int, rng: np.random.Generator) -> Point:
    minx, miny, maxx, maxy = region.bounds
    t = rng.uniform(0.2, 0.8)
    return [Point(minx, miny + t * (maxy - miny)), Point(maxx, miny + t * (maxy - miny)),
            Point(minx + t * (maxx - minx), miny), Point(minx + t * (maxx - minx), maxy)][side]


def _road_line(region: BaseGeometry, rng: np.random.Generator) -> LineString:
    """The centre line of a gently winding road from one side of the scene to the opposite one
    (buffered by a width from :data:`ROAD_WIDTH_M`, drawn next, it is the gravel road)."""
    across = int(rng.integers(0, 2))  # 0: west-east, 1: south-north
    a, b = _edge_point(region, 2 * across, rng), _edge_point(region, 2 * across + 1, rng)
    s = np.linspace(0, 1, 60)
    xs, ys = a.x + s * (b.x - a.x), a.y + s * (b.y - a.y)
    length = np.hypot(b.x - a.x, b.y - a.y)
    amp = rng.uniform(0.03, 0.08) * length
    wiggle = amp * np.sin(2 * np.pi * (s * rng.uniform(0.6, 1.4) + rng.uniform(0, 1)))
    nx, ny = -(b.y - a.y) / length, (b.x - a.x) / length
    return LineString(np.c_[xs + wiggle * nx, ys + wiggle * ny])


def _field_block(region: BaseGeometry, licence: BaseGeometry, corner: int, rng: np.random.Generator,
                 sizes: tuple[tuple[float, float], tuple[float, float]] = CLASSIC.field_size_m) -> list[BaseGeometry]:
    """Rectangular fields in a grid at one corner of the scene, outside the licence; field widths
    and heights (metres) drawn from ``sizes``."""
    minx, miny, maxx, maxy = region.bounds
    cx = minx if corner in (0, 2) else maxx
    cy = miny if corner in (0, 1) else maxy
    sx, sy = (1 if corner in (0, 2) else -1), (1 if corner in (0, 1) else -1)
    ncol, nrow = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    widths, heights = rng.uniform(*sizes[0], ncol), rng.uniform(*sizes[1], nrow)
    angle = rng.uniform(-8, 8)
    keep_out = licence.buffer(40)
    fields = []
    x = cx + sx * 20
    for w in widths:
        y = cy + sy * 20
        for h in heights:
            rect = box(min(x, x + sx * w), min(y, y + sy * h), max(x, x + sx * w), max(y, y + sy * h))
            rect = affinity.rotate(rect, angle, origin=(cx, cy)).intersection(region).difference(keep_out)
            if rect.area > 4_000:
                fields.append(rect.buffer(-FIELD_GAP_M / 2))
            y += sy * h
        x += sx * w
    return fields


def build_landscape(region: BaseGeometry, licence: BaseGeometry, shape: tuple[int, int], transform: Affine,
                    years: np.ndarray, rng: np.random.Generator, *, cropland: bool = True) -> Landscape:
    """Draw the land cover of a scene over ``region`` (scene CRS) for the given calendar years."""
    corner = int(rng.integers(0, 4))
    blocks: list[BaseGeometry] = []
    if cropland:  # the first corner (from the drawn one on) with room for fields outside the licence
        for k in range(4):
            blocks = _field_block(region, licence, (corner + k) % 4, rng, CLASSIC.field_size_m)
            if blocks:
                corner = (corner + k) % 4
                break
    minx, miny, maxx, maxy = region.bounds
    # The lake sits in the corner opposite the fields, in the buffer zone.
    lake_corner = 3 - corner
    lx = minx + (0.2 if lake_corner in (0, 2) else 0.8) * (maxx - minx)
    ly = miny + (0.2 if lake_corner in (0, 1) else 0.8) * (maxy - miny)
    lake = blob(Point(lx, ly), rng.uniform(*CLASSIC.lake_radius_m), rng, roughness=0.25).difference(licence.buffer(30))
    wet = blob(Point(lx, ly), rng.uniform(*CLASSIC.wetland_radius_m), rng, roughness=0.3).difference(licence.buffer(30))
    wetland = wet.difference(lake)
    direction = np.arctan2((miny + maxy) / 2 - ly, (minx + maxx) / 2 - lx) + rng.uniform(-0.8, 0.8)
    # A licence can cover the whole wetland (then ``wet`` is empty): place the low area as if
    # the wetland had a typical 150 m reach.
    reach = wet.exterior.distance(Point(lx, ly)) if hasattr(wet, "exterior") and not wet.is_empty else 150.0
    low_centre = Point(lx + (reach + 50) * np.cos(direction), ly + (reach + 50) * np.sin(direction))
    low_area = blob(low_centre, rng.uniform(*CLASSIC.low_radius_m), rng).difference(wet).difference(licence.buffer(20))
    road_line = _road_line(region, rng)
    road = road_line.buffer(rng.uniform(*ROAD_WIDTH_M) / 2, cap_style="flat").difference(wet)
    field_geoms = [f.difference(road.buffer(3)).difference(wet.buffer(10)).difference(low_area.buffer(10))
                   for f in blocks]
    field_geoms = [f for f in field_geoms if f.area > 3_000]

    crop = CLASSIC.crops[0]
    fields = [Field(g, float(rng.uniform(*crop.sow_doy)), float(rng.uniform(*crop.harvest_doy)),
                    float(rng.uniform(*crop.peak))) for g in field_geoms]
    water = fraction(lake, shape, transform)
    wetland_f = fraction(wetland, shape, transform)
    road_f = fraction(road, shape, transform)
    crop = np.stack([fraction(f.geometry, shape, transform) for f in fields]) if fields else np.zeros((0, *shape))
    rest = np.clip(1 - water - wetland_f - road_f - crop.sum(axis=0), 0, 1)
    cover_noise = smooth_noise(shape, 12, rng)
    grass_share = logistic((cover_noise - CLASSIC.grass_threshold) / 0.12)
    low = fraction(low_area, shape, transform)
    grass_share = np.maximum(grass_share, low)  # the low area is wet meadow
    forest_share = 1 - grass_share
    c = CLASSIC
    veg_max = (c.grass_vigour * grass_share + c.forest_vigour * forest_share) + 0.04 * smooth_noise(shape, 3, rng)
    greenup = c.greenup_doy + c.grass_greenup_delay * grass_share + 4 * smooth_noise(shape, 8, rng)
    senescence = c.senescence_doy - c.grass_senescence_advance * grass_share + 4 * smooth_noise(shape, 8, rng)

    year_list = [int(y) for y in years]
    drought_year = int(rng.choice(year_list[1:])) if len(year_list) > 1 else year_list[0]
    year_shift = {y: float(rng.normal(0, 4)) for y in year_list}
    year_vigour = {y: rng.normal(0, 0.02) + 0.015 * smooth_noise(shape, 15, rng) for y in year_list}
    field_jitter = {y: rng.normal(0, 4, len(fields)) + rng.normal(0, 3) for y in year_list}
    f32 = np.float32
    return Landscape(
        shape=shape, water=water.astype(f32), wetland=wetland_f.astype(f32), road=road_f.astype(f32),
        crop=crop.astype(f32), grass=(rest * grass_share).astype(f32), forest=(rest * forest_share).astype(f32),
        veg_max=veg_max.astype(f32), greenup=greenup.astype(f32), senescence=senescence.astype(f32), fields=fields,
        field_jitter=field_jitter, year_shift=year_shift,
        year_vigour={y: v.astype(f32) for y, v in year_vigour.items()}, drought_year=drought_year,
        geometries={"water": lake, "wetland": wetland, "low_area": low_area, "road": road,
                    "fields": unary_union(field_geoms) if field_geoms else Polygon(), "road_lines": road_line},
        low_areas=[low_area],
    )


def _drought(land: Landscape, year: int, cover: str) -> float:
    return land.biome.drought(cover) if year == land.drought_year else 0.0


def natural_mixes(land: Landscape, doy: float, year: int) -> tuple[np.ndarray, np.ndarray]:
    """Endmember fractions (n_em, y, x) of pure forest and pure grassland on this date."""
    shift = land.year_shift[year]
    senesce = land.senescence + (land.biome.drought_senescence_days if year == land.drought_year else 0.0)
    phen = phenology(doy, land.greenup + shift, senesce + shift)
    vigour = land.year_vigour[year]
    evergreen = land.biome.forest_evergreen
    forest_green = np.clip(land.veg_max * (evergreen + (1 - evergreen) * phen)
                           + vigour + _drought(land, year, "forest") * phen, 0, 1)
    grass_green = np.clip(land.veg_max * 0.9 * phen + vigour + _drought(land, year, "grass") * phen, 0, 1)
    forest = mix(green_veg=forest_green, litter=(1 - forest_green) * 0.7, dark_soil=(1 - forest_green) * 0.3)
    grass = mix(green_veg=grass_green, dry_veg=(1 - grass_green) * 0.75, dark_soil=(1 - grass_green) * 0.25)
    return forest, grass


def shrub_mix(land: Landscape, doy: float, year: int) -> np.ndarray:
    """Endmember fractions (n_em, y, x) of sparse shrubland: half green all year, the rest seasonal."""
    shift = land.year_shift[year]
    phen = phenology(doy, land.greenup + shift, land.senescence + shift)
    green = np.clip(0.5 * land.veg_max * (0.5 + 0.5 * phen) + _drought(land, year, "grass") * 0.5 * phen, 0, 1)
    return mix(green_veg=green, dry_veg=(1 - green) * 0.5, dark_soil=(1 - green) * 0.5)


def crop_mix(land: Landscape, doy: float, year: int) -> np.ndarray:
    """Endmember fractions (n_em, n_fields) of each field on this date: soil, crop, stubble."""
    out = np.zeros((len(EM_NAMES), len(land.fields)))
    for k, f in enumerate(land.fields):
        jitter = land.field_jitter[year][k]
        sow, harvest = f.sow_doy + jitter, f.harvest_doy + jitter
        if year == land.drought_year:
            harvest -= 6
        if doy >= harvest:
            out[:, k] = mix(dry_veg=0.35, dark_soil=0.65)
            continue
        peak = f.peak + _drought(land, year, "crop")
        canopy = peak * float(logistic((doy - sow - 32) / 6))
        senesced = float(logistic((doy - harvest + 22) / 6))
        out[:, k] = mix(green_veg=canopy * (1 - senesced), dry_veg=canopy * senesced + 0.1 * (1 - canopy),
                        dark_soil=0.9 * (1 - canopy))
    return out


def harvest_dates(land: Landscape, years: np.ndarray) -> list[np.ndarray]:
    """Per field, its harvest date in each year (datetime64[D])."""
    out = []
    for k, f in enumerate(land.fields):
        days = []
        for y in years:
            doy = f.harvest_doy + land.field_jitter[int(y)][k] - (6 if int(y) == land.drought_year else 0)
            days.append(np.datetime64(f"{int(y)}-01-01") + np.timedelta64(int(np.ceil(doy)) - 1, "D"))
        out.append(np.array(days, dtype="datetime64[D]"))
    return out


def ordered_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (2-D, float32 in and out) summed over the inner dimension in a fixed order with
    elementwise operations only: the same bits on every machine, BLAS build and thread count. A
    BLAS product orders (and fuses) its sums by kernel and by thread, so the synthetic world's
    pixels differed between machines, and within one machine between BLAS thread limits."""
    a, b = np.asarray(a, dtype="float32"), np.asarray(b, dtype="float32")
    out = a[:, 0, None] * b[0][None, :]
    for k in range(1, a.shape[1]):
        out += a[:, k, None] * b[k][None, :]
    return out


def cover_fractions(land: Landscape, doy: float, year: int) -> tuple[np.ndarray, np.ndarray]:
    """Endmember fractions (n_em, y, x) of the undisturbed landscape on this date, and the pure
    grassland mix (what disturbed ground regrows into first)."""
    forest, grass = natural_mixes(land, doy, year)
    out = forest * land.forest + grass * land.grass
    if land.shrub is not None:
        out += shrub_mix(land, doy, year) * land.shrub
    if land.fields and land.crop_shares is not None:
        crop = land.crop_shares.T @ crop_mix(land, doy, year).astype("float32").T  # (pixels, n_em)
        out += np.ascontiguousarray(crop.T).reshape(out.shape)
    elif land.fields:
        crop = ordered_matmul(crop_mix(land, doy, year), land.crop.reshape(len(land.fields), -1))
        out += crop.reshape(out.shape)
    wet_water = 0.35 if doy < 150 else 0.18
    wet_green = np.clip(0.7 * phenology(doy, land.greenup + 10, land.senescence - 5)
                        + _drought(land, year, "wetland"), 0, 1) * (1 - wet_water)
    out += mix(water=wet_water, green_veg=wet_green, dry_veg=1 - wet_water - wet_green) * land.wetland
    out += mix(water=1.0)[:, None, None] * land.water
    out += mix(gravel=0.85, dark_soil=0.15)[:, None, None] * land.road
    return out, grass
