"""Protected land and zoning layers: read, validate, repair, version, overlap (``gmsense layers ...``).

A layer is a named set of polygons of one ``kind`` that the rules check disturbances and register
polygons against (gmsense.flags, rule ``protected_land``): an ecological protection red line
(``ecological_red_line``, 生态保护红线), a nature reserve (``nature_reserve``, 自然保护区), permanent
basic farmland (``basic_farmland``, 永久基本农田), public-welfare forest (``public_welfare_forest``,
公益林), a drinking-water source protection zone (``water_source_protection``, 饮用水水源保护区), or
any other kind by name (lower case letters, digits and ``_``, e.g. ``wetland_park``).

Files are read as licence files are (:mod:`gmsense.geo.sites`: GeoJSON, GeoPackage or Shapefile in
any CRS; a file without a CRS, coordinates that do not fit it, empty or non-polygonal geometries are
errors, all listed in one :class:`~gmsense.errors.SitesError`; invalid polygons are repaired with
a warning naming the feature). Features need no property; all properties are kept. Geometries are
kept in EPSG:4326; every area (a layer's, an overlap) is computed in a projected CRS: the licence's
(or register polygon's) local UTM zone.

**Versions.** A layer's content is its kind and its polygons to about 0.1 mm (coordinates in
EPSG:4326 on a 1e-9 degree grid, normalised, in any feature order) with their properties
(:func:`layer_digest`); re-adding a file with another content makes a new version, an identical
file adds nothing. A flag records the version it was checked against.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import geopandas
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.errors import SitesError
from gmsense.geo.sites import (
    WGS84,
    SiteRepairWarning,
    _clean_geometry,
    _crs_problems,
    _format_problems,
    _json_value,
    _polygonal,
    _read_frame,
    reproject_geometry,
)

#: The kinds of protected land the issue names; any other kind is accepted by name.
KINDS: tuple[str, ...] = ("ecological_red_line", "nature_reserve", "basic_farmland", "public_welfare_forest",
                          "water_source_protection")
#: Chinese (and a few English) names of the kinds, as layer files and bureaus write them.
KIND_ALIASES: dict[str, str] = {
    "生态保护红线": "ecological_red_line", "生态红线": "ecological_red_line", "red_line": "ecological_red_line",
    "自然保护区": "nature_reserve", "自然保护地": "nature_reserve",
    "永久基本农田": "basic_farmland", "基本农田": "basic_farmland", "permanent_basic_farmland": "basic_farmland",
    "公益林": "public_welfare_forest", "生态公益林": "public_welfare_forest",
    "饮用水水源保护区": "water_source_protection", "水源保护区": "water_source_protection",
    "drinking_water_source_protection": "water_source_protection",
}
_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
_NAME_PATTERN = re.compile(r"^[\w][\w.\-]{0,119}$")
_DIGEST_GRID_DEG = 1e-9  # as licence versions (gmsense.geo.licences): about 0.1 mm


def normalise_kind(kind: str) -> str:
    """A kind as stored: a known kind, its Chinese name, or another name in lower case with ``_``.

    Raises SitesError for an empty kind or one that is not a plain name."""
    text = str(kind or "").strip()
    if text in KIND_ALIASES:
        return KIND_ALIASES[text]
    lowered = re.sub(r"[\s\-]+", "_", text.lower())
    lowered = KIND_ALIASES.get(lowered, lowered)
    if not _KIND_PATTERN.match(lowered):
        raise SitesError(f"layer kind {kind!r} is not a name: use one of {', '.join(KINDS)}, or another kind "
                         f"written with lower-case letters, digits and _ (e.g. wetland_park)")
    return lowered


def check_layer_name(name: str) -> str:
    """A layer name as stored (letters, digits, ``_ . -``; up to 120 characters), else SitesError."""
    text = str(name or "").strip()
    if not _NAME_PATTERN.match(text):
        raise SitesError(f"layer name {name!r}: use letters, digits, _, . and - (up to 120 characters, "
                         f"e.g. hlj_red_line_2023)")
    return text


@dataclass(frozen=True)
class ProtectedLayer:
    """One version of a layer: ``features`` (valid Polygons / MultiPolygons in EPSG:4326) with their
    properties ``attrs`` (one dict per feature). ``version`` is the store's (None before it is stored)."""

    name: str
    kind: str
    features: tuple[BaseGeometry, ...]
    attrs: tuple[dict[str, Any], ...] = ()
    version: int | None = None
    digest: str = ""

    def with_version(self, version: int) -> ProtectedLayer:
        return ProtectedLayer(self.name, self.kind, self.features, self.attrs, version, self.digest)

    @cached_property
    def _tree(self) -> shapely.STRtree:
        return shapely.STRtree(list(self.features))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_tree"}  # the index is rebuilt where needed

    def near(self, area_wgs84: BaseGeometry) -> ProtectedLayer | None:
        """The layer's features that intersect ``area_wgs84`` (EPSG:4326), or None when none does."""
        hits = sorted(int(i) for i in self._tree.query(area_wgs84, predicate="intersects"))
        if not hits:
            return None
        return ProtectedLayer(self.name, self.kind, tuple(self.features[i] for i in hits),
                              tuple(self.attrs[i] for i in hits) if self.attrs else (), self.version, self.digest)

    @property
    def ref(self) -> tuple[str, int | None, str]:
        """(name, version, digest): what identifies this version."""
        return self.name, self.version, self.digest


@dataclass(frozen=True)
class LocalLayer:
    """A layer as the rules see it around one licence: the union of its features near the licence,
    in the licence's projected CRS (metres)."""

    name: str
    kind: str
    version: int | None
    geometry: BaseGeometry


def layer_digest(kind: str, features: Sequence[BaseGeometry], attrs: Sequence[dict[str, Any]]) -> str:
    """What makes two versions of a layer the same: its kind, and its features (boundaries to about
    0.1 mm, with their properties) in any order."""
    items = []
    for i, geom in enumerate(features):
        grid = shapely.normalize(shapely.set_precision(geom, _DIGEST_GRID_DEG))
        items.append(json.dumps([grid.wkb_hex, attrs[i] if i < len(attrs) else {}], sort_keys=True, default=str))
    blob = json.dumps([kind, sorted(items)])
    return hashlib.sha256(blob.encode()).hexdigest()


def read_layer(path: str | os.PathLike[str], name: str, kind: str, *, repair_invalid: bool = True,
               layer: str | None = None) -> ProtectedLayer:
    """Read and validate a protected-land layer file (see the module docstring).

    Raises :class:`~gmsense.errors.SitesError` with one message listing every problem: a bad name or
    kind, an unreadable file, no features, no CRS or coordinates that do not fit it, empty or
    non-polygonal geometries (features numbered from 1 in file order). Invalid polygons are repaired
    with a :class:`~gmsense.geo.sites.SiteRepairWarning` naming the feature (unless ``repair_invalid``
    is False: then they are problems too). ``layer``: the layer to read of a GeoPackage with several.
    """
    path = Path(path)
    name, kind = check_layer_name(name), normalise_kind(kind)
    frame = _read_frame(path, layer, what="protected-land polygons", item="protected-land",
                        default_layer=name)
    return layer_from_frame(frame, name, kind, repair_invalid=repair_invalid, label=str(path))


def layer_from_frame(frame: geopandas.GeoDataFrame, name: str, kind: str, *, repair_invalid: bool = True,
                     label: str = "layer") -> ProtectedLayer:
    """Validate a GeoDataFrame (any CRS) as :func:`read_layer` does a file."""
    geometry_column = frame.geometry.name
    problems = list(_crs_problems(frame, Path(label).name))
    records = frame[[c for c in frame.columns if c != geometry_column]].to_dict("records")
    accepted: list[tuple[int, BaseGeometry, dict[str, Any]]] = []
    repairs: list[tuple[int, str]] = []
    for index, (geom, record) in enumerate(zip(frame.geometry, records, strict=True)):
        clean = _clean_geometry(geom, repair_invalid, "protected-land")
        if clean.problem:
            problems.append(f"feature {index + 1}: {clean.problem}")
            continue
        if clean.repair_reason:
            repairs.append((index, clean.repair_reason))
        attrs = {str(k): v for k, v in ((k, _json_value(v)) for k, v in record.items())
                 if v is not None and not (isinstance(v, float) and v != v)
                 and not (isinstance(v, str) and not v.strip())}
        accepted.append((index, clean.geometry, attrs))
    features: list[BaseGeometry] = []
    kept_attrs: list[dict[str, Any]] = []
    if not problems and accepted:
        src = pyproj.CRS(frame.crs)
        for index, geom, attrs in accepted:
            wgs = _to_wgs84(geom, src)
            if wgs is None:
                problems.append(f"feature {index + 1}: coordinates do not map to valid longitude/latitude "
                                f"from the file's CRS (check the file's CRS)")
                continue
            features.append(wgs)
            kept_attrs.append(json.loads(json.dumps(attrs, default=str)))
    if problems:
        raise SitesError(_format_problems(label, problems))
    for index, reason in repairs:
        warnings.warn(f"{label}: feature {index + 1}: invalid polygon ({reason}) repaired with make_valid; "
                      f"check the {name} boundary", SiteRepairWarning, stacklevel=3)
    return ProtectedLayer(name, kind, tuple(features), tuple(kept_attrs), None,
                          layer_digest(kind, features, kept_attrs))


def _to_wgs84(geom: BaseGeometry, src: pyproj.CRS) -> BaseGeometry | None:
    out = geom if src.equals(WGS84) else reproject_geometry(geom, src, WGS84)
    if not shapely.is_valid(out):
        out = _polygonal(shapely.make_valid(out))
    if out is None or out.is_empty:
        return None
    minx, miny, maxx, maxy = out.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        return None
    return out


def area_m2(geometry_wgs84: BaseGeometry) -> float:
    """The geodesic area (m2, WGS 84 ellipsoid) of a lon/lat polygon."""
    area, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(geometry_wgs84)
    return abs(float(area))


@dataclass(frozen=True)
class LayerSet:
    """The layers a scan checks (each the version current when the scan began), picklable: what
    travels to the dask workers, narrowed to each task's licences (:meth:`near`)."""

    layers: tuple[ProtectedLayer, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))

    def __bool__(self) -> bool:
        return bool(self.layers)

    def near(self, area_wgs84: BaseGeometry) -> LayerSet:
        """Only the features that intersect ``area_wgs84`` (EPSG:4326), layers without any left out."""
        return LayerSet(tuple(n for layer in self.layers if (n := layer.near(area_wgs84)) is not None))

    def refs(self) -> list[tuple[str, int | None, str]]:
        """(name, version, digest) of each layer, sorted by name."""
        return sorted(layer.ref for layer in self.layers)

    def localised(self, crs: pyproj.CRS, region: BaseGeometry) -> list[LocalLayer]:
        """Each layer's features that meet ``region`` (in ``crs``, projected, metres), as one geometry
        in ``crs`` clipped to ``region`` grown by 1 km (what a patch in ``region`` may overlap)."""
        crs = pyproj.CRS.from_user_input(crs)
        area = reproject_geometry(region, crs, WGS84)
        clip = region.buffer(1000.0)
        out = []
        for layer in self.near(area).layers:
            parts = []
            for geom in layer.features:
                local = reproject_geometry(geom, WGS84, crs)
                if not shapely.is_valid(local):
                    local = _polygonal(shapely.make_valid(local))
                if local is not None and not local.is_empty:
                    parts.append(local.intersection(clip))
            geometry = unary_union([p for p in parts if not p.is_empty]) if parts else None
            if geometry is not None and not geometry.is_empty and geometry.area > 0:
                out.append(LocalLayer(layer.name, layer.kind, layer.version, geometry))
        return out


def overlaps(geometry: BaseGeometry, layers: Iterable[LocalLayer],
             min_m2: float = 0.0) -> list[tuple[LocalLayer, float]]:
    """(layer, overlapping area in m2) for each layer ``geometry`` overlaps by more than ``min_m2``;
    ``geometry`` and the layers share one projected CRS (metres)."""
    out = []
    for layer in layers:
        if geometry.intersects(layer.geometry):
            overlap = float(geometry.intersection(layer.geometry).area)
            if overlap > 0 and overlap >= min_m2:
                out.append((layer, overlap))
    return out
