"""Licences as Chinese registers hold them: corner-point tables in CGCS2000.

A mining or exploration right is published as a table of corner points: one row per point with
the licence number, part (圈) and ring numbers, point number (拐点号) and coordinates X, Y. By the
Chinese survey convention **X is the northing and Y the easting**. Coordinates are CGCS2000
geographic (EPSG:4490, X = latitude, Y = longitude, degrees) or a 3-degree Gauss-Kruger zone:
EPSG:4513-4533 carry the zone number in front of the easting (zone 42 -> Y = 42 500 000 m at the
central meridian 126 E), EPSG:4534-4554 do not. Heilongjiang spans CM 123-135 E (EPSG:4550-4554,
or zones 41-45 = EPSG:4529-4533).

:func:`read_corner_table` turns such a table (CSV or XLSX, Chinese or English headers) into
licence polygons with the contract fields of DESIGN.md; :func:`write_corner_table` writes any
polygons back in the same layout so the bureau's systems can read gmsense's results. The
machinery underneath (:func:`read_corner_polygons`, :func:`corner_attributes`,
:func:`area_check`) takes a :class:`CornerTableKind` naming the id column and attribute headers,
so registers of mine land are read from such tables too (gmsense.geo.register_table).
"""

from __future__ import annotations

import math
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from gmsense.errors import SitesError

GEOGRAPHIC_EPSG = 4490
ZONE_PREFIX_EPSG = range(4513, 4534)  # zones 25..45 (CM 75..135 E), zone number prefixed to the easting
NO_PREFIX_EPSG = range(4534, 4555)  # CM 75..135 E, no prefix
FIRST_ZONE = 25
AREA_TOLERANCE = 0.005  # warn above 0.5 % difference between computed and stated area

#: Header aliases (lower-cased, spaces removed) -> field.
HEADERS: dict[str, tuple[str, ...]] = {
    "licence_no": ("licence_no", "license_no", "licence", "license", "licenceno", "site_id", "许可证号", "许可证编号",
                   "矿权编号", "证号", "项目编号", "许可证号licence_no"),
    "part": ("part", "parcel", "圈号", "区块号", "块号", "地块号", "圈号part"),
    "ring": ("ring", "环号", "圈内环号", "环号ring"),
    "point": ("point", "point_no", "拐点号", "点号", "序号", "拐点号point"),
    "x": ("x", "x坐标", "纵坐标", "北坐标", "x(m)", "纬度"),
    "y": ("y", "y坐标", "横坐标", "东坐标", "y(m)", "经度"),
}
ATTRIBUTE_HEADERS: dict[str, tuple[str, ...]] = {
    "licence_no": HEADERS["licence_no"],
    "name": ("name", "项目名称", "矿山名称", "勘查项目名称", "名称"),
    "holder": ("holder", "矿业权人", "探矿权人", "采矿权人", "申请人", "勘查单位", "开采单位", "exploration_unit"),
    "mineral": ("mineral", "矿种", "主矿种", "勘查矿种", "开采矿种"),
    "mineral_class": ("mineral_class", "矿种类别", "矿产类别"),
    "licence_type": ("licence_type", "license_type", "type", "矿权类型", "类型", "权属类型"),
    "area_km2": ("area_km2", "area", "面积", "面积(平方公里)", "面积(km2)", "面积（平方公里）", "面积(平方千米)",
                 "area(km2)"),
    "area_ha": ("area_ha", "面积(公顷)", "面积（公顷）"),
    "licence_start": ("licence_start", "valid_from", "有效期起", "有效期始", "起始日期"),
    "licence_end": ("licence_end", "valid_to", "有效期止", "截止日期", "终止日期"),
    "province": ("province", "省", "省份"),
    "city": ("city", "市", "地市"),
    "county": ("county", "县", "县区", "区县"),
}
LICENCE_TYPES = {"勘查": "exploration", "探矿": "exploration", "探矿权": "exploration", "exploration": "exploration",
                 "采矿": "mining", "开采": "mining", "采矿权": "mining", "mining": "mining"}
#: Chinese mineral names -> mineral class of the green-mine standards (energy, metal, non_metal, water_gas).
MINERAL_CLASSES = {
    "煤": "energy", "煤炭": "energy", "石油": "energy", "天然气": "energy", "油页岩": "energy", "铀": "energy",
    "地热": "water_gas", "矿泉水": "water_gas", "二氧化碳气": "water_gas",
    "金": "metal", "岩金": "metal", "砂金": "metal", "银": "metal", "铜": "metal", "铁": "metal", "铅": "metal",
    "锌": "metal", "钼": "metal", "钨": "metal", "镍": "metal", "锰": "metal", "铅锌": "metal",
    "石墨": "non_metal", "石灰岩": "non_metal", "水泥用石灰岩": "non_metal", "建筑用砂": "non_metal",
    "建筑石料用灰岩": "non_metal", "花岗岩": "non_metal", "萤石": "non_metal", "膨润土": "non_metal",
    "硅线石": "non_metal", "玄武岩": "non_metal", "砖瓦用粘土": "non_metal",
    # English names (lower case) for registers kept in English
    "coal": "energy", "oil": "energy", "petroleum": "energy", "natural gas": "energy", "oil shale": "energy",
    "uranium": "energy", "geothermal": "water_gas", "mineral water": "water_gas", "carbon dioxide": "water_gas",
    "gold": "metal", "placer gold": "metal", "silver": "metal", "copper": "metal", "iron": "metal", "lead": "metal",
    "zinc": "metal", "lead-zinc": "metal", "molybdenum": "metal", "tungsten": "metal", "nickel": "metal",
    "manganese": "metal", "graphite": "non_metal", "limestone": "non_metal", "construction sand": "non_metal",
    "granite": "non_metal", "fluorite": "non_metal", "bentonite": "non_metal", "sillimanite": "non_metal",
    "basalt": "non_metal", "brick clay": "non_metal",
}
MINERAL_CLASS_NAMES = ("energy", "metal", "non_metal", "water_gas")


@dataclass(frozen=True)
class CornerTableKind:
    """What a corner table's polygons are: ``id_name`` the field their id goes to, ``id_headers``
    the headers of that column (the first one present wins when several are), ``item`` a polygon
    and ``id_label`` its id in messages, ``attribute_headers`` header aliases -> attribute field."""

    id_name: str
    id_headers: tuple[str, ...]
    item: str
    id_label: str
    attribute_headers: dict[str, tuple[str, ...]]


LICENCE_TABLE = CornerTableKind("licence_no", HEADERS["licence_no"], "licence", "licence number",
                                {k: v for k, v in ATTRIBUTE_HEADERS.items() if k != "licence_no"})


@dataclass(frozen=True)
class CornerPolygons:
    """The polygons of a corner table: ``polygons`` id -> (Multi)Polygon in ``crs`` (GIS axis
    order: x = easting or longitude); ``problems`` one sentence per polygon that could not be
    built or point row without an id; ``table`` the table as read (its attribute columns)."""

    polygons: dict[str, BaseGeometry]
    problems: list[str]
    crs: pyproj.CRS
    table: pd.DataFrame


def _norm(text: Any) -> str:
    return str(text).strip().lower().replace(" ", "").replace("（", "(").replace("）", ")")


def _map_headers(columns: Iterable[Any], aliases: dict[str, tuple[str, ...]]) -> dict[Any, str]:
    lookup = {_norm(a): field for field, names in aliases.items() for a in names}
    return {c: lookup[_norm(c)] for c in columns if _norm(c) in lookup}


def _id_column(columns: Iterable[Any], headers: tuple[str, ...]) -> Any | None:
    """The column whose header comes first in ``headers`` (a register's 图斑编号 before a licence
    number it also lists), or None."""
    rank = {_norm(h): i for i, h in reversed(list(enumerate(headers)))}
    ranked = sorted((rank[_norm(c)], i, c) for i, c in enumerate(columns) if _norm(c) in rank)
    return ranked[0][2] if ranked else None


def _rename(frame: pd.DataFrame, kind: CornerTableKind, aliases: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """``frame`` with its id column named ``kind.id_name`` and the ``aliases`` fields renamed (other
    columns that could be the id, or map to a field already present, are left as they are)."""
    id_column = _id_column(frame.columns, kind.id_headers)
    id_headers = {_norm(h) for h in kind.id_headers}
    others = [c for c in frame.columns if _norm(c) not in id_headers]
    renames = _map_headers(others, aliases)
    if id_column is not None:
        renames[id_column] = kind.id_name
    renamed = frame.rename(columns=renames)
    return renamed.loc[:, ~renamed.columns.duplicated()]


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SitesError(f"{path}: file does not exist")
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            try:
                return pd.read_excel(path, dtype=str)
            except (zipfile.BadZipFile, KeyError) as exc:  # not a workbook inside, or a broken one
                raise SitesError(f"{path}: cannot be read as an Excel workbook ({type(exc).__name__}: {exc}); "
                                 "save the table as XLSX or CSV") from None
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                return pd.read_csv(path, dtype=str, encoding=encoding)
            except UnicodeDecodeError:
                continue
        raise SitesError(f"{path}: not UTF-8 or GB18030 text; save the table as CSV (UTF-8) or XLSX")
    except (ValueError, OSError, ImportError) as exc:
        raise SitesError(f"{path}: cannot be read as a table ({exc}); save it as CSV or XLSX") from None


def _numbers(series: pd.Series, what: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(series.astype(str).str.replace(",", "").str.strip(), errors="coerce")
    bad = values.isna()
    if bad.any():
        rows = ", ".join(str(i + 2) for i in series.index[bad.to_numpy()][:5])  # the spreadsheet's rows
        raise SitesError(f"{path}: column {what} has values that are not numbers (rows {rows})")
    return values.to_numpy(dtype="float64")


def infer_crs(x: np.ndarray, y: np.ndarray, path: Path | str = "table") -> pyproj.CRS:
    """The CRS of a corner table from its coordinate ranges (X northing/latitude, Y easting/longitude).

    Refuses swapped axes, and Gauss-Kruger eastings without a zone prefix (their zone cannot be
    told from the numbers: give it with ``--crs``).
    """
    if np.all((np.abs(x) <= 90) & (np.abs(y) <= 180)):
        if np.all((x >= 70) & (x <= 140)) and np.all((y >= 15) & (y <= 55)):
            raise SitesError(f"{path}: X and Y look swapped: in Chinese tables X is the latitude and Y the "
                             "longitude (X 15-55, Y 70-140 in China); swap the columns")
        return pyproj.CRS.from_epsg(GEOGRAPHIC_EPSG)
    _check_not_swapped(x, y, path)
    zones = np.unique(np.floor(y / 1e6).astype(int))
    if np.all(y >= 1e7):
        if zones.size != 1 or not FIRST_ZONE <= zones[0] <= FIRST_ZONE + 20:
            raise SitesError(f"{path}: eastings carry zone numbers {zones.tolist()}; one table must hold one "
                             "3-degree zone between 25 and 45")
        return pyproj.CRS.from_epsg(ZONE_PREFIX_EPSG[0] + int(zones[0]) - FIRST_ZONE)
    raise SitesError(f"{path}: the eastings (Y) have no zone number in front, so the Gauss-Kruger zone is not "
                     "known; give it with --crs (Heilongjiang: EPSG:4550 CM 123E, 4551 126E, 4552 129E, "
                     "4553 132E, 4554 135E)")


def _check_not_swapped(x: np.ndarray, y: np.ndarray, path: Path | str) -> None:
    """Northings in China run about 1.9-6.0 million m; eastings 0.1-0.9 million, or >10 million with a zone."""
    x_like_northing = np.all((x > 1.5e6) & (x < 6.5e6))
    y_like_easting = np.all(((y > 5e4) & (y < 1e6)) | (y > 1e7))
    if not (x_like_northing and y_like_easting):
        if np.all(((x > 5e4) & (x < 1e6)) | (x > 1e7)) and np.all((y > 1.5e6) & (y < 6.5e6)):
            raise SitesError(f"{path}: X and Y look swapped: in Chinese survey tables X is the northing "
                             "(about 1.9-6.0 million m) and Y the easting (0.1-0.9 million m, or with the zone "
                             "number in front); swap the columns")
        raise SitesError(f"{path}: coordinates out of range for CGCS2000 in China (X northing 1.9-6.0 million m, "
                         "Y easting 0.1-0.9 million m or zone-prefixed); check the columns and the CRS")


def _check_crs(crs: pyproj.CRS, x: np.ndarray, y: np.ndarray, path: Path | str) -> None:
    epsg = crs.to_epsg()
    if epsg == GEOGRAPHIC_EPSG:
        infer_crs(x, y, path)  # range and swap checks
        return
    _check_not_swapped(x, y, path)
    if epsg in ZONE_PREFIX_EPSG:
        zone = FIRST_ZONE + epsg - ZONE_PREFIX_EPSG[0]
        if not np.all(np.floor(y / 1e6) == zone):
            raise SitesError(f"{path}: {crs.name} needs eastings with the zone number {zone} in front "
                             f"({zone}xxxxxx.xx); these do not have it; "
                             f"use EPSG:{NO_PREFIX_EPSG[0] + zone - FIRST_ZONE}")
    elif epsg in NO_PREFIX_EPSG and np.any(y >= 1e7):
        raise SitesError(f"{path}: eastings carry a zone number but {crs.name} expects none; use the zone-prefixed "
                         "EPSG:4513-4533 or leave out --crs")


def _polygons(table: pd.DataFrame, kind: CornerTableKind) -> tuple[dict[str, BaseGeometry], list[str]]:
    """Polygon per id from its points (GIS axis order: x = easting/longitude), and the problems of
    those that do not form one."""
    out: dict[str, BaseGeometry] = {}
    problems = []
    for the_id, rows in table.groupby(kind.id_name, sort=False):
        parts, short_ring = [], False
        for _, part_rows in rows.groupby("part", sort=True):
            rings = []
            for _, ring_rows in part_rows.groupby("ring", sort=True):
                ring_rows = ring_rows.sort_values("point_order")
                coords = list(zip(ring_rows["y"], ring_rows["x"], strict=True))  # (easting, northing)
                if len(coords) >= 2 and coords[0] == coords[-1]:
                    coords = coords[:-1]
                if len(coords) < 3:
                    problems.append(f"{kind.item} {the_id}: a ring has {len(coords)} distinct points, needs at "
                                    "least 3 to close")
                    short_ring = True
                    continue
                rings.append(coords)
            if rings:
                parts.append(Polygon(rings[0], rings[1:]))
        if short_ring:
            continue
        geom = parts[0] if len(parts) == 1 else MultiPolygon(parts)
        if geom.is_empty or not geom.is_valid:
            problems.append(f"{kind.item} {the_id}: the corner points do not form a valid polygon "
                            f"({explain_validity(geom)}); check the point order")
            continue
        out[str(the_id)] = geom
    return out, problems


def read_corner_polygons(path: Path, kind: CornerTableKind = LICENCE_TABLE, *,
                         crs: str | None = None) -> CornerPolygons:
    """The polygons of a corner-point table (CSV or XLSX; see the module docstring) in its CRS
    (``crs``, or inferred from the coordinates).

    Raises SitesError for problems of the whole table (missing columns, coordinates that are no
    numbers, an unknown or unfitting CRS); problems of single polygons, and point rows without an
    id, are returned in ``problems``.
    """
    path = Path(path)
    raw = _read_table(path)
    point_headers = {k: v for k, v in HEADERS.items() if k != "licence_no"}
    table = _rename(raw, kind, point_headers)
    missing = [f for f in (kind.id_name, "point", "x", "y") if f not in table.columns]
    if missing:
        accepted = {kind.id_name: kind.id_headers, **point_headers}
        raise SitesError(f"{path}: no column for {', '.join(missing)}; headers accepted include "
                         + "; ".join(f"{f}: {'/'.join(accepted[f][:2] + accepted[f][-3:])}" for f in missing))
    table = table.dropna(subset=["x", "y"], how="all").copy()
    ids = table[kind.id_name].astype("string").str.strip()
    problems = []
    no_id = ids.isna() | (ids == "")
    if no_id.any():
        rows = ", ".join(str(i + 2) for i in table.index[no_id][:10])
        problems.append(f"rows {rows}{' and more' if no_id.sum() > 10 else ''}: corner points without a "
                        f"{kind.id_label} (give each point row the {kind.id_label} of its polygon)")
    table = table[~no_id].copy()
    table[kind.id_name] = ids[~no_id].astype(str)
    if table.empty:
        raise SitesError(f"{path}: " + "; ".join(problems or ["no corner points (one row per point)"]))
    table["x"], table["y"] = _numbers(table["x"], "X", path), _numbers(table["y"], "Y", path)
    table["part"] = pd.to_numeric(table["part"], errors="coerce").fillna(1) if "part" in table else 1
    table["ring"] = pd.to_numeric(table["ring"], errors="coerce").fillna(1) if "ring" in table else 1
    table["point_order"] = pd.to_numeric(table["point"], errors="coerce")
    table["point_order"] = table["point_order"].fillna(pd.Series(np.arange(len(table)), index=table.index))
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    if crs:
        try:
            table_crs = pyproj.CRS.from_user_input(crs)
        except pyproj.exceptions.CRSError:
            raise SitesError(f"--crs {crs} is not a CRS pyproj knows (e.g. EPSG:4552)") from None
        _check_crs(table_crs, x, y, path)
    else:
        table_crs = infer_crs(x, y, path)
    polygons, polygon_problems = _polygons(table, kind)
    return CornerPolygons(polygons, problems + polygon_problems, table_crs, raw)


def _area_m2(geom: BaseGeometry, crs: pyproj.CRS) -> float:
    """Ellipsoidal area in m2 (geodesic on the CGCS2000 ellipsoid)."""
    lonlat = gpd.GeoSeries([geom], crs=crs).to_crs(GEOGRAPHIC_EPSG).iloc[0]
    # Counter-clockwise shells and clockwise holes, so that pyproj subtracts the holes.
    lonlat = shapely.orient_polygons(lonlat)
    geod = pyproj.Geod(ellps="GRS80")
    return abs(geod.geometry_area_perimeter(lonlat)[0])


def _attributes(frame: pd.DataFrame, kind: CornerTableKind) -> pd.DataFrame:
    """One row of attributes per id (index): per field, the first value given in any of the
    polygon's rows (a corner table repeats attributes on its point rows, or gives them once).

    When several headers map to one field (``面积`` and ``area_km2``), the first column wins.
    """
    renamed = _rename(frame, kind, kind.attribute_headers)
    keep = [c for c in kind.attribute_headers if c in renamed.columns]
    if kind.id_name not in renamed.columns:
        return pd.DataFrame(index=pd.Index([], name=kind.id_name))
    table = renamed[[kind.id_name, *keep]].copy()
    table[kind.id_name] = table[kind.id_name].astype("string").str.strip()
    table = table[table[kind.id_name].notna() & (table[kind.id_name] != "")]
    for column in keep:
        text = table[column].astype("string").str.strip()
        table[column] = text.where(text != "")
    return table.groupby(kind.id_name, sort=False).first()


def corner_attributes(corners: CornerPolygons, kind: CornerTableKind = LICENCE_TABLE,
                      attributes: Path | None = None) -> pd.DataFrame:
    """Attributes per polygon id (index; columns the fields of ``kind.attribute_headers`` found):
    those of the corner table, completed and overridden by the ``attributes`` table (its ids
    matched to the corner table's; ids with no corner points are warned about)."""
    own = _attributes(corners.table, kind)
    if attributes is None:
        return own
    attributes = Path(attributes)
    extra_raw = _read_table(attributes)
    if _id_column(extra_raw.columns, kind.id_headers) is None:
        raise SitesError(f"{attributes}: no {kind.id_label} column; headers accepted include "
                         f"{'/'.join(kind.id_headers[:2] + kind.id_headers[-4:])}")
    extra = _attributes(extra_raw, kind)
    if len(extra.columns) == 0:
        raise SitesError(f"{attributes}: no attribute column recognised among "
                         f"{', '.join(map(str, extra_raw.columns))}; headers accepted include " + "; ".join(
                             f"{f}: {'/'.join(names[:3])}" for f, names in kind.attribute_headers.items()))
    known = set(corners.polygons)
    unmatched = [str(n) for n in extra.index if n not in known]
    if unmatched:
        warnings.warn(f"{attributes}: {kind.id_label}s with no corner points: {', '.join(unmatched[:10])}"
                      + (f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""), UserWarning, stacklevel=3)
    return extra.combine_first(own)


def _stated_area(value: Any, the_id: str, path: Path, item: str) -> float:
    text = str(value).replace(",", "").strip()
    try:
        number = float(text)
    except ValueError:
        raise SitesError(f"{path}: {item} {the_id}: the stated area {value!r} is not a number (give km2 under "
                         "面积(平方公里)/area_km2, or hectares under 面积(公顷)/area_ha)") from None
    if not math.isfinite(number) or number <= 0:
        raise SitesError(f"{path}: {item} {the_id}: the stated area {value!r} must be a positive number")
    return number


def area_check(geom: BaseGeometry, crs: pyproj.CRS, attrs: dict[str, Any], the_id: str, path: Path,
               item: str = "licence") -> dict[str, Any]:
    """The polygon's ellipsoidal ``area_m2`` and, when ``attrs`` state one (``area_km2`` or
    ``area_ha``), ``stated_area_m2``, ``stated_area_check`` (ok / differs) and
    ``stated_area_difference`` (share); warns (UserWarning naming the polygon) above 0.5 %."""
    area = _area_m2(geom, crs)
    stated = None
    if attrs.get("area_km2") is not None:
        stated = _stated_area(attrs["area_km2"], the_id, path, item) * 1e6
    elif attrs.get("area_ha") is not None:
        stated = _stated_area(attrs["area_ha"], the_id, path, item) * 1e4
    if not stated:
        return {"area_m2": round(area, 1), "stated_area_m2": None}
    difference = (area - stated) / stated
    check = "ok" if abs(difference) <= AREA_TOLERANCE else "differs"
    if check == "differs":
        warnings.warn(f"{item} {the_id}: the corner points enclose {area / 1e6:.4f} km2 but the table "
                      f"states {stated / 1e6:.4f} km2 ({difference:+.1%}); check the points",
                      UserWarning, stacklevel=3)
    return {"area_m2": round(area, 1), "stated_area_m2": round(stated, 1), "stated_area_check": check,
            "stated_area_difference": round(difference, 4)}


def _date(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "nan"):
        return None
    text = (str(value).strip().replace("年", "-").replace("月", "-").replace("日", "")
            .replace("/", "-").replace(".", "-"))
    try:
        return pd.Timestamp(text).date().isoformat()
    except ValueError:
        return None


def read_corner_table(path: Path, *, crs: str | None = None, attributes: Path | None = None) -> gpd.GeoDataFrame:
    """Licence polygons from a corner-point table (see the module docstring), in EPSG:4326, with
    ``site_id`` = licence number and the contract fields found in the table or ``attributes``.

    Warns (UserWarning naming the licence) when the computed area differs from the stated one by
    more than 0.5 %. Raises SitesError for anything the user must fix.
    """
    path = Path(path)
    corners = read_corner_polygons(path, LICENCE_TABLE, crs=crs)
    if corners.problems:
        raise SitesError(f"{path}: " + "; ".join(corners.problems))
    attrs = corner_attributes(corners, LICENCE_TABLE, attributes)
    rows = []
    for licence, geom in corners.polygons.items():
        a = {k: None if pd.isna(v) else v for k, v in attrs.loc[licence].items()} if licence in attrs.index else {}
        areas = area_check(geom, corners.crs, a, licence, path)
        mineral = str(a.get("mineral") or "").strip()
        stated_class = str(a.get("mineral_class") or "").strip().lower().replace("-", "_")
        rows.append({
            "site_id": licence, "name": a.get("name"), "holder": a.get("holder"), "mineral": mineral or None,
            "mineral_class": stated_class if stated_class in MINERAL_CLASS_NAMES else MINERAL_CLASSES.get(
                mineral.lower()), "licence_type": LICENCE_TYPES.get(str(a.get("licence_type") or "").strip().lower()),
            "licence_start": _date(a.get("licence_start")), "licence_end": _date(a.get("licence_end")),
            "province": a.get("province"), "city": a.get("city"), "county": a.get("county"),
            **areas, "source_crs": f"EPSG:{corners.crs.to_epsg()}", "geometry": geom,
        })
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=corners.crs).to_crs(4326)
    return frame.dropna(axis=1, how="all")


def write_corner_table(frame: gpd.GeoDataFrame, path: Path, crs: str, id_column: str = "site_id") -> Path:
    """Write polygons as a corner-point table (licence_no, part, ring, point, X northing, Y easting)
    in ``crs`` (CSV, UTF-8 with BOM so spreadsheet programs read the Chinese headers)."""
    target = pyproj.CRS.from_user_input(crs)
    projected = frame.to_crs(target)
    geographic = target.is_geographic
    rows = []
    for record_id, geom in zip(projected[id_column], projected.geometry, strict=True):
        for part_no, part in enumerate(getattr(geom, "geoms", [geom]), start=1):
            for ring_no, ring in enumerate([part.exterior, *part.interiors], start=1):
                for point_no, (east, north) in enumerate(list(ring.coords)[:-1], start=1):
                    rows.append({"许可证号 licence_no": record_id, "圈号 part": part_no, "环号 ring": ring_no,
                                 "拐点号 point": point_no,
                                 "X": round(north, 8 if geographic else 2), "Y": round(east, 8 if geographic else 2)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, encoding="utf-8-sig")
    return path
