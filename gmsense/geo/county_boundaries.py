"""County boundaries, and the divisions of a polygon found from its geometry (``gmsense divisions import``).

A licence or register polygon gets its division codes (province / city / county) from its
``province`` / ``city`` / ``county`` attributes (:func:`gmsense.geo.divisions.divisions_of`). When the
store holds county boundaries (loaded from a file the bureau supplies: any CRS, each polygon naming
its county by code or name, which must be a county of the shipped division table), a polygon whose
attributes name no division gets them from its geometry instead (:meth:`CountyLocator.locate`):

- its county is the one holding the **largest share of its area** (geodesic areas, WGS 84);
- a polygon **split** across counties (a second county, or the ground outside every boundary,
  holding at least :data:`SHARE_TOLERANCE` of its area) gets a warning naming the shares;
- a polygon in **no boundary** (no county holds :data:`SHARE_TOLERANCE` of it, or more of it lies
  outside every boundary than in any county: the county it lies in is not loaded) **stays
  unassigned** with a warning (then only province-wide users see it), rather than failing the import:
  boundaries may cover part of the province only.

**Attributes win.** A polygon whose attributes name a county keeps it; one whose attributes name
only a city (or the province) keeps that and gets the county from its geometry when the county the
geometry finds lies in it. Either way, when less than ``1 - SHARE_TOLERANCE`` of the polygon lies in
the division its attributes name, a warning says so and names the shares. Attribute values that
name no known division count as absent.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.errors import SitesError
from gmsense.geo import divisions
from gmsense.geo.layers import _to_wgs84, area_m2
from gmsense.geo.sites import (
    SiteRepairWarning,
    _clean_geometry,
    _coerce_site_id,
    _crs_problems,
    _format_problems,
    _json_value,
    _read_frame,
)

#: Shares of a polygon's area below this (2 %) are taken for imprecise boundaries, not a split, nor a
#: disagreement with the attributes; a polygon no county holds this much of is in no boundary.
SHARE_TOLERANCE = 0.02
#: Columns that may name a boundary's county, tried in this order (any case) unless one is given.
CODE_COLUMNS: tuple[str, ...] = ("county_code", "code", "adcode", "county", "name")


class DivisionWarning(UserWarning):
    """A polygon's divisions from its geometry: split across counties, in no boundary, or at odds
    with its attributes."""


@dataclass(frozen=True)
class CountyBoundary:
    """One county: its code in the division table, its area as a valid (Multi)Polygon in EPSG:4326,
    and the properties of the feature(s) it came from."""

    code: str
    geometry: BaseGeometry
    attrs: dict[str, Any] = field(default_factory=dict)
    n_features: int = 1


def read_boundaries(path: str | os.PathLike[str], *, field_name: str | None = None, layer: str | None = None,
                    repair_invalid: bool = True) -> list[CountyBoundary]:
    """Read and validate a county boundary file (GeoJSON, GeoPackage or Shapefile, any CRS).

    Each feature names its county in ``field_name`` (default: the first of :data:`CODE_COLUMNS`
    the file has) by code, Chinese name or pinyin; it must be a county-level division of the shipped
    table (gmsense.geo.divisions). Features of one county are merged. Raises
    :class:`~gmsense.errors.SitesError` listing every problem: no CRS or coordinates that do not fit
    it, empty or non-polygonal geometries, no county column, a value that is no county (unknown,
    ambiguous, or a city's code). Invalid polygons are repaired with a warning naming the feature
    (unless ``repair_invalid`` is False: then they are problems too)."""
    path = Path(path)
    frame = _read_frame(path, layer, what="county boundaries", item="county boundary", default_layer="counties")
    return boundaries_from_frame(frame, field_name=field_name, repair_invalid=repair_invalid, label=str(path))


def _county_column(frame: geopandas.GeoDataFrame, field_name: str | None) -> tuple[str | None, str | None]:
    """(the column naming each feature's county, or None with the problem)."""
    columns = [str(c) for c in frame.columns if c != frame.geometry.name]
    by_lower = {c.lower(): c for c in columns}
    if field_name is not None:
        if field_name in columns:
            return field_name, None
        if field_name.lower() in by_lower:
            return by_lower[field_name.lower()], None
        return None, f"no column {field_name!r} (columns found: {', '.join(columns) or 'none'})"
    for name in CODE_COLUMNS:
        if name in by_lower:
            return by_lower[name], None
    return None, (f"no column names the county of each boundary: looked for {', '.join(CODE_COLUMNS)} "
                  f"(columns found: {', '.join(columns) or 'none'}); name it with --field")


def _county(value: Any) -> tuple[str | None, str | None]:
    """(the county code ``value`` names, or None with the problem)."""
    text = _coerce_site_id(value)
    if text is None:
        return None, "names no county (the value is empty)"
    other = divisions.table().get(text)
    if other is not None and other.level != "county":
        return None, f"{text} is the code of a {other.level} ({other.name_zh}), not of a county"
    hits = divisions.find("county", text)
    if len(hits) == 1:
        return hits[0].code, None
    if hits:
        return None, f"county {text!r} is ambiguous: {'; '.join(d.label() for d in hits)}; give the code"
    near = divisions.candidates("county", text)
    hint = f"; closest: {'; '.join(d.label() for d in near)}" if near else ""
    return None, f"{text!r} is not a county of the shipped division table{hint}"


def boundaries_from_frame(frame: geopandas.GeoDataFrame, *, field_name: str | None = None,
                          repair_invalid: bool = True, label: str = "boundaries") -> list[CountyBoundary]:
    """Validate a GeoDataFrame (any CRS) as :func:`read_boundaries` does a file."""
    problems = list(_crs_problems(frame, Path(label).name))
    crs_ok = not problems
    column, problem = _county_column(frame, field_name)
    if problem:
        problems.append(problem)
    if not len(frame):
        problems.append("the file holds no boundaries")
    records = frame.drop(columns=[frame.geometry.name]).to_dict("records")
    parts: dict[str, list[tuple[BaseGeometry, dict[str, Any]]]] = {}
    repairs: list[tuple[int, str]] = []
    src = pyproj.CRS(frame.crs) if frame.crs is not None else None
    for index, (geom, record) in enumerate(zip(frame.geometry, records, strict=True)):
        feature: list[str] = []
        code = None
        if column is not None:
            code, bad = _county(record.get(column))
            if bad:
                feature.append(bad)
        clean = _clean_geometry(geom, repair_invalid, "county boundary")
        if clean.problem:
            feature.append(clean.problem)
        elif src is not None and crs_ok:
            wgs = _to_wgs84(clean.geometry, src)
            if wgs is None:
                feature.append("coordinates do not map to valid longitude/latitude from the file's CRS")
            elif code is not None:
                attrs = {str(k): v for k, v in ((k, _json_value(v)) for k, v in record.items())
                         if v is not None and not (isinstance(v, float) and v != v)}
                parts.setdefault(code, []).append((wgs, json.loads(json.dumps(attrs, default=str))))
        if clean.repair_reason:
            repairs.append((index, clean.repair_reason))
        problems.extend(f"feature {index + 1}: {p}" for p in feature)
    if problems:
        raise SitesError(_format_problems(label, problems))
    for index, reason in repairs:
        warnings.warn(f"{label}: feature {index + 1}: invalid polygon ({reason}) repaired with make_valid; check the "
                      "county boundary", SiteRepairWarning, stacklevel=3)
    out = []
    for code, pieces in sorted(parts.items()):
        geometry = pieces[0][0] if len(pieces) == 1 else unary_union([g for g, _ in pieces])
        out.append(CountyBoundary(code, geometry, pieces[0][1], len(pieces)))
    return out


@dataclass(frozen=True)
class Located:
    """The divisions of one polygon: ``codes`` (``province_code``, ``city_code``, ``county_code``),
    where they came from (``attributes``, ``geometry`` or ``none``), the counties holding its area
    (code, share; largest first) and the share outside every boundary, and a warning (or None)."""

    codes: dict[str, str | None]
    source: str
    shares: tuple[tuple[str, float], ...]
    outside: float
    warning: str | None = None


def _label(code: str) -> str:
    d = divisions.table()[code]
    return f"{d.code} {d.name_zh}"


def _shares_text(shares: Sequence[tuple[str, float]], outside: float) -> str:
    parts = [f"{_label(code)} {share:.1%}" for code, share in shares if share >= SHARE_TOLERANCE / 10]
    if outside >= SHARE_TOLERANCE / 10:
        parts.append(f"outside every boundary {outside:.1%}")
    return ", ".join(parts)


def _ancestor(code: str, level: str) -> str | None:
    d = divisions.table().get(code)
    while d is not None and d.level != level:
        d = divisions.table().get(d.parent or "")
    return d.code if d else None


class CountyLocator:
    """The county boundaries of a store, indexed, to find the divisions of polygons."""

    def __init__(self, boundaries: Sequence[CountyBoundary]) -> None:
        self.codes = [b.code for b in boundaries]
        self.geometries = [b.geometry for b in boundaries]
        for geometry in self.geometries:
            shapely.prepare(geometry)  # most polygons lie inside one county: a prepared test settles them
        self._tree = shapely.STRtree(self.geometries)

    def __len__(self) -> int:
        return len(self.codes)

    def shares(self, geometry_wgs84: BaseGeometry) -> tuple[list[tuple[str, float]], float]:
        """The counties holding part of ``geometry_wgs84`` (EPSG:4326) with the share of its area
        each holds, largest first, and the share outside every boundary."""
        total = area_m2(geometry_wgs84)
        if total <= 0:
            return [], 1.0
        out: dict[str, float] = {}
        for i in self._tree.query(geometry_wgs84, predicate="intersects"):
            county = self.geometries[int(i)]
            overlap = total if county.contains(geometry_wgs84) else area_m2(shapely.intersection(geometry_wgs84,
                                                                                                county))
            if overlap > 0:
                code = self.codes[int(i)]
                out[code] = out.get(code, 0.0) + min(1.0, overlap / total)
        ranked = sorted(out.items(), key=lambda item: (-item[1], item[0]))
        return ranked, max(0.0, 1.0 - sum(share for _, share in ranked))

    def locate(self, label: str, attrs: dict[str, Any], geometry_wgs84: BaseGeometry) -> Located:
        """The divisions of a polygon (``label`` names it in warnings); see the module docstring."""
        given = divisions.divisions_of(attrs)
        shares, outside = self.shares(geometry_wgs84)
        found = shares[0][0] if shares and shares[0][1] >= SHARE_TOLERANCE and shares[0][1] >= outside else None
        where = _shares_text(shares, outside) or "no county"
        if given["county_code"] or given["city_code"] or given["province_code"]:
            level = "county" if given["county_code"] else "city" if given["city_code"] else "province"
            named = given[f"{level}_code"] or ""
            inside = sum(share for code, share in shares if _ancestor(code, level) == named)
            if inside < 1 - SHARE_TOLERANCE:
                warning = (f"{label}: its attributes name the {level} {divisions.describe(named)}, which holds "
                           f"{inside:.1%} of its area; the county boundaries put it in {where}; the attributes "
                           "are kept")
                return Located(dict(given), "attributes", tuple(shares), outside, warning)
            if level == "county" or found is None or _ancestor(found, level) != named:
                return Located(dict(given), "attributes", tuple(shares), outside)
        elif found is None:
            return Located(dict(given), "none", tuple(shares), outside,
                           f"{label}: names no division and lies in no county boundary of the store ({where}): it "
                           "stays without a division, so only province-wide users see it")
        assert found is not None
        warning = None
        rest = max([share for code, share in shares if code != found] + [outside])
        if rest >= SHARE_TOLERANCE:
            warning = f"{label}: split across counties ({where}); assigned to {_label(found)}, the largest share"
        return Located(divisions.divisions_of({"county": found}), "geometry", tuple(shares), outside, warning)
