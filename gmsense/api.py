"""The library behind ``gmsense.analyse``, ``gmsense.open_imagery`` and ``gmsense.load_model``.

What a notebook calls and what every scan runs are the same function: the batch scan, the tiles,
training and the benchmarks all reach :func:`gmsense.pipeline.analyse_cube`, and so does
:func:`analyse`, with the same default model as ``gmsense scan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import xarray as xr
from shapely import wkt
from shapely.geometry.base import BaseGeometry

from gmsense.config import Settings
from gmsense.cube.contract import validate_cube
from gmsense.errors import InputError
from gmsense.geo.sites import ApprovedWork, Site, sites_from_frame

if TYPE_CHECKING:
    from gmsense.classify.model import PatchClassifier

#: Columns of :attr:`Result.patches` and their dtypes (dates are ``datetime64[ns]``, NaT when absent).
PATCH_COLUMNS: dict[str, str] = {
    "site_id": "string",
    "disturbance_class": "string",
    "confidence": "float64",
    "first_detected": "datetime64[ns]",
    "confirmed_on": "datetime64[ns]",
    "last_seen": "datetime64[ns]",
    "area_m2": "float64",
    "inside_licence": "bool",
    "area_outside_m2": "float64",
    "recovery_status": "string",
    "recovery_ratio": "float64",
    "natural_agent": "string",
    "label_reason": "string",
}
FLAG_COLUMNS: dict[str, str] = {"rule": "string", "severity": "string", "message": "string",
                                "patch_index": "Int64", "key": "string"}


@dataclass(frozen=True)
class Result:
    """What :func:`analyse` found on one licence.

    ``patches``: one row per disturbed patch, geometry in the cube's CRS (metres), typed columns
    (:data:`PATCH_COLUMNS`) plus ``metrics`` (the patch's features and evidence, a dict) and
    ``recovery`` (its seasonal trajectory against the reference ring, a list of dicts).
    ``flags``: one row per finding; ``patch_index`` points into ``patches`` (NA for
    licence-level flags). ``breaks``: per-pixel results of the change detector on the cube's grid
    (``first_detected``, ``confirmed_on`` as datetime64, ``magnitude`` in NDVI units, the latest
    later disturbance of the same pixel as ``rebreak_first_detected``, ``rebreak_confirmed_on``,
    ``rebreak_magnitude``, and the boolean ``disturbed``). ``stats``: dates, clear share, CRS and
    shape of what was analysed.
    """

    site_id: str
    patches: gpd.GeoDataFrame
    flags: pd.DataFrame
    breaks: xr.Dataset
    stats: dict[str, Any] = field(default_factory=dict)


def _as_site(licence: Any, cube_crs: pyproj.CRS, crs: Any, site_id: str | None) -> Site:
    """A validated :class:`Site` from what a notebook holds (see :func:`analyse`)."""
    if isinstance(licence, Site):
        return licence
    if isinstance(licence, gpd.GeoDataFrame):
        frame = licence
    elif isinstance(licence, gpd.GeoSeries):
        frame = gpd.GeoDataFrame(geometry=licence, crs=licence.crs)
    elif isinstance(licence, pd.Series) and "geometry" in licence:
        frame = gpd.GeoDataFrame([licence.to_dict()], geometry="geometry", crs=crs)
    elif isinstance(licence, BaseGeometry):
        frame = gpd.GeoDataFrame(geometry=[licence], crs=crs if crs is not None else cube_crs)
    else:
        raise InputError(f"licence must be a Site, a shapely geometry, a GeoSeries or a one-row "
                         f"GeoDataFrame; got {type(licence).__name__}")
    if len(frame) != 1:
        raise InputError(f"expected one licence, got {len(frame)}; pass one row (e.g. frame.iloc[[0]])")
    if frame.crs is None:
        raise InputError("the licence has no CRS; set it (frame.set_crs(...)) or pass crs=")
    frame = frame.copy()
    if site_id is not None or "site_id" not in frame.columns:
        frame["site_id"] = site_id or "licence"
    [site] = sites_from_frame(frame, label="licence")
    return site


def load_model(model: str | Path | None = "default") -> PatchClassifier | None:
    """A trained patch classifier: a shipped model's name (``"default"``), a model folder made by
    ``gmsense train``, or ``None``/``"rules"`` for the rule baseline. Model files are loaded
    safely (skops, an allow-list of scikit-learn and numpy types; never pickle)."""
    from gmsense.classify.model import load_model as load_folder
    from gmsense.classify.model import resolve_model

    if model is None or model == "rules":
        return None
    return load_folder(resolve_model(str(model)))


def _classifier(model: Any) -> PatchClassifier | None:
    from gmsense.classify.model import PatchClassifier

    if isinstance(model, PatchClassifier):
        return model
    return load_model(model)


def _dates(values: list[str]) -> pd.Series:
    return pd.to_datetime(pd.Series([v or None for v in values], dtype="object"), format="ISO8601")


def _patches_frame(result: Any, crs: pyproj.CRS) -> gpd.GeoDataFrame:
    rows = [{"site_id": p.site_id, "disturbance_class": p.disturbance_class, "confidence": p.confidence,
             "first_detected": p.first_detected, "confirmed_on": p.confirmed_on, "last_seen": p.last_seen,
             "area_m2": p.area_m2, "inside_licence": p.inside_licence, "area_outside_m2": p.area_outside_m2,
             "recovery_status": p.recovery_status,
             "recovery_ratio": np.nan if p.recovery_ratio is None else p.recovery_ratio,
             "natural_agent": p.natural_agent, "label_reason": p.metrics.get("label_reason"),
             "metrics": p.metrics, "recovery": [vars(o) for o in p.recovery],
             "geometry": wkt.loads(p.local_wkt)} for p in result.patches]
    frame = pd.DataFrame(rows, columns=[*PATCH_COLUMNS, "metrics", "recovery", "geometry"])
    for column, dtype in PATCH_COLUMNS.items():
        frame[column] = _dates(frame[column].tolist()) if dtype.startswith("datetime") else frame[column].astype(dtype)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=crs)


def _flags_frame(result: Any) -> pd.DataFrame:
    rows = [{"rule": f.rule, "severity": f.severity, "message": f.message, "patch_index": f.patch_index,
             "key": f.key, "evidence": f.evidence} for f in result.flags]
    frame = pd.DataFrame(rows, columns=[*FLAG_COLUMNS, "evidence"])
    return frame.astype(FLAG_COLUMNS)


def _monitoring_window(cube: xr.Dataset, site: Site, cube_crs: pyproj.CRS, buffer_m: float) -> xr.Dataset:
    """The part of ``cube`` a scan reads for ``site``: the pixels of the cube's lattice that
    cover the licence plus its buffer (one pixel of margin), as the local source crops them."""
    from gmsense.geo.grid import crop_grid
    from gmsense.sources.local import transform_bounds

    transform = cube.rio.transform()
    bounds = transform_bounds(site.buffered(buffer_m).bounds, site.crs, cube_crs)
    grid = crop_grid(cube_crs, transform, bounds)
    col0 = round((grid.transform.c - transform.c) / transform.a)
    row0 = round((grid.transform.f - transform.f) / transform.e)
    cols = slice(max(col0, 0), max(min(col0 + grid.width, cube.sizes["x"]), 0))
    rows = slice(max(row0, 0), max(min(row0 + grid.height, cube.sizes["y"]), 0))
    window_cube = cube.isel(x=cols, y=rows)
    if window_cube.sizes["x"] == 0 or window_cube.sizes["y"] == 0:
        raise InputError(f"licence {site.site_id} lies outside the cube (its monitoring area spans "
                         f"{', '.join(f'{b:.0f}' for b in bounds)} in the cube's CRS)")
    return window_cube


def analyse(cube: xr.Dataset, licence: Any, *, settings: Settings | None = None, model: Any = "default",
            works: list[ApprovedWork] | None = None, crs: Any = None, site_id: str | None = None) -> Result:
    """Find, classify and follow the disturbances of one licence in an imagery cube.

    ``cube``: an imagery cube (DESIGN.md "Imagery cube": dims ``(time, y, x)``, float32
    reflectance bands by common name, boolean ``clear``, a projected CRS in metres recorded the
    rioxarray way); validated on entry. ``licence``: a :class:`~gmsense.geo.sites.Site`, a shapely
    geometry (in ``crs``, default the cube's CRS), a one-row GeoDataFrame or a GeoSeries; the
    monitoring buffer (``settings.sites.buffer_m`` metres) around it is analysed too and must lie
    within the cube. ``model``: ``"default"`` (the shipped model, as ``gmsense scan`` uses), a
    model folder, a loaded classifier, or ``None``/``"rules"`` for the rule baseline.
    ``works``: the licence's approved work programme, if any.
    """
    from gmsense.config import load_settings
    from gmsense.pipeline import analyse_cube

    settings = settings or load_settings()
    validate_cube(cube, where="analyse")
    cube_crs = pyproj.CRS.from_user_input(cube.rio.crs.to_wkt())
    site = _as_site(licence, cube_crs, crs, site_id)
    cube = _monitoring_window(cube, site, cube_crs, settings.sites.buffer_m)
    raw = analyse_cube(site, cube, settings, works, _classifier(model), keep_breaks=True)
    breaks = raw.breaks.assign(disturbed=raw.breaks["confirmed_on"].notnull()).rio.write_crs(cube_crs)
    return Result(site.site_id, _patches_frame(raw, cube_crs), _flags_frame(raw), breaks, raw.stats)


def open_imagery(path: str | Path, *, region: BaseGeometry | None = None, crs: Any = None,
                 start: str | None = None, end: str | None = None, band_names: list[str] | None = None,
                 settings: Settings | None = None) -> xr.Dataset:
    """Open local imagery as a cube (DESIGN.md "Imagery cube"): a folder of dated GeoTIFFs
    (``YYYY-MM-DD*.tif``, band descriptions, a mask band), a folder of annual composites
    (``YYYY.tif``, each dated 15 July of its year, ``attrs["composite"] == "annual"``), a folder of
    THEIA/MAJA Sentinel-2 L2A product folders (20 m bands resampled bilinearly onto the 10 m grid,
    ``clear`` from the CLM mask), or a NetCDF/Zarr cube (see :mod:`gmsense.sources.local`).

    ``region``: read only this area (a shapely geometry in ``crs``, default the imagery's CRS);
    without it the whole extent is read. ``start``/``end``: inclusive ISO dates. ``band_names``:
    the bands, in band order, of GeoTIFFs without band descriptions (default: the setting
    ``local.band_names``). ``settings``: its ``local`` section (``dn_scale``, ``band_names``,
    ``harmonise``: Landsat 5/7 files named after their product made OLI-like) is used;
    default the shipped settings. The cube is on the imagery's own grid and projected CRS (x/y in
    metres), lazy where the store allows.
    """
    from gmsense.sources.local import imagery_footprint, read_local_cube

    local = (settings or Settings()).local
    options: dict[str, Any] = {"start": start, "end": end, "dn_scale": local.dn_scale,
                               "band_names": band_names if band_names is not None else local.band_names,
                               "harmonise_method": local.harmonise}
    path = Path(path)
    footprint, imagery_crs = imagery_footprint(path)
    if region is not None:
        return read_local_cube(path, region, pyproj.CRS.from_user_input(crs or imagery_crs), **options)
    cube = read_local_cube(path, footprint, imagery_crs, **options)
    # the reader adds a pixel of margin around a region; the whole extent needs none
    minx, miny, maxx, maxy = footprint.bounds
    x, y = cube["x"].values, cube["y"].values
    return cube.isel(x=np.flatnonzero((x > minx) & (x < maxx)), y=np.flatnonzero((y > miny) & (y < maxy)))
