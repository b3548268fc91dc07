"""The biomes of the synthetic world: land cover, phenology, events and licences per world.

A :class:`Biome` holds every parameter of a world that is not imaging (sensor, clouds: see
:mod:`gmsense.sources.synthetic._domains`). :data:`CLASSIC` holds the values the synthetic source
always used; it is drawn by the original code paths (``legacy``), with its spatial scales in
pixels. The other biomes are drawn by :mod:`gmsense.sources.synthetic._world` and
:mod:`gmsense.sources.synthetic._plan`, with spatial scales in metres. Sizes in metres, areas in
hectares or km2, days as day of year.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Range = tuple[float, float]


@dataclass(frozen=True)
class CropType:
    """A crop's calendar: sowing and harvest day of year, peak green share (drawn per field)."""

    name: str
    sow_doy: Range
    harvest_doy: Range
    peak: Range


@dataclass(frozen=True)
class EventSizes:
    """Size ranges of the event shapes (metres; ``clearing_ha`` and ``pit_ha`` in hectares).

    ``log``: draw across the range log-uniformly (wide ranges: many small, few large events);
    else uniformly (classic)."""

    trench_length_m: Range = (100.0, 500.0)
    trench_width_m: Range = (2.0, 8.0)
    pad_side_m: Range = (15.0, 45.0)
    track_length_m: Range = (250.0, 600.0)
    track_width_m: Range = (4.0, 9.0)
    clearing_ha: Range = (0.3, 2.0)
    pit_ha: Range = (5.0, 200.0)
    fire_radius_m: Range = (80.0, 150.0)
    windthrow_radius_m: Range = (50.0, 100.0)
    dieback_cluster_m: Range = (25.0, 80.0)
    dieback_clusters: tuple[int, int] = (3, 9)
    dieback_spread_years: Range = (1.0, 3.0)
    drought_radius_m: Range = (200.0, 600.0)
    log: bool = False


CLASSIC_CROP = CropType("crop", (125.0, 150.0), (232.0, 262.0), (0.8, 0.92))
MAIZE = CropType("maize", (128.0, 142.0), (265.0, 285.0), (0.85, 0.95))
SOYBEAN = CropType("soybean", (135.0, 150.0), (250.0, 268.0), (0.8, 0.9))
SPRING_WHEAT = CropType("spring_wheat", (98.0, 115.0), (200.0, 215.0), (0.75, 0.88))
WINTER_WHEAT = CropType("winter_wheat", (70.0, 85.0), (180.0, 196.0), (0.78, 0.9))
RICE = CropType("rice", (140.0, 152.0), (255.0, 270.0), (0.82, 0.92))
OATS = CropType("oats", (115.0, 130.0), (215.0, 232.0), (0.72, 0.85))

HUMAN_KINDS = ("trench", "pad", "track", "clearing")


@dataclass(frozen=True)
class Biome:
    """The parameters of one world (see the module docstring for units).

    Land cover: ``grass_threshold`` (smooth-noise value above which the natural cover is grassland:
    lower, more grass), ``forest_evergreen`` (share of the canopy green all year), peak green shares
    ``forest_vigour`` / ``grass_vigour``, ``shrub_share`` (sparse shrubs in grassland), fields
    (``field_layout`` ``corner``: blocks of fields outside the licence, ``grid``: fields tile the
    scene with farm roads between them, ``none``), ``lakes`` with their wetland fringe,
    ``low_areas`` (where floods go), ``roads``, ``relief_m`` (a synthetic DEM with terrain shading).
    Events: human-made ``human_kinds`` with probabilities ``human_p``, ``human_count`` per mixed
    scene (``integers(lo, hi)``), ``inside_p`` the share inside the licence; ``natural`` (kind,
    probability, slots); ``road_works_p`` (pads and tracks placed against a road),
    ``field_edge_p`` (trenches and tracks along field edges), ``winter_works_p`` (works started
    November-March). Licences: ``licence_km2`` and where they lie (``lon``/``lat`` ranges).
    """

    name: str
    description: str
    legacy: bool = False
    # land cover and phenology
    grass_threshold: float = 1.1
    forest_evergreen: float = 0.35
    forest_vigour: float = 0.88
    grass_vigour: float = 0.75
    greenup_doy: float = 128.0
    senescence_doy: float = 268.0
    grass_greenup_delay: float = 7.0
    grass_senescence_advance: float = 13.0
    drought_vigour: tuple[tuple[str, float], ...] = (("forest", -0.05), ("grass", -0.14), ("crop", -0.14),
                                                     ("wetland", -0.10))
    drought_senescence_days: float = -12.0
    shrub_share: float = 0.0
    field_layout: str = "corner"
    field_blocks: int = 1
    field_size_m: tuple[Range, Range] = ((110.0, 200.0), (80.0, 160.0))
    crops: tuple[CropType, ...] = (CLASSIC_CROP,)
    works_on_fields: bool = False
    lakes: int = 1
    lake_radius_m: Range = (60.0, 110.0)
    wetland_radius_m: Range = (150.0, 200.0)
    low_areas: int = 1
    low_radius_m: Range = (60.0, 90.0)
    roads: int = 1
    relief_m: float = 0.0
    # events
    human_kinds: tuple[str, ...] = HUMAN_KINDS
    human_p: tuple[float, ...] = (0.35, 0.25, 0.2, 0.2)
    human_count: tuple[int, int] = (2, 6)
    inside_p: float = 0.7
    natural: tuple[tuple[str, float, int], ...] = (("fire", 0.6, 1), ("flood", 0.6, 1), ("windthrow", 0.6, 1))
    sizes: EventSizes = field(default_factory=EventSizes)
    fire_regrowth_years: Range = (2.0, 6.0)
    windthrow_regrowth_years: Range = (3.0, 9.0)
    road_works_p: float = 0.0
    field_edge_p: float = 0.0
    winter_works_p: float = 0.0
    # licences (random_licences)
    licence_km2: Range = (0.5, 2.0)
    lon: Range = (126.0, 131.0)
    lat: Range = (45.0, 49.0)

    def drought(self, cover: str) -> float:
        """The drought year's change of peak green share for ``cover`` (forest, grass, crop, wetland)."""
        return dict(self.drought_vigour)[cover]


CLASSIC = Biome(
    "classic", "the original world: mixed forest with grassland openings in Heilongjiang, a block of fields, "
    "a lake with a wetland fringe, a gravel road; sizes in pixels", legacy=True)

BOREAL_FOREST = Biome(
    "boreal_forest", "mostly conifer forest (Greater Khingan), few fields; large fires and windthrow common, "
    "bark-beetle dieback; clearings up to 200 ha, winter works on frozen ground",
    grass_threshold=1.9, forest_evergreen=0.75, forest_vigour=0.82, grass_vigour=0.7, greenup_doy=136.0,
    senescence_doy=258.0, field_blocks=1, field_size_m=((80.0, 150.0), (60.0, 120.0)), crops=(OATS, SPRING_WHEAT),
    lake_radius_m=(60.0, 150.0), wetland_radius_m=(150.0, 260.0),
    human_kinds=(*HUMAN_KINDS, "open_pit"), human_p=(0.3, 0.2, 0.2, 0.25, 0.05),
    natural=(("fire", 0.8, 2), ("windthrow", 0.8, 2), ("dieback", 0.6, 1), ("flood", 0.3, 1), ("drought", 0.2, 1)),
    sizes=EventSizes(trench_length_m=(50.0, 500.0), pad_side_m=(15.0, 60.0), track_length_m=(250.0, 1500.0),
                     track_width_m=(4.0, 10.0), clearing_ha=(0.3, 200.0), pit_ha=(5.0, 100.0),
                     fire_radius_m=(100.0, 700.0), windthrow_radius_m=(50.0, 250.0), log=True),
    fire_regrowth_years=(4.0, 12.0), windthrow_regrowth_years=(5.0, 12.0),
    road_works_p=0.3, winter_works_p=0.3, licence_km2=(1.5, 6.0), lon=(121.0, 126.0), lat=(50.0, 53.0))

STEPPE_GRASSLAND = Biome(
    "steppe_grassland", "mostly grass with low NDVI (Inner Mongolia), drier, later green-up and earlier "
    "senescence, sparse shrubs, little forest; grass fires and drought years; open pits and clearings up to 200 ha",
    grass_threshold=-1.3, forest_evergreen=0.3, forest_vigour=0.6, grass_vigour=0.45, greenup_doy=142.0,
    senescence_doy=252.0, grass_greenup_delay=4.0, grass_senescence_advance=8.0,
    drought_vigour=(("forest", -0.08), ("grass", -0.2), ("crop", -0.2), ("wetland", -0.15)),
    drought_senescence_days=-20.0, shrub_share=0.25, field_blocks=1, crops=(SPRING_WHEAT, OATS),
    lake_radius_m=(40.0, 120.0), wetland_radius_m=(80.0, 160.0),
    human_kinds=(*HUMAN_KINDS, "open_pit"), human_p=(0.25, 0.2, 0.25, 0.15, 0.15),
    natural=(("fire", 0.5, 1), ("drought", 0.8, 1), ("flood", 0.15, 1)),
    sizes=EventSizes(trench_length_m=(50.0, 500.0), pad_side_m=(15.0, 60.0), track_length_m=(250.0, 2000.0),
                     clearing_ha=(0.3, 200.0), pit_ha=(5.0, 200.0), fire_radius_m=(200.0, 900.0),
                     drought_radius_m=(300.0, 900.0), log=True),
    fire_regrowth_years=(0.8, 1.5), road_works_p=0.4, winter_works_p=0.1, licence_km2=(1.5, 6.0),
    lon=(113.0, 119.0), lat=(43.0, 45.5))

CROPLAND_PLAIN = Biome(
    "cropland_plain", "fields everywhere (Songnen plain): maize, soybean, spring and winter wheat, rice, each "
    "with its own calendar, farm roads between them; harvest everywhere; works along field edges and roads",
    grass_threshold=0.0, forest_evergreen=0.2, field_layout="grid", field_size_m=((150.0, 400.0), (100.0, 300.0)),
    crops=(MAIZE, SOYBEAN, SPRING_WHEAT, WINTER_WHEAT, RICE), works_on_fields=True, lakes=0, low_areas=1,
    low_radius_m=(80.0, 160.0), roads=1,
    human_kinds=HUMAN_KINDS, human_p=(0.35, 0.3, 0.25, 0.1),
    natural=(("flood", 0.4, 1), ("drought", 0.4, 1), ("fire", 0.15, 1)),
    sizes=EventSizes(trench_length_m=(50.0, 400.0), fire_radius_m=(50.0, 150.0), log=True),
    fire_regrowth_years=(0.8, 1.2), road_works_p=0.5, field_edge_p=0.6, winter_works_p=0.15,
    licence_km2=(0.5, 3.0), lon=(124.0, 127.0), lat=(45.0, 47.5))

WETLAND = Biome(
    "wetland", "lakes, wet meadows and marsh (Sanjiang plain) with forest islands; floods frequent; pads and "
    "tracks, many of them built in winter on frozen ground",
    grass_threshold=0.0, forest_evergreen=0.3, grass_vigour=0.8, greenup_doy=132.0, field_blocks=1, crops=(RICE,),
    lakes=4, lake_radius_m=(80.0, 250.0), wetland_radius_m=(250.0, 550.0), low_areas=3, low_radius_m=(80.0, 160.0),
    human_kinds=HUMAN_KINDS, human_p=(0.2, 0.35, 0.35, 0.1),
    natural=(("flood", 0.95, 3), ("fire", 0.25, 1), ("drought", 0.3, 1), ("windthrow", 0.15, 1)),
    sizes=EventSizes(trench_length_m=(50.0, 400.0), track_length_m=(250.0, 1200.0), clearing_ha=(0.3, 10.0),
                     fire_radius_m=(80.0, 250.0), log=True),
    road_works_p=0.4, winter_works_p=0.5, licence_km2=(0.8, 3.0), lon=(132.0, 134.5), lat=(46.5, 48.0))

MOUNTAIN_FOREST = Biome(
    "mountain_forest", "steep mixed forest (Changbai mountains) on a synthetic DEM: illumination varies by date "
    "with the sun, cast shadows in steep parts; meadows above the tree line; windthrow, dieback, open pits",
    grass_threshold=1.5, forest_evergreen=0.6, forest_vigour=0.86, greenup_doy=132.0, senescence_doy=262.0,
    field_layout="none", lakes=0, low_areas=1, low_radius_m=(60.0, 120.0), relief_m=800.0,
    human_kinds=(*HUMAN_KINDS, "open_pit"), human_p=(0.3, 0.2, 0.25, 0.1, 0.15),
    natural=(("windthrow", 0.6, 2), ("dieback", 0.6, 1), ("fire", 0.3, 1), ("flood", 0.2, 1)),
    sizes=EventSizes(trench_length_m=(50.0, 500.0), track_length_m=(250.0, 1500.0), clearing_ha=(0.3, 50.0),
                     pit_ha=(5.0, 200.0), fire_radius_m=(80.0, 300.0), windthrow_radius_m=(50.0, 200.0), log=True),
    windthrow_regrowth_years=(5.0, 12.0), road_works_p=0.3, winter_works_p=0.1, licence_km2=(1.5, 6.0),
    lon=(127.0, 129.5), lat=(41.5, 43.5))

BIOMES: dict[str, Biome] = {b.name: b for b in (CLASSIC, BOREAL_FOREST, STEPPE_GRASSLAND, CROPLAND_PLAIN, WETLAND,
                                                  MOUNTAIN_FOREST)}
