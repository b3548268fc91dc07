"""The map page of the restoration PDF (:mod:`gmsense.outputs.restoration_pdf`): every register polygon coloured
by its status in the report's year, the demonstration zones outlined, a scale bar, a north arrow and the legend,
in English or Chinese.

The map is drawn in the UTM zone of the register's centre (metres, so the scale bar is true; grid north is
within a degree or two of true north across one zone, which the arrow does not correct). The store holds no
county boundaries (a boundary layer added with ``gmsense layers add`` would be checked as protected land), so
the map is framed on the polygons' extent, each county named at the centre of its polygons. A polygon too
small to see at that scale is also marked by a dot of its colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shapely
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrow, PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from shapely.geometry.base import BaseGeometry

from gmsense.geo.sites import WGS84, reproject_geometry, utm_crs_for
from gmsense.outputs.i18n import t

#: Status -> fill colour (the chart's brown and green for damaged and restored).
STATUS_COLOURS = {"damaged": "#b35806", "under_restoration": "#fdb863", "restored": "#1b7837",
                  "reverted": "#d73027", "none": "#bdbdbd"}
#: A polygon narrower than this share of the map's span is also marked by a dot.
DOT_BELOW = 1 / 120


def polygon_path(geometry: BaseGeometry) -> MplPath:
    """A (multi)polygon with its holes as one matplotlib path."""
    vertices: list[Sequence[float]] = []
    codes: list[int] = []
    for part in shapely.get_parts(geometry):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        for ring in (part.exterior, *part.interiors):
            coords = np.asarray(ring.coords)[:, :2]
            vertices += [*coords[:-1], coords[0]]
            codes += [MplPath.MOVETO, *[MplPath.LINETO] * (len(coords) - 2), MplPath.CLOSEPOLY]
    return MplPath(np.asarray(vertices, dtype=float).reshape(-1, 2), codes)


def nice_length(span_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k metres) of about a fifth of ``span_m``."""
    target = max(span_m / 5, 1.0)
    power = 10 ** math.floor(math.log10(target))
    return max(f * power for f in (1, 2, 5) if f * power <= target)


def _length_text(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def map_figure(polygons: pd.DataFrame, year: int, lang: str = "en",
               zones: Sequence[tuple[str, BaseGeometry]] = ()) -> Figure:
    """The map: ``polygons`` (``register_id``, ``status`` in ``year`` (None: no status), ``county``, and
    ``geometry`` in EPSG:4326), each a patch whose ``gid`` is its register id, coloured by
    :data:`STATUS_COLOURS`; ``zones`` (zone id, EPSG:4326 geometry) outlined."""
    union = shapely.union_all(list(polygons["geometry"]))
    centre = union.centroid
    crs = utm_crs_for(centre.x, centre.y)
    local = [reproject_geometry(g, WGS84, crs) for g in polygons["geometry"]]
    minx, miny, maxx, maxy = shapely.union_all(local).bounds
    span = max(maxx - minx, maxy - miny, 200.0)
    pad = span * 0.12
    fig, ax = plt.subplots(figsize=(8.27, 8.6))
    for zone_id, geometry in zones:
        zone = reproject_geometry(geometry, WGS84, crs)
        ax.add_patch(PathPatch(polygon_path(zone), facecolor="none", edgecolor="#2166ac", linestyle="--", lw=1.0,
                               gid=f"zone:{zone_id}"))
        x, y = zone.representative_point().coords[0]
        ax.annotate(str(zone_id), (x, y), color="#2166ac", fontsize=7, ha="center")
    for geometry, register_id, status in zip(local, polygons["register_id"], polygons["status"], strict=True):
        key = "none" if status is None or pd.isna(status) else str(status)
        colour = STATUS_COLOURS.get(key, STATUS_COLOURS["none"])
        ax.add_patch(PathPatch(polygon_path(geometry), facecolor=colour, edgecolor="black", lw=0.4,
                               gid=str(register_id)))
        gx0, gy0, gx1, gy1 = geometry.bounds
        if max(gx1 - gx0, gy1 - gy0) < span * DOT_BELOW:
            x, y = geometry.representative_point().coords[0]
            ax.plot([x], [y], marker="o", ms=4, color=colour, markeredgecolor="black", markeredgewidth=0.3)
    for county, rows in polygons.assign(local=local).groupby(polygons["county"].fillna("")):
        if county:
            point = shapely.union_all(list(rows["local"])).centroid
            ax.annotate(str(county), (point.x, point.y), xytext=(0, -12), textcoords="offset points", fontsize=7,
                        ha="center", color="#444444")
    ax.set_xlim(minx - pad, minx - pad + span + 2 * pad)
    ax.set_ylim(miny - pad, miny - pad + span + 2 * pad)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    _scale_bar(ax, minx - pad, miny - pad, span + 2 * pad)
    _north_arrow(ax, lang)
    handles = [Rectangle((0, 0), 1, 1, facecolor=STATUS_COLOURS[s], edgecolor="black", lw=0.4)
               for s in STATUS_COLOURS]
    labels = [t(f"restoration.status.{s}", lang) for s in STATUS_COLOURS]
    if zones:
        handles.append(Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="#2166ac", linestyle="--"))
        labels.append(t("restoration.pdf_map_zone", lang))
    ax.legend(handles, labels, loc="upper left", fontsize=8, title=t("restoration.col.status", lang),
              title_fontsize=8, framealpha=0.9)
    ax.set_title(t("restoration.pdf_map", lang, year=year), fontsize=13, weight="bold")
    fig.text(0.05, 0.02, t("restoration.pdf_map_note", lang, crs=crs.to_string(), polygons=len(polygons)),
             fontsize=7, wrap=True)
    return fig


def _scale_bar(ax: Any, x0: float, y0: float, width: float) -> None:
    length = nice_length(width)
    x, y = x0 + width * 0.05, y0 + width * 0.05
    height = width * 0.008
    ax.add_patch(Rectangle((x, y), length / 2, height, facecolor="black", edgecolor="black", lw=0.6))
    ax.add_patch(Rectangle((x + length / 2, y), length / 2, height, facecolor="white", edgecolor="black", lw=0.6))
    ax.text(x + length / 2, y + height * 2, _length_text(length), ha="center", va="bottom", fontsize=8)


def _north_arrow(ax: Any, lang: str) -> None:
    ax.add_patch(FancyArrow(0.93, 0.83, 0, 0.08, width=0.012, head_width=0.04, head_length=0.035,
                            transform=ax.transAxes, color="black"))
    ax.text(0.93, 0.8, t("restoration.pdf_map_north", lang), transform=ax.transAxes, ha="center", va="top",
            fontsize=11, weight="bold")
