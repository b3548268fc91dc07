"""`gmsense report summary`: the programme view for green-mine managers (PDF or HTML).

Per group (county, city or mineral class): licences scanned, human-made disturbed area, patches
by class, open / confirmed / dismissed flags, share of the disturbed area reclaimed (recovered)
and recovering, patches with overdue reclamation; the trend across scans; the worst licences; and
protected land (gmsense.geo.layers): per layer kind, the flags of disturbances overlapping it and
their overlapping area, and the register polygons on it.
In English or Simplified Chinese (``lang``), with areas in hectares or mu (``unit``).
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gmsense import __version__
from gmsense.errors import InputError
from gmsense.files import atomic_file, check_target
from gmsense.outputs.i18n import M2_PER_HA, M2_PER_MU, attr_value, catalog
from gmsense.outputs.i18n import area as format_area
from gmsense.outputs.i18n import t as tr
from gmsense.outputs.report import class_name, draw_table, plain_text, split_rows, table_layout, wrap_cell
from gmsense.outputs.scorecards import LicenceFigures, scorecard_tables
from gmsense.outputs.site_report import report_style
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.store import Store
from gmsense.store.scope import PROVINCE, Scope, flag_clause, register_layer_clause, site_clause

GROUPINGS = ("county", "city", "mineral_class", "province")
A4_LANDSCAPE = (11.69, 8.27)
HTML_LANG = {"en": "en", "zh": "zh-CN"}


#: What a licence's flags count (:func:`licence_flag_counts`): all of them, by status, the reclamation_overdue
#: ones, the severity score of the open and confirmed ones (critical 3, warning 2, info 1) and the confirmed
#: violations (confirmed flags other than new_disturbance: the scorecards').
FLAG_COUNTS = ("flags", "open", "confirmed", "dismissed", "overdue", "score", "violations")


def licence_flag_counts(store: Store, scope: Scope = PROVINCE) -> dict[str, dict[str, int]]:
    """FLAG_COUNTS per licence in ``scope`` that has flags, as the database keeps them
    (``licence_flag_counts``, revision 0015: updated by triggers in the statement that writes a flag,
    so a decision counts at once): one row per licence read, never a pass over the flags."""
    from sqlalchemy import select

    from gmsense.store import LicenceFlagCountRow, SiteRow

    columns = [getattr(LicenceFlagCountRow, name) for name in FLAG_COUNTS]
    where = [LicenceFlagCountRow.flags > 0]
    if not scope.everything:
        where.append(LicenceFlagCountRow.site_id.in_(select(SiteRow.site_id).where(site_clause(scope))))
    with store.session() as s:
        rows = s.execute(select(LicenceFlagCountRow.site_id, *columns).where(*where)).all()
    return {site_id: dict(zip(FLAG_COUNTS, (int(v) for v in values), strict=True)) for site_id, *values in rows}


def recount_licence_flags(store: Store, scope: Scope = PROVINCE) -> dict[str, dict[str, int]]:
    """:func:`licence_flag_counts` counted again from the flags (one GROUP BY over them): what the
    kept counts must always equal (the tests check it)."""
    from sqlalchemy import and_, case, func, select

    from gmsense.store import FlagRow, SiteRow
    from gmsense.store.sql import unindexed

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    weight = case({"critical": 3, "warning": 2, "info": 1}, value=FlagRow.severity, else_=0)
    where = [] if scope.everything else [FlagRow.site_id.in_(select(SiteRow.site_id).where(site_clause(scope)))]
    with store.session() as s:
        rows = s.execute(select(FlagRow.site_id, func.count(), count(FlagRow.status == "open"),
                                count(FlagRow.status == "confirmed"), count(FlagRow.status == "dismissed"),
                                count(FlagRow.rule == "reclamation_overdue"),
                                func.sum(case((FlagRow.status.in_(("open", "confirmed")), weight), else_=0)),
                                count(and_(FlagRow.status == "confirmed", FlagRow.rule != "new_disturbance")))
                         .where(*where).group_by(unindexed(FlagRow.site_id))).all()
    return {site_id: dict(zip(FLAG_COUNTS, (int(v or 0) for v in values), strict=True))
            for site_id, *values in rows}


def summary_scan_figures(store: Store, by: str = "county", scope: Scope = PROVINCE) -> dict[str, Any]:
    """The figures of the summary that only scans and licence imports change (the review app keeps
    them between scans: gmsense.review.cache): each licence's group (its attribute ``by``) and name,
    the licences scanned and the human-made patches per group (the group read once per licence: a
    materialized CTE joined to the patches), and each scan's new patches and flags (counted by the
    scan that created them, as the scan's summary recorded them)."""
    from sqlalchemy import func, select

    from gmsense.store import FlagRow, PatchRow, ScanRow, ScanUnitRow, SiteRow

    if by not in GROUPINGS:
        raise InputError(f"cannot group by {by!r}; choose one of: {', '.join(GROUPINGS)}")
    in_scope = site_clause(scope)
    group = (select(SiteRow.site_id.label("site_id"), SiteRow.attrs[by].as_string().label("name"))
             .where(in_scope).cte("licence_group").prefix_with("MATERIALIZED"))
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "licences": 0, "area_ha": 0.0, "reclaimed_ha": 0.0, "recovering_ha": 0.0, "patches": Counter()})
    total_area = 0.0
    visible = None if scope.everything else select(SiteRow.site_id).where(in_scope)
    with store.session() as s:
        licences = s.execute(select(SiteRow.site_id, SiteRow.attrs[by].as_string(), SiteRow.attrs["name"].as_string())
                             .where(in_scope)).all()
        scanned = set(s.scalars(select(ScanUnitRow.site_id).where(ScanUnitRow.status == "done").distinct()))
        patches = s.execute(select(group.c.name, PatchRow.disturbance_class, PatchRow.recovery_status, func.count(),
                                   func.sum(PatchRow.area_m2))
                            .join(group, group.c.site_id == PatchRow.site_id)
                            .where(PatchRow.disturbance_class.in_(HUMAN_MADE_CLASSES))
                            .group_by(group.c.name, PatchRow.disturbance_class, PatchRow.recovery_status)).all()
        new_patches = dict(s.execute(select(PatchRow.created_scan_id, func.count())
                                     .where(*([] if visible is None else [PatchRow.site_id.in_(visible)]))
                                     .group_by(PatchRow.created_scan_id)).all())
        new_flags = dict(s.execute(select(FlagRow.created_scan_id, func.count())
                                   .where(*([] if visible is None else [FlagRow.site_id.in_(visible)]))
                                   .group_by(FlagRow.created_scan_id)).all())
        scans = s.execute(select(ScanRow.id, ScanRow.started_at, ScanRow.status).order_by(ScanRow.id)).all()
    group_of = {site_id: str(name or "unknown") for site_id, name, _ in licences}
    for site_id, name in group_of.items():
        if site_id in scanned:
            groups[name]["licences"] += 1
    for name, klass, recovery, n, area_m2 in patches:
        g, ha = groups[str(name or "unknown")], float(area_m2 or 0.0) / 1e4
        total_area += float(area_m2 or 0.0)
        g["area_ha"] += ha
        g["reclaimed_ha"] += ha if recovery == "recovered" else 0.0
        g["recovering_ha"] += ha if recovery == "recovering" else 0.0
        g["patches"][klass] += int(n)
    trend = [{"scan": scan_id, "date": f"{started:%Y-%m-%d}", "status": status,
              "patches_new": int(new_patches.get(scan_id, 0)), "flags_new": int(new_flags.get(scan_id, 0))}
             for scan_id, started, status in scans]
    return {"by": by, "group_of": group_of, "names": {site_id: name or "" for site_id, _, name in licences},
            "groups": {name: {**g, "patches": dict(g["patches"])} for name, g in groups.items()},
            "total_area_m2": total_area, "trend": trend}


def summary_tables(store: Store, by: str = "county", scope: Scope = PROVINCE, *,
                   scan_figures: dict[str, Any] | None = None,
                   flag_counts: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """The figures of the report as plain data (also used by tests and the web dashboard), of the
    licences in ``scope``: counted and summed by the database (GROUP BY), never loading every row.
    ``scan_figures`` (:func:`summary_scan_figures` of the same ``by`` and ``scope``) and ``flag_counts``
    (:func:`licence_flag_counts` of ``scope``) when read already; else they are read here."""
    if by not in GROUPINGS:
        raise InputError(f"cannot group by {by!r}; choose one of: {', '.join(GROUPINGS)}")
    scan = scan_figures if scan_figures is not None else summary_scan_figures(store, by, scope)
    counts = flag_counts if flag_counts is not None else licence_flag_counts(store, scope)
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "licences": 0, "area_ha": 0.0, "reclaimed_ha": 0.0, "recovering_ha": 0.0, "patches": {},
        "open": 0, "confirmed": 0, "dismissed": 0, "overdue": 0})
    for name, g in scan["groups"].items():
        groups[name].update(g)
    n_flags = n_open = 0
    for site_id, c in counts.items():
        g = groups[scan["group_of"].get(site_id, "unknown")]
        for key in ("open", "confirmed", "dismissed", "overdue"):
            g[key] += c[key]
        n_flags += c["flags"]
        n_open += c["open"]
    rows = []
    for name, g in sorted(groups.items()):
        area = g["area_ha"]
        rows.append({by: name, "licences": g["licences"], "disturbed_ha": round(area, 2),
                     "reclaimed_share": round(g["reclaimed_ha"] / area, 3) if area else None,
                     "recovering_share": round(g["recovering_ha"] / area, 3) if area else None,
                     "patches": dict(sorted(g["patches"].items())), "open_flags": g["open"],
                     "confirmed_flags": g["confirmed"], "dismissed_flags": g["dismissed"],
                     "overdue_reclamation": g["overdue"]})
    ranked = sorted(((-c["score"], site_id) for site_id, c in counts.items() if c["score"] > 0))[:10]
    worst = [{"site_id": site_id, "score": -negative, "name": scan["names"].get(site_id) or "",
              "open_flags": counts[site_id]["open"]} for negative, site_id in ranked]
    return {"by": by, "groups": rows, "worst": worst, "trend": [dict(r) for r in scan["trend"]],
            "protected": protected_totals(store, scope), "protected_layers": len(store.current_layers()),
            "totals": {"licences": sum(g["licences"] for g in groups.values()),
                       "disturbed_ha": round(scan["total_area_m2"] / 1e4, 2), "open_flags": n_open, "flags": n_flags}}


def protected_totals(store: Store, scope: Scope = PROVINCE) -> list[dict[str, Any]]:
    """Protected land per layer kind, within ``scope``, summed by the database: ``flags`` (rule
    protected_land), ``open_flags``, ``confirmed_flags``, ``licences`` and ``patches`` they concern,
    ``overlap_m2`` (the flags' overlapping areas summed: ground under two patches, or under two
    layers of one kind, counts twice), ``register_polygons`` and ``register_overlap_m2`` (register
    polygons on the kind's layers). Sorted by kind."""
    from sqlalchemy import case, func, select

    from gmsense.store import FlagRow, RegisterLayerFlagRow

    out: dict[str, dict[str, Any]] = {}

    def row(kind: str) -> dict[str, Any]:
        return out.setdefault(kind, {"kind": kind, "flags": 0, "open_flags": 0, "confirmed_flags": 0, "licences": 0,
                                     "patches": 0, "overlap_m2": 0.0, "register_polygons": 0,
                                     "register_overlap_m2": 0.0})

    with store.session() as s:
        for kind, n, n_open, n_confirmed, licences, patches, overlap in s.execute(
                select(FlagRow.layer_kind, func.count(), func.sum(case((FlagRow.status == "open", 1), else_=0)),
                       func.sum(case((FlagRow.status == "confirmed", 1), else_=0)),
                       func.count(func.distinct(FlagRow.site_id)), func.count(func.distinct(FlagRow.patch_id)),
                       func.sum(FlagRow.overlap_m2))
                .where(FlagRow.rule == "protected_land", FlagRow.layer_kind.is_not(None), flag_clause(scope))
                .group_by(FlagRow.layer_kind)):
            row(kind).update(flags=int(n), open_flags=int(n_open or 0), confirmed_flags=int(n_confirmed or 0),
                             licences=int(licences), patches=int(patches), overlap_m2=round(float(overlap or 0), 1))
        for kind, n, overlap in s.execute(
                select(RegisterLayerFlagRow.layer_kind, func.count(func.distinct(RegisterLayerFlagRow.register_id)),
                       func.sum(RegisterLayerFlagRow.overlap_m2))
                .where(register_layer_clause(scope)).group_by(RegisterLayerFlagRow.layer_kind)):
            row(kind).update(register_polygons=int(n), register_overlap_m2=round(float(overlap or 0), 1))
    return [out[k] for k in sorted(out)]


def _protected_rows(t: dict[str, Any], lang: str = "en", unit: str = "ha") -> tuple[list[str], list[list[str]]]:
    """The protected-land table: header and rows of text in ``lang``, areas in ``unit``."""
    from gmsense.outputs.i18n import layer_kind_name

    u = tr(f"unit.{unit}", lang)
    header = [tr("layers.kind", lang), tr("layers.flags", lang), tr("summary.col.open", lang),
              tr("summary.col.confirmed", lang), tr("layers.licences", lang), f"{tr('layers.overlap', lang)} ({u})",
              tr("layers.register", lang), f"{tr('layers.register', lang)}: {tr('layers.overlap', lang)} ({u})"]
    rows = [[layer_kind_name(r["kind"], lang), str(r["flags"]), str(r["open_flags"]), str(r["confirmed_flags"]),
             str(r["licences"]), f"{_unit_value(r['overlap_m2'] / M2_PER_HA, unit):.2f}", str(r["register_polygons"]),
             f"{_unit_value(r['register_overlap_m2'] / M2_PER_HA, unit):.2f}"] for r in t.get("protected", [])]
    return header, rows


def _unit_value(ha: float, unit: str) -> float:
    """Hectares in ``unit`` (ha or mu)."""
    return ha * M2_PER_HA / (M2_PER_HA if unit == "ha" else M2_PER_MU)


def _group_name(name: str, by: str, lang: str) -> str:
    """A group's name as a reader sees it (mineral classes and 'unknown' translated)."""
    return tr("summary.unknown", lang) if name == "unknown" else str(attr_value(by, name, lang))


@plain_text
def summary_charts(t: dict[str, Any], lang: str = "en", unit: str = "ha") -> Figure:
    """Disturbed and reclaimed area, and flags by review status, per group of ``t`` (from
    ``summary_tables``), labelled in ``lang`` with areas in ``unit`` (ha, mu). Draw it inside
    ``report_style(lang)`` for Chinese."""
    if unit not in ("ha", "mu"):
        raise InputError(f"unknown area unit {unit!r}; choose ha or mu")
    group = tr(f"summary.group.{t['by']}", lang)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 3.6), dpi=110)
    names = [_group_name(str(r[t["by"]]), t["by"], lang) for r in t["groups"]]
    y = np.arange(len(names))
    area = np.array([_unit_value(r["disturbed_ha"], unit) for r in t["groups"]])
    reclaimed = np.array([(r["reclaimed_share"] or 0) * a for r, a in zip(t["groups"], area, strict=True)])
    recovering = np.array([(r["recovering_share"] or 0) * a for r, a in zip(t["groups"], area, strict=True)])
    left.barh(y, area, color="white", edgecolor="black", label=tr("summary.chart.disturbed", lang))
    left.barh(y, reclaimed, color="0.3", edgecolor="black", label=tr("summary.chart.reclaimed", lang))
    left.barh(y, recovering, left=reclaimed, color="0.7", edgecolor="black", hatch="//",
              label=tr("summary.chart.recovering", lang))
    left.set_yticks(y, names, fontsize=8)
    left.set_xlabel(tr("summary.chart.area_axis", lang, unit=tr(f"summary.chart.unit.{unit}", lang)))
    left.set_title(tr("summary.chart.area_title", lang, group=group), fontsize=9)
    left.legend(fontsize=7, frameon=False)
    width = 0.27
    for k, (key, style) in enumerate((("open_flags", {"color": "white", "hatch": ".."}),
                                      ("confirmed_flags", {"color": "0.2"}),
                                      ("dismissed_flags", {"color": "0.7", "hatch": "//"}))):
        right.barh(y + (k - 1) * width, [r[key] for r in t["groups"]], height=width, edgecolor="black",
                   label=tr(f"summary.chart.{key}", lang), **style)
    right.set_yticks(y, names, fontsize=8)
    right.set_xlabel(tr("summary.chart.flags_axis", lang))
    right.set_title(tr("summary.chart.flags_title", lang), fontsize=9)
    right.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _rows(t: dict[str, Any], lang: str = "en", unit: str = "ha") -> tuple[list[str], list[list[str]]]:
    """The per-group table: header and rows of text in ``lang``, areas in ``unit``."""
    header = [tr(f"summary.group.{t['by']}", lang), tr("summary.col.licences", lang),
              tr("summary.col.disturbed", lang, unit=tr(f"unit.{unit}", lang)),
              *(tr(f"summary.col.{c}", lang) for c in ("reclaimed", "recovering", "patches", "open", "confirmed",
                                                       "dismissed", "overdue"))]
    sep = "、" if lang == "zh" else ", "

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    def patches(counts: dict[str, int]) -> str:
        return sep.join(f"{class_name(k, lang)} {v}" for k, v in counts.items()) or "-"

    rows = [[_group_name(str(r[t["by"]]), t["by"], lang), str(r["licences"]),
             f"{_unit_value(r['disturbed_ha'], unit):.2f}", pct(r["reclaimed_share"]), pct(r["recovering_share"]),
             patches(r["patches"]), str(r["open_flags"]), str(r["confirmed_flags"]), str(r["dismissed_flags"]),
             str(r["overdue_reclamation"])]
            for r in t["groups"]]
    return header, rows


def _scan_status(status: str, lang: str) -> str:
    key = f"summary.scan_status.{status}"
    return tr(key, lang) if key in catalog("en") else status


def _table_figure_pages(first: Figure, rect: tuple[float, float, float, float], head: list[str],
                        body: list[list[str]], more_title: str) -> list[Figure]:
    """The table ``head``/``body`` in ``rect`` of ``first``, continued on further landscape pages
    when it is too long; columns as wide as their content (wrapped when too wide)."""
    width_in, height_in = rect[2] * A4_LANDSCAPE[0], rect[3] * A4_LANDSCAPE[1]
    layout = table_layout(head, body, width_in, fontsize=7)
    full = (0.03, 0.06, 0.94, 0.84)
    chunks = split_rows(layout, height_in, full[3] * A4_LANDSCAPE[1])
    pages = [first]
    draw_table(first.add_axes(rect), layout, chunks[0])
    for k, chunk in enumerate(chunks[1:], start=2):
        fig = plt.figure(figsize=A4_LANDSCAPE)
        fig.text(0.03, 0.95, f"{more_title} ({k}/{len(chunks)})", fontsize=10, weight="bold", va="top")
        draw_table(fig.add_axes(full), layout, chunk)
        pages.append(fig)
    return pages


def scorecard_rows(store: Store, lang: str, scope: Scope = PROVINCE, figures: LicenceFigures | None = None,
                   flag_counts: dict[str, dict[str, int]] | None = None, ends: int | None = None
                   ) -> tuple[list[str], list[Any]]:
    """The green-survey ranking of the licences in ``scope`` (gmsense.outputs.scorecards, ranked among
    them) as table rows; ``figures`` (their licence figures: the review app keeps them between scans,
    gmsense.review.cache) and ``flag_counts`` (:func:`licence_flag_counts`) when read already.
    ``ends``: of a ranking longer than twice as many rows and one, only its first and last ``ends``
    rows, with the number of rows left out between them (an int) in their place."""
    totals = None if flag_counts is None else (
        {site_id: {None: c["violations"]} for site_id, c in flag_counts.items()},
        {site_id: c["open"] for site_id, c in flag_counts.items()})
    frame = scorecard_tables(store, scope=scope, holders=False, figures=figures, flag_totals=totals)["licences"]

    def num(v: Any, pattern: str) -> str:
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else pattern.format(v)

    head = [tr(f"summary.col.{c}", lang) for c in ("rank", "licence", "holder", "disturbed_intensity",
                                                    "linear_intensity", "trend", "reclaimed_by_deadline",
                                                    "confirmed_violations", "green_score")]
    columns = ("rank", "site_id", "holder", "disturbed_ha_per_km2_per_year", "trench_track_m_per_km2_per_year",
               "trend_ha_per_km2_per_year", "reclaimed_by_deadline_share", "confirmed_violations", "score")
    left_out = len(frame) - 2 * ends if ends is not None and len(frame) > 2 * ends + 1 else 0
    if left_out:
        frame = pd.concat([frame.iloc[:ends], frame.iloc[-ends:]])
    rows: list[Any] = [[str(rank), str(site_id), str(holder or "-"), num(disturbed, "{:.3f}"), num(linear, "{:.1f}"),
                        num(trend, "{:+.3f}"), num(reclaimed, "{:.0%}"), str(violations), f"{score:.1f}"]
                       for rank, site_id, holder, disturbed, linear, trend, reclaimed, violations, score
                       in zip(*(frame[c].tolist() for c in columns), strict=True)]
    if left_out:
        rows.insert(ends, left_out)
    return head, rows


def write_summary_report(store: Store, out: Path, by: str = "county", lang: str = "en", unit: str = "ha",
                         scope: Scope = PROVINCE) -> Path:
    """Write the programme summary of the licences in ``scope`` (gmsense.store.scope; the scorecards
    ranked among them) to ``out`` (.pdf or .html) in ``lang`` (en, zh) with areas in ``unit`` (ha, mu)."""
    out = Path(out)
    if out.suffix.lower() not in (".pdf", ".html", ".htm"):
        raise InputError(f"summary report {out} must end in .pdf or .html")
    catalog(lang)  # an unknown language is a clear error before any work
    if unit not in ("ha", "mu"):
        raise InputError(f"unknown area unit {unit!r}; choose ha or mu")
    check_target(out)
    t = summary_tables(store, by, scope)
    header, rows = _rows(t, lang, unit)
    stamp = tr("summary.generated", lang, when=f"{datetime.now(UTC):%Y-%m-%d %H:%M}", version=__version__)
    totals = t["totals"]
    headline = tr("summary.headline", lang, licences=totals["licences"],
                  disturbed=format_area(totals["disturbed_ha"] * M2_PER_HA, lang, unit),
                  open=totals["open_flags"], flags=totals["flags"])
    title = tr("summary.title", lang)
    group = tr(f"summary.group.{by}", lang)
    worst_head = [tr(f"summary.col.{c}", lang) for c in ("licence", "name", "score", "open_flags")]
    trend_head = [tr(f"summary.col.{c}", lang) for c in ("scan", "date", "status", "new_patches", "new_flags")]
    worst = [[w["site_id"], str(w["name"]), str(w["score"]), str(w["open_flags"])] for w in t["worst"]]
    trend = [[str(r["scan"]), r["date"], _scan_status(r["status"], lang), str(r["patches_new"]), str(r["flags_new"])]
             for r in t["trend"]]
    protected_head, protected = _protected_rows(t, lang, unit)
    protected_title = tr("layers.title", lang)
    cards_head, cards = scorecard_rows(store, lang, scope)
    cards_title = tr("summary.scorecards", lang)
    cards_note = tr("summary.scorecards_note", lang, formula=tr("summary.scorecards_formula", lang))
    with report_style(lang), atomic_file(out) as tmp:
        if out.suffix.lower() == ".pdf":
            pages: list[Figure] = []
            try:
                fig = plt.figure(figsize=A4_LANDSCAPE)
                fig.text(0.05, 0.95, title, fontsize=15, weight="bold", va="top")
                fig.text(0.05, 0.91, headline, fontsize=9, va="top")
                fig.text(0.05, 0.89, stamp, fontsize=7, va="top")
                chart = summary_charts(t, lang, unit)
                chart.canvas.draw()
                ax = fig.add_axes((0.03, 0.42, 0.94, 0.45))
                ax.imshow(np.asarray(chart.canvas.buffer_rgba()))
                ax.axis("off")
                plt.close(chart)
                by_title = tr("summary.by", lang, group=group)
                pages += _table_figure_pages(fig, (0.03, 0.06, 0.94, 0.34), header, rows, by_title)
                fig = plt.figure(figsize=A4_LANDSCAPE)
                for x, heading, head, body in ((0.03, tr("summary.worst_note", lang), worst_head, worst),
                                               (0.52, tr("summary.trend", lang), trend_head, trend)):
                    fig.text(x, 0.95, heading, fontsize=10, weight="bold", va="top")
                    pages += [p for p in _table_figure_pages(fig, (x, 0.06, 0.45, 0.84), head, body, heading)
                              if p not in pages]
                if protected or t["protected_layers"]:  # a page of its own once the store holds layers
                    fig = plt.figure(figsize=A4_LANDSCAPE)
                    fig.text(0.03, 0.95, protected_title, fontsize=10, weight="bold", va="top")
                    if protected:
                        pages += _table_figure_pages(fig, (0.03, 0.06, 0.94, 0.84), protected_head, protected,
                                                     protected_title)
                    else:
                        fig.text(0.03, 0.9, tr("layers.none", lang), fontsize=9, va="top")
                        pages.append(fig)
                fig = plt.figure(figsize=A4_LANDSCAPE)
                fig.text(0.03, 0.95, cards_title, fontsize=10, weight="bold", va="top")
                fig.text(0.03, 0.92, "\n".join(wrap_cell(cards_note, 190)), fontsize=7, va="top")
                pages += _table_figure_pages(fig, (0.03, 0.06, 0.94, 0.80), cards_head, cards, cards_title)
                for n, page in enumerate(pages, start=1):
                    page.text(0.5, 0.02, tr("report.page", lang, n=n, total=len(pages)), fontsize=7, ha="center",
                              va="bottom")
                with PdfPages(tmp) as pdf:
                    for page in pages:
                        pdf.savefig(page)
                    pdf.infodict()["Title"] = tr("summary.doc_title", lang)
            finally:
                for page in pages:
                    plt.close(page)
        else:
            buffer = io.BytesIO()
            chart = summary_charts(t, lang, unit)
            chart.savefig(buffer, format="png")
            plt.close(chart)
            image = base64.b64encode(buffer.getvalue()).decode()

            def table(head: list[str], body: list[list[str]]) -> str:
                th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
                return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

            esc = html.escape
            tmp.write_text(
                f"<!doctype html><html lang='{HTML_LANG[lang]}'><head><meta charset='utf-8'>"
                f"<title>{esc(tr('summary.doc_title', lang))}</title>"
                "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
                "td,th{border:1px solid #444;padding:3px 6px;font-size:13px;text-align:left}</style></head><body>"
                f"<h1>{esc(title)}</h1><p>{esc(headline)}</p><p><small>{esc(stamp)}</small></p>"
                f"<img alt='{esc(tr('summary.chart.alt', lang, group=group))}' src='data:image/png;base64,{image}'>"
                f"<h2>{esc(tr('summary.by', lang, group=group))}</h2>{table(header, rows)}"
                f"<h2>{esc(tr('summary.worst', lang))}</h2>{table(worst_head, worst)}"
                f"<h2>{esc(tr('summary.trend', lang))}</h2>{table(trend_head, trend)}"
                + (f"<h2>{esc(protected_title)}</h2>" + (table(protected_head, protected) if protected else
                                                          f"<p>{esc(tr('layers.none', lang))}</p>")
                   if protected or t["protected_layers"] else "")
                + f"<h2>{esc(cards_title)}</h2><p>{esc(cards_note)}</p>{table(cards_head, cards)}"
                "</body></html>", encoding="utf-8")
    return out
