"""Exports of the store for GIS and analysis: GeoJSON (EPSG:4326), GeoPackage, GeoParquet, CSV,
and GPX / KML waypoints of patch centroids for field teams' phones.

A GeoPackage of patches or flags gets a QGIS layer style beside it (same name, ``.qml``, from
``gmsense/outputs/styles``), which QGIS applies when the layer is opened. Per-licence rasters and
their STAC catalogue are :mod:`gmsense.outputs.rasters`.

Files are written to a temporary name beside the target, flushed and renamed into place, so a
failed export never leaves a half-written file (:mod:`gmsense.files`). In CSV, text cells a
spreadsheet would run as formulas are defused (:func:`defuse_formulas`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely import wkt
from sqlalchemy import select

from gmsense.errors import InputError
from gmsense.files import atomic_file, check_target, write_bytes
from gmsense.store import PatchRow, RecoveryRow, SiteRow, Store
from gmsense.store.scope import PROVINCE, Scope, patch_clause, site_clause

FORMATS = {"geojson": ".geojson", "gpkg": ".gpkg", "parquet": ".parquet", "csv": ".csv", "gpx": ".gpx", "kml": ".kml"}
#: Formats of points for the field (one waypoint per patch): they export patches only.
FIELD_FORMATS = ("gpx", "kml")
#: The QGIS layer styles shipped with gmsense, by exported layer.
STYLES_DIR = Path(__file__).parent / "styles"
STYLED_LAYERS = {"patches": "patches.qml", "flags": "flags.qml"}
PATCH_FIELDS = ["patch_id", "site_id", "disturbance_class", "confidence", "first_detected", "confirmed_on",
                "last_seen", "area_m2", "inside_licence", "area_outside_m2", "recovery_status", "recovery_ratio",
                "natural_agent", "created_scan_id", "updated_scan_id"]


EVIDENCE_FIELDS = ["before_date", "before_image", "after_date", "after_image", "confirm_image"]
PROVENANCE_FIELDS = ["source", "config_hash", "detector", "model_version", "gmsense_version"]


def _patch_rows(store: Store, scope: Scope) -> list[PatchRow]:
    with store.session() as s:
        return list(s.scalars(select(PatchRow).where(patch_clause(scope)).order_by(PatchRow.patch_id)))


def patches_frame(store: Store, scope: Scope = PROVINCE) -> gpd.GeoDataFrame:
    """Every stored patch of the licences in ``scope`` (gmsense.store.scope, filtered by the database)
    with the fields of DESIGN.md and its provenance (the images it rests on, the scan that last updated
    it and that scan's settings), geometry in EPSG:4326."""
    scans = {s.id: s for s in store.scans()}
    data = []
    for r in _patch_rows(store, scope):
        scan = scans.get(r.updated_scan_id)
        evidence = (r.metrics or {}).get("evidence", {})
        data.append({**{f: getattr(r, f) for f in PATCH_FIELDS},
                     **{f: evidence.get(f) for f in EVIDENCE_FIELDS},
                     "label_reason": (r.metrics or {}).get("label_reason"),
                     **{f: getattr(scan, f, None) for f in PROVENANCE_FIELDS},
                     "geometry": wkt.loads(r.geometry_wkt)})
    columns = [*PATCH_FIELDS, *EVIDENCE_FIELDS, "label_reason", *PROVENANCE_FIELDS, "geometry"]
    return gpd.GeoDataFrame(data, columns=columns, geometry="geometry", crs="EPSG:4326")


#: The protected-land columns of a flag (rule protected_land; empty for the other rules).
LAYER_FIELDS = ("layer_name", "layer_kind", "layer_version", "overlap_m2")


def recovery_frame(store: Store, scope: Scope = PROVINCE) -> pd.DataFrame:
    """Per-patch, per-season recovery observations of the patches of the licences in ``scope`` (no geometry)."""
    fields = ["patch_id", "season", "index_name", "n_obs", "patch_value", "ring_value", "relative"]
    with store.session() as s:
        rows = list(s.scalars(select(RecoveryRow).join(PatchRow, PatchRow.patch_id == RecoveryRow.patch_id)
                              .where(patch_clause(scope)).order_by(RecoveryRow.patch_id, RecoveryRow.season)))
    return pd.DataFrame([{f: getattr(r, f) for f in fields} for r in rows], columns=fields)


def sites_frame(store: Store, scope: Scope = PROVINCE) -> gpd.GeoDataFrame:
    """The licences in ``scope`` with their attributes."""
    with store.session() as s:
        rows = list(s.scalars(select(SiteRow).where(site_clause(scope)).order_by(SiteRow.site_id)))
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


def check_format(fmt: str, layer: str) -> None:
    """An InputError when ``layer`` cannot be exported as ``fmt`` (checked before any work)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt in FIELD_FORMATS and layer != "patches":
        raise InputError(f"--format {fmt} writes patch centroids for the field; export patches, not {layer}")


def field_points(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """One point per patch for a phone: its centroid, or a point inside it when the centroid falls
    outside (a ring- or C-shaped patch), EPSG:4326; ``name`` is the patch id and ``desc`` its class,
    area and first detection. (Centroids of patches of a few hectares computed in degrees differ
    from those computed in metres by far less than a GNSS fix.)"""
    points = [geom.centroid if geom.centroid.within(geom) else geom.representative_point()
              for geom in frame.geometry]
    desc = [f"{row.disturbance_class}; {row.area_m2:.0f} m2 ({row.area_m2 / 10_000:.2f} ha); "
            f"first detected {row.first_detected}; licence {row.site_id}" for row in frame.itertuples()]
    return gpd.GeoDataFrame({"name": frame["patch_id"].astype(str).tolist(), "desc": desc,
                             "type": frame["disturbance_class"].astype(str).tolist()},
                            geometry=points, crs=frame.crs).to_crs("EPSG:4326")


def _field_bytes(frame: gpd.GeoDataFrame, fmt: str) -> bytes:
    points = field_points(frame)
    buffer = io.BytesIO()
    if fmt == "gpx":  # GPX waypoints: name, desc and type are GPX elements every phone app reads
        points.to_file(buffer, driver="GPX", layer="waypoints", engine="pyogrio")
    else:  # KML: Name and Description are the placemark's <name> and <description>
        kml = points.rename(columns={"name": "Name", "desc": "Description", "type": "disturbance_class"})
        kml["site_id"] = frame["site_id"].astype(str).tolist()
        kml["first_detected"] = frame["first_detected"].astype(str).tolist()
        kml["area_m2"] = frame["area_m2"].astype(float).tolist()
        kml.to_file(buffer, driver="KML", layer="patches", engine="pyogrio")
    return buffer.getvalue()


def style_path(layer: str) -> Path | None:
    """The shipped QGIS style (``.qml``) of an exported layer, or None when it has none."""
    name = STYLED_LAYERS.get(layer)
    return STYLES_DIR / name if name else None


def write_frame(frame: pd.DataFrame, out: Path, fmt: str, layer: str) -> Path:
    """Write ``frame`` as ``fmt`` to ``out`` atomically (see :mod:`gmsense.files`): an
    ``out`` that exists and is not a regular file is refused; a failure leaves nothing behind.
    A GeoPackage of patches or flags gets its QGIS style beside it (``out`` with ``.qml``)."""
    check_format(fmt, layer)
    if fmt not in ("csv", "parquet") and not isinstance(frame, gpd.GeoDataFrame):
        raise InputError(f"{layer} have no geometry; export them as csv or parquet")
    out = check_target(out)
    # Written in memory first: GDAL drivers do not always report a full disk (a GeoJSON's last
    # buffer, a GeoTIFF's blocks); Python's own file writes do, so the bytes land in one write.
    buffer = io.BytesIO()
    if fmt == "csv":
        table = pd.DataFrame(frame)
        if isinstance(frame, gpd.GeoDataFrame):
            table["geometry"] = frame.geometry.to_wkt()
        defuse_formulas(table).to_csv(buffer, index=False)
    elif fmt == "parquet":  # GeoParquet (geo metadata with the CRS) via pyarrow; plain Parquet without geometry
        frame.to_parquet(buffer, index=False)
    elif fmt in FIELD_FORMATS:
        buffer.write(_field_bytes(frame, fmt))
    else:
        frame.to_file(buffer, driver="GeoJSON" if fmt == "geojson" else "GPKG", layer=layer, engine="pyogrio")
    style = style_path(layer) if fmt == "gpkg" else None
    if style is None:
        return write_bytes(out, buffer.getvalue())
    # The GeoPackage to its temporary name, then the style, then the GeoPackage is renamed into
    # place: if either cannot be written, neither is left (and the message names the one that failed).
    qml = check_target(out.with_suffix(".qml"))
    with atomic_file(out) as tmp, tmp.open("wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
        write_bytes(qml, style.read_bytes())
    return out
