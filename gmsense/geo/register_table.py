"""Registers of mine land and demonstration zones from corner-point tables (CSV or XLSX).

The tables licences come in (gmsense.geo.corner_table: one row per corner point, X = northing,
Y = easting, CGCS2000 geographic EPSG:4490 or a 3-degree Gauss-Kruger zone, the CRS inferred
where the numbers tell it), keyed by the register's id (``register_id``, 图斑编号, 编号, ... or a
licence number) or the zone's (``zone_id``, 示范区编号, 编号). Attributes go under English or Chinese
headers, on the point rows or in a second table. The polygons then pass the validation of
vector registers (gmsense.geo.register: register_from_frame, zones_from_frame), and end in their
local UTM zone (metres) as those do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import geopandas
import pandas as pd

from gmsense.errors import SitesError
from gmsense.geo.corner_table import (
    ATTRIBUTE_HEADERS,
    HEADERS,
    CornerTableKind,
    area_check,
    corner_attributes,
    read_corner_polygons,
)
from gmsense.geo.register import (
    RegisterPolygon,
    Zone,
    register_from_frame,
    zones_from_frame,
)
from gmsense.geo.sites import _format_problems

#: File suffixes read as corner-point tables (any other file is read as a vector file).
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".xlsx", ".xlsm", ".xls")

#: Stated areas with their unit in the header (a bare 面积 is hectares in one register, mu in another).
_AREA_HEADERS = {"area_km2": tuple(h for h in ATTRIBUTE_HEADERS["area_km2"] if h not in ("area", "面积")),
                 "area_ha": ATTRIBUTE_HEADERS["area_ha"]}

REGISTER_TABLE = CornerTableKind(
    id_name="register_id",
    id_headers=("register_id", "图斑编号", "图斑号", "编号", "矿山编号", *HEADERS["licence_no"]),
    item="register polygon",
    id_label="register_id",
    attribute_headers={
        "kind": ("kind", "类型", "图斑类型", "损毁类型"),
        "mineral_class": ("mineral_class", "矿种类别", "矿产类别"),
        "responsible_party": ("responsible_party", "责任主体", "治理责任人"),
        "province": ATTRIBUTE_HEADERS["province"],
        "city": ATTRIBUTE_HEADERS["city"],
        "county": ATTRIBUTE_HEADERS["county"],
        "planned_measure": ("planned_measure", "治理措施", "拟采取措施"),
        "restoration_deadline": ("restoration_deadline", "治理期限", "完成时限"),
        "demonstration_zone": ("demonstration_zone", "示范区", "所属示范区"),
        **_AREA_HEADERS,
    },
)
ZONE_TABLE = CornerTableKind(
    id_name="zone_id",
    id_headers=("zone_id", "示范区编号", "编号"),
    item="zone",
    id_label="zone_id",
    attribute_headers={"name": ("name", "示范区名称", "名称"), "target_rate": ("target_rate", "目标治理率"),
                       **_AREA_HEADERS},
)


def is_corner_table(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read as a corner-point table (by its suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def read_register_table(path: str | os.PathLike[str], *, crs: str | None = None,
                        attributes: str | os.PathLike[str] | None = None, repair_invalid: bool = True,
                        divisions_required: bool = True) -> list[RegisterPolygon]:
    """Register polygons from a corner-point table (``crs`` an EPSG code when the coordinates do not
    tell it; ``attributes`` a second table of attributes per register_id, overriding the point
    rows'); checked as :func:`gmsense.geo.register.read_register` checks a vector register.

    Raises SitesError with one message listing every problem (points without an id, rings that do
    not close, self-intersecting polygons, unknown kinds, bad deadlines, ...); warns (UserWarning)
    when a stated area (面积(公顷), area_ha, area_km2) differs from the points' by more than 0.5 %.
    """
    frame, problems = _corner_frame(Path(path), REGISTER_TABLE, crs, attributes)
    return register_from_frame(frame, str(path), repair_invalid=repair_invalid,
                               divisions_required=divisions_required, problems=problems,
                               missing_hint=_header_hints(REGISTER_TABLE))


def read_zones_table(path: str | os.PathLike[str], *, crs: str | None = None,
                     attributes: str | os.PathLike[str] | None = None, repair_invalid: bool = True) -> list[Zone]:
    """Demonstration zones from a corner-point table (zone_id, name, optional target_rate: 0.4, 40%);
    as :func:`read_register_table`."""
    frame, problems = _corner_frame(Path(path), ZONE_TABLE, crs, attributes)
    return zones_from_frame(frame, str(path), repair_invalid=repair_invalid, problems=problems,
                            missing_hint=_header_hints(ZONE_TABLE))


def _corner_frame(path: Path, kind: CornerTableKind, crs: str | None,
                  attributes: str | os.PathLike[str] | None) -> tuple[geopandas.GeoDataFrame, list[str]]:
    """The table's polygons with their attributes (in the table's CRS; ``source_crs`` and, where an
    area is stated, the area check among them), and the problems of the polygons left out."""
    corners = read_corner_polygons(path, kind, crs=crs)
    if not corners.polygons:
        raise SitesError(_format_problems(str(path), corners.problems))
    attrs = corner_attributes(corners, kind, Path(attributes) if attributes is not None else None)
    rows: list[dict[str, Any]] = []
    for the_id, geom in corners.polygons.items():
        given = {k: v for k, v in attrs.loc[the_id].items() if not pd.isna(v)} if the_id in attrs.index else {}
        areas = area_check(geom, corners.crs, given, the_id, path, kind.item)
        stated = {k: v for k, v in areas.items() if k != "area_m2" and v is not None}
        fields = {k: v for k, v in given.items() if k not in _AREA_HEADERS}
        rows.append({kind.id_name: the_id, **fields, **stated, "source_crs": f"EPSG:{corners.crs.to_epsg()}",
                     "geometry": geom})
    return geopandas.GeoDataFrame(rows, geometry="geometry", crs=corners.crs), corners.problems


def _header_hints(kind: CornerTableKind) -> dict[str, str]:
    """Per attribute field, the headers a corner table may give it under."""
    return {field: f"a corner table gives {field} under {'/'.join(names)}"
            for field, names in kind.attribute_headers.items()}
