"""Restoration accounting the way the surveys report it, from the register's status rows.

Per year and per province / city / county / demonstration zone / mineral class / kind (and the
whole register): damaged area (m², polygons that are ``damaged``, ``under_restoration`` or
``reverted``: not yet restored), restored area (m², polygons ``restored``), restoration rate =
restored / (damaged + restored), newly damaged and newly restored area (m²) and the target
(``restoration.target_rate``, a zone's own ``target_rate`` where set). Polygons without a status in
a year (before they were first seen damaged, or without a ratio) are not counted that year.
``restored_pixel_m2`` sums each polygon's restored share (pixels at the restored ratio of the
reference) x its area: restoration inside polygons not yet restored as a whole.

Newly damaged in a year: a polygon damaged (or reverted, or under restoration) whose last status
before was ``restored`` or that had none yet (the ground was intact); newly restored: a polygon
restored whose last status before was another. The first year of the archive has no new area
(what is damaged then is the stock). A polygon belongs to the zone its ``demonstration_zone``
names, else to the zone containing its representative point.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely import wkt

from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.files import ensure_folder, write_bytes
from gmsense.outputs.export import write_frame
from gmsense.outputs.i18n import area, catalog, t
from gmsense.store import RegisterRow, RestorationStatusRow, Store
from gmsense.store.scope import PROVINCE, Scope, register_clause

LEVELS = ("province", "city", "county", "zone", "mineral_class", "kind")
DAMAGED = ("damaged", "under_restoration", "reverted")
NONE = "(none)"
STATUS_COLUMNS = ["register_id", "year", "status", "events", "ratio", "polygon_ndvi", "reference_ndvi",
                  "restored_share", "area_m2", "restored_pixel_m2", "n_pixels", "n_reference", "image_id", "run_id",
                  "kind", "mineral_class", "province", "city", "county", "zone", "responsible_party",
                  "restoration_deadline"]
ACCOUNT_COLUMNS = ["level", "group", "year", "polygons", "damaged_m2", "under_restoration_m2", "reverted_m2",
                   "restored_m2", "restored_pixel_m2", "restoration_rate", "newly_damaged_m2", "newly_restored_m2",
                   "target_rate", "meets_target"]


def status_table(store: Store, scope: Scope = PROVINCE) -> pd.DataFrame:
    """Every stored status row of the register polygons in ``scope`` (selected in SQL) with its
    polygon's area (m²), attributes and zone (one row per polygon and year; the columns of
    :data:`STATUS_COLUMNS`)."""
    from sqlalchemy import select

    in_scope = register_clause(scope)
    with store.session() as s:
        register = {r.register_id: r for r in s.scalars(select(RegisterRow).where(in_scope))}
        status_rows = list(s.scalars(
            select(RestorationStatusRow).where(RestorationStatusRow.register_id.in_(
                select(RegisterRow.register_id).where(in_scope)))
            .order_by(RestorationStatusRow.register_id, RestorationStatusRow.year)))
    zones = [(z.zone_id, wkt.loads(z.geometry_wkt)) for z in store.zone_rows()]
    zone_of = {rid: _zone(r, zones) for rid, r in register.items()}
    data = []
    for row in status_rows:
        polygon = register[row.register_id]
        attrs = polygon.attrs or {}
        share = row.restored_share
        data.append({
            "register_id": row.register_id, "year": row.year, "status": row.status, "events": row.events,
            "ratio": row.ratio, "polygon_ndvi": row.polygon_ndvi, "reference_ndvi": row.reference_ndvi,
            "restored_share": share, "area_m2": polygon.area_m2,
            "restored_pixel_m2": None if share is None else share * polygon.area_m2,
            "n_pixels": row.n_pixels, "n_reference": row.n_reference, "image_id": row.image_id, "run_id": row.run_id,
            "kind": polygon.kind, **{k: attrs.get(k) for k in ("mineral_class", "province", "city", "county")},
            "zone": zone_of[row.register_id], "responsible_party": attrs.get("responsible_party"),
            "restoration_deadline": attrs.get("restoration_deadline")})
    return pd.DataFrame(data, columns=STATUS_COLUMNS)


def _zone(row: Any, zones: list[tuple[str, Any]]) -> str | None:
    named = (row.attrs or {}).get("demonstration_zone")
    if named:
        return str(named)
    point = wkt.loads(row.geometry_wkt).representative_point()
    return next((zone_id for zone_id, geom in zones if geom.contains(point)), None)


def with_changes(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``new_damage`` and ``new_restored`` (booleans) per polygon and year."""
    table = table.sort_values(["register_id", "year"]).copy()
    new_damage, new_restored = [], []
    for _, rows in table.groupby("register_id", sort=False):
        last: str | None = None
        for k, status in enumerate(rows["status"]):
            status = None if pd.isna(status) else status
            first = k == 0
            new_damage.append(not first and status in DAMAGED and last in (None, "restored"))
            new_restored.append(not first and status == "restored" and last not in (None, "restored"))
            last = status if status is not None else last
    table["new_damage"], table["new_restored"] = new_damage, new_restored
    return table


def accounting(table: pd.DataFrame, level: str | None, target: float,
               zone_targets: dict[str, float | None] | None = None) -> pd.DataFrame:
    """Per group of ``level`` (None: the whole register) and year, the figures of the module
    docstring; areas in m², rates as shares 0-1."""
    table = with_changes(table) if "new_damage" not in table else table
    key = table[level].fillna(NONE).astype(str) if level else pd.Series("all", index=table.index)
    out = []
    for (group, year), rows in table.groupby([key, table["year"]], sort=True):
        if level == "zone" and group == NONE:
            continue
        counted = rows[rows["status"].notna()]

        def area_of(mask: pd.Series, rows: pd.DataFrame = counted) -> float:
            return float(rows.loc[mask, "area_m2"].sum())

        damaged = area_of(counted["status"].isin(DAMAGED))
        restored = area_of(counted["status"] == "restored")
        goal = (zone_targets or {}).get(group) if level == "zone" else None
        goal = target if goal is None else goal
        rate = restored / (damaged + restored) if damaged + restored > 0 else None
        out.append({
            "level": level or "all", "group": group, "year": int(year), "polygons": len(counted),
            "damaged_m2": damaged, "under_restoration_m2": area_of(counted["status"] == "under_restoration"),
            "reverted_m2": area_of(counted["status"] == "reverted"), "restored_m2": restored,
            "restored_pixel_m2": float(counted["restored_pixel_m2"].fillna(0).sum()),
            "restoration_rate": rate, "newly_damaged_m2": area_of(rows["new_damage"], rows),
            "newly_restored_m2": area_of(rows["new_restored"], rows), "target_rate": goal,
            "meets_target": None if rate is None else bool(rate >= goal)})
    return pd.DataFrame(out, columns=ACCOUNT_COLUMNS)


def account_tables(store: Store, table: pd.DataFrame, settings: Settings) -> dict[str, pd.DataFrame]:
    """The report's accounting of ``table`` (rows of :func:`status_table`, best through
    :func:`with_changes`): ``total`` (the whole table) and one table per level of :data:`LEVELS`,
    against ``restoration.target_rate`` or a stored zone's own target. The review app shows these too."""
    target = settings.restoration.target_rate
    zone_targets = {z.zone_id: z.target_rate for z in store.zone_rows()}
    tables = {"total": accounting(table, None, target)}
    for level in LEVELS:
        tables[level] = accounting(table, level, target, zone_targets)
    return tables


def latest_frame(store: Store, table: pd.DataFrame) -> gpd.GeoDataFrame:
    """One row per register polygon (EPSG:4326): its latest status, ratio, restored share, and the
    latest years restoration started, finished and reverted."""
    data = []
    for row in store.register_rows():
        rows = table[table["register_id"] == row.register_id].sort_values("year")
        last = rows.iloc[-1] if len(rows) else None

        def year_of(event: str, rows: pd.DataFrame = rows) -> int | None:
            if rows.empty:  # a polygon the run could not analyse has no rows
                return None
            hits = rows[rows["events"].fillna("").str.split(",").map(lambda e, ev=event: ev in e)]["year"]
            return int(hits.iloc[-1]) if len(hits) else None

        started = year_of("started")
        finished = year_of("finished")
        data.append({
            "register_id": row.register_id, "kind": row.kind,
            **{k: (row.attrs or {}).get(k) for k in ("mineral_class", "province", "city", "county",
                                                     "responsible_party", "planned_measure",
                                                     "restoration_deadline")},
            "zone": None if last is None else last["zone"], "area_m2": row.area_m2,
            "year": None if last is None else int(last["year"]), "status": None if last is None else last["status"],
            "ratio": None if last is None else last["ratio"],
            "restored_share": None if last is None else last["restored_share"],
            "restoration_started": started,
            "restoration_finished": finished if finished is not None and (started is None or finished >= started)
            else None, "reverted": year_of("reverted"), "geometry": wkt.loads(row.geometry_wkt)})
    return gpd.GeoDataFrame(data, geometry="geometry", crs="EPSG:4326")


def write_restoration_report(store: Store, out: Path, settings: Settings, lang: str = "en",
                             unit: str = "ha") -> list[Path]:
    """Write the accounting into the folder ``out``: ``status_by_polygon_year.csv``, ``by_<level>.csv``
    per level of :data:`LEVELS` and ``total.csv``, ``polygons_latest.gpkg`` and ``summary.md`` /
    ``summary.html`` in ``lang`` (areas in ``unit``). Returns the files written."""
    catalog(lang)
    area(0, lang, unit)  # an unknown unit is an error before any work
    table = status_table(store)
    if table.empty:
        raise InputError(f"the store {store.location} holds no restoration status: run gmsense restoration run "
                         "--imagery DIR first")
    folder = ensure_folder(out)
    table = with_changes(table)
    written = [write_frame(table.drop(columns=["new_damage", "new_restored"]), folder / "status_by_polygon_year.csv",
                           "csv", "status")]
    tables = account_tables(store, table, settings)
    for name, frame in tables.items():
        written.append(write_frame(frame, folder / ("total.csv" if name == "total" else f"by_{name}.csv"), "csv",
                                   name))
    latest = latest_frame(store, table)
    written.append(write_frame(latest, folder / "polygons_latest.gpkg", "gpkg", "restoration"))
    run = store.restoration_runs()[-1]
    markdown, page = summary_texts(tables, latest, run, settings, lang, unit)
    written.append(write_bytes(folder / "summary.md", markdown.encode("utf-8")))
    written.append(write_bytes(folder / "summary.html", page.encode("utf-8")))
    return written


def summary_texts(tables: dict[str, pd.DataFrame], latest: gpd.GeoDataFrame, run: Any, settings: Settings,
                  lang: str = "en", unit: str = "ha") -> tuple[str, str]:
    """The short summary as (markdown, HTML): the whole register, zones and counties in the latest
    year against the target, the year's changes, statuses and provenance."""
    total = tables["total"]
    year = int(total["year"].max())
    now = total[total["year"] == year].iloc[0]

    def pct(value: Any) -> str:
        return "-" if value is None or pd.isna(value) else f"{value:.1%}"

    def verdict(value: Any) -> str:
        return "-" if value is None or pd.isna(value) else t("restoration.met" if value else "restoration.not_met",
                                                               lang)

    lines = [t("restoration.total", lang, restored=area(now["restored_m2"], lang, unit),
               total=area(now["damaged_m2"] + now["restored_m2"], lang, unit), rate=pct(now["restoration_rate"]),
               target=pct(now["target_rate"]), verdict=verdict(now["meets_target"])),
             t("restoration.changes", lang, year=year, damaged=area(now["newly_damaged_m2"], lang, unit),
               restored=area(now["newly_restored_m2"], lang, unit))]
    counts = latest["status"].fillna("none").value_counts()
    lines.append(t("restoration.statuses", lang, counts=", ".join(
        f"{t('restoration.status.' + s, lang)} {n}" for s, n in counts.items())))
    head = [t(f"restoration.col.{c}", lang) for c in ("group", "damaged", "restored", "rate", "target", "verdict",
                                                       "new_damaged", "new_restored")]
    sections = []
    for level in ("province", "zone", "county"):
        frame = tables[level]
        frame = frame[frame["year"] == year]
        body = [[str(r["group"]), area(r["damaged_m2"], lang, unit), area(r["restored_m2"], lang, unit),
                 pct(r["restoration_rate"]), pct(r["target_rate"]), verdict(r["meets_target"]),
                 area(r["newly_damaged_m2"], lang, unit), area(r["newly_restored_m2"], lang, unit)]
                for _, r in frame.iterrows()]
        sections.append((t(f"restoration.by_{level}", lang), body))
    s = settings.restoration
    provenance = t("restoration.provenance", lang, run=run.id, imagery=run.imagery,
                   damaged=f"{s.damaged_ratio:.0%}", restored=f"{s.restored_ratio:.0%}", seasons=s.restored_seasons)
    title = t("restoration.title", lang, year=year)
    md = [f"# {title}", "", *[f"- {line}" for line in lines], ""]
    for heading, body in sections:
        md += [f"## {heading}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(row) + " |" for row in body] or [t("restoration.none", lang)]
        md.append("")
    md.append(provenance)
    esc = html.escape
    parts = [f"<!doctype html><html lang='{'zh-CN' if lang == 'zh' else 'en'}'><head><meta charset='utf-8'>"
             f"<title>{esc(title)}</title></head><body><h1>{esc(title)}</h1><ul>"
             + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"]
    for heading, body in sections:
        parts.append(f"<h2>{esc(heading)}</h2><table border='1'><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
                     + "</table>")
    parts.append(f"<p>{esc(provenance)}</p></body></html>")
    return "\n".join(md) + "\n", "".join(parts)

