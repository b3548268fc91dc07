"""The events of the metric biomes: what happens where and when (every domain but ``classic``).

The classic planner (:func:`gmsense.sources.synthetic._events.plan_events`) with the biome's kinds,
counts and size ranges (log-uniform across wide ranges: trenches from 2 m x 50 m = 0.01 ha,
clearings and open pits to 200 ha), and:

- works along roads (``road_works_p``): drill pads against a road's edge, tracks leaving it;
- works along field edges (``field_edge_p``): trenches and tracks parallel to a field's edge,
  inside the field, when the biome allows works on fields;
- winter works (``winter_works_p``): started between November and March, so first seen in spring;
- ``open_pit``: an irregular, slightly elongated excavation (class ``clearing`` in truth);
- ``dieback``: clusters of browning canopy in forest, each starting later than the one before and
  spreading from its neighbour over 1-3 years (the event's ``parts``);
- ``drought``: a large patch whose vegetation loses green in the drought year only;
- scenario ``mining``: an open pit and a large clearing (both from the top half of the biome's
  ranges) inside the licence, a pad and a track along a road, a fire outside.
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from shapely import affinity
from shapely.geometry import LineString, Point, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.geo.sites import Site
from gmsense.sources.synthetic._biomes import Biome, EventSizes
from gmsense.sources.synthetic._events import (
    ANTHROPOGENIC,
    HUMAN_KIND_CLASS,
    SCENARIOS,
    Event,
    _regrowth,
    _start,
    random_point_in,
)
from gmsense.sources.synthetic._landscape import Landscape, blob

HUMAN = (*ANTHROPOGENIC, *HUMAN_KIND_CLASS)
NATURAL_ON_FOREST = ("windthrow", "dieback")
ROAD_HALF_WIDTH_M = 4.0
DIEBACK_REGROWTH_YEARS = (8.0, 15.0)
DROUGHT_REGROWTH_YEARS = 1.0


def _draw(rng: np.random.Generator, bounds: tuple[float, float], log: bool, size: str = "any") -> float:
    """A size in ``bounds``: uniform or log-uniform; ``visible`` from the upper half, ``large`` from
    the top (half the maximum up)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if size == "visible":
        lo = float(np.sqrt(lo * hi)) if log else (lo + hi) / 2
    elif size == "large":
        lo = max(lo, hi / 2)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if log else float(rng.uniform(lo, hi))


def _scaled_to(geom: BaseGeometry, area_m2: float) -> BaseGeometry:
    factor = np.sqrt(area_m2 / geom.area) if geom.area > 0 else 1.0
    return affinity.scale(geom, factor, factor, origin="centroid")


def shape(kind: str, centre: Point, rng: np.random.Generator, sizes: EventSizes, size: str = "any",
          ) -> tuple[BaseGeometry, tuple[tuple[BaseGeometry, float], ...]]:
    """A footprint of ``kind`` around ``centre`` (and a dieback's clusters with their onsets, days)."""
    log = sizes.log
    if kind == "trench":
        length = _draw(rng, sizes.trench_length_m, log, size)
        width = _draw(rng, (max(sizes.trench_width_m[0], 4.0), sizes.trench_width_m[1]) if size != "any"
                      else sizes.trench_width_m, False)
        line = LineString([(centre.x - length / 2, centre.y), (centre.x + length / 2, centre.y)])
        return affinity.rotate(line, rng.uniform(0, 180), origin=centre).buffer(width / 2, cap_style="flat"), ()
    if kind == "pad":
        side = _draw(rng, sizes.pad_side_m, False, size)
        square = box(centre.x - side / 2, centre.y - side / 2, centre.x + side / 2, centre.y + side / 2)
        return affinity.rotate(square, rng.uniform(0, 90), origin=centre), ()
    if kind == "track":
        length, width = _draw(rng, sizes.track_length_m, log, size), _draw(rng, sizes.track_width_m, False, size)
        return _curve(centre, length, width, rng.uniform(0, 2 * np.pi), rng.uniform(1.6, 3.0) * rng.choice([-1, 1])), ()
    if kind == "clearing":
        area = _draw(rng, sizes.clearing_ha, log, size) * 10_000
        aspect = rng.uniform(1.0, 2.0)
        w = np.sqrt(area / aspect)
        rect = box(centre.x - w * aspect / 2, centre.y - w / 2, centre.x + w * aspect / 2, centre.y + w / 2)
        return affinity.rotate(rect, rng.uniform(0, 90), origin=centre), ()
    if kind == "open_pit":
        area = _draw(rng, sizes.pit_ha, log, size) * 10_000
        pit = affinity.scale(blob(centre, 100.0, rng, n=24, roughness=0.15), rng.uniform(1.0, 1.6), 1.0)
        return _scaled_to(affinity.rotate(pit, rng.uniform(0, 180), origin=centre), area), ()
    if kind == "fire":
        return blob(centre, _draw(rng, sizes.fire_radius_m, log, size), rng, n=24, roughness=0.3), ()
    if kind == "windthrow":
        radius = _draw(rng, sizes.windthrow_radius_m, log, size)
        lobe_centre = Point(centre.x + rng.uniform(-0.7, 0.7) * radius, centre.y + rng.uniform(-0.7, 0.7) * radius)
        main = blob(centre, radius, rng, n=20, roughness=0.45)
        return main.union(blob(lobe_centre, radius * rng.uniform(0.3, 0.5), rng)), ()
    if kind == "drought":
        return blob(centre, _draw(rng, sizes.drought_radius_m, log, size), rng, n=20, roughness=0.4), ()
    if kind == "dieback":
        return _dieback(centre, rng, sizes)
    raise ValueError(f"no shape for event kind {kind!r}")


def _curve(start: Point, length: float, width: float, heading: float, bend: float) -> BaseGeometry:
    """A track of ``length`` metres centred on ``start`` heading ``heading`` (radians) and bending by ``bend``."""
    s = np.linspace(-0.5, 0.5, 40)
    radius = length / abs(bend)
    xs, ys = radius * np.sin(s * abs(bend)), np.sign(bend) * radius * (1 - np.cos(s * abs(bend)))
    line = LineString(np.c_[start.x + xs, start.y + ys - ys.mean()])
    return affinity.rotate(line, heading, origin=start, use_radians=True).buffer(width / 2, cap_style="flat")


def _dieback(centre: Point, rng: np.random.Generator, sizes: EventSizes,
             ) -> tuple[BaseGeometry, tuple[tuple[BaseGeometry, float], ...]]:
    """Clusters of dying trees: the first at ``centre`` at day 0, each next one beside an earlier one,
    starting at a later day within the spread (1-3 years)."""
    n = int(rng.integers(*sizes.dieback_clusters))
    spread_days = 365.0 * rng.uniform(*sizes.dieback_spread_years)
    onsets = np.concatenate([[0.0], np.sort(rng.uniform(0, spread_days, n - 1))])
    centres, radii, parts = [centre], [], []
    for k in range(n):
        radius = rng.uniform(*sizes.dieback_cluster_m)
        if k:
            parent, angle = centres[int(rng.integers(0, k))], rng.uniform(0, 2 * np.pi)
            step = (radii[-1] + radius) * rng.uniform(0.7, 1.3)
            centres.append(Point(parent.x + step * np.cos(angle), parent.y + step * np.sin(angle)))
        radii.append(radius)
        parts.append((blob(centres[k], radius, rng, n=16, roughness=0.4), float(onsets[k])))
    return unary_union([g for g, _ in parts]), tuple(parts)


def _along_road(kind: str, land: Landscape, rng: np.random.Generator, sizes: EventSizes, size: str,
                area: BaseGeometry) -> BaseGeometry | None:
    """A pad against a road's edge or a track leaving it, centred near ``area``; None if none fits."""
    lines = [g for g in getattr(land.geometries.get("road_lines"), "geoms", [land.geometries.get("road_lines")])
             if g is not None and not g.is_empty]
    if not lines:
        return None
    near = area.buffer(60)
    for _ in range(40):
        line = lines[int(rng.integers(len(lines)))]
        d = rng.uniform(0.05, 0.95) * line.length
        p, q = line.interpolate(d), line.interpolate(min(d + 5.0, line.length))
        theta = np.arctan2(q.y - p.y, q.x - p.x) if p.distance(q) > 0 else 0.0
        side = float(rng.choice([-1.0, 1.0]))
        nx, ny = -np.sin(theta) * side, np.cos(theta) * side
        if kind == "pad":
            half = _draw(rng, sizes.pad_side_m, False, size) / 2
            c = Point(p.x + nx * (ROAD_HALF_WIDTH_M + 1 + half), p.y + ny * (ROAD_HALF_WIDTH_M + 1 + half))
            geom = affinity.rotate(box(c.x - half, c.y - half, c.x + half, c.y + half), theta, origin=c,
                                   use_radians=True)
        else:
            length, width = _draw(rng, sizes.track_length_m, sizes.log, size), _draw(rng, sizes.track_width_m, False)
            heading = np.arctan2(ny, nx) + rng.uniform(-0.5, 0.5)
            turn = rng.uniform(0.3, 1.2) * rng.choice([-1, 1])  # radians over the track's length
            angles = heading + turn * np.linspace(0, 1, 40)
            steps = np.c_[np.cos(angles), np.sin(angles)] * length / 39
            path = np.array([p.x, p.y]) + np.vstack([[0.0, 0.0], np.cumsum(steps[:-1], axis=0)])
            c = Point(*path[len(path) // 2])
            geom = LineString(path).buffer(width / 2, cap_style="flat")
        if near.contains(c):
            return geom.difference(land.geometries["road"].buffer(0.5))
    return None


def _along_field_edge(kind: str, land: Landscape, rng: np.random.Generator, sizes: EventSizes, size: str,
                      area: BaseGeometry) -> BaseGeometry | None:
    """A trench or track parallel to a field's edge, a few metres inside the field; None if none fits."""
    if not land.fields:
        return None
    near = area.buffer(60)
    for _ in range(40):
        field = land.fields[int(rng.integers(len(land.fields)))].geometry
        rect = field.minimum_rotated_rectangle
        corners = np.asarray(rect.exterior.coords)[:4]
        k = int(rng.integers(4))
        a, b = corners[k], corners[(k + 1) % 4]
        edge = float(np.hypot(*(b - a)))
        if edge < 60:
            continue
        bounds = sizes.trench_length_m if kind == "trench" else sizes.track_length_m
        length = min(_draw(rng, bounds, sizes.log, size), 0.9 * edge)
        width = _draw(rng, sizes.trench_width_m if kind == "trench" else sizes.track_width_m, False)
        u = (b - a) / edge
        inward = np.array([-u[1], u[0]])
        if np.dot(np.asarray(rect.centroid.coords[0]) - a, inward) < 0:
            inward = -inward
        start = a + u * rng.uniform(0, edge - length) + inward * (width / 2 + rng.uniform(1.0, 8.0))
        end = start + u * length
        c = Point(*(start + end) / 2)
        if near.contains(c):
            return LineString([start, end]).buffer(width / 2, cap_style="flat")
    return None


def _forest_point(area: BaseGeometry, land: Landscape, transform: Affine, rng: np.random.Generator) -> Point | None:
    """A random point of ``area`` on a pixel that is mostly forest."""
    inverse = ~transform
    for _ in range(60):
        p = random_point_in(area, rng)
        col, row = inverse * (p.x, p.y)
        r, c = int(row), int(col)
        if 0 <= r < land.shape[0] and 0 <= c < land.shape[1] and land.forest[r, c] >= 0.6:
            return p
    return None


def _date(year: int, first: str, span_days: int, rng: np.random.Generator) -> np.datetime64:
    return np.datetime64(f"{year}-{first}") + np.timedelta64(int(rng.integers(0, span_days)), "D")


def _winter_start(years: np.ndarray, rng: np.random.Generator) -> np.datetime64:
    """A start between 1 November and 31 March before a growing season after the first."""
    year = int(rng.choice(years[1:]))
    return np.datetime64(f"{year - 1}-11-01") + np.timedelta64(int(rng.integers(0, 151)), "D")


def _plan(scenario: str, biome: Biome, areas: dict[str, BaseGeometry], rng: np.random.Generator,
          ) -> list[tuple[str, BaseGeometry, str]]:
    """(kind, where, size) per planned event: size ``any``, ``visible`` (upper half), ``large``, ``road``."""
    inner, outside = areas["inner"], areas["outside"]
    if scenario == "exploration":
        return ([("trench", inner, "visible")] * 3 + [("pad", inner, "visible")] * 2 + [("track", inner, "visible")]
                + [("fire", areas["natural_outside"], "any")])
    if scenario == "boundary":
        return [("clearing", areas["boundary"], "visible"), ("track", areas["boundary"], "visible"),
                ("pad", outside, "visible")]
    if scenario == "mining":  # the clearing may cross the licence boundary
        return [("open_pit", areas["inner_large"], "large"), ("clearing", areas["usable_large"], "large"),
                ("pad", inner, "road"), ("track", inner, "road"), ("fire", areas["natural_outside"], "any")]
    if scenario != "mixed":
        return []
    n = int(rng.integers(*biome.human_count))
    kinds = rng.choice(list(biome.human_kinds), size=n, p=list(biome.human_p))
    plan = [(str(k), inner if rng.random() < biome.inside_p else outside, "any") for k in kinds]
    # each slot of a natural kind happens with its probability, mostly outside the licence
    plan += [(kind, areas["natural_outside"] if rng.random() < 0.7 else areas["natural_any"], "any")
             for kind, p, slots in biome.natural for _ in range(slots) if rng.random() < p]
    return plan


def plan_world_events(site: Site, region: BaseGeometry, land: Landscape, years: np.ndarray, scenario: str,
                      rng: np.random.Generator, biome: Biome, transform: Affine) -> list[Event]:
    """The disturbance events of one scene of ``biome`` (crop harvests are added by the caller);
    scenarios as :func:`gmsense.sources.synthetic._events.plan_events`, plus ``mining``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown synthetic scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if years.size < 2:
        return []
    on_fields = ("fields",) if biome.works_on_fields else ()
    works_no_go, natural_no_go = land.no_go(30.0, on_fields), land.no_go()
    inner = site.geometry.buffer(-80).difference(works_no_go)
    if inner.is_empty:
        inner = site.geometry.difference(works_no_go)
    usable = region.buffer(-100).difference(works_no_go)
    natural_any = region.buffer(-100).difference(natural_no_go)
    large_no_go = land.no_go(30.0, ("fields", "road"))
    areas = {"inner": inner, "outside": usable.difference(site.geometry.buffer(120)),
             "inner_large": site.geometry.buffer(-80).difference(large_no_go),
             "usable_large": region.buffer(-100).difference(large_no_go),
             "boundary": site.geometry.boundary.buffer(30).intersection(usable),
             "natural_outside": natural_any.difference(site.geometry.buffer(150)), "natural_any": natural_any}
    events: list[Event] = []
    placed: list[BaseGeometry] = []
    floods = [g for g in land.low_areas if not g.is_empty]
    within = site.geometry.buffer(-10)
    for kind, area, size in _plan(scenario, biome, areas, rng):
        mode = "free"
        if kind in ("pad", "track") and (size == "road" or (biome.road_works_p and rng.random() < biome.road_works_p)):
            mode = "road"
        elif kind in ("trench", "track") and biome.field_edge_p and rng.random() < biome.field_edge_p:
            mode = "field_edge"
        if kind == "flood":
            free = [g for g in floods if not any(g.buffer(40).intersects(p) for p in placed)]
            geom, parts = (free[int(rng.integers(len(free)))] if free else None), ()
        else:
            geom, parts = _place(kind, mode, area, region, land, placed, rng, biome.sizes, size, transform,
                                 within if area is inner or area is areas["inner_large"] else None, on_fields)
        if geom is None:
            continue
        placed.append(geom)
        start, duration = _start_of(kind, biome, land, years, rng)
        events.append(Event(f"{site.site_id}-E{len(events) + 1:02d}", kind, geom, start,
                            _regrowth_of(kind, biome, rng), duration, int(rng.integers(0, 2**31)), parts))
    return events


def _start_of(kind: str, biome: Biome, land: Landscape, years: np.ndarray, rng: np.random.Generator,
              ) -> tuple[np.datetime64, int]:
    """Start date and duration (days) of an event of ``kind``."""
    if kind == "flood":
        return _start(years, rng, "06-10", 60), int(rng.integers(14, 50))
    if kind == "drought":
        return _date(land.drought_year, "06-05", 20, rng), int(rng.integers(60, 100))
    if kind == "dieback":  # early enough to spread over the following seasons
        return _date(int(rng.choice(years[1:-1] if years.size > 2 else years[1:])), "06-01", 60, rng), 0
    if kind == "windthrow":
        return _start(years, rng, "05-10", 110), 0
    if kind in HUMAN and biome.winter_works_p and rng.random() < biome.winter_works_p:
        return _winter_start(years, rng), 0
    return _start(years, rng, "05-20", 75), 0


def _regrowth_of(kind: str, biome: Biome, rng: np.random.Generator) -> float:
    if kind == "fire":
        return float(rng.uniform(*biome.fire_regrowth_years))
    if kind == "windthrow":
        return float(rng.uniform(*biome.windthrow_regrowth_years))
    if kind == "dieback":
        return float(rng.uniform(*DIEBACK_REGROWTH_YEARS))
    if kind == "drought":
        return DROUGHT_REGROWTH_YEARS
    if kind == "open_pit":
        return 0.0 if rng.random() < 0.7 else float(rng.uniform(4.0, 9.0))
    return _regrowth(kind, rng)


def _place(kind: str, mode: str, area: BaseGeometry, region: BaseGeometry, land: Landscape,
           placed: list[BaseGeometry], rng: np.random.Generator, sizes: EventSizes, size: str, transform: Affine,
           within: BaseGeometry | None, on_fields: tuple[str, ...],
           ) -> tuple[BaseGeometry | None, tuple[tuple[BaseGeometry, float], ...]]:
    """A footprint for ``kind`` (see :func:`gmsense.sources.synthetic._events._place`), placed
    freely in ``area``, against a road or along a field edge (``mode``)."""
    if area.is_empty:
        return None, ()
    natural = kind not in HUMAN
    if kind == "drought":  # dries crops and wet meadows too
        keep_out = land.no_go(5.0, ("fields", "low_area"))
    elif natural:
        keep_out = land.no_go(5.0)
    elif mode == "road":
        keep_out = land.no_go(2.0, (*on_fields, "road"))
    elif mode == "field_edge":
        keep_out = land.no_go(2.0, ("fields",))
    elif size == "large":  # a mine's pit or clearing swallows fields and roads, not water
        keep_out = land.no_go(10.0, ("fields", "road"))
    else:
        keep_out = land.no_go(10.0, on_fields)
    clip = region.buffer(-20)
    for _ in range(50):
        parts: tuple[tuple[BaseGeometry, float], ...] = ()
        if mode == "road":
            geom = _along_road(kind, land, rng, sizes, "any" if size == "road" else size, area)
        elif mode == "field_edge":
            geom = _along_field_edge(kind, land, rng, sizes, size, area)
        else:
            centre = _forest_point(area, land, transform, rng) if kind in NATURAL_ON_FOREST else random_point_in(
                area, rng)
            if centre is None:
                return None, ()
            geom, parts = shape(kind, centre, rng, sizes, size)
        if geom is None:
            return None, ()
        geom = geom.intersection(clip)
        if natural:
            geom = geom.difference(keep_out)
            parts = tuple((g.intersection(clip).difference(keep_out), onset) for g, onset in parts)
            parts = tuple((g, onset) for g, onset in parts if not g.is_empty)
        if geom.is_empty or geom.area < 50 or any(geom.buffer(40).intersects(p) for p in placed):
            continue
        if not natural and geom.intersects(keep_out):
            continue
        if within is not None and not within.contains(geom):
            continue
        if parts and len(parts) < 2:
            continue
        return geom, parts
    return None, ()
