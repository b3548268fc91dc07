"""Licence areas: read, validate, repair, reproject; monitoring buffers.

A :class:`Site` is one licence polygon in its local UTM zone (metres), with the optional contract
properties of DESIGN.md in ``attrs``.

:func:`read_sites` is the only way licence files enter the package. It reads GeoJSON, GeoPackage
or Shapefile in any CRS, checks every feature against the data contract and raises one
:class:`~gmsense.errors.SitesError` listing every problem found (each with how to fix it), so a
user fixes a file in one pass instead of one error at a time.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry, BaseMultipartGeometry

from gmsense.errors import SitesError

WGS84 = pyproj.CRS.from_epsg(4326)

#: Optional licence properties of the data contract (DESIGN.md, "Licence areas").
CONTRACT_FIELDS: tuple[str, ...] = (
    "name",
    "holder",
    "licence_type",
    "mineral_class",
    "province",
    "city",
    "county",
    "licence_start",
    "licence_end",
    "status",
    "reclamation_due",
    "permitted_disturbance_ha",
)
LICENCE_TYPES: tuple[str, ...] = ("exploration", "mining")
MINERAL_CLASSES: tuple[str, ...] = ("energy", "metal", "non_metal", "water_gas")
DATE_FIELDS: tuple[str, ...] = ("licence_start", "licence_end", "reclamation_due")

#: At most this many problems are spelled out in one error message; the rest are counted.
MAX_LISTED_PROBLEMS = 50

#: File suffix -> OGR driver used by :func:`write_sites`.
WRITE_DRIVERS: dict[str, str] = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
}
_GPKG_LAYER = "sites"
_SHAPEFILE_FIELD_WIDTH = 10
_FORMATS = "GeoJSON, GeoPackage or Shapefile"


class SiteRepairWarning(UserWarning):
    """An invalid licence polygon was repaired with ``shapely.make_valid``; check the boundary."""


def utm_crs_for(lon: float, lat: float) -> pyproj.CRS:
    """The WGS 84 / UTM zone CRS (EPSG:326xx north, 327xx south) containing ``lon, lat`` (degrees)."""
    zone = min(max(int((lon + 180.0) // 6.0) + 1, 1), 60)
    return pyproj.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def reproject_geometry(geom: BaseGeometry, src: pyproj.CRS, dst: pyproj.CRS) -> BaseGeometry:
    """``geom`` from CRS ``src`` to CRS ``dst`` (always_xy axis order; the result is 2-D)."""
    transformer = _transformer(_crs_key(src), _crs_key(dst))
    if transformer is None:
        return geom
    return shapely.transform(geom, transformer.transform, interleaved=False)


def _crs_key(crs: pyproj.CRS | str | int) -> str | int:
    return crs.srs if isinstance(crs, pyproj.CRS) else crs


@functools.lru_cache(maxsize=64)
def _transformer(src: str | int, dst: str | int) -> pyproj.Transformer | None:
    """The transformer between two CRSs (by their definitions), made once: comparing and parsing
    CRSs costs more than transforming a patch's outline. None when they are the same CRS. (A
    ``pyproj.Transformer`` may be shared between threads: each thread gets its own PROJ object.)"""
    if pyproj.CRS(src) == pyproj.CRS(dst):
        return None
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


@dataclass(frozen=True)
class Site:
    """One licence area.

    ``geometry`` is a valid Polygon or MultiPolygon in ``crs`` (a projected CRS in metres, the
    local UTM zone after :func:`read_sites`). ``attrs`` holds the optional contract properties
    (``name, holder, licence_type, mineral_class, province, city, county, licence_start,
    licence_end, status, reclamation_due, permitted_disturbance_ha``) and any others, as
    JSON-serialisable values.
    """

    site_id: str
    geometry: BaseGeometry
    crs: pyproj.CRS
    attrs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Short form: id, CRS, area in m² (of ``geometry`` in ``crs``) and attrs."""
        return (
            f"Site(site_id={self.site_id!r}, crs={self.crs.to_string()}, "
            f"area_m2={self.geometry.area:.0f}, attrs={self.attrs!r})"
        )

    def buffered(self, buffer_m: float) -> BaseGeometry:
        """The monitoring area: the licence plus ``buffer_m`` metres around it, in ``crs``."""
        return self.geometry.buffer(buffer_m) if buffer_m > 0 else self.geometry

    def to_crs(self, crs: pyproj.CRS) -> Site:
        """The same licence with its geometry in ``crs``."""
        return Site(
            self.site_id,
            reproject_geometry(self.geometry, self.crs, crs),
            pyproj.CRS(crs),
            self.attrs,
        )

    @property
    def geometry_wgs84(self) -> BaseGeometry:
        """The licence polygon in EPSG:4326 (lon, lat)."""
        return reproject_geometry(self.geometry, self.crs, WGS84)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_sites(
    path: str | os.PathLike[str],
    *,
    repair_invalid: bool = True,
    layer: str | None = None,
) -> list[Site]:
    """Read, validate and reproject licence areas.

    ``path`` is a GeoJSON, GeoPackage or Shapefile (anything GDAL reads as vector) in any CRS.
    Each returned :class:`Site` has its geometry in the WGS 84 / UTM zone of its own centroid
    (metres), ``site_id`` as a string, and every other non-null property in ``attrs`` as a
    JSON-serialisable value (dates as ISO ``YYYY-MM-DD`` strings). The optional contract fields
    are checked and normalised: ``licence_type`` and ``mineral_class`` lower-cased,
    ``licence_start/licence_end/reclamation_due`` as ISO dates, ``permitted_disturbance_ha`` as
    a float (hectares). Shapefile-truncated names (``licence_st``) and upper-case names
    (``SITE_ID``) are mapped back to the contract names.

    Invalid polygons are repaired with ``shapely.make_valid`` when ``repair_invalid`` (keeping
    only polygonal parts; a :class:`SiteRepairWarning` names each repaired site and the reason);
    otherwise they are errors. A GeoPackage with several layers is read from ``layer``, else
    from a layer named ``sites``.

    Raises :class:`~gmsense.errors.SitesError` with one message listing every problem; features
    are numbered from 1 in file order.
    """
    path = Path(path)
    return sites_from_frame(_read_frame(path, layer), repair_invalid=repair_invalid, label=str(path))


def sites_from_frame(
    frame: geopandas.GeoDataFrame, *, repair_invalid: bool = True, label: str = "licences"
) -> list[Site]:
    """Validate and reproject the licences of a GeoDataFrame (any CRS) as :func:`read_sites` does
    for a file; ``label`` (a file name, or a short description) starts the error message."""
    frame = frame.rename(columns=_contract_renames(frame.columns, frame.geometry.name))
    geometry_column = frame.geometry.name

    problems: list[str] = []
    has_ids = "site_id" in frame.columns
    if has_ids:
        ids = [_coerce_site_id(value) for value in frame["site_id"]]
    else:
        ids = [None] * len(frame)
        columns = [str(c) for c in frame.columns if c != geometry_column]
        problems.append(
            f"no site_id property (properties found: {', '.join(columns) or 'none'}); "
            "add a site_id property holding a unique id for every licence"
        )
    crs_problems = _crs_problems(frame, Path(label).name)
    problems.extend(crs_problems)
    problems.extend(_duplicate_problems(ids))

    attr_columns = [c for c in frame.columns if c not in ("site_id", geometry_column)]
    records = frame[attr_columns].to_dict("records")
    accepted: list[tuple[int, str, BaseGeometry, dict[str, Any]]] = []
    repairs: list[tuple[str, str]] = []
    for index, (site_id, geom, record) in enumerate(zip(ids, frame.geometry, records, strict=True)):
        feature_problems: list[str] = []
        if has_ids and site_id is None:
            feature_problems.append(
                "site_id is missing (give every licence a unique, non-empty site_id)"
            )
        clean = _clean_geometry(geom, repair_invalid)
        if clean.problem:
            feature_problems.append(clean.problem)
        attrs, attr_problems = _clean_attrs(record)
        feature_problems.extend(attr_problems)
        if feature_problems:
            where = _feature_label(index, site_id)
            problems.extend(f"{where}: {problem}" for problem in feature_problems)
            continue
        if site_id is None or clean.geometry is None:  # only when the site_id column is missing
            continue
        if clean.repair_reason:
            repairs.append((site_id, clean.repair_reason))
        accepted.append((index, site_id, clean.geometry, attrs))

    sites: list[Site] = []
    if not crs_problems and accepted:
        sites, reprojection_problems = _to_local_utm(accepted, pyproj.CRS(frame.crs))
        problems.extend(reprojection_problems)
    if problems:
        raise SitesError(_format_problems(label, problems))
    for site_id, reason in repairs:
        warnings.warn(
            f"{label}: site_id {site_id!r}: invalid polygon ({reason}) repaired with make_valid; "
            "check the licence boundary",
            SiteRepairWarning,
            stacklevel=2,
        )
    return sites


def sites_frame(sites: Sequence[Site]) -> geopandas.GeoDataFrame:
    """Licences as a GeoDataFrame in EPSG:4326: ``site_id``, one column per attrs key, geometry.

    Columns follow the order in which attrs keys first appear; a site without a key has a null.
    """
    keys: dict[str, None] = {}
    for site in sites:
        keys.update(dict.fromkeys(k for k in site.attrs if k not in ("site_id", "geometry")))
    columns = ["site_id", *keys]
    records = [{**site.attrs, "site_id": site.site_id} for site in sites]
    table = pd.DataFrame.from_records(records, columns=columns)
    geometry = geopandas.GeoSeries([site.geometry_wgs84 for site in sites], crs=WGS84)
    return geopandas.GeoDataFrame(table, geometry=geometry.values, crs=WGS84)


def write_sites(sites: Sequence[Site], path: str | os.PathLike[str]) -> Path:
    """Write licences in EPSG:4326 to ``path``; the format follows the suffix.

    ``.geojson``/``.json`` -> GeoJSON, ``.gpkg`` -> GeoPackage (layer ``sites``),
    ``.shp`` -> Shapefile (field names cut to 10 characters; :func:`read_sites` maps the
    contract names back). An existing file (GeoPackage: the ``sites`` layer) is replaced.
    Returns the path written.
    """
    path = Path(path)
    driver = WRITE_DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise SitesError(
            f"{path}: cannot write licence areas with suffix {path.suffix!r}; "
            f"use one of {', '.join(WRITE_DRIVERS)}"
        )
    options: dict[str, Any] = {"layer": _GPKG_LAYER} if driver == "GPKG" else {}
    sites_frame(sites).to_file(path, driver=driver, engine="pyogrio", **options)
    return path


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read_frame(path: Path, layer: str | None, *, what: str = "licence areas", item: str = "licence",
                default_layer: str = _GPKG_LAYER) -> geopandas.GeoDataFrame:
    """The features of ``path`` as read by pyogrio; every failure becomes a SitesError.

    ``what`` (plural) and ``item`` (singular) name the features in messages; a GeoPackage with
    several layers is read from ``layer``, else from ``default_layer``."""
    if not path.exists():
        raise SitesError(
            f"{path}: file does not exist (check the path; {what} are read from {_FORMATS})"
        )
    if path.is_dir():
        raise SitesError(f"{path}: is a folder (point to a {_FORMATS} file)")
    try:
        chosen = _choose_layer(path, pyogrio.list_layers(path), layer, default_layer, item)
        frame = _read_layer(path, chosen)
    except (RuntimeError, OSError, ValueError) as exc:  # pyogrio errors derive from RuntimeError
        reason = str(exc).split(";")[0].strip() or type(exc).__name__
        raise SitesError(
            f"{path}: cannot be read as a vector file ({reason}); save the {what} as "
            f"{_FORMATS}"
        ) from exc
    if not isinstance(frame, geopandas.GeoDataFrame):
        raise SitesError(f"{path}: has no geometry (save the {item} polygons as {_FORMATS})")
    if frame.empty:
        raise SitesError(f"{path}: has no features (add the {item} polygons, one per {item})")
    return frame


def _read_layer(path: Path, layer: str | None) -> geopandas.GeoDataFrame:
    """One layer of ``path`` via pyogrio.

    GDAL types GeoJSON properties that look like dates as dates, and one impossible date
    (``2021-02-30``) then fails the whole read with ValueError; such a file is read again with
    dates as strings, so the bad value is reported against its feature instead.
    """
    with warnings.catch_warnings():
        # geopandas notes GeoJSON properties of mixed type; the values are checked here anyway.
        warnings.filterwarnings("ignore", "Could not parse column", UserWarning)
        try:
            return geopandas.read_file(path, engine="pyogrio", layer=layer)
        except ValueError:
            if pyogrio.read_info(path, layer=layer)["driver"] != "GeoJSON":
                raise
            return geopandas.read_file(path, engine="pyogrio", layer=layer, DATE_AS_STRING="YES")


def _choose_layer(path: Path, layers: np.ndarray, layer: str | None, default: str = _GPKG_LAYER,
                  item: str = "licence") -> str | None:
    """The layer to read: ``layer``, else the only one, else one named ``default``."""
    names = [str(row[0]) for row in layers]
    if layer is not None:
        if layer not in names:
            raise SitesError(
                f"{path}: has no layer {layer!r} (layers: {', '.join(names) or 'none'})"
            )
        return layer
    if len(names) <= 1:
        return None
    if default in names:
        return default
    raise SitesError(
        f"{path}: has {len(names)} layers ({', '.join(names)}); keep only the {item} layer "
        f"or name it {default!r}"
    )


def _contract_renames(columns: Iterable[Any], geometry_column: str,
                      wanted: Sequence[str] = ("site_id", *CONTRACT_FIELDS)) -> dict[str, str]:
    """Renames mapping upper-case or Shapefile-truncated names back to the ``wanted`` field names
    (the licence contract's by default).

    ``SITE_ID -> site_id``, ``licence_st -> licence_start``; only when the target name is not
    already present and exactly one column maps to it.
    """
    present = {str(c) for c in columns}
    candidates: dict[str, list[str]] = {}
    for column in present - {geometry_column, *wanted}:
        target = _contract_name_for(column.lower(), wanted)
        if target is not None and target not in present:
            candidates.setdefault(target, []).append(column)
    return {sources[0]: target for target, sources in candidates.items() if len(sources) == 1}


def _contract_name_for(lowered: str, wanted: Sequence[str]) -> str | None:
    """The contract name that ``lowered`` spells (exactly, or cut to 10 characters), if one."""
    if lowered in wanted:
        return lowered
    if len(lowered) == _SHAPEFILE_FIELD_WIDTH:
        matches = [name for name in wanted if name.startswith(lowered)]
        if len(matches) == 1:
            return matches[0]
    return None


# --------------------------------------------------------------------------------------------
# Validation helpers (pure)
# --------------------------------------------------------------------------------------------


def _is_null(value: Any) -> bool:
    """True for None, NaN, NaT and pd.NA (scalars only; containers are never null)."""
    if value is None:
        return True
    if isinstance(value, list | tuple | dict | np.ndarray):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _coerce_site_id(value: Any) -> str | None:
    """``value`` as a site_id string (``7.0 -> '7'``), or None when null or blank."""
    if _is_null(value):
        return None
    value = _json_value(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _feature_label(index: int, site_id: str | None, id_name: str = "site_id") -> str:
    """``feature 3 (site_id 'A-2')`` for the feature at 0-based ``index``."""
    label = f"feature {index + 1}"
    return f"{label} ({id_name} {site_id!r})" if site_id else label


def _duplicate_problems(ids: Sequence[str | None], id_name: str = "site_id", items: str = "licences") -> list[str]:
    """One problem per id used by more than one feature, naming the features (from 1)."""
    positions: dict[str, list[int]] = {}
    for index, site_id in enumerate(ids):
        if site_id is not None:
            positions.setdefault(site_id, []).append(index + 1)
    return [
        f"duplicate {id_name} {site_id!r} (features {', '.join(map(str, where))}); "
        f"{id_name} must be unique: rename or merge these {items}"
        for site_id, where in positions.items()
        if len(where) > 1
    ]


def _crs_label(crs: pyproj.CRS) -> str:
    """``'WGS 84 (EPSG:4326)'``, or just the CRS name when it has no authority code."""
    authority = crs.to_authority()
    return f"{crs.name} ({authority[0]}:{authority[1]})" if authority else crs.name


def _finite_bounds(geometries: geopandas.GeoSeries) -> tuple[float, float, float, float] | None:
    """``(minx, miny, maxx, maxy)`` over all non-empty geometries, or None if there are none."""
    bounds = geometries.bounds.to_numpy(dtype=float)
    if bounds.size == 0 or np.isnan(bounds).all():
        return None
    minx, miny = np.nanmin(bounds[:, 0]), np.nanmin(bounds[:, 1])
    maxx, maxy = np.nanmax(bounds[:, 2]), np.nanmax(bounds[:, 3])
    return float(minx), float(miny), float(maxx), float(maxy)


def _in_lonlat_range(bounds: tuple[float, float, float, float]) -> bool:
    """True when ``bounds`` fits within longitude -180..180 and latitude -90..90."""
    minx, miny, maxx, maxy = bounds
    return minx >= -180.0 and maxx <= 180.0 and miny >= -90.0 and maxy <= 90.0


def _crs_problems(frame: geopandas.GeoDataFrame, filename: str) -> list[str]:
    """File-level CRS problems: no CRS, or coordinates that do not fit the declared CRS."""
    if frame.crs is None:
        return [
            "no coordinate reference system (set the CRS, e.g. "
            f"ogr2ogr -a_srs EPSG:4326 fixed.gpkg {filename}; for a Shapefile keep its .prj "
            "file beside the .shp)"
        ]
    crs = pyproj.CRS(frame.crs)
    bounds = _finite_bounds(frame.geometry)
    if bounds is None:
        return []
    extent = f"x {bounds[0]:.6g}..{bounds[2]:.6g}, y {bounds[1]:.6g}..{bounds[3]:.6g}"
    if crs.is_geographic and not _in_lonlat_range(bounds):
        return [
            f"coordinates span {extent}, outside the longitude/latitude range of its "
            f"geographic CRS {_crs_label(crs)}; they look projected, so the CRS is probably "
            "wrong (set the right one, e.g. ogr2ogr -a_srs EPSG:4552 fixed.gpkg "
            f"{filename} for CGCS2000 / 3-degree Gauss-Kruger CM 129E)"
        ]
    if crs.is_projected and _in_lonlat_range(bounds):
        return [
            f"coordinates span {extent}, which looks like longitude/latitude degrees, but the "
            f"CRS is projected ({_crs_label(crs)}); set the right CRS, e.g. "
            f"ogr2ogr -a_srs EPSG:4326 fixed.gpkg {filename}"
        ]
    return []


def _polygon_parts(geom: BaseGeometry) -> Iterator[Polygon]:
    """The non-empty polygons inside ``geom``, descending into multi-parts and collections."""
    if isinstance(geom, Polygon):
        if not geom.is_empty:
            yield geom
    elif isinstance(geom, BaseMultipartGeometry):
        for part in geom.geoms:
            yield from _polygon_parts(part)


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """``geom`` itself if a (Multi)Polygon, its polygon parts if a collection, else None."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = list(_polygon_parts(geom))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


@dataclass(frozen=True)
class _CleanGeometry:
    """Outcome of :func:`_clean_geometry`: a valid polygonal geometry, or a problem."""

    geometry: BaseGeometry | None
    problem: str | None = None
    repair_reason: str | None = None


def _clean_geometry(geom: BaseGeometry | None, repair_invalid: bool, item: str = "licence") -> _CleanGeometry:
    """A valid 2-D Polygon/MultiPolygon from ``geom`` (same CRS), or the problem with it
    (``item`` names the feature in messages)."""
    if geom is None or not isinstance(geom, BaseGeometry) or geom.is_empty:
        return _CleanGeometry(
            None, f"geometry is empty or missing (draw the {item} boundary or remove the feature)"
        )
    polygonal = _polygonal(shapely.force_2d(geom))
    if polygonal is None:
        return _CleanGeometry(
            None,
            f"geometry is a {geom.geom_type}, expected a Polygon or MultiPolygon "
            f"(redraw the {item} boundary as a closed polygon)",
        )
    if shapely.is_valid(polygonal):
        return _CleanGeometry(polygonal)
    reason = shapely.is_valid_reason(polygonal)
    if not repair_invalid:
        return _CleanGeometry(
            None,
            f"polygon is invalid: {reason} (fix it in a GIS, e.g. QGIS 'Fix geometries', "
            "or read with repair_invalid=True)",
        )
    repaired = _polygonal(shapely.make_valid(polygonal))
    if repaired is None or repaired.area <= 0:
        return _CleanGeometry(
            None,
            f"polygon is invalid ({reason}) and repairing it leaves no area "
            f"(redraw the {item} boundary)",
        )
    return _CleanGeometry(repaired, repair_reason=reason)


def _iso(value: dt.datetime | dt.date) -> str:
    """``YYYY-MM-DD`` for a date or a midnight timestamp; full ISO 8601 otherwise."""
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat()
    return value.isoformat()


def _json_value(value: Any) -> Any:
    """``value`` as a JSON-serialisable Python value; None for nulls.

    numpy scalars -> Python scalars, dates/timestamps -> ISO strings, arrays -> lists.
    """
    if isinstance(value, np.ndarray | list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if _is_null(value):
        return None
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dt.datetime | dt.date):
        return _iso(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


_DATE_PATTERN = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T].*)?$")


def _parse_date(value: Any) -> dt.date | None:
    """``value`` (ISO string, ``YYYY/MM/DD``, ``YYYYMMDD``, ``2020年5月1日``) as a date, or None."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    match = _DATE_PATTERN.match(text)
    try:
        if match:
            return dt.date(*(int(group) for group in match.groups()))
        return dt.datetime.fromisoformat(text).date()
    except ValueError:
        return None


def _check_choice(
    field_name: str, allowed: Sequence[str]
) -> Callable[[Any], tuple[Any, str | None]]:
    """A checker normalising case, spaces and hyphens and accepting only ``allowed`` values."""

    def check(value: Any) -> tuple[Any, str | None]:
        if isinstance(value, str):
            normal = re.sub(r"[\s-]+", "_", value.strip().lower())
            if normal in allowed:
                return normal, None
        return value, (
            f"{field_name} is {value!r}, expected one of {', '.join(allowed)} "
            "(fix the value or leave it empty)"
        )

    return check


def _check_date(field_name: str) -> Callable[[Any], tuple[Any, str | None]]:
    """A checker turning a date into ``YYYY-MM-DD``."""

    def check(value: Any) -> tuple[Any, str | None]:
        parsed = _parse_date(value)
        if parsed is None:
            return value, f"{field_name} is {value!r}, not a date (write dates as YYYY-MM-DD)"
        return parsed.isoformat(), None

    return check


def _check_hectares(field_name: str) -> Callable[[Any], tuple[Any, str | None]]:
    """A checker accepting a finite, non-negative number (or numeric string) of hectares."""

    def check(value: Any) -> tuple[Any, str | None]:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or number < 0:
            return value, (f"{field_name} is {value!r}, expected a non-negative number of hectares")
        return number, None

    return check


_CONTRACT_CHECKS: dict[str, Callable[[Any], tuple[Any, str | None]]] = {
    "licence_type": _check_choice("licence_type", LICENCE_TYPES),
    "mineral_class": _check_choice("mineral_class", MINERAL_CLASSES),
    **{name: _check_date(name) for name in DATE_FIELDS},
    "permitted_disturbance_ha": _check_hectares("permitted_disturbance_ha"),
}


def _clean_attrs(record: Mapping[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """JSON-safe attrs from one feature's properties, contract fields checked and normalised.

    Nulls are dropped, and so are blank strings in contract fields (Shapefiles store nulls as
    blanks). Returns ``(attrs, problems)``.
    """
    attrs: dict[str, Any] = {}
    for key, raw in record.items():
        value = _json_value(raw)
        name = str(key)
        if value is None or (
            name in CONTRACT_FIELDS and isinstance(value, str) and not value.strip()
        ):
            continue
        attrs[name] = value
    problems: list[str] = []
    for name, check in _CONTRACT_CHECKS.items():
        if name in attrs:
            attrs[name], problem = check(attrs[name])
            if problem:
                problems.append(problem)
    start, end = attrs.get("licence_start"), attrs.get("licence_end")
    if not problems and isinstance(start, str) and isinstance(end, str) and end < start:
        problems.append(
            f"licence_end {end} is before licence_start {start} (check the licence dates)"
        )
    return attrs, problems


def _local_utm_crs(geom_wgs84: BaseGeometry | None) -> pyproj.CRS | None:
    """The UTM CRS of the centroid of a lon/lat geometry; None if it is not on Earth."""
    if geom_wgs84 is None or geom_wgs84.is_empty:
        return None
    bounds = geom_wgs84.bounds
    if not all(math.isfinite(b) for b in bounds) or not _in_lonlat_range(bounds):
        return None
    centroid = geom_wgs84.centroid
    return utm_crs_for(centroid.x, centroid.y)


def _to_local_utm(
    accepted: Sequence[tuple[int, str, BaseGeometry, dict[str, Any]]], src: pyproj.CRS, id_name: str = "site_id"
) -> tuple[list[Site], list[str]]:
    """Sites in the UTM zone of each one's WGS 84 centroid, and per-feature reprojection problems.

    ``accepted`` holds ``(feature index, site_id, valid polygonal geometry in src, attrs)``.
    A polygon made invalid by the reprojection (rounding) is made valid again silently.
    """
    source = geopandas.GeoSeries([geom for _, _, geom, _ in accepted], crs=src)
    targets = [_local_utm_crs(geom) for geom in source.to_crs(WGS84)]
    projected: dict[int, BaseGeometry | None] = {}
    for crs in {t for t in targets if t is not None}:
        rows = [i for i, t in enumerate(targets) if t == crs]
        for row, geom in zip(rows, source.iloc[rows].to_crs(crs), strict=True):
            projected[row] = (
                geom if shapely.is_valid(geom) else _polygonal(shapely.make_valid(geom))
            )
    sites: list[Site] = []
    problems: list[str] = []
    for row, ((index, site_id, _, attrs), crs) in enumerate(zip(accepted, targets, strict=True)):
        geom = projected.get(row)
        if crs is None or geom is None or geom.is_empty:
            problems.append(
                f"{_feature_label(index, site_id, id_name)}: coordinates do not map to valid "
                f"longitude/latitude from CRS {_crs_label(src)} (check the file's CRS)"
            )
        else:
            sites.append(Site(site_id, geom, crs, attrs))
    return sites, problems


def _format_problems(label: str, problems: Sequence[str]) -> str:
    """``'<label>: p1; p2; ...'`` with at most :data:`MAX_LISTED_PROBLEMS` spelled out."""
    shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    hidden = len(problems) - MAX_LISTED_PROBLEMS
    more = f"; and {hidden} more problem{'s' if hidden > 1 else ''}" if hidden > 0 else ""
    return f"{label}: {shown}{more}"


# --- approved work programmes -----------------------------------------------------------------
WORK_TYPES = ("trench", "pad", "track", "clearing")


@dataclass(frozen=True)
class ApprovedWork:
    """One approved work of a licence's work programme: a planned trench line, pad, track or
    clearing (any geometry type) in ``crs`` (metres), with the year it is approved for."""

    work_id: str
    site_id: str
    work_type: str
    year: int | None
    geometry: BaseGeometry
    crs: pyproj.CRS

    def to_crs(self, crs: pyproj.CRS) -> ApprovedWork:
        return ApprovedWork(self.work_id, self.site_id, self.work_type, self.year,
                            reproject_geometry(self.geometry, self.crs, crs), pyproj.CRS(crs))


def read_works(path: str | os.PathLike[str]) -> dict[str, list[ApprovedWork]]:
    """Approved work programmes: a vector file with ``site_id``, ``work_type`` (trench, pad,
    track or clearing), optional ``year`` and ``work_id``, any geometry, any CRS. Returns the
    works per licence, each in the UTM zone of its licence's area (see :func:`utm_crs_for`).
    A licence that appears in this file has a programme; one that does not, has none.
    """
    path = Path(path)
    frame = _read_frame(path, None)
    problems = [f"column {column!r} is missing" for column in ("site_id", "work_type") if column not in frame.columns]
    if frame.crs is None:
        problems.append("no CRS (set one, e.g. ogr2ogr -a_srs EPSG:4326)")
    if problems:
        raise SitesError(f"{path}: " + "; ".join(problems))
    frame = frame.to_crs(WGS84)
    works: dict[str, list[ApprovedWork]] = {}
    for i, row in enumerate(frame.itertuples(index=False), start=1):
        site_id = _coerce_site_id(row.site_id)
        work_type = str(row.work_type).strip().lower() if not _is_null(row.work_type) else ""
        geom = row.geometry
        if site_id is None:
            problems.append(f"feature {i}: site_id is missing")
        if work_type not in WORK_TYPES:
            problems.append(f"feature {i}: work_type {row.work_type!r} is not one of {', '.join(WORK_TYPES)}")
        if geom is None or geom.is_empty:
            problems.append(f"feature {i}: geometry is empty")
        year = getattr(row, "year", None)
        try:
            year = None if _is_null(year) else int(year)
        except (TypeError, ValueError):
            problems.append(f"feature {i}: year {year!r} is not a year")
            year = None
        if problems and problems[-1].startswith(f"feature {i}:"):
            continue
        centroid = geom.centroid
        crs = utm_crs_for(centroid.x, centroid.y)
        work_id = getattr(row, "work_id", None)
        work_id = str(work_id) if not _is_null(work_id) else f"{site_id}-W{i:03d}"
        works.setdefault(site_id, []).append(
            ApprovedWork(work_id, site_id, work_type, year, reproject_geometry(geom, WGS84, crs), crs))
    if problems:
        raise SitesError(f"{path}: " + "; ".join(problems))
    return works
