"""`gmsense bench real`: the pipeline on three real scenes whose changes are known, but not labelled per pixel.

Every figure is computed by running the real pipeline, :func:`gmsense.analyse` on the cube
:func:`gmsense.open_imagery` reads, with the model asked for (the shipped default unless told) and,
with ``--baseline``, the rule detector too. Licences are drawn from the imagery (below) with a
monitoring buffer of ``buffer_m`` (default :data:`BUFFER_M`, 100 m: the scenes are 0.8-1.7 km
across, too small for the 500 m default). The scenes are read whole; none needs cropping (all three
take about 15 s per detector on a 2-core machine). Areas are m2 in the imagery's projected CRS.

1. ``fordead_dieback`` (``fordead_theia_zonetest/SENTINEL_ZoneTest``, THEIA Sentinel-2 L2A, EPSG:32631,
   2015-12..2020-06): bark-beetle dieback of spruce, natural, no human works. Licence: the imagery's
   footprint shrunk by the buffer, so the monitoring area is the scene. Figures: detected (and
   flagged) patch area, its shares labelled human-made (:data:`~gmsense.records.HUMAN_MADE_CLASSES`),
   ``natural`` and ``uncertain``, area per class. Target: human-made <= 5 % of the detected area.
2. ``romania_2017`` (``nrt_romania_s2/sentinel2_cube_subset_romania_10m.nc``, EPSG:3035, 2015-08..2020-12):
   a known 2017 forest disturbance without a label. The reference area is derived here from the NetCDF
   alone (xarray and numpy, nothing of gmsense's detector): NDVI = (B8 - B4) / (B8 + B4) where SCL is
   4 or 5 (vegetation, not vegetated), May-September medians per year from pixels with at least
   :data:`MIN_SEASON_OBS` clear observations in 2016, 2017 and 2018; a pixel is disturbed when its 2017
   median is more than :data:`DROP_2017` below its 2016 median and its 2018 median still more than
   :data:`STILL_DOWN_2018` below 2016 (the stand regrows partly in 2018: a 0.2 drop from 2016 to 2018
   holds for only 85 pixels, most of the 2017 clearing is back above it), in 8-connected groups of at
   least :data:`MIN_GROUP_PIXELS` pixels. Licence: the footprint shrunk by the buffer. Figure: the
   patches overlapping the reference area with ``first_detected`` in 2017 (the 2017 growing season),
   their classes and flags. Target: at least one of them is flagged (not silently ``natural``).
3. ``bc_wildfire`` (``specrec_bc06_wildfire``: the 30 m best-available-pixel Landsat composites
   2002-2024, min-max rescaled per image, read with band names blue, green, red, nir, swir16, swir22;
   and, reported beside them, the 10 m composites 2002-2011): a 2005 wildfire, polygon
   ``wildfire_516.gpkg``. Licence: the footprint shrunk by the buffer (the burn covers a third of the
   scene, the rest is the unburnt forest the per-date scene median needs). Figures: the classes and
   ``natural_agent`` (None when patches have no such field) of the patches overlapping the burn
   polygon, weighted by their overlap area: of every patch over it, and of the fire's patches, first
   detected in the polygon's fire year (``dist_start``, 2005) or the year after (an annual composite
   of the fire's year may be made of dates before the fire). Target: the fire's patches' area-weighted
   class is ``natural`` with agent ``fire`` (judged on the 30 m series, which has the history before
   and long after the fire); later changes inside the polygon (2009-2023, in the recovering burn)
   are reported, not judged, as the Romania section judges the 2017 patches.

Each section records its inputs, the command, the call and ``status`` PASS or FAIL against its target;
a section whose data cannot be read is a FAIL with the reason, not a crash.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage
from shapely.geometry import box, shape

from gmsense import __version__
from gmsense.api import Result, analyse, load_model, open_imagery
from gmsense.bench import write_json_and_markdown
from gmsense.config import PACKAGE_DIR, Settings, load_settings
from gmsense.errors import GmsenseError
from gmsense.records import DISTURBANCE_CLASSES, HUMAN_MADE_CLASSES
from gmsense.sources.local import imagery_footprint

BUFFER_M = 100.0
FORDEAD = "fordead_theia_zonetest/SENTINEL_ZoneTest"
ROMANIA = "nrt_romania_s2/sentinel2_cube_subset_romania_10m.nc"
BC_BAP = "specrec_bc06_wildfire/bap_30m_minmax_normalized"
BC_10M = "specrec_bc06_wildfire/composites_10m_reflectance"
BC_BURN = "specrec_bc06_wildfire/wildfire_516.gpkg"
BAP_BAND_NAMES = ["blue", "green", "red", "nir", "swir16", "swir22"]
HUMAN_MADE_MAX_SHARE = 0.05
#: Romania reference rule (see the module docstring); NDVI units and pixels.
DROP_2017 = 0.2
STILL_DOWN_2018 = 0.1
MIN_SEASON_OBS = 3
MIN_GROUP_PIXELS = 5
SCL_CLEAR = (4, 5)
SECTIONS = ("fordead_dieback", "romania_2017", "bc_wildfire")
TARGETS = {
    "fordead_dieback": f"share_human_made <= {HUMAN_MADE_MAX_SHARE}",
    "romania_2017": "a flagged patch over the reference area, first detected in 2017 (not silently natural)",
    "bc_wildfire": ("the fire's patches (first detected in its year or the next): area-weighted class natural with "
                    "natural_agent fire"),
}


def default_real_data() -> Path:
    """``../shared/data/real`` beside the source checkout (where CI keeps the real data)."""
    return PACKAGE_DIR.parent.parent / "shared" / "data" / "real"


# --------------------------------------------------------------------------------------------
# small helpers


def _licence_inside(path: Path, buffer_m: float) -> tuple[Any, Any]:
    """The imagery footprint shrunk by ``buffer_m`` (its CRS): licence + buffer = the scene."""
    footprint, crs = imagery_footprint(path)
    minx, miny, maxx, maxy = footprint.bounds
    if min(maxx - minx, maxy - miny) <= 2 * buffer_m:
        raise ValueError(f"imagery {path} ({maxx - minx:.0f} x {maxy - miny:.0f} m) is too small for a "
                         f"{buffer_m:.0f} m buffer; lower buffer_m")
    return box(minx + buffer_m, miny + buffer_m, maxx - buffer_m, maxy - buffer_m), crs


def _cube_inputs(cube: xr.Dataset, path: Path, licence: Any, crs: Any, buffer_m: float) -> dict[str, Any]:
    times = cube["time"].values
    return {"imagery": str(path), "crs": crs.to_string(), "n_dates": int(times.size),
            "dates": f"{np.datetime64(times.min(), 'D')}..{np.datetime64(times.max(), 'D')}",
            "shape_yx": [int(cube.sizes["y"]), int(cube.sizes["x"])],
            "resolution_m": cube.attrs.get("resolution_m"),
            "rescaled_per_image": bool(cube.attrs.get("rescaled_per_image")),
            "licence_bounds": [round(v, 1) for v in licence.bounds], "buffer_m": buffer_m,
            "monitoring_area_m2": round(licence.buffer(buffer_m).area, 1)}


def _call(path: Path, detector: str, extra: str = "") -> str:
    model = "None" if detector == "rules" else repr(detector)
    return (f"gmsense.analyse(gmsense.open_imagery({str(path)!r}{extra}), licence, model={model}, "
            "settings=<sites.buffer_m=buffer_m>)")


def _flagged(result: Result) -> set[int]:
    return {int(i) for i in result.flags["patch_index"].dropna()}


def _agent(row: pd.Series) -> str | None:
    """The patch's ``natural_agent`` (a column, or an entry of its metrics); None when it has none."""
    value = row.get("natural_agent") if "natural_agent" in row.index else (row["metrics"] or {}).get("natural_agent")
    return None if value is None or pd.isna(value) else str(value)


def _weighted_shares(labels: list[Any], weights: list[float]) -> dict[str, float]:
    total = float(sum(weights))
    out: dict[str, float] = {}
    for label, w in zip(labels, weights, strict=True):
        out[str(label)] = out.get(str(label), 0.0) + w
    return {k: round(v / total, 4) for k, v in sorted(out.items(), key=lambda kv: -kv[1])} if total else {}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------------------------
# 1. fordead: natural dieback must not read as human-made


def fordead_section(data: Path, classifier: Any, settings: Settings, detector: str) -> dict[str, Any]:
    """Detected area on the THEIA dieback scene and the shares of it by class (see the module docstring)."""
    path = data / FORDEAD
    licence, crs = _licence_inside(path, settings.sites.buffer_m)
    cube = open_imagery(path)
    result = analyse(cube, licence, settings=settings, model=classifier, site_id="fordead")
    patches = result.patches
    detected = float(patches["area_m2"].sum())
    by_class = {k: round(float(patches.loc[patches["disturbance_class"] == k, "area_m2"].sum()), 1)
                for k in DISTURBANCE_CLASSES}
    human = sum(by_class[k] for k in HUMAN_MADE_CLASSES)
    flagged = _flagged(result)

    def share(value: float) -> float:
        return round(value / detected, 4) if detected else 0.0

    figures = {"n_patches": len(patches), "detected_area_m2": round(detected, 1),
               "flagged_area_m2": round(float(patches["area_m2"].iloc[sorted(flagged)].sum()), 1),
               "n_flagged_patches": len(flagged), "area_by_class_m2": by_class,
               "share_human_made": share(human), "share_natural": share(by_class["natural"]),
               "share_uncertain": share(by_class["uncertain"]),
               "first_detected_years": {str(k): int(v) for k, v in
                                        patches["first_detected"].dt.year.value_counts().sort_index().items()},
               "clear_share_in_season": result.stats.get("clear_share")}
    ok = figures["share_human_made"] <= HUMAN_MADE_MAX_SHARE
    reason = None
    if not detected:
        reason = "nothing detected (no human-made area either)"
    elif not ok:
        reason = (f"{figures['share_human_made']:.1%} of the detected area is labelled human-made "
                  f"({', '.join(k for k in HUMAN_MADE_CLASSES if by_class[k])})")
    return {"inputs": _cube_inputs(cube, path, licence, crs, settings.sites.buffer_m),
            "call": _call(path, detector), "target": TARGETS["fordead_dieback"],
            "figures": figures, "status": _verdict(ok), "reason": reason}


# --------------------------------------------------------------------------------------------
# 2. Romania: the known 2017 disturbance must be flagged


def _transform_of(x: np.ndarray, y: np.ndarray) -> Affine:
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    return Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)


def romania_reference(path: Path) -> dict[str, Any]:
    """The 2017 disturbance found from the NetCDF's NDVI alone (the rule of the module docstring).

    Returns ``mask`` (bool, the file's y/x grid), ``geometry`` (its pixels as one shapely geometry in
    the file's CRS, EPSG:3035), ``transform`` and per-year median NDVI inside and outside it.
    """
    with xr.open_dataset(path) as ds:
        ok = ds["SCL"].isin(SCL_CLEAR)
        ndvi = ((ds["B8"] - ds["B4"]) / (ds["B8"] + ds["B4"])).where(ok)
        month = ndvi["time"].dt.month
        season = ndvi.where((month >= 5) & (month <= 9), drop=True).load()
        x, y = ds["x"].values, ds["y"].values
    grouped = season.groupby("time.year")
    median = grouped.median()
    count = season.notnull().groupby("time.year").sum()
    by_year = {int(yr): median.sel(year=yr).values for yr in median["year"].values}
    enough = np.all([count.sel(year=yr).values >= MIN_SEASON_OBS for yr in (2016, 2017, 2018)], axis=0)
    dropped = enough & (by_year[2016] - by_year[2017] > DROP_2017) & (by_year[2016] - by_year[2018] > STILL_DOWN_2018)
    labels, _ = ndimage.label(dropped, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= MIN_GROUP_PIXELS
    keep[0] = False
    mask = keep[labels]
    transform = _transform_of(x, y)
    polygons = [shape(g) for g, v in shapes(mask.astype("uint8"), mask=mask, transform=transform) if v == 1]
    geometry = shapely.union_all(polygons) if polygons else shapely.Polygon()
    medians = {str(yr): {"inside": round(float(np.nanmedian(v[mask])), 3) if mask.any() else None,
                         "outside": round(float(np.nanmedian(v[~mask & enough])), 3)}
               for yr, v in by_year.items()}
    return {"mask": mask, "geometry": geometry, "transform": transform, "median_ndvi": medians,
            "n_groups": int(keep.sum())}


def romania_section(data: Path, classifier: Any, settings: Settings, detector: str) -> dict[str, Any]:
    """Whether a patch over the NDVI-derived 2017 disturbance, first detected in 2017, is flagged."""
    path = data / ROMANIA
    reference = romania_reference(path)
    mask, area = reference["mask"], reference["geometry"]
    pixel_m2 = abs(reference["transform"].a * reference["transform"].e)
    licence, crs = _licence_inside(path, settings.sites.buffer_m)
    cube = open_imagery(path)
    result = analyse(cube, licence, settings=settings, model=classifier, site_id="romania")
    patches, flagged = result.patches, _flagged(result)
    overlapping = []
    for i, row in patches.iterrows():
        overlap = float(row.geometry.intersection(area).area) if not area.is_empty else 0.0
        if overlap > 0:
            rules = sorted(result.flags.loc[result.flags["patch_index"] == i, "rule"].tolist())
            overlapping.append({"patch_index": int(i), "disturbance_class": row["disturbance_class"],
                                "confidence": round(float(row["confidence"]), 3),
                                "first_detected": str(row["first_detected"].date()),
                                "overlap_m2": round(overlap, 1), "area_m2": round(float(row["area_m2"]), 1),
                                "flags": rules, "flagged": int(i) in flagged})
    in_2017 = [p for p in overlapping if p["first_detected"].startswith("2017")]
    hit = [p for p in in_2017 if p["flagged"]]
    ys, xs = np.nonzero(mask)
    figures = {"reference_pixels": int(mask.sum()), "reference_area_m2": round(float(mask.sum()) * pixel_m2, 1),
               "reference_groups": reference["n_groups"],
               "reference_bounds": [round(v, 1) for v in area.bounds] if not area.is_empty else None,
               "reference_rows_cols": [int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())] if ys.size else None,
               "reference_median_ndvi": reference["median_ndvi"],
               "n_patches": len(patches), "overlapping_patches": overlapping,
               "overlapping_2017": len(in_2017),
               "overlap_2017_m2": round(sum(p["overlap_m2"] for p in in_2017), 1),
               "flagged": bool(hit), "classes_2017": sorted({p["disturbance_class"] for p in in_2017}),
               "silently_natural_2017": [p["patch_index"] for p in in_2017
                                         if p["disturbance_class"] == "natural" and not p["flagged"]]}
    reason = None
    if not mask.any():
        reason = "the reference rule found no disturbed pixels"
    elif not in_2017:
        reason = "no patch first detected in 2017 overlaps the reference area"
    elif not hit:
        reason = f"the 2017 patches over it are {', '.join(figures['classes_2017'])} without a flag"
    return {"inputs": {**_cube_inputs(cube, path, licence, crs, settings.sites.buffer_m),
                       "reference_rule": (f"SCL in {SCL_CLEAR}; May-Sep median NDVI; >= {MIN_SEASON_OBS} clear obs in "
                                          f"2016-2018; 2016-2017 drop > {DROP_2017} and 2016-2018 drop > "
                                          f"{STILL_DOWN_2018}; 8-connected groups >= {MIN_GROUP_PIXELS} px")},
            "call": _call(path, detector),
            "target": TARGETS["romania_2017"],
            "figures": figures, "status": _verdict(bool(hit)), "reason": reason}


# --------------------------------------------------------------------------------------------
# 3. BC wildfire: the burn must read as natural, agent fire


def _labels_over(hit: list[tuple[pd.Series, float]], polygon_area: float) -> dict[str, Any]:
    """Area-weighted classes and agents of the patches ``hit`` (row, overlap m2) over a polygon."""
    classes = _weighted_shares([r["disturbance_class"] for r, _ in hit], [a for _, a in hit])
    agents = _weighted_shares([_agent(r) for r, _ in hit], [a for _, a in hit])
    overlap = sum(a for _, a in hit)
    return {"overlapping_patches": len(hit), "overlap_m2": round(overlap, 1),
            "burn_share_detected": round(overlap / polygon_area, 4) if polygon_area else 0.0,
            "class_shares": classes, "natural_agent_shares": agents, "class": next(iter(classes), None),
            "natural_agent": next((a for a in agents if a != "None"), None)}


def _burn_figures(path: Path, burn: gpd.GeoDataFrame, classifier: Any, settings: Settings,
                  band_names: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    licence, crs = _licence_inside(path, settings.sites.buffer_m)
    cube = open_imagery(path, band_names=band_names)
    result = analyse(cube, licence, settings=settings, model=classifier, site_id="bc_wildfire")
    patches = result.patches
    polygon = burn.to_crs(patches.crs).geometry.union_all()
    overlaps = [float(g.intersection(polygon).area) for g in patches.geometry]
    hit = [(row, a) for (_, row), a in zip(patches.iterrows(), overlaps, strict=True) if a > 0]
    fire_years = _fire_years(burn)
    of_fire = [(r, a) for r, a in hit if int(r["first_detected"].year) in fire_years]
    figures = {"n_patches": len(patches), "detected_area_m2": round(float(patches["area_m2"].sum()), 1),
               "burn_area_m2": round(float(polygon.area), 1), **_labels_over(hit, polygon.area),
               "first_detected_years": sorted({int(r["first_detected"].year) for r, _ in hit}),
               "fire_years": list(fire_years), "of_the_fire": _labels_over(of_fire, polygon.area),
               "clear_share_in_season": result.stats.get("clear_share")}
    inputs = _cube_inputs(cube, path, licence, crs, settings.sites.buffer_m)
    if band_names:
        inputs["band_names"] = band_names
    inputs["composite"] = cube.attrs.get("composite")
    return figures, inputs


def _fire_years(burn: gpd.GeoDataFrame) -> tuple[int, ...]:
    """The polygon's fire year (its ``dist_start``) and the year after: an annual composite of the
    fire's year may be made of dates before the fire, so the burn may first show in the next one."""
    start = burn.iloc[0].get("dist_start") if "dist_start" in burn.columns else None
    return () if start is None or pd.isna(start) else (int(start), int(start) + 1)


def bc_section(data: Path, classifier: Any, settings: Settings, detector: str) -> dict[str, Any]:
    """Class and agent of the patches over the 2005 burn (30 m series; the 10 m composites beside)."""
    burn = gpd.read_file(data / BC_BURN)
    figures, inputs = _burn_figures(data / BC_BAP, burn, classifier, settings, BAP_BAND_NAMES)
    try:
        also, also_inputs = _burn_figures(data / BC_10M, burn, classifier, settings, None)
        figures["composites_10m"] = {**also, "inputs": also_inputs}
    except Exception as exc:  # the secondary series only adds figures; say why they are missing
        figures["composites_10m"] = {"error": f"{type(exc).__name__}: {exc}"}
    inputs["burn_polygon"] = str(data / BC_BURN)
    inputs["burn_attributes"] = {k: (int(v) if isinstance(v, (int, np.integer)) else v)
                                 for k, v in burn.drop(columns="geometry").iloc[0].items()}
    fire = figures["of_the_fire"]
    ok = fire["class"] == "natural" and fire["natural_agent"] == "fire"
    reason = None
    if not fire["overlapping_patches"]:
        reason = (f"no patch first detected in {figures['fire_years']} overlaps the burn polygon "
                  f"({figures['n_patches']} patches in the scene; clear share of the growing-season observations "
                  f"{figures['clear_share_in_season']})")
    elif not ok:
        reason = f"area-weighted class {fire['class']}, natural_agent {fire['natural_agent']}"
    return {"inputs": inputs, "call": _call(data / BC_BAP, detector, f", band_names={BAP_BAND_NAMES}"),
            "target": TARGETS["bc_wildfire"], "figures": figures,
            "status": _verdict(ok), "reason": reason}


SECTION_FUNCTIONS = {"fordead_dieback": fordead_section, "romania_2017": romania_section, "bc_wildfire": bc_section}


# --------------------------------------------------------------------------------------------
# the run


def _one_run(data: Path, classifier: Any, settings: Settings, detector: str, command: str,
             sections: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sections:
        t0 = time.perf_counter()
        try:
            section = SECTION_FUNCTIONS[name](data, classifier, settings, detector)
        except Exception as exc:  # a bench reports a section it cannot compute; it does not crash
            where = ""
            if not isinstance(exc, GmsenseError):  # an unexpected error: where it happened helps
                last = traceback.extract_tb(exc.__traceback__)[-1]
                where = f" (at {Path(last.filename).name}:{last.lineno})"
            section = {"inputs": {"data": str(data)}, "call": None, "target": TARGETS[name], "figures": {},
                       "status": "FAIL", "reason": f"{type(exc).__name__}: {exc}{where}"}
        section["command"] = command
        section["runtime_s"] = round(time.perf_counter() - t0, 1)
        out[name] = section
    return out


def run_real(data: Path | None = None, *, model: str | None = "default", baseline: bool = False,
             settings: Settings | None = None, buffer_m: float = BUFFER_M, out: Path | None = None,
             sections: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    """Run the real-data sections with ``model`` (a shipped model's name or a model folder; None or
    ``"rules"`` for the rule detector) and, with ``baseline``, the rule detector too. Writes ``out``
    (JSON) and a ``.md`` beside it when given. ``data``: the real data folder (default
    :func:`default_real_data`)."""
    data = Path(data) if data is not None else default_real_data()
    settings = settings or load_settings()
    settings = settings.model_copy(update={"sites": settings.sites.model_copy(update={"buffer_m": float(buffer_m)})})
    t0 = time.perf_counter()
    classifier = load_model(model)
    detectors: list[tuple[str, Any]] = [("rules", None)] if classifier is None else [("model", classifier)]
    if baseline and classifier is not None:
        detectors.append(("rules", None))
    command = "gmsense bench real" + (f" --model {model}" if model not in (None, "default") else "") + (
        " --baseline" if baseline else "") + (f" --buffer {buffer_m:g}" if buffer_m != BUFFER_M else "") + (
        f" --data {data}" if data != default_real_data() else "")
    runs = []
    for detector, clf in detectors:
        runs.append({"detector": detector, "model": (str(model) if clf is not None else None),
                     "model_version": getattr(clf, "version", None),
                     "sections": _one_run(data, clf, settings, detector if clf is None else str(model), command,
                                          sections)})
    results = {"data": str(data), "buffer_m": buffer_m, "runs": runs, "config_hash": settings.config_hash(),
               "gmsense_version": __version__, "runtime_s": round(time.perf_counter() - t0, 1)}
    if out is not None:
        write_json_and_markdown(results, Path(out), markdown(results))
    return results


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)


#: Rows of the markdown table per section: (label, figure key).
_ROWS = {
    "fordead_dieback": [("detected area (m2)", "detected_area_m2"), ("flagged area (m2)", "flagged_area_m2"),
                        ("patches", "n_patches"), ("share human-made", "share_human_made"),
                        ("share natural", "share_natural"), ("share uncertain", "share_uncertain"),
                        ("first detected (years)", "first_detected_years")],
    "romania_2017": [("reference area (m2)", "reference_area_m2"), ("reference rows/cols", "reference_rows_cols"),
                     ("patches", "n_patches"), ("overlapping, first detected 2017", "overlapping_2017"),
                     ("their overlap (m2)", "overlap_2017_m2"), ("their classes", "classes_2017"),
                     ("flagged", "flagged")],
    "bc_wildfire": [("patches", "n_patches"), ("overlapping the burn, any year", "overlapping_patches"),
                    ("overlap (m2)", "overlap_m2"), ("class shares (area)", "class_shares"),
                    ("natural_agent shares (area)", "natural_agent_shares"), ("class", "class"),
                    ("natural_agent", "natural_agent"), ("the fire's years", "fire_years"),
                    ("of the fire: patches", ("of_the_fire", "overlapping_patches")),
                    ("of the fire: overlap (m2)", ("of_the_fire", "overlap_m2")),
                    ("of the fire: class shares (area)", ("of_the_fire", "class_shares")),
                    ("of the fire: natural_agent shares (area)", ("of_the_fire", "natural_agent_shares"))],
}


def markdown(results: dict[str, Any]) -> str:
    """One table per section, one column per detector run, with the target and PASS/FAIL."""
    runs = results["runs"]
    heads = [r["detector"] + (f" ({r['model']}, {r['model_version']})" if r["model"] else "") for r in runs]
    text = [f"Real data: {results['data']}; monitoring buffer {results['buffer_m']:g} m; "
            f"gmsense {results['gmsense_version']}; {results['runtime_s']} s.\n"]
    for name in runs[0]["sections"]:
        first = runs[0]["sections"][name]
        text.append(f"## {name}\n\nTarget: {first.get('target', '-')}. Command: `{first['command']}`.\n")
        text.append("| figure | " + " | ".join(heads) + " |")
        text.append("|---|" + "---|" * len(runs))
        for label, key in [("status", None), *_ROWS.get(name, [])]:
            cells = []
            for r in runs:
                s = r["sections"][name]
                if key is None:
                    cells.append(s["status"] + (f" ({s['reason']})" if s.get("reason") else ""))
                else:
                    value = s["figures"].get(key) if isinstance(key, str) else (s["figures"].get(key[0]) or {}).get(
                        key[1])
                    cells.append(_fmt(value))
            text.append(f"| {label} | " + " | ".join(cells) + " |")
        extra = first["figures"].get("composites_10m") if name == "bc_wildfire" else None
        if extra:
            text.append("| 10 m composites: class / agent / overlap (m2) | " + " | ".join(
                _fmt([r["sections"][name]["figures"].get("composites_10m", {}).get(k) for k in
                      ("class", "natural_agent", "overlap_m2")]) for r in runs) + " |")
        text.append("")
    return "\n".join(text)
