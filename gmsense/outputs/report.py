"""Figures for reports and the review app (matplotlib, Agg backend; no screen needed).

``trajectory_figure`` draws a patch's recovery: the patch and its reference ring per season, the
pre-disturbance baseline, the 80 % recovery line and the status. Readable in black and white
(line styles and markers, not colour alone).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gmsense.config import RecoverySettings
from gmsense.outputs.i18n import catalog, t
from gmsense.records import RecoveryObservation
from gmsense.recovery import ratio_series, recovery_metrics, uses_cover

F = TypeVar("F", bound=Callable[..., Any])
#: Text is shown as written: a licence named "Cost $5 to $10" is not mathematics.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def plain_text(func: F) -> F:
    """Draw ``func``'s figure with math text off (matplotlib reads the setting when each text is made)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(PLAIN_TEXT):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def number(value: float | None, digits: int = 2) -> str:
    """A number for a reader: ``digits`` decimals, never "-0.00", and a tiny non-zero value with
    two significant digits rather than as zero ("0.004", not "0.00")."""
    if value is None:
        return "-"
    value = float(value)
    if value != 0 and abs(value) < 0.5 * 10 ** -digits:
        return f"{value:.2g}"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@plain_text
def trajectory_figure(observations: Sequence[RecoveryObservation], *, title: str, disturbance_season: int,
                      status: str | None = None, target: float = 0.8, lang: str = "en",
                      recovery: RecoverySettings | None = None) -> Figure:
    """Patch vs reference ring per season, with the baseline and the 80 % recovery level on the
    series the status is taken on (gmsense.recovery.ratio_series; ``recovery``: its settings,
    None the defaults); labels in ``lang`` (``status`` is shown as given)."""
    recovery = recovery or RecoverySettings()
    observations = list(observations)
    patch = np.array([o.patch_value for o in observations])
    ring = np.array([o.ring_value for o in observations])
    seasons, series = ratio_series(observations, recovery)
    cover = uses_cover(observations, recovery)
    index_name = observations[0].index.upper() if observations else "INDEX"
    fig, ax = plt.subplots(figsize=(6.0, 3.2), dpi=120)
    ax.plot(seasons, ring, linestyle="--", marker="s", color="0.45", label=t("fig.reference_ring", lang))
    ax.plot(seasons, patch, linestyle="-", marker="o", color="black", label=t("fig.patch", lang))
    metrics = recovery_metrics(seasons, series, disturbance_season)
    if metrics["baseline"] is not None:
        # Levels in patch terms: that share of the ring's cover over bare ground, or the ring plus that offset.
        def in_patch_terms(level: float) -> np.ndarray:
            return recovery.soil_ndvi + level * (ring - recovery.soil_ndvi) if cover else ring + level

        ax.plot(seasons, in_patch_terms(metrics["baseline"]), linestyle=":", color="black",
                label=t("fig.pre_disturbance", lang))
        level80 = metrics["trough"] + target * metrics["magnitude"]
        ax.plot(seasons, in_patch_terms(level80), linestyle="-.", color="0.3",
                label=t("fig.recovered_level", lang, target=target))
    ax.axvline(disturbance_season, color="0.6", linewidth=0.8)
    ax.set_xlabel(t("fig.growing_season", lang))
    ax.set_ylabel(t("fig.median_index", lang, index=index_name))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    ratio = metrics["recovery_ratio"]
    subtitle = t("fig.status", lang, status=status) if status else ""
    if ratio is not None:
        subtitle += "   " + t("fig.recovery_ratio", lang, ratio=ratio)
    ax.set_title(f"{title}\n{subtitle}".strip(), fontsize=9)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` (PNG, PDF or SVG by suffix) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --- evidence images ------------------------------------------------------------------------

def true_colour(cube_at_date: Any, stretch: tuple[float, float] = (0.0, 0.15)) -> np.ndarray:
    """An (y, x, 3) RGB image in 0..1 from red/green/blue reflectance, linearly stretched."""
    bands = [np.asarray(cube_at_date[b].values, dtype="float64") for b in ("red", "green", "blue")]
    rgb = np.clip((np.dstack(bands) - stretch[0]) / (stretch[1] - stretch[0]), 0, 1)
    return np.nan_to_num(rgb, nan=1.0)


def scene_for(store: Any, site_id: str) -> tuple[Any, Any] | None:
    """The cube a licence was last scanned from, re-made from the scan's recorded source and
    settings, and the licence in the cube's CRS; None when the imagery is not available."""
    import pyproj
    from shapely import wkt

    from gmsense.config import Settings
    from gmsense.errors import GmsenseError
    from gmsense.geo.sites import WGS84, Site, reproject_geometry, utm_crs_for
    from gmsense.sources import get_source

    site_row = next((r for r in store.site_rows() if r.site_id == site_id), None)
    units = [(scan, u) for scan in store.scans() for u in store.scan(scan.id)[1]
             if u.site_id == site_id and u.status == "done"]
    if site_row is None or not units:
        return None
    scan, _ = units[-1]
    params = scan.params or {}
    settings = Settings.model_validate(params.get("settings", {}))
    geom_wgs84 = wkt.loads(site_row.geometry_wkt)
    crs = utm_crs_for(geom_wgs84.centroid.x, geom_wgs84.centroid.y)
    site = Site(site_id, reproject_geometry(geom_wgs84, WGS84, crs), crs, dict(site_row.attrs))
    try:
        source = get_source(scan.source, settings, Path(params["imagery"]) if params.get("imagery") else None)
        cube = source.load(site, site.buffered(settings.sites.buffer_m), params.get("start"), params.get("end"))
    except (GmsenseError, OSError, KeyError):
        return None
    cube_crs = pyproj.CRS.from_user_input(cube.rio.crs)
    return cube, site.to_crs(cube_crs)


def _clear_date_near(cube: Any, geometry: Any, when: str, direction: int) -> Any | None:
    """The mostly clear acquisition closest to ``when`` before (-1) or from (+1) it, over ``geometry``."""
    from rasterio.features import geometry_mask

    from gmsense.geo.grid import grid_transform

    shape = (cube.sizes["y"], cube.sizes["x"])
    inside = geometry_mask([geometry.buffer(50)], shape, grid_transform(cube), invert=True)
    times = cube["time"].values
    clear = np.asarray(cube["clear"].values)[:, inside].mean(axis=1) if inside.any() else np.zeros(times.size)
    target = np.datetime64(when)
    candidates = np.flatnonzero((clear >= 0.8) & ((times < target) if direction < 0 else (times >= target)))
    if candidates.size == 0:
        return None
    return candidates[-1] if direction < 0 else candidates[0]


def _date_index(cube: Any, day: str | None) -> int | None:
    """The index of the acquisition on ``day`` (YYYY-MM-DD) in ``cube``, None when it has none."""
    if not day:
        return None
    days = cube["time"].values.astype("datetime64[D]")
    found = np.flatnonzero(days == np.datetime64(str(day)[:10], "D"))
    return int(found[0]) if found.size else None


@plain_text
def chips_figure(cube: Any, licence: Any, patch_geom: Any, first_detected: str, *, title: str,
                 margin_m: float = 150.0, lang: str = "en", before_date: str | None = None,
                 after_date: str | None = None) -> Figure:
    """Before/after chips of one patch: true colour and NDVI, licence and patch outlines; labels in
    ``lang``. ``before_date``/``after_date`` are the acquisitions the detection rests on (the
    patch's evidence): shown when the cube has them, so the chips show the images the report
    cites; else the clear acquisitions nearest ``first_detected``. Titles give the date shown."""
    from gmsense.cube import ops as cubeops

    minx, miny, maxx, maxy = patch_geom.buffer(margin_m).bounds
    window = cube.sel(x=slice(minx, maxx), y=slice(maxy, miny))
    before_i = _date_index(window, before_date)
    if before_i is None:
        before_i = _clear_date_near(window, patch_geom, first_detected, -1)
    after_i = _date_index(window, after_date)
    if after_i is None:
        after_i = _clear_date_near(window, patch_geom, first_detected, +1)
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 6.0), dpi=120)
    extent = (float(window.x.min()), float(window.x.max()), float(window.y.min()), float(window.y.max()))
    for col, (label, index) in enumerate(((t("fig.before", lang), before_i), (t("fig.after", lang), after_i))):
        for row, (kind, name) in enumerate((("true colour", t("fig.true_colour", lang)), ("NDVI", "NDVI"))):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if index is None:
                ax.text(0.5, 0.5, t("fig.no_clear_image", lang), ha="center", va="center", transform=ax.transAxes)
                continue
            scene = window.isel(time=int(index))
            date = str(np.datetime64(scene["time"].values, "D"))
            if kind == "true colour":
                ax.imshow(true_colour(scene), extent=extent, origin="upper")
            else:
                ndvi = cubeops.index(scene, "ndvi").values
                ax.imshow(ndvi, extent=extent, origin="upper", cmap="Greys_r", vmin=0, vmax=0.9)
            _outline(ax, licence, linestyle="--", color="white" if kind == "true colour" else "black")
            _outline(ax, patch_geom, linestyle="-", color="yellow" if kind == "true colour" else "black")
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_title(t("fig.chip_title", lang, when=label, date=date, kind=name), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _outline(ax: Any, geometry: Any, **style: Any) -> None:
    for part in getattr(geometry, "geoms", [geometry]):
        if hasattr(part, "exterior"):
            xs, ys = part.exterior.xy
            ax.plot(xs, ys, linewidth=1.2, **style)


@plain_text
def site_map_figure(cube: Any | None, licence: Any, buffer_m: float, patches: Sequence[tuple[Any, str]], *,
                    title: str, lang: str = "en") -> Figure:
    """The licence, its buffer and every patch (hatched by class) on a recent clear composite;
    labels and class names in ``lang``."""
    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=120)
    region = licence.buffer(buffer_m)
    if cube is not None:
        recent = cube.isel(time=slice(-12, None))
        composite = recent[["red", "green", "blue"]].where(recent["clear"]).median("time")
        extent = (float(cube.x.min()), float(cube.x.max()), float(cube.y.min()), float(cube.y.max()))
        ax.imshow(true_colour(composite), extent=extent, origin="upper")
    _outline(ax, licence, linestyle="-", color="black")
    _outline(ax, region, linestyle=":", color="black")
    hatches = {"trench": "////", "track": "\\\\\\\\", "pad": "xxxx", "clearing": "....", "natural": "oo",
               "uncertain": "**"}
    from matplotlib.patches import Polygon as MplPolygon

    seen: set[str] = set()
    for geom, klass in patches:
        for part in getattr(geom, "geoms", [geom]):
            ax.add_patch(MplPolygon(np.asarray(part.exterior.coords), closed=True, fill=False,
                                    hatch=hatches.get(klass, "++"), edgecolor="red",
                                    label=None if klass in seen else class_name(klass, lang)))
            seen.add(klass)
    minx, miny, maxx, maxy = region.bounds
    ax.set_xlim(minx, maxx)
    ax.set_ylim(miny, maxy)
    ax.set_aspect("equal")
    ax.set_xlabel(t("fig.easting", lang))
    ax.set_ylabel(t("fig.northing", lang))
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.tick_params(labelsize=6)
    if seen:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def class_name(klass: str, lang: str) -> str:
    """A disturbance class's name in ``lang`` (the code itself when the catalog has none)."""
    return t(f"class.{klass}", lang) if f"class.{klass}" in catalog("en") else klass


# --- tables that fit their content ----------------------------------------------------------

CELL_PAD_UNITS = 0.8  # room between a cell's edge and its text, in Latin characters
_BREAK = re.compile(r"(?<=[\s,;、，；])")


def text_width(text: str) -> int:
    """Width of ``text`` in Latin-character units (CJK characters count two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def wrap_cell(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` units: broken after spaces and list separators, long
    words (and CJK runs) broken between characters; nothing is dropped."""
    width = max(int(width), 2)
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in _BREAK.split(para):
            if line and text_width(line + word.rstrip()) > width:
                lines.append(line.rstrip())
                line = word.lstrip()
            else:
                line += word
            while text_width(line) > width:
                cut, used = 0, 0
                while cut < len(line) and used + text_width(line[cut]) <= width:
                    used += text_width(line[cut])
                    cut += 1
                lines.append(line[:max(cut, 1)])
                line = line[max(cut, 1):]
        lines.append(line.rstrip())
    return lines or [""]


def table_layout(header: Sequence[str], rows: Sequence[Sequence[Any]], width_in: float,
                 fontsize: float = 7.0) -> dict[str, Any]:
    """Column widths from the content (the widest cell of each column, header included), the
    widest columns narrowed and wrapped when the table would be wider than ``width_in`` inches;
    the cells as lines. Feed to :func:`draw_table`."""
    unit_in = fontsize * 0.62 / 72  # a Latin character, generously
    total = width_in / unit_in
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    natural = [max(max(text_width(line) for line in cell.split("\n")) for cell in column) + 1
               for column in zip(*cells, strict=True)]
    need = [max(n, 3) + 2 * CELL_PAD_UNITS for n in natural]
    if sum(need) > total:  # narrow the widest columns to a common cap
        cap = total / len(need)
        while True:
            small = [n for n in need if n <= cap]
            new_cap = (total - sum(small)) / max(len(need) - len(small), 1)
            if new_cap <= cap + 1e-9:
                break
            cap = new_cap
        need = [min(n, cap) for n in need]
    widths = [n / sum(need) for n in need] if sum(need) > total else [n / total for n in need]
    units = [w * total for w in widths]
    lines = [[wrap_cell(cell, int(units[c] - 2 * CELL_PAD_UNITS)) for c, cell in enumerate(row)] for row in cells]
    return {"widths": widths, "pads": [CELL_PAD_UNITS / u for u in units], "header": lines[0], "rows": lines[1:],
            "fontsize": fontsize, "line_in": fontsize * 1.3 / 72}


def row_height_in(layout: dict[str, Any], row: Sequence[list[str]]) -> float:
    """Height of one laid-out row in inches."""
    return (max(len(cell) for cell in row) + 0.6) * layout["line_in"]


def split_rows(layout: dict[str, Any], first_in: float, rest_in: float | None = None) -> list[list[int]]:
    """Indices of the rows of ``layout`` per page: ``first_in`` inches of table on the first page,
    ``rest_in`` on the others (the header repeats on each)."""
    rest_in = first_in if rest_in is None else rest_in
    pages: list[list[int]] = [[]]
    room = first_in - row_height_in(layout, layout["header"])
    for i, row in enumerate(layout["rows"]):
        h = row_height_in(layout, row)
        if h > room and pages[-1]:
            pages.append([])
            room = rest_in - row_height_in(layout, layout["header"])
        pages[-1].append(i)
        room -= h
    return pages


def draw_table(ax: Any, layout: dict[str, Any], indices: Sequence[int] | None = None) -> Any:
    """Draw the rows ``indices`` (all by default) of ``layout`` at the top of ``ax`` (axis off)."""
    ax.axis("off")
    indices = range(len(layout["rows"])) if indices is None else indices
    rows = [layout["rows"][i] for i in indices]
    if not rows:
        return None
    height_in = ax.get_position().height * ax.figure.get_size_inches()[1]
    table = ax.table(cellText=[["\n".join(c) for c in row] for row in rows],
                     colLabels=["\n".join(c) for c in layout["header"]], colWidths=layout["widths"],
                     loc="upper left", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(layout["fontsize"])
    for r, row in enumerate([layout["header"], *rows]):
        h = row_height_in(layout, row) / height_in
        for c in range(len(row)):
            table[r, c].set_height(h)
            table[r, c].PAD = layout["pads"][c]  # matplotlib's padding is a share of the cell's width
            if r == 0:
                table[r, c].get_text().set_weight("bold")
    return table
