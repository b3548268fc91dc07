"""Restoration accounting the way the surveys report it, from the register's status rows.

The surveys (e.g. the national survey of abandoned open-pit mines, 2022: damaged 50.74 x 10^4 ha,
restored 32.00 x 10^4 ha, rate 38.68 %) measure **land**: the restored area is the area of mine land
interpreted as restored, wherever it lies, and the rate is restored / (damaged + restored) area. So
the accounting counts area, not polygons: each polygon with a status in a year contributes its
restored area (its restored pixel share, :func:`gmsense.restoration.status.restored_shares`, x its
area: a polygon half grown back counts half) and the rest of its area as damaged. Per year and per
province / city / county / demonstration zone / mineral class / kind (and the whole register):

- ``damaged_m2``, ``restored_m2`` (m²) and ``restoration_rate`` = restored / (damaged + restored);
- ``under_restoration_m2`` and ``reverted_m2``: the damaged area of polygons with that status (a part
  of ``damaged_m2``); ``restored_polygons_m2``: the area of polygons restored as a whole (their status);
- ``newly_damaged_m2``: the area of polygons first seen damaged that year (the ground was intact) and
  restored area lost since the polygon's previous status (reversion); ``newly_restored_m2``: restored
  area gained since then. So damaged and restored area change by exactly these (the yearly balance);
- the target (``restoration.target_rate``, a zone's own ``target_rate`` where set);
- ``unobserved_m2``: the part of the counted area not observed that year (area x (1 - the polygon's
  ``observed_share``): cloud, SLC-off stripes), whose status comes from the observed years around it
  (gmsense.restoration.status), so a figure resting on carried statuses says so;
- ``borderline_m2``, ``rate_low``, ``rate_high``: the area of polygons whose ratio is within
  ``restoration.borderline_margin`` of ``restored_ratio`` that year (their cover is at the threshold
  within what a 30 m composite can tell, so they could read either way), and the rate with their
  restored area counted as damaged (low) and their damaged area as restored (high). One large
  polygon at the threshold moves a county's rate by points; the range says by how many.

Polygons without a status in a year (before they were first seen damaged, or without a ratio) are not
counted that year. The first year of a polygon's rows has no new area (what is damaged then is the
stock). :func:`accounting` is the one function behind the report's tables, the review app's page and
the bench (which runs it on the synthetic truth too). A polygon belongs to the zone its
``demonstration_zone`` names, else to the zone containing its representative point.
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
                  "restored_share", "area_m2", "restored_m2", "damaged_m2", "observed_share", "unobserved_m2",
                  "reference_source", "soil_ndvi", "n_pixels", "n_reference", "image_id", "run_id", "kind",
                  "mineral_class", "province", "city", "county", "zone", "responsible_party", "restoration_deadline"]
ACCOUNT_COLUMNS = ["level", "group", "year", "polygons", "damaged_m2", "under_restoration_m2", "reverted_m2",
                   "restored_m2", "restored_polygons_m2", "restoration_rate", "newly_damaged_m2", "newly_restored_m2",
                   "unobserved_m2", "borderline_m2", "rate_low", "rate_high", "target_rate", "meets_target",
                   "register_ids"]


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
        restored = None if row.status is None else (share or 0.0) * polygon.area_m2
        data.append({
            "register_id": row.register_id, "year": row.year, "status": row.status, "events": row.events,
            "ratio": row.ratio, "polygon_ndvi": row.polygon_ndvi, "reference_ndvi": row.reference_ndvi,
            "restored_share": share, "area_m2": polygon.area_m2, "restored_m2": restored,
            "damaged_m2": None if restored is None else polygon.area_m2 - restored,
            "observed_share": row.observed_share,
            "unobserved_m2": None if row.status is None else unobserved(polygon.area_m2, row.observed_share),
            "reference_source": row.reference_source, "soil_ndvi": row.soil_ndvi,
            "n_pixels": row.n_pixels, "n_reference": row.n_reference, "image_id": row.image_id, "run_id": row.run_id,
            "kind": polygon.kind, **{k: attrs.get(k) for k in ("mineral_class", "province", "city", "county")},
            "zone": zone_of[row.register_id], "responsible_party": attrs.get("responsible_party"),
            "restoration_deadline": attrs.get("restoration_deadline")})
    return pd.DataFrame(data, columns=STATUS_COLUMNS)


def unobserved(area_m2: float, observed_share: float | None) -> float:
    """The area of a polygon not observed in a year (rows without an ``observed_share``, written before
    it was recorded, count as observed)."""
    return 0.0 if observed_share is None or pd.isna(observed_share) else float(area_m2) * (1 - float(observed_share))


def _zone(row: Any, zones: list[tuple[str, Any]]) -> str | None:
    named = (row.attrs or {}).get("demonstration_zone")
    if named:
        return str(named)
    point = wkt.loads(row.geometry_wkt).representative_point()
    return next((zone_id for zone_id, geom in zones if geom.contains(point)), None)


def with_changes(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (rows with ``register_id, year, status, area_m2, restored_m2``) with, per polygon and
    year, ``new_damage`` and ``new_restored`` (booleans: the polygon's status changed to damaged from
    restored or intact, to restored from another) and the area changes ``newly_damaged_m2`` and
    ``newly_restored_m2`` of the module docstring (m²)."""
    table = table.sort_values(["register_id", "year"]).copy()
    new_damage, new_restored, damaged_m2, restored_m2 = [], [], [], []
    for _, rows in table.groupby("register_id", sort=False):
        last: str | None = None
        last_restored: float | None = None
        for k, (status, area_m2, restored) in enumerate(zip(rows["status"], rows["area_m2"], rows["restored_m2"],
                                                            strict=True)):
            status = None if pd.isna(status) else status
            restored = 0.0 if status is None or pd.isna(restored) else float(restored)
            first = k == 0
            new_damage.append(not first and status in DAMAGED and last in (None, "restored"))
            new_restored.append(not first and status == "restored" and last not in (None, "restored"))
            if first or status is None:
                gained = lost = 0.0
            elif last_restored is None:  # first seen damaged: the ground was intact
                gained, lost = restored, float(area_m2)
            else:
                gained, lost = max(restored - last_restored, 0.0), max(last_restored - restored, 0.0)
            restored_m2.append(gained)
            damaged_m2.append(lost)
            if status is not None:
                last, last_restored = status, restored
    table["new_damage"], table["new_restored"] = new_damage, new_restored
    table["newly_damaged_m2"], table["newly_restored_m2"] = damaged_m2, restored_m2
    return table


def accounting(table: pd.DataFrame, level: str | None, target: float,
               zone_targets: dict[str, float | None] | None = None,
               borderline: tuple[float, float] | None = None) -> pd.DataFrame:
    """Per group of ``level`` (None: the whole register) and year, the area-based figures of the
    module docstring (:data:`ACCOUNT_COLUMNS`; areas in m², rates as shares 0-1; ``register_ids``: the
    polygons counted, ``;``-separated). ``table`` needs ``register_id, year, status, area_m2`` and
    ``restored_m2`` (the polygon's restored area that year) and the ``level`` column; ``unobserved_m2``
    (the polygon's area not observed that year) when known, else none is counted. ``borderline``:
    (``restored_ratio``, margin) with a ``ratio`` column in ``table``: the rate's range (else no
    polygon is borderline and the range is the rate)."""
    table = with_changes(table) if "newly_damaged_m2" not in table else table
    key = table[level].fillna(NONE).astype(str) if level else pd.Series("all", index=table.index)
    out = []
    for (group, year), rows in table.groupby([key, table["year"]], sort=True):
        if level == "zone" and group == NONE:
            continue
        counted = rows[rows["status"].notna()]
        restored_of = counted["restored_m2"].fillna(0.0).astype(float)
        damaged_of = counted["area_m2"].astype(float) - restored_of
        restored, damaged = float(restored_of.sum()), float(damaged_of.sum())
        hidden = float(counted["unobserved_m2"].fillna(0.0).sum()) if "unobserved_m2" in counted else 0.0
        edge = _borderline(counted, borderline)
        goal = (zone_targets or {}).get(group) if level == "zone" else None
        goal = target if goal is None else goal
        rate = restored / (damaged + restored) if damaged + restored > 0 else None
        out.append({
            "level": level or "all", "group": group, "year": int(year), "polygons": len(counted),
            "damaged_m2": damaged,
            "under_restoration_m2": float(damaged_of[counted["status"] == "under_restoration"].sum()),
            "reverted_m2": float(damaged_of[counted["status"] == "reverted"].sum()), "restored_m2": restored,
            "restored_polygons_m2": float(counted.loc[counted["status"] == "restored", "area_m2"].sum()),
            "restoration_rate": rate, "newly_damaged_m2": float(rows["newly_damaged_m2"].sum()),
            "newly_restored_m2": float(rows["newly_restored_m2"].sum()), "unobserved_m2": hidden,
            "borderline_m2": float(counted.loc[edge, "area_m2"].sum()),
            "rate_low": None if rate is None else (restored - float(restored_of[edge].sum())) / (damaged + restored),
            "rate_high": None if rate is None else (restored + float(damaged_of[edge].sum())) / (damaged + restored),
            "target_rate": goal,
            "meets_target": None if rate is None else bool(rate >= goal),
            "register_ids": ";".join(sorted(counted["register_id"].astype(str)))})
    return pd.DataFrame(out, columns=ACCOUNT_COLUMNS)


def _borderline(counted: pd.DataFrame, borderline: tuple[float, float] | None) -> pd.Series:
    """Per counted row: its ratio is within the margin of the restored threshold."""
    if borderline is None or "ratio" not in counted:
        return pd.Series(False, index=counted.index)
    threshold, margin = borderline
    ratio = pd.to_numeric(counted["ratio"], errors="coerce")
    return (ratio - threshold).abs().le(margin).fillna(False).astype(bool)


def account_tables(store: Store, table: pd.DataFrame, settings: Settings) -> dict[str, pd.DataFrame]:
    """The report's accounting of ``table`` (rows of :func:`status_table`, best through
    :func:`with_changes`): ``total`` (the whole table) and one table per level of :data:`LEVELS`,
    against ``restoration.target_rate`` or a stored zone's own target. The review app shows these too."""
    s = settings.restoration
    target = s.target_rate
    zone_targets = {z.zone_id: z.target_rate for z in store.zone_rows()}
    edge = (s.restored_ratio, s.borderline_margin)
    tables = {"total": accounting(table, None, target, borderline=edge)}
    for level in LEVELS:
        tables[level] = accounting(table, level, target, zone_targets, borderline=edge)
    return tables


def latest_frame(store: Store, table: pd.DataFrame) -> gpd.GeoDataFrame:
    """One row per register polygon (EPSG:4326): its latest status, ratio, restored share, observed
    share, reference source and soil NDVI, and the latest years restoration started, finished and reverted."""
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
            "observed_share": None if last is None else last["observed_share"],
            "reference_source": None if last is None else last["reference_source"],
            "soil_ndvi": None if last is None else last["soil_ndvi"],
            "restoration_started": started,
            "restoration_finished": finished if finished is not None and (started is None or finished >= started)
            else None, "reverted": year_of("reverted"), "geometry": wkt.loads(row.geometry_wkt)})
    return gpd.GeoDataFrame(data, geometry="geometry", crs="EPSG:4326")


def map_polygons(store: Store, table: pd.DataFrame) -> gpd.GeoDataFrame:
    """Every register polygon (EPSG:4326) with its county and its status in the latest year of ``table``
    (None where it has no status that year): what the PDF's map draws."""
    year = int(table["year"].max())
    now = table[table["year"] == year].set_index("register_id")["status"]
    rows = [{"register_id": r.register_id, "county": (r.attrs or {}).get("county"),
             "status": None if r.register_id not in now.index or pd.isna(now[r.register_id]) else now[r.register_id],
             "geometry": wkt.loads(r.geometry_wkt)} for r in store.register_rows()]
    return gpd.GeoDataFrame(rows, columns=["register_id", "county", "status", "geometry"], geometry="geometry",
                            crs="EPSG:4326")


FORMATS = ("all", "tables", "pdf")


def write_restoration_report(store: Store, out: Path, settings: Settings, lang: str = "en",
                             unit: str = "ha", fmt: str = "all") -> list[Path]:
    """Write the accounting into the folder ``out``: always ``status_by_polygon_year.csv``, ``by_<level>.csv``
    per level of :data:`LEVELS` and ``total.csv`` (every figure's source); with ``fmt`` ``tables`` or
    ``all`` also ``polygons_latest.gpkg`` and ``summary.md`` / ``summary.html``; with ``pdf`` or ``all``
    ``restoration_report.pdf`` (:mod:`gmsense.outputs.restoration_pdf`); in ``lang``, areas in ``unit``.
    Returns the files written."""
    if fmt not in FORMATS:
        raise InputError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
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
    run = store.restoration_runs()[-1]
    if fmt in ("all", "tables"):
        latest = latest_frame(store, table)
        written.append(write_frame(latest, folder / "polygons_latest.gpkg", "gpkg", "restoration"))
        markdown, page = summary_texts(tables, latest, run, settings, lang, unit)
        written.append(write_bytes(folder / "summary.md", markdown.encode("utf-8")))
        written.append(write_bytes(folder / "summary.html", page.encode("utf-8")))
    if fmt in ("all", "pdf"):
        from gmsense.outputs.restoration_pdf import PDF_NAME, write_restoration_pdf

        zones = [(z.zone_id, wkt.loads(z.geometry_wkt)) for z in store.zone_rows()]
        written.append(write_restoration_pdf(tables, table, run, settings, folder / PDF_NAME, lang, unit,
                                             map_polygons(store, table), zones))
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
    if now["borderline_m2"] > 0:
        lines.append(t("restoration.range", lang, area=area(now["borderline_m2"], lang, unit),
                       low=pct(now["rate_low"]), high=pct(now["rate_high"])))
    if now["unobserved_m2"] > 0:
        lines.append(t("restoration.unobserved", lang, year=year, area=area(now["unobserved_m2"], lang, unit)))
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

