"""Events of the synthetic world: human-made disturbances and natural confounders.

Shapes (scene CRS, metres), drawn within the issue's ranges:

- ``trench``: straight, 2-8 m wide (trench plus its spoil), 100-500 m long; bright spoil;
- ``pad``: drill pad, a 15-45 m square of gravel;
- ``track``: curved access track, 4-9 m wide, 250-600 m long;
- ``clearing``: 0.3-2 ha rectangle, bare soil and slash;
- ``fire``: irregular scar, char that fades, then regrowth;
- ``flood``: water in the low area next to the wetland for 2-7 weeks, then silt and stressed
  vegetation that is back the next year;
- ``windthrow``: irregular, patchy canopy loss in forest (litter and dry vegetation), slow regrowth;
- ``harvest``: one row per crop field (the harvest itself is part of the landscape's calendar).

Those are the classic world's (:func:`plan_events`). The other biomes
(:mod:`gmsense.sources.synthetic._plan`) draw sizes from their own ranges and add ``open_pit`` (a
large, deep, bright excavation with benches and water at the bottom; class ``clearing``),
``dieback`` (canopy browning spreading in clusters over 1-3 years) and ``drought`` (a drought
year's local loss of green); works along roads and field edges, and works started in winter.

Reclamation: none (``regrowth_years`` 0), slow (4-9 years) or fast (1-2 years); regrowth is grass
first. The regrown share at age ``a`` years is ``min(a / regrowth_years, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shapely import affinity
from shapely.geometry import LineString, Point, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.geo.sites import Site
from gmsense.records import HUMAN_MADE_CLASSES, NATURAL_AGENTS
from gmsense.sources.synthetic._landscape import Landscape, blob, mix

ANTHROPOGENIC = HUMAN_MADE_CLASSES  # the human-made event kinds are the disturbance classes
#: Human-made kinds that are not a class of their own: the class their truth rows carry.
HUMAN_KIND_CLASS = {"open_pit": "clearing"}
SCENARIOS = ("mixed", "exploration", "boundary", "quiet", "mining")
DAYS_PER_YEAR = 365.25
RECOVERED_SHARE, RECOVERING_SHARE = 0.8, 0.25  # gmsense.recovery's default ratios
SEASON_MONTHS = (5, 9)  # the growing season of the drawn (northern) calendar: May-September
FLOOD_REGROWTH_YEARS = 1.0
HARVEST_REGROWTH_YEARS = 1.0

#: What disturbed ground is made of (endmember fractions) while not regrown.
SURFACES: dict[str, np.ndarray] = {
    "trench": mix(spoil=0.7, dark_soil=0.3),
    "pad": mix(gravel=0.65, spoil=0.2, dark_soil=0.15),
    "track": mix(gravel=0.5, dark_soil=0.4, dry_veg=0.1),
    "clearing": mix(dark_soil=0.45, dry_veg=0.3, litter=0.25),
    "fire": mix(char=0.75, dark_soil=0.2, dry_veg=0.05),
    "burnt": mix(dark_soil=0.5, dry_veg=0.35, char=0.15),  # a fire scar after its first season
    "flood": mix(water=0.9, green_veg=0.1),
    "silt": mix(dark_soil=0.45, dry_veg=0.45, green_veg=0.1),  # after the water recedes
    "windthrow": mix(litter=0.5, dry_veg=0.35, green_veg=0.15),
    "dieback": mix(dry_veg=0.45, litter=0.35, green_veg=0.2),  # red and grey crowns over a green understorey
    "pit_bench": mix(spoil=0.75, gravel=0.25),  # the flat, bright benches of an open pit
    "pit_face": mix(spoil=0.45, dark_soil=0.55),  # the steep faces between them, partly shaded
    "pit_water": mix(water=0.85, dark_soil=0.15),  # water at the bottom
}


@dataclass(frozen=True)
class Event:
    """One change on the ground. ``geometry`` in the scene CRS (metres)."""

    event_id: str
    kind: str  # trench | pad | track | clearing | open_pit | fire | flood | windthrow | dieback | drought | harvest
    geometry: BaseGeometry
    start: np.datetime64
    regrowth_years: float  # 0 = no reclamation; years from start to full regrowth otherwise
    duration_days: int = 0  # floods: days under water; droughts: days of stress
    severity_seed: int = 0  # windthrow/fire/drought/open pit: seed of the patchy severity or the benches
    parts: tuple[tuple[BaseGeometry, float], ...] = ()  # dieback: clusters and their onset (days after start)

    @property
    def disturbance_class(self) -> str:
        """The truth class: human-made kinds keep theirs (``open_pit`` is a ``clearing``), others are natural."""
        if self.kind in ANTHROPOGENIC:
            return self.kind
        return HUMAN_KIND_CLASS.get(self.kind, "natural")

    @property
    def natural_agent(self) -> str:
        """The natural agent (fire, flood, windthrow, dieback, harvest, drought) or "" (human-made)."""
        return self.kind if self.kind in NATURAL_AGENTS else ""

    def extent(self, when: np.datetime64) -> BaseGeometry:
        """The footprint on date ``when``: a dieback's clusters that have begun, else the geometry."""
        if not self.parts:
            return self.geometry
        age = float((np.datetime64(when, "D") - np.datetime64(self.start, "D")) / np.timedelta64(1, "D"))
        begun = [g for g, onset in self.parts if onset <= age] or [self.parts[0][0]]
        return unary_union(begun)


def regrown_share(age_years: float, regrowth_years: float) -> float:
    """Share of the footprint grown back ``age_years`` after the start (0 = never regrows)."""
    if regrowth_years <= 0 or age_years <= 0:
        return 0.0
    return float(min(age_years / regrowth_years, 1.0))


def _year_month(date: np.datetime64) -> tuple[int, int]:
    return int(np.datetime64(date, "Y").astype(int) + 1970), int(np.datetime64(date, "M").astype(int) % 12 + 1)


def first_season(date: np.datetime64) -> int:
    """The year of the first growing season (:data:`SEASON_MONTHS`, the drawn calendar) that
    includes or follows ``date``: a work dug in October or later is first seen next year."""
    year, month = _year_month(date)
    return year + 1 if month > SEASON_MONTHS[1] else year


def last_season(date: np.datetime64) -> int:
    """The year of the last growing season that began on or before ``date``."""
    year, month = _year_month(date)
    return year if month >= SEASON_MONTHS[0] else year - 1


def truth_status(event: Event, last_date: np.datetime64) -> str:
    """Recovery status at ``last_date`` per gmsense.recovery's definitions (see module docstring):
    ``active`` while the growing season the event was first seen in (:func:`first_season`) is the
    latest, as a scan calls a patch detected in the latest season (a work dug in November is first
    seen, and still active, in next year's season); otherwise by the share regrown since the start."""
    start = np.datetime64(event.start, "D")
    if first_season(start) >= last_season(last_date):
        return "active"
    age = float((np.datetime64(last_date, "D") - start) / np.timedelta64(1, "D")) / DAYS_PER_YEAR
    r = regrown_share(age, event.regrowth_years)
    if r >= RECOVERED_SHARE:
        return "recovered"
    if r >= RECOVERING_SHARE:
        return "recovering"
    return "not_recovering"


def random_point_in(area: BaseGeometry, rng: np.random.Generator) -> Point:
    """A uniform random point inside ``area``."""
    minx, miny, maxx, maxy = area.bounds
    for _ in range(10_000):
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if area.contains(p):
            return p
    raise ValueError("could not place an event: the licence is too small")


def _trench(centre: Point, rng: np.random.Generator, visible: bool = False) -> BaseGeometry:
    length, width = (rng.uniform(150, 450), rng.uniform(4, 8)) if visible else (rng.uniform(100, 500),
                                                                                  rng.uniform(2, 8))
    line = LineString([(centre.x - length / 2, centre.y), (centre.x + length / 2, centre.y)])
    return affinity.rotate(line, rng.uniform(0, 180), origin=centre).buffer(width / 2, cap_style="flat")


def _pad(centre: Point, rng: np.random.Generator, visible: bool = False) -> BaseGeometry:
    side = rng.uniform(25, 45) if visible else rng.uniform(15, 45)
    return affinity.rotate(box(centre.x - side / 2, centre.y - side / 2, centre.x + side / 2, centre.y + side / 2),
                           rng.uniform(0, 90), origin=centre)


def _track(centre: Point, rng: np.random.Generator, visible: bool = False) -> BaseGeometry:
    length, bend = rng.uniform(300, 600) if visible else rng.uniform(250, 600), rng.uniform(1.6, 3.0)
    width = rng.uniform(6, 9) if visible else rng.uniform(4, 9)
    s = np.linspace(-0.5, 0.5, 40)
    radius = length / bend
    xs, ys = radius * np.sin(s * bend), radius * (1 - np.cos(s * bend))
    line = LineString(np.c_[centre.x + xs, centre.y + ys - ys.mean()])
    return affinity.rotate(line, rng.uniform(0, 360), origin=centre).buffer(width / 2, cap_style="flat")


def _clearing(centre: Point, rng: np.random.Generator, visible: bool = False) -> BaseGeometry:
    area, aspect = rng.uniform(3_000, 20_000), rng.uniform(1.0, 2.0)
    w = np.sqrt(area / aspect)
    rect = box(centre.x - w * aspect / 2, centre.y - w / 2, centre.x + w * aspect / 2, centre.y + w / 2)
    return affinity.rotate(rect, rng.uniform(0, 90), origin=centre)


def _fire(centre: Point, rng: np.random.Generator, visible: bool = False) -> BaseGeometry:
    return blob(centre, rng.uniform(80, 150), rng, n=24, roughness=0.3)


def _windthrow(centre: Point, rng: np.random.Generator, visible: bool = False) -> BaseGeometry:
    main = blob(centre, rng.uniform(50, 100), rng, n=20, roughness=0.45)
    lobe = blob(Point(centre.x + rng.uniform(-70, 70), centre.y + rng.uniform(-70, 70)), rng.uniform(25, 50), rng)
    return main.union(lobe)


SHAPES = {"trench": _trench, "pad": _pad, "track": _track, "clearing": _clearing, "fire": _fire,
          "windthrow": _windthrow}


def _start(years: np.ndarray, rng: np.random.Generator, first: str = "05-20", span_days: int = 75) -> np.datetime64:
    """A start date in a growing season after the first (so every event has a season of history)."""
    year = int(rng.choice(years[1:]))
    return np.datetime64(f"{year}-{first}") + np.timedelta64(int(rng.integers(0, span_days)), "D")


def _regrowth(kind: str, rng: np.random.Generator) -> float:
    if kind == "flood":
        return FLOOD_REGROWTH_YEARS
    if kind == "fire":
        return float(rng.uniform(2.0, 6.0))
    if kind == "windthrow":
        return float(rng.uniform(3.0, 9.0))
    choice = rng.choice(["none", "slow", "fast"], p=[0.4, 0.3, 0.3])
    return {"none": 0.0, "slow": float(rng.uniform(4.0, 9.0)), "fast": float(rng.uniform(1.0, 2.0))}[str(choice)]


def plan_events(site: Site, region: BaseGeometry, land: Landscape, years: np.ndarray, scenario: str,
                rng: np.random.Generator) -> list[Event]:
    """The disturbance events of one scene (crop harvests are added by the caller).

    ``exploration``: 3 trenches, 2 pads and a track inside the licence, a fire in the buffer;
    ``boundary``: a clearing and a track crossing the licence boundary, a pad outside it;
    ``quiet``: none; ``mixed``: 2-5 human-made disturbances (70% inside the licence) and each of
    fire, flood and windthrow with probability 0.6, mostly in the buffer.
    In ``exploration`` and ``boundary`` (the demo) the human-made shapes are drawn from the upper
    part of the size ranges so they are visible at 10 m; ``mixed`` uses the full ranges.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown synthetic scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if years.size < 2:
        return []
    no_go = land.no_go()
    inner = site.geometry.buffer(-80).difference(no_go)
    if inner.is_empty:
        inner = site.geometry.difference(no_go)
    usable = region.buffer(-100).difference(no_go)
    outside = usable.difference(site.geometry.buffer(120))
    boundary_zone = site.geometry.boundary.buffer(30).intersection(usable)
    forest_outside = outside.difference(site.geometry.buffer(150))
    plan: list[tuple[str, BaseGeometry]] = []
    if scenario == "exploration":
        plan = [("trench", inner)] * 3 + [("pad", inner)] * 2 + [("track", inner)] + [("fire", outside)]
    elif scenario == "boundary":
        plan = [("clearing", boundary_zone), ("track", boundary_zone), ("pad", outside)]
    elif scenario == "mixed":
        n = int(rng.integers(2, 6))
        kinds = rng.choice(list(ANTHROPOGENIC), size=n, p=[0.35, 0.25, 0.2, 0.2])
        plan = [(str(k), inner if rng.random() < 0.7 else outside) for k in kinds]
        for kind in ("fire", "flood", "windthrow"):
            if rng.random() < 0.6:
                plan.append((kind, forest_outside if rng.random() < 0.7 else usable))
    visible = scenario in ("exploration", "boundary")
    events: list[Event] = []
    placed: list[BaseGeometry] = []
    within = site.geometry.buffer(-10)
    for kind, area in plan:
        geom = _place(kind, area, region, land, placed, rng, visible, within if area is inner else None)
        if geom is None:
            continue
        placed.append(geom)
        if kind == "flood":
            start = _start(years, rng, "06-10", 60)
            duration = int(rng.integers(14, 50))
        else:
            start = _start(years, rng, "05-20", 75) if kind != "windthrow" else _start(years, rng, "05-10", 110)
            duration = 0
        events.append(Event(f"{site.site_id}-E{len(events) + 1:02d}", kind, geom, start, _regrowth(kind, rng),
                            duration, int(rng.integers(0, 2**31))))
    return events


def _place(kind: str, area: BaseGeometry, region: BaseGeometry, land: Landscape, placed: list[BaseGeometry],
           rng: np.random.Generator, visible: bool, within: BaseGeometry | None = None) -> BaseGeometry | None:
    """A footprint for ``kind`` centred in ``area``, wholly inside ``within`` if given, not touching
    earlier footprints or (human-made ones) water, wetland, fields and road; None if none fits."""
    if kind == "flood":
        geom = land.geometries["low_area"]
        return None if geom.is_empty or any(geom.buffer(40).intersects(p) for p in placed) else geom
    if area.is_empty:
        return None
    keep_out = land.no_go(5.0) if kind in ("fire", "windthrow") else land.no_go(10.0)
    for _ in range(50):
        geom = SHAPES[kind](random_point_in(area, rng), rng, visible).intersection(region.buffer(-20))
        if kind in ("fire", "windthrow"):
            geom = geom.difference(keep_out)
        if geom.is_empty or geom.area < 100 or any(geom.buffer(40).intersects(p) for p in placed):
            continue
        if kind not in ("fire", "windthrow") and geom.intersects(keep_out):
            continue
        if within is not None and not within.contains(geom):
            continue
        return geom
    return None


def event_effect(event: Event, fraction: np.ndarray, severity: np.ndarray | None, when: np.datetime64,
                 grass: np.ndarray, cover: np.ndarray, surface_map: np.ndarray | None = None) -> np.ndarray:
    """``cover`` (n_em, y, x) endmember fractions after ``event`` on date ``when``.

    ``fraction`` is the footprint's pixel share; ``severity`` (0..1, same shape) the patchiness
    of fire and windthrow. The disturbed share is replaced by the event's surface (``surface_map``
    (n_em, y, x) where it varies within the footprint, as an open pit's benches); the regrown
    share by ``grass`` (the pure grassland mix of the date), or the original cover for floods.
    """
    if when < event.start:
        return cover
    age_days = float((when - event.start) / np.timedelta64(1, "D"))
    hit = fraction if severity is None else fraction * severity
    if event.kind == "flood":
        if age_days <= event.duration_days:
            return cover * (1 - hit) + SURFACES["flood"][:, None, None] * hit
        r = regrown_share((age_days - event.duration_days) / DAYS_PER_YEAR, event.regrowth_years)
        return cover * (1 - hit * (1 - r)) + SURFACES["silt"][:, None, None] * hit * (1 - r)
    r = regrown_share(age_days / DAYS_PER_YEAR, event.regrowth_years)
    if surface_map is not None:
        return cover * (1 - hit) + (surface_map * (1 - r) + grass * r) * hit
    surface = SURFACES[event.kind]
    if event.kind == "fire" and age_days > 200:
        surface = SURFACES["burnt"]
    return cover * (1 - hit) + (surface[:, None, None] * (1 - r) + grass * r) * hit
