"""Registers of mine land and green-mine demonstration zones: read, validate, repair, reproject.

A register holds abandoned / legacy mine land and operating-mine reclamation areas, one polygon
per ``register_id``, whose restoration gmsense follows year by year (gmsense.restoration). Files
are read as licence files are (:mod:`gmsense.geo.sites`: GeoJSON, GeoPackage or Shapefile in any
CRS, invalid polygons repaired with a warning, every problem in one error message), and each
polygon ends in the WGS 84 / UTM zone of its centroid (metres).

Register properties: ``register_id`` (unique), ``kind`` (one of :data:`KINDS`), ``mineral_class``
(energy, metal, non_metal, water_gas), ``responsible_party`` (a name, or ``none: historical``),
``province``, ``city``, ``county`` (codes or names; optional when the store holds county boundaries:
gmsense.geo.county_boundaries), and optionally ``planned_measure``,
``restoration_deadline`` (a date, kept as ``YYYY-MM-DD``) and ``demonstration_zone`` (a
``zone_id``). Zone properties: ``zone_id`` (unique), ``name``, optional ``target_rate`` (the
restoration rate the zone must reach, a share 0-1). ``kind``, ``mineral_class`` and
``responsible_party`` may be given in Chinese (:data:`KIND_NAMES_ZH`, :data:`MINERAL_CLASS_NAMES_ZH`,
:data:`NO_PARTY_NAMES_ZH`).

:func:`register_from_frame` and :func:`zones_from_frame` validate features already read (the
corner-point tables of gmsense.geo.register_table go through them too).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas
import pyproj
from shapely.geometry.base import BaseGeometry

from gmsense.errors import SitesError
from gmsense.geo.sites import (
    MINERAL_CLASSES,
    WGS84,
    SiteRepairWarning,
    _clean_geometry,
    _coerce_site_id,
    _contract_renames,
    _crs_problems,
    _duplicate_problems,
    _feature_label,
    _format_problems,
    _json_value,
    _parse_date,
    _read_frame,
    _to_local_utm,
    reproject_geometry,
)

#: What kind of mine land a register polygon is.
KINDS: tuple[str, ...] = ("open_pit", "waste_dump", "tailings", "subsidence", "exploration_legacy", "other")
#: Chinese names of the kinds, as registers write them.
KIND_NAMES_ZH: dict[str, str] = {"露天采场": "open_pit", "排土场": "waste_dump", "废石场": "waste_dump",
                                 "尾矿库": "tailings", "塌陷区": "subsidence", "采空塌陷": "subsidence",
                                 "勘查遗留": "exploration_legacy", "探矿遗留": "exploration_legacy", "其他": "other"}
#: Chinese names of the mineral classes.
MINERAL_CLASS_NAMES_ZH: dict[str, str] = {"能源矿产": "energy", "金属矿产": "metal", "非金属矿产": "non_metal",
                                          "水气矿产": "water_gas"}
#: The value of ``responsible_party`` for land nobody is liable for.
NO_PARTY = "none: historical"
#: Chinese ways of writing :data:`NO_PARTY`.
NO_PARTY_NAMES_ZH: tuple[str, ...] = ("无", "历史遗留")
REGISTER_REQUIRED: tuple[str, ...] = ("register_id", "kind", "mineral_class", "responsible_party",
                                      "province", "city", "county")
REGISTER_OPTIONAL: tuple[str, ...] = ("planned_measure", "restoration_deadline", "demonstration_zone")
DIVISION_COLUMNS: tuple[str, ...] = ("province", "city", "county")
_DIVISIONS_HINT = dict.fromkeys(DIVISION_COLUMNS, "without division columns, load county boundaries first (gmsense "
                                                  "divisions import FILE): the divisions then come from each "
                                                  "polygon's geometry")
ZONE_REQUIRED: tuple[str, ...] = ("zone_id", "name")
ZONE_OPTIONAL: tuple[str, ...] = ("target_rate",)


@dataclass(frozen=True)
class RegisterPolygon:
    """One polygon of mine land: ``geometry`` a valid (Multi)Polygon in ``crs`` (its local UTM zone,
    metres); ``attrs`` every other property (the register fields above and any others, JSON values)."""

    register_id: str
    kind: str
    geometry: BaseGeometry
    crs: pyproj.CRS
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def area_m2(self) -> float:
        """Area in m² (in the local UTM zone)."""
        return float(self.geometry.area)

    @property
    def geometry_wgs84(self) -> BaseGeometry:
        return reproject_geometry(self.geometry, self.crs, WGS84)


@dataclass(frozen=True)
class Zone:
    """A green-mine demonstration zone: ``target_rate`` (share 0-1) overrides the configured target."""

    zone_id: str
    name: str
    target_rate: float | None
    geometry: BaseGeometry
    crs: pyproj.CRS
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def geometry_wgs84(self) -> BaseGeometry:
        return reproject_geometry(self.geometry, self.crs, WGS84)


def read_register(path: str | os.PathLike[str], *, repair_invalid: bool = True, layer: str | None = None,
                  divisions_required: bool = True) -> list[RegisterPolygon]:
    """Read and validate a register of mine land (see the module docstring).

    ``divisions_required=False`` (the store holds county boundaries, gmsense.geo.county_boundaries)
    makes ``province``, ``city`` and ``county`` optional: a polygon without them gets its divisions
    from its geometry when it is stored.

    Raises :class:`~gmsense.errors.SitesError` with one message listing every problem: missing
    columns, missing or duplicate ``register_id``, an unknown ``kind`` (the message lists the
    allowed ones), an unknown ``mineral_class``, a bad ``restoration_deadline``, empty or
    non-polygonal geometry. Invalid polygons are repaired with a :class:`SiteRepairWarning`
    naming the register_id (unless ``repair_invalid`` is False: then they are problems too).
    """
    path = Path(path)
    frame = _read_frame(path, layer, what="register polygons", item="register", default_layer="register")
    return register_from_frame(frame, str(path), repair_invalid=repair_invalid,
                               divisions_required=divisions_required)


def register_from_frame(frame: geopandas.GeoDataFrame, label: str, *, repair_invalid: bool = True,
                        divisions_required: bool = True, problems: Sequence[str] = (),
                        missing_hint: dict[str, str] | None = None) -> list[RegisterPolygon]:
    """Validate register features already read (any CRS), as :func:`read_register` does; ``label``
    names them in messages (the file), ``problems`` found before (in a corner table's points) are
    listed first in the one SitesError, ``missing_hint`` is a sentence per column said when it is
    missing (the headers a table may give it under)."""
    required, optional = REGISTER_REQUIRED, REGISTER_OPTIONAL
    if not divisions_required:
        required = tuple(c for c in REGISTER_REQUIRED if c not in DIVISION_COLUMNS)
        optional = (*DIVISION_COLUMNS, *REGISTER_OPTIONAL)
    hints = {c: tuple(h for h in ((missing_hint or {}).get(c), _DIVISIONS_HINT.get(c)) if h) for c in required}
    rows = _validated(frame, label, "register_id", required, optional, _register_attrs,
                      repair_invalid, "mine land", "register polygons", missing_hint=hints,
                      problems_before=problems)
    return [RegisterPolygon(s.site_id, s.attrs.pop("kind"), s.geometry, s.crs, s.attrs) for s in rows]


def read_zones(path: str | os.PathLike[str], *, repair_invalid: bool = True,
               layer: str | None = None) -> list[Zone]:
    """Read and validate demonstration zones (``zone_id``, ``name``, optional ``target_rate``)."""
    path = Path(path)
    frame = _read_frame(path, layer, what="demonstration zones", item="zone", default_layer="zones")
    return zones_from_frame(frame, str(path), repair_invalid=repair_invalid)


def zones_from_frame(frame: geopandas.GeoDataFrame, label: str, *, repair_invalid: bool = True,
                     problems: Sequence[str] = (), missing_hint: dict[str, str] | None = None) -> list[Zone]:
    """Validate zone features already read (any CRS), as :func:`read_zones` does (``label``,
    ``problems``, ``missing_hint``: as for :func:`register_from_frame`)."""
    hints = {c: (h,) for c, h in (missing_hint or {}).items()}
    rows = _validated(frame, label, "zone_id", ZONE_REQUIRED, ZONE_OPTIONAL, _zone_attrs, repair_invalid,
                      "zone", "zones", missing_hint=hints, problems_before=problems)
    return [Zone(s.site_id, str(s.attrs.pop("name")), s.attrs.pop("target_rate", None), s.geometry, s.crs, s.attrs)
            for s in rows]


# --------------------------------------------------------------------------------------------


def _validated(frame: geopandas.GeoDataFrame, label: str, id_name: str, required: Sequence[str],
               optional: Sequence[str], check_attrs: Any, repair_invalid: bool, item: str, items: str,
               missing_hint: dict[str, tuple[str, ...]] | None = None,
               problems_before: Sequence[str] = ()) -> list[Any]:
    """Features as :class:`gmsense.geo.sites.Site` records (id, local UTM geometry, attrs), or one
    SitesError listing every problem, ``problems_before`` first (``missing_hint``: sentences added,
    each once, when a column it names is missing)."""
    frame = frame.rename(columns=_contract_renames(frame.columns, frame.geometry.name, (*required, *optional)))
    geometry_column = frame.geometry.name
    found = [str(c) for c in frame.columns if c != geometry_column]
    missing = [c for c in required if c not in frame.columns]
    problems: list[str] = list(problems_before)
    if missing:
        hints = dict.fromkeys(h for c in missing for h in (missing_hint or {}).get(c, ()))
        problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"(columns found: {', '.join(found) or 'none'}); a {item} file needs "
                        f"{', '.join(required)}" + "".join(f"; {h}" for h in hints))
    crs_problems = _crs_problems(frame, Path(label).name)
    problems.extend(crs_problems)
    has_ids = id_name in frame.columns
    ids = [_coerce_site_id(v) for v in frame[id_name]] if has_ids else [None] * len(frame)
    problems.extend(_duplicate_problems(ids, id_name, items))
    records = frame[[c for c in frame.columns if c not in (id_name, geometry_column)]].to_dict("records")
    accepted, repairs = [], []
    for index, (the_id, geom, record) in enumerate(zip(ids, frame.geometry, records, strict=True)):
        feature: list[str] = []
        if has_ids and the_id is None:
            feature.append(f"{id_name} is missing (give every {item} polygon a unique, non-empty {id_name})")
        clean = _clean_geometry(geom, repair_invalid, item)
        if clean.problem:
            feature.append(clean.problem)
        attrs = {str(k): v for k, v in ((k, _json_value(v)) for k, v in record.items())
                 if v is not None and not (isinstance(v, str) and not v.strip())}
        if not missing:
            feature.extend(f"{name} is missing (fill it in)" for name in required
                           if name != id_name and name not in attrs)
        feature.extend(check_attrs(attrs))
        if feature:
            problems.extend(f"{_feature_label(index, the_id, id_name)}: {p}" for p in feature)
            continue
        if the_id is None or clean.geometry is None:
            continue
        if clean.repair_reason:
            repairs.append((the_id, clean.repair_reason))
        accepted.append((index, the_id, clean.geometry, attrs))
    out: list[Any] = []
    if not crs_problems and accepted:
        out, reprojection = _to_local_utm(accepted, pyproj.CRS(frame.crs), id_name)
        problems.extend(reprojection)
    if problems:
        raise SitesError(_format_problems(label, problems))
    for the_id, reason in repairs:
        warnings.warn(f"{label}: {id_name} {the_id!r}: invalid polygon ({reason}) repaired with make_valid; "
                      f"check the {item} boundary", SiteRepairWarning, stacklevel=3)
    return out


def _choice(value: Any) -> str | None:
    return re.sub(r"[\s-]+", "_", value.strip().lower()) if isinstance(value, str) else None


def _register_attrs(attrs: dict[str, Any]) -> list[str]:
    """Check and normalise one register feature's attrs in place; the problems found."""
    problems = []
    if "kind" in attrs:
        kind = KIND_NAMES_ZH.get(str(attrs["kind"]).strip()) or _choice(attrs["kind"])
        if kind in KINDS:
            attrs["kind"] = kind
        else:
            problems.append(f"kind is {attrs['kind']!r}, expected one of {', '.join(KINDS)} (in Chinese "
                            f"{', '.join(KIND_NAMES_ZH)})")
    if "mineral_class" in attrs:
        mineral = MINERAL_CLASS_NAMES_ZH.get(str(attrs["mineral_class"]).strip()) or _choice(attrs["mineral_class"])
        if mineral in MINERAL_CLASSES:
            attrs["mineral_class"] = mineral
        else:
            problems.append(f"mineral_class is {attrs['mineral_class']!r}, expected one of "
                            f"{', '.join(MINERAL_CLASSES)} (in Chinese {', '.join(MINERAL_CLASS_NAMES_ZH)})")
    party = attrs.get("responsible_party")
    if isinstance(party, str) and (party.strip().lower().replace(" ", "") in ("none:historical", "none", "historical")
                                   or party.strip() in NO_PARTY_NAMES_ZH):
        attrs["responsible_party"] = NO_PARTY
    for name in ("province", "city", "county", "demonstration_zone", "responsible_party", "planned_measure"):
        if name in attrs:
            attrs[name] = str(_coerce_site_id(attrs[name]))
    if "restoration_deadline" in attrs:
        parsed = _parse_date(attrs["restoration_deadline"])
        if parsed is None:
            problems.append(f"restoration_deadline is {attrs['restoration_deadline']!r}, not a date "
                            "(write dates as YYYY-MM-DD, or leave it empty)")
        else:
            attrs["restoration_deadline"] = parsed.isoformat()
    return problems


def _zone_attrs(attrs: dict[str, Any]) -> list[str]:
    """Check one zone's attrs in place (``target_rate`` a share 0-1); the problems found."""
    if "target_rate" not in attrs:
        return []
    value = attrs["target_rate"]
    try:
        rate = float(str(value).strip().rstrip("%")) if not isinstance(value, bool) else math.nan
    except ValueError:
        rate = math.nan
    if isinstance(value, str) and value.strip().endswith("%"):
        rate /= 100
    if not (math.isfinite(rate) and 0 <= rate <= 1):
        return [f"target_rate is {value!r}, expected a share between 0 and 1 (0.4 or 40% for 40 %)"]
    attrs["target_rate"] = rate
    return []
