"""Downloads of the review app: the flags of the queue's filters, or the patches of the licences
they select, within the user's scope, as GeoJSON (EPSG:4326), GeoPackage or CSV.

Rows are read in batches of :data:`BATCH` by keyset paging (``WHERE id > last ORDER BY id LIMIT``),
each batch in its own short session, so an export of any size holds one batch in memory: CSV and
GeoJSON stream to the client as they are read; a GeoPackage (a SQLite file, which cannot be
streamed while written) is appended batch by batch to a temporary file, sent, then deleted. The
columns are those of ``gmsense export`` (gmsense.outputs.export), which reads through here too.
A flag's escalation stage (gmsense.review.stages) is in the ``stage_*`` columns: ``stage_state``
(pending, complete, closed, none), the pending stage's number, level, task, deadline and whether it
is overdue (one query for the latest stage action of each batch's flags).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely import wkt
from shapely.geometry import mapping
from sqlalchemy import func, or_, select

from gmsense.config import RulesSettings
from gmsense.outputs.export import EVIDENCE_FIELDS, FORMULA_START, PATCH_FIELDS, PROVENANCE_FIELDS
from gmsense.review import service, stages
from gmsense.store import FlagRow, PatchRow, ScanRow, SiteRow, Store
from gmsense.store.scope import PROVINCE, Scope, patch_clause, site_clause

#: Filters that select licences (the rest select flags).
SITE_FILTERS = ("province", "city", "county", "mineral_class", "licence_type", "site_id")
BATCH = 1000
FLAG_COLUMNS = {"flag_id": "int", "site_id": "str", "patch_id": "str", "rule": "str", "severity": "str",
                "status": "str", "message": "str", "created_scan_id": "int", "licence_version": "int",
                "province_code": "str", "city_code": "str", "county_code": "str", "layer_name": "str",
                "layer_kind": "str", "layer_version": "int", "overlap_m2": "float"}
#: The escalation columns of a flag (gmsense.review.stages.CurrentStage).
STAGE_COLUMNS = {"stage_state": "str", "stage": "int", "stages": "int", "stage_level": "str", "stage_action": "str",
                 "stage_due": "str", "stage_overdue": "bool"}
_TYPED = {"confidence": "float", "area_m2": "float", "inside_licence": "bool", "area_outside_m2": "float",
          "recovery_ratio": "float", "created_scan_id": "int", "updated_scan_id": "int"}
PATCH_COLUMNS = {k: _TYPED.get(k, "str") for k in (*PATCH_FIELDS, *EVIDENCE_FIELDS, "label_reason", *PROVENANCE_FIELDS)}
#: pandas dtypes of the column kinds.
DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "str": "object"}


def _flag_batches(store: Store, flt: service.QueueFilter, scope: Scope, rules: RulesSettings, now: datetime,
                  batch: int) -> Iterator[list[dict[str, Any]]]:
    geometry = func.coalesce(PatchRow.geometry_wkt, SiteRow.geometry_wkt)
    stmt = (select(FlagRow, geometry).join(SiteRow, SiteRow.site_id == FlagRow.site_id)
            .outerjoin(PatchRow, PatchRow.patch_id == FlagRow.patch_id)
            .where(*service.flag_conditions(flt, scope, rules=rules, now=now)).order_by(FlagRow.id).limit(batch))
    last = 0
    while True:
        with store.session() as s:
            rows = s.execute(stmt.where(FlagRow.id > last)).all()
            current = stages.current_stages(s, [f for f, _ in rows], rules, now)
        if not rows:
            return
        last = rows[-1][0].id
        yield [{"flag_id": f.id, **{k: getattr(f, k) for k in list(FLAG_COLUMNS)[1:]},
                **_stage_cells(current[f.id]), "geometry": g} for f, g in rows]


def _stage_cells(stage: stages.CurrentStage) -> dict[str, Any]:
    return {"stage_state": stage.state, "stage": stage.number, "stages": stage.stages or None,
            "stage_level": stage.level, "stage_action": stage.action,
            "stage_due": stage.due_at.isoformat(timespec="seconds") if stage.due_at else None,
            "stage_overdue": stage.overdue if stage.state == "pending" else None}


def _site_conditions(flt: service.QueueFilter) -> list[Any]:
    out = []
    for key in SITE_FILTERS:
        value = getattr(flt, key)
        if value:
            named = SiteRow.attrs[key].as_string() == value
            if key in ("province", "city", "county"):
                named = or_(named, getattr(SiteRow, f"{key}_code") == value)
            out.append(PatchRow.site_id == value if key == "site_id" else PatchRow.site_id.in_(
                select(SiteRow.site_id).where(named)))
    return out


def _patch_batches(store: Store, flt: service.QueueFilter, scope: Scope, batch: int
                   ) -> Iterator[list[dict[str, Any]]]:
    stmt = (select(PatchRow, ScanRow).outerjoin(ScanRow, ScanRow.id == PatchRow.updated_scan_id)
            .where(patch_clause(scope), *_site_conditions(flt)).order_by(PatchRow.patch_id).limit(batch))
    last = ""
    while True:
        with store.session() as s:
            rows = s.execute(stmt.where(PatchRow.patch_id > last)).all()
        if not rows:
            return
        last = rows[-1][0].patch_id
        batch = []
        for p, scan in rows:
            metrics = p.metrics or {}
            evidence = metrics.get("evidence") or {}
            batch.append({**{f: getattr(p, f) for f in PATCH_FIELDS}, **{f: evidence.get(f) for f in EVIDENCE_FIELDS},
                          "label_reason": metrics.get("label_reason"),
                          **{f: getattr(scan, f, None) for f in PROVENANCE_FIELDS}, "geometry": p.geometry_wkt})
        yield batch


def batches(store: Store, what: str, flt: service.QueueFilter, scope: Scope = PROVINCE, *,
            rules: RulesSettings | None = None, now: datetime | None = None, batch: int = BATCH
            ) -> tuple[dict[str, str], Iterator[list[dict[str, Any]]]]:
    """The columns (name -> str|int|float|bool) and batches of ``batch`` rows (``geometry`` as WKT,
    EPSG:4326) of ``flags`` (every flag the filter selects in scope, all pages, with its escalation
    stage judged by ``rules`` at ``now``: defaults configs/rules.yaml and now) or ``patches`` (every
    patch of the licences in scope the filter's licence fields select)."""
    if what == "flags":
        from gmsense.review.escalation import shipped_rules

        return {**FLAG_COLUMNS, **STAGE_COLUMNS}, _flag_batches(
            store, flt, scope, rules or shipped_rules(), now or datetime.now(UTC).replace(tzinfo=None), batch)
    return PATCH_COLUMNS, _patch_batches(store, flt, scope, batch)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value  # a spreadsheet must not run it (gmsense.outputs.export.defuse_formulas)
    return "" if value is None else value


def stream_csv(columns: dict[str, str], rows: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*columns, "geometry"])
    for batch in rows:
        for row in batch:
            writer.writerow([_cell(row[c]) for c in columns] + [row["geometry"]])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def stream_geojson(columns: dict[str, str], rows: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    yield b'{"type": "FeatureCollection", "features": [\n'
    first = True
    for batch in rows:
        parts = []
        for row in batch:
            feature = {"type": "Feature", "properties": {c: row[c] for c in columns},
                       "geometry": mapping(wkt.loads(row["geometry"]))}
            parts.append(("" if first else ",\n") + json.dumps(feature, default=str, ensure_ascii=False))
            first = False
        yield "".join(parts).encode()
    yield b"\n]}\n"


def _frame(columns: dict[str, str], batch: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    table = pd.DataFrame(batch, columns=[*columns, "geometry"])
    for name, kind in columns.items():
        table[name] = table[name].astype(DTYPES[kind])
    geometry = gpd.GeoSeries.from_wkt(table.pop("geometry").tolist(), crs="EPSG:4326")
    return gpd.GeoDataFrame(table, geometry=geometry, crs="EPSG:4326")


def write_gpkg(columns: dict[str, str], rows: Iterator[list[dict[str, Any]]], layer: str) -> tuple[str, Callable]:
    """A GeoPackage written batch by batch to a temporary file: its path and the function that
    deletes it (after it was sent)."""
    import pyogrio

    fd, path = tempfile.mkstemp(prefix="gmsense-export-", suffix=".gpkg")
    os.close(fd)
    Path(path).unlink()  # GDAL creates it
    try:
        written = False
        for batch in rows:
            pyogrio.write_dataframe(_frame(columns, batch), path, layer=layer, driver="GPKG", append=written)
            written = True
        if not written:
            pyogrio.write_dataframe(_frame(columns, []), path, layer=layer, driver="GPKG")
    except BaseException:
        _remove(path)
        raise
    return path, lambda: _remove(path)


def _remove(path: str) -> None:
    for name in (path, path + "-journal", path + "-wal", path + "-shm"):
        Path(name).unlink(missing_ok=True)


def sites_in_scope(store: Store, scope: Scope) -> list[str]:
    """Licence ids in scope (for tests and pages)."""
    with store.session() as s:
        return list(s.scalars(select(SiteRow.site_id).where(site_clause(scope)).order_by(SiteRow.site_id)))


def flags_frame(store: Store, scope: Scope = PROVINCE, *, rules: RulesSettings | None = None,
                now: datetime | None = None) -> gpd.GeoDataFrame:
    """Every flag of the licences in ``scope`` with its patch geometry (or the licence's, for
    licence-level flags), EPSG:4326, read as the review app's export reads them (in batches, filtered
    by the database: :func:`batches`; ``gmsense export flags`` writes it), with the same columns:
    ``licence_version``, the register
    version the flag was checked against (empty for --sites scans); ``province_code``, ``city_code``,
    ``county_code``; ``layer_name``, ``layer_kind``, ``layer_version``, ``overlap_m2`` for
    protected_land flags (empty for other rules); and its escalation stage (``stage_state``, ``stage``,
    ``stages``, ``stage_level``, ``stage_action``, ``stage_due``, ``stage_overdue``; gmsense.review.stages,
    judged by ``rules`` at ``now``)."""
    columns, flag_batches = batches(store, "flags", service.QueueFilter(status="all"), scope, rules=rules, now=now)
    rows = [row for batch in flag_batches for row in batch]
    table = pd.DataFrame(rows, columns=[*columns, "geometry"])
    for name, kind in columns.items():
        table[name] = table[name].astype(DTYPES[kind])
    geometry = gpd.GeoSeries.from_wkt(table.pop("geometry").tolist(), crs="EPSG:4326")
    return gpd.GeoDataFrame(table, geometry=geometry, crs="EPSG:4326")
