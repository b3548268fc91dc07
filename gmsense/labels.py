"""Reviewers' decisions as training labels (``gmsense labels export``), read back by training.

One row per patch (its latest decision): ``disturbance_class`` (the patch's class, the reviewer's
correction, or ``natural`` for a dismissal as natural change), ``label_use`` (``positive``: the
class is right; ``negative``: the detection was not real, e.g. cloud or misregistration),
``date`` (first detected), the decision, reason, comment, reviewer and time, geometry EPSG:4326.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from shapely import wkt

from gmsense.errors import InputError
from gmsense.export import write_frame
from gmsense.review.service import labels
from gmsense.store import Store

SUFFIX_FORMATS = {".gpkg": "gpkg", ".geojson": "geojson", ".json": "geojson", ".csv": "csv"}


def labels_frame(store: Store) -> gpd.GeoDataFrame:
    rows = labels(store)
    data = [{k: v for k, v in r.items() if k != "geometry_wkt"} | {"geometry": wkt.loads(r["geometry_wkt"])}
            for r in rows]
    columns = ["patch_id", "site_id", "disturbance_class", "label_use", "detected_class", "date", "flag_id", "rule",
               "decision", "reason", "comment", "reviewer", "decided_at", "review_id", "geometry"]
    return gpd.GeoDataFrame(data, columns=columns, geometry="geometry", crs="EPSG:4326")


def write_labels(store: Store, out: Path) -> tuple[Path, int]:
    fmt = SUFFIX_FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the format of {out}; use .gpkg, .geojson or .csv")
    frame = labels_frame(store)
    return write_frame(frame, Path(out), fmt, layer="labels"), len(frame)
