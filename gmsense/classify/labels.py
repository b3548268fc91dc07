"""Labels for retraining the patch classifier, from people rather than the simulator.

- Reviewers' decisions (``gmsense labels export``): one row per reviewed patch with its label
  (see :func:`gmsense.review.service.labels` for how a decision becomes a class), the decision,
  reason, comment, reviewer and time, the patch's classifier features, geometry EPSG:4326.
  Such a file trains without imagery: the features travel with it.
- Polygons a researcher draws (GeoPackage/GeoJSON, any CRS, a ``disturbance_class`` column and
  optionally a ``date``) over a local imagery folder: the detector proposes patches on that
  imagery and each takes the class of the polygon it overlaps most (15 m tolerance).
Both give rows of (scene, label, features) that :func:`gmsense.classify.train.train` adds to its table;
the scene (the licence, or the labels file) groups them for spatially blocked validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import geopandas as gpd
import pandas as pd
import pyproj
from shapely import wkt
from shapely.geometry import box

from gmsense.classify.model import FEATURES, features_of
from gmsense.classify.train import MATCH_TOLERANCE_M, label_patches
from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.outputs.export import write_frame
from gmsense.records import PATCH_CLASSES
from gmsense.review.service import labels
from gmsense.store import Store

SUFFIX_FORMATS = {".gpkg": "gpkg", ".geojson": "geojson", ".json": "geojson", ".csv": "csv"}
LABEL_COLUMNS = ["patch_id", "site_id", "disturbance_class", "detected_class", "date", "flag_id", "rule", "decision",
                 "reason", "comment", "reviewer", "decided_at", "review_id"]
#: Margin around a researcher's polygons within which the detector looks for patches, metres.
POLYGON_MARGIN_M = 300.0


def labels_frame(store: Store) -> gpd.GeoDataFrame:
    """Reviewers' labels with their features (``gmsense labels export``)."""
    data = []
    for r in labels(store):
        row = {k: r[k] for k in LABEL_COLUMNS}
        row.update(zip(FEATURES, features_of(r["metrics"]), strict=True))
        data.append(row | {"geometry": wkt.loads(r["geometry_wkt"])})
    return gpd.GeoDataFrame(data, columns=[*LABEL_COLUMNS, *FEATURES, "geometry"], geometry="geometry",
                            crs="EPSG:4326")


def write_labels(store: Store, out: Path) -> tuple[Path, int]:
    fmt = SUFFIX_FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the format of {out}; use .gpkg, .geojson or .csv")
    frame = labels_frame(store)
    return write_frame(frame, Path(out), fmt, layer="labels"), len(frame)


def _read(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"labels file {path} does not exist")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else gpd.read_file(path)
    except (OSError, ValueError, RuntimeError) as exc:  # pyogrio and pandas reader errors
        raise InputError(f"cannot read labels file {path}: {exc}") from None
    if "disturbance_class" not in frame.columns:
        raise InputError(f"labels file {path} has no 'disturbance_class' column; "
                         f"each row needs one of: {', '.join(PATCH_CLASSES)}")
    bad = sorted(set(frame["disturbance_class"].dropna().astype(str)) - set(PATCH_CLASSES))
    if bad:
        raise InputError(f"labels file {path} has unknown classes {bad}; use: {', '.join(PATCH_CLASSES)}")
    return frame


class ImageryNeededError(InputError):
    """A labels file of polygons (no features) was given without the imagery they lie on."""


def training_rows(path: Path, imagery: Path | None, settings: Settings | None = None, *,
                  unlabelled: Literal["skip", "natural"] = "skip") -> tuple[str, pd.DataFrame]:
    """Training rows from any labels file, read once, with a description of where they came
    from: a ``labels export`` (it carries the features) or polygons over ``imagery``."""
    frame = _read(path)
    if set(FEATURES) <= set(frame.columns):
        return f"reviewers' decisions ({Path(path).name}, gmsense labels export)", _reviewed_rows(frame, path)
    if imagery is None:
        raise ImageryNeededError(f"{path} holds polygons without features: give the imagery they lie on")
    rows = _polygon_rows(frame, path, imagery, settings or Settings(), unlabelled)
    return f"researcher polygons ({Path(path).name}) over {Path(imagery).name}, unlabelled: {unlabelled}", rows


def reviewed_training_rows(path: Path) -> pd.DataFrame:
    """Training rows from a ``gmsense labels export`` file, grouped by licence."""
    return _reviewed_rows(_read(path), path)


def _reviewed_rows(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [f for f in FEATURES if f not in frame.columns]
    if missing:
        raise InputError(f"labels file {path} lacks the feature columns {missing[:4]}...: it is not a "
                         "`gmsense labels export` file; give polygons with the imagery they lie on instead")
    frame = frame.dropna(subset=["disturbance_class"])
    scene = "review:" + frame["site_id"].astype(str) if "site_id" in frame.columns else f"review:{Path(path).name}"
    table = pd.DataFrame({"scene": scene, "label": frame["disturbance_class"].astype(str)})
    for f in FEATURES:
        table[f] = pd.to_numeric(frame[f], errors="coerce").astype(float)
    return table.reset_index(drop=True)


def polygon_training_rows(path: Path, imagery: Path, settings: Settings | None = None, *,
                          unlabelled: Literal["skip", "natural"] = "skip") -> pd.DataFrame:
    """Training rows from a researcher's labelled polygons over a local imagery folder or cube.

    The detector runs on the imagery around the polygons (their bounding box plus
    POLYGON_MARGIN_M); each proposed patch takes the class of the polygon it overlaps most.
    Patches that overlap no polygon are dropped (``unlabelled="skip"``, the default: unlabelled
    is not the same as natural) or labelled ``natural`` when the polygons are known to list every
    disturbance in the area.
    """
    return _polygon_rows(_read(path), path, imagery, settings or Settings(), unlabelled)


def _polygon_rows(polygons: pd.DataFrame, path: Path, imagery: Path, settings: Settings,
                  unlabelled: str) -> pd.DataFrame:
    from gmsense.geo.sites import Site, utm_crs_for
    from gmsense.pipeline import analyse_cube
    from gmsense.sources.local import read_local_cube

    if not isinstance(polygons, gpd.GeoDataFrame) or polygons.crs is None:
        raise InputError(f"labels file {path} has no geometry or no CRS; polygons need both")
    polygons = polygons[polygons.geometry.notna() & ~polygons.geometry.is_empty]
    if polygons.empty:
        raise InputError(f"labels file {path} has no polygons")
    centre = polygons.to_crs("EPSG:4326").union_all().centroid
    crs = utm_crs_for(centre.x, centre.y)
    local = polygons.to_crs(crs)
    area = box(*local.total_bounds).buffer(POLYGON_MARGIN_M)
    site = Site(f"labels:{Path(path).stem}", area, crs, {})
    cube = read_local_cube(imagery, area, crs, dn_scale=settings.local.dn_scale, site_id=site.site_id,
                           band_names=settings.local.band_names, harmonise_method=settings.local.harmonise)
    result = analyse_cube(site, cube, settings)
    cube_crs = pyproj.CRS.from_user_input(cube.rio.crs)
    truth = local.to_crs(cube_crs)
    geoms = [wkt.loads(p.local_wkt) for p in result.patches]
    assigned = label_patches(geoms, truth)
    overlapping = [any(g.intersects(t.buffer(MATCH_TOLERANCE_M)) for t in truth.geometry) for g in geoms]
    rows = []
    for record, label, hit in zip(result.patches, assigned, overlapping, strict=True):
        if not hit and unlabelled == "skip":
            continue
        rows.append({"scene": f"polygons:{Path(path).name}", "label": label,
                     **dict(zip(FEATURES, features_of(record.metrics), strict=True))})
    table = pd.DataFrame(rows, columns=["scene", "label", *FEATURES])
    return table.astype(dict.fromkeys(FEATURES, float)) if not table.empty else table

