"""A picture of a synthetic scene: true colour and NDVI at a few dates, with the truth outlined.

Drawn with matplotlib's Agg canvas (no display, no pyplot state). Axes are the scene's
projected x/y in metres (the licence's UTM CRS).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from shapely.geometry.base import BaseGeometry

from gmsense.cube.ops import season_year

N_PREVIEW_DATES = 4
PREVIEW_MONTHS = (7, 8)  # prefer mid-summer dates
TRUE_COLOUR_MAX = 0.12  # reflectance shown as white in the true-colour panels
KIND_COLOURS = {"trench": "red", "pad": "orange", "track": "yellow", "clearing": "magenta", "open_pit": "purple",
                "fire": "black", "flood": "cyan", "windthrow": "saddlebrown", "dieback": "sienna", "drought": "gold",
                "harvest": "white"}


def preview_dates(cube: xr.Dataset, n: int = N_PREVIEW_DATES) -> list[int]:
    """Indices of up to ``n`` dates spread over the years: per year the clearest mid-summer date."""
    times = cube["time"].values.astype("datetime64[D]")
    months = times.astype("datetime64[M]").astype(int) % 12 + 1
    years = season_year(times)
    clear = cube["clear"].mean(("y", "x")).values
    picks = []
    for year in np.unique(years):
        candidates = np.flatnonzero((years == year) & (months >= PREVIEW_MONTHS[0]) & (months <= PREVIEW_MONTHS[1]))
        if candidates.size == 0:
            candidates = np.flatnonzero(years == year)
        picks.append(int(candidates[np.argmax(clear[candidates])]))
    if len(picks) > n:
        picks = [picks[round(k)] for k in np.linspace(0, len(picks) - 1, n)]
    return picks


def _outline(ax: object, geom: BaseGeometry, colour: str, width: float) -> None:
    polygons = getattr(geom, "geoms", [geom])
    for poly in polygons:
        if poly.is_empty or not hasattr(poly, "exterior"):
            continue
        xs, ys = poly.exterior.xy
        ax.plot(xs, ys, color=colour, linewidth=width)  # type: ignore[attr-defined]


def write_preview(cube: xr.Dataset, truth: gpd.GeoDataFrame, licence: BaseGeometry, path: Path) -> Path:
    """Write a PNG: true colour (top) and NDVI (bottom) at :func:`preview_dates`, with the licence
    (blue) and the truth footprints (coloured by kind) outlined; geometries in the cube's CRS."""
    picks = preview_dates(cube)
    xs, ys = cube["x"].values, cube["y"].values
    res = float(abs(xs[1] - xs[0])) if xs.size > 1 else 10.0
    extent = (xs[0] - res / 2, xs[-1] + res / 2, ys[-1] - res / 2, ys[0] + res / 2)
    fig = Figure(figsize=(4 * max(len(picks), 1), 8), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, max(len(picks), 1), squeeze=False)
    for col, t in enumerate(picks):
        rgb = np.stack([cube[b].values[t] for b in ("red", "green", "blue")], axis=-1)
        nir, red = cube["nir"].values[t], cube["red"].values[t]
        ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
        day = str(cube["time"].values[t].astype("datetime64[D]"))
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(np.clip(rgb / TRUE_COLOUR_MAX, 0, 1), extent=extent)
        image = bottom.imshow(ndvi, extent=extent, cmap="RdYlGn", vmin=-0.2, vmax=0.9)
        top.set_title(f"{day} true colour", fontsize=9)
        bottom.set_title(f"{day} NDVI", fontsize=9)
        for ax in (top, bottom):
            _outline(ax, licence, "blue", 1.2)
            for _, row in truth.iterrows():
                if str(row["start"]) <= day:
                    _outline(ax, row.geometry, KIND_COLOURS.get(row["kind"], "white"), 0.8)
            ax.set_xticks([])
            ax.set_yticks([])
    if picks:
        fig.colorbar(image, ax=list(axes[1]), fraction=0.02, label="NDVI")
    fig.suptitle(f"synthetic scene {cube.attrs.get('domain', 'classic')} {cube.attrs.get('scenario', '')} "
                 f"seed {cube.attrs.get('seed', '')}: "
                 "licence blue; truth by kind (drawn from its start)", fontsize=10)
    fig.savefig(path)
    return Path(path)
