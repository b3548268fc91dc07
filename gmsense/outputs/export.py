"""Exports of the store for GIS and analysis: GeoJSON (EPSG:4326), GeoPackage, CSV.

Files are written to a temporary name beside the target, flushed and renamed into place, so a
failed export never leaves a half-written file (:mod:`gmsense.files`). In CSV, text cells a
spreadsheet would run as formulas are defused (:func:`defuse_formulas`).
"""

from __future__ import annotations

import io
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely import wkt

from gmsense.errors import InputError
from gmsense.files import check_target, write_bytes
from gmsense.store import Store

FORMATS = {"geojson": ".geojson", "gpkg": ".gpkg", "csv": ".csv"}
PATCH_FIELDS = ["patch_id", "site_id", "disturbance_class", "confidence", "first_detected", "confirmed_on",
                "last_seen", "area_m2", "inside_licence", "area_outside_m2", "recovery_status", "recovery_ratio",
                "natural_agent", "created_scan_id", "updated_scan_id"]


EVIDENCE_FIELDS = ["before_date", "before_image", "after_date", "after_image", "confirm_image"]
PROVENANCE_FIELDS = ["source", "config_hash", "detector", "model_version", "gmsense_version"]


def patches_frame(store: Store) -> gpd.GeoDataFrame:
    """Every stored patch with the fields of DESIGN.md and its provenance (the images it rests
    on, the scan that last updated it and that scan's settings), geometry in EPSG:4326."""
    scans = {s.id: s for s in store.scans()}
    data = []
    for r in store.patch_rows():
        scan = scans.get(r.updated_scan_id)
        evidence = (r.metrics or {}).get("evidence", {})
        data.append({**{f: getattr(r, f) for f in PATCH_FIELDS},
                     **{f: evidence.get(f) for f in EVIDENCE_FIELDS},
                     "label_reason": (r.metrics or {}).get("label_reason"),
                     **{f: getattr(scan, f, None) for f in PROVENANCE_FIELDS},
                     "geometry": wkt.loads(r.geometry_wkt)})
    columns = [*PATCH_FIELDS, *EVIDENCE_FIELDS, "label_reason", *PROVENANCE_FIELDS, "geometry"]
    return gpd.GeoDataFrame(data, columns=columns, geometry="geometry", crs="EPSG:4326")


def flags_frame(store: Store) -> gpd.GeoDataFrame:
    """Every flag with its patch geometry (or the licence's, for licence-level flags), EPSG:4326;
    ``licence_version``: the register version the flag was checked against (empty for --sites scans)."""
    patches = {r.patch_id: r.geometry_wkt for r in store.patch_rows()}
    sites = {r.site_id: r.geometry_wkt for r in store.site_rows()}
    fields = ["flag_id", "site_id", "patch_id", "rule", "severity", "status", "message", "created_scan_id",
              "licence_version"]
    data = [
        {"flag_id": f.id, "site_id": f.site_id, "patch_id": f.patch_id, "rule": f.rule, "severity": f.severity,
         "status": f.status, "message": f.message, "created_scan_id": f.created_scan_id,
         "licence_version": f.licence_version,
         "geometry": wkt.loads(patches[f.patch_id] if f.patch_id else sites[f.site_id])}
        for f in store.flag_rows()
    ]
    return gpd.GeoDataFrame(data, columns=[*fields, "geometry"], geometry="geometry", crs="EPSG:4326")


def recovery_frame(store: Store) -> pd.DataFrame:
    """Per-patch, per-season recovery observations (no geometry)."""
    fields = ["patch_id", "season", "index_name", "n_obs", "patch_value", "ring_value", "relative"]
    return pd.DataFrame([{f: getattr(r, f) for f in fields} for r in store.recovery_rows()], columns=fields)


def sites_frame(store: Store) -> gpd.GeoDataFrame:
    rows = store.site_rows()
    data = [{"site_id": r.site_id, **{k: v for k, v in r.attrs.items() if not isinstance(v, dict | list)},
             "geometry": wkt.loads(r.geometry_wkt)} for r in rows]
    return gpd.GeoDataFrame(data, geometry="geometry", crs="EPSG:4326")


#: Cells a spreadsheet would read as a formula (OWASP "CSV injection"): = + - @, tab, CR.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell that a spreadsheet would run as a formula prefixed with a
    single quote; only text columns are touched (numbers, including negative ones, stay numbers)."""
    table = table.copy()
    for column in table.columns:
        if pd.api.types.is_numeric_dtype(table[column]) or pd.api.types.is_bool_dtype(table[column]):
            continue
        table[column] = table[column].map(
            lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return table


def write_frame(frame: pd.DataFrame, out: Path, fmt: str, layer: str) -> Path:
    """Write ``frame`` as ``fmt`` to ``out`` atomically (see :mod:`gmsense.files`): an
    ``out`` that exists and is not a regular file is refused; a failure leaves nothing behind."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt != "csv" and not isinstance(frame, gpd.GeoDataFrame):
        raise InputError(f"{layer} have no geometry; export them as csv")
    out = check_target(out)
    # Written in memory first: GDAL drivers do not always report a full disk (a GeoJSON's last
    # buffer, a GeoTIFF's blocks); Python's own file writes do, so the bytes land in one write.
    buffer = io.BytesIO()
    if fmt == "csv":
        table = pd.DataFrame(frame)
        if isinstance(frame, gpd.GeoDataFrame):
            table["geometry"] = frame.geometry.to_wkt()
        defuse_formulas(table).to_csv(buffer, index=False)
    else:
        frame.to_file(buffer, driver="GeoJSON" if fmt == "geojson" else "GPKG", layer=layer, engine="pyogrio")
    return write_bytes(out, buffer.getvalue())
