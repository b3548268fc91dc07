"""`gmsense report summary`: the programme view for green-mine managers (PDF or HTML).

Per group (county, city or mineral class): licences scanned, human-made disturbed area, patches
by class, open / confirmed / dismissed flags, share of the disturbed area reclaimed (recovered)
and recovering, patches with overdue reclamation; the trend across scans; the worst licences.
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
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gmsense import __version__
from gmsense.errors import InputError
from gmsense.files import atomic_file, check_target
from gmsense.outputs.i18n import M2_PER_HA, M2_PER_MU, attr_value, catalog
from gmsense.outputs.i18n import area as format_area
from gmsense.outputs.i18n import t as tr
from gmsense.outputs.report import class_name, draw_table, plain_text, split_rows, table_layout, wrap_cell
from gmsense.outputs.scorecards import FORMULA, scorecard_tables
from gmsense.outputs.site_report import report_style
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.store import Store

GROUPINGS = ("county", "city", "mineral_class", "province")
A4_LANDSCAPE = (11.69, 8.27)
HTML_LANG = {"en": "en", "zh": "zh-CN"}


def summary_tables(store: Store, by: str = "county") -> dict[str, Any]:
    """The figures of the report as plain data (also used by tests and the web dashboard)."""
    if by not in GROUPINGS:
        raise InputError(f"cannot group by {by!r}; choose one of: {', '.join(GROUPINGS)}")
    sites = {s.site_id: s for s in store.site_rows()}
    patches = [p for p in store.patch_rows() if p.disturbance_class in HUMAN_MADE_CLASSES]
    flags = store.flag_rows()
    scanned = {u.site_id for scan in store.scans() for u in store.scan(scan.id)[1] if u.status == "done"}
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "licences": 0, "area_ha": 0.0, "reclaimed_ha": 0.0, "recovering_ha": 0.0, "patches": Counter(),
        "open": 0, "confirmed": 0, "dismissed": 0, "overdue": 0})
    for site_id in scanned:
        groups[str((sites[site_id].attrs or {}).get(by) or "unknown")]["licences"] += 1
    group_of = {sid: str((s.attrs or {}).get(by) or "unknown") for sid, s in sites.items()}
    for p in patches:
        g = groups[group_of.get(p.site_id, "unknown")]
        g["area_ha"] += p.area_m2 / 1e4
        g["reclaimed_ha"] += p.area_m2 / 1e4 if p.recovery_status == "recovered" else 0.0
        g["recovering_ha"] += p.area_m2 / 1e4 if p.recovery_status == "recovering" else 0.0
        g["patches"][p.disturbance_class] += 1
    for f in flags:
        g = groups[group_of.get(f.site_id, "unknown")]
        if f.status == "open":
            g["open"] += 1
        elif f.status in ("confirmed", "dismissed"):
            g[f.status] += 1
        if f.rule == "reclamation_overdue":
            g["overdue"] += 1
    rows = []
    for name, g in sorted(groups.items()):
        area = g["area_ha"]
        rows.append({by: name, "licences": g["licences"], "disturbed_ha": round(area, 2),
                     "reclaimed_share": round(g["reclaimed_ha"] / area, 3) if area else None,
                     "recovering_share": round(g["recovering_ha"] / area, 3) if area else None,
                     "patches": dict(sorted(g["patches"].items())), "open_flags": g["open"],
                     "confirmed_flags": g["confirmed"], "dismissed_flags": g["dismissed"],
                     "overdue_reclamation": g["overdue"]})
    severity = {"critical": 3, "warning": 2, "info": 1}
    score: Counter[str] = Counter()
    for f in flags:
        if f.status in ("open", "confirmed"):
            score[f.site_id] += severity.get(f.severity, 0)
    worst = [{"site_id": sid, "score": s, "name": (sites[sid].attrs or {}).get("name", ""),
              "open_flags": sum(1 for f in flags if f.site_id == sid and f.status == "open")}
             for sid, s in score.most_common(10)]
    trend = [{"scan": s.id, "date": f"{s.started_at:%Y-%m-%d}", "status": s.status,
              "patches_new": sum(v.get("new_patches", 0) for v in (s.summary or {}).get("sites", {}).values()),
              "flags_new": sum(v.get("new_flags", 0) for v in (s.summary or {}).get("sites", {}).values())}
             for s in store.scans()]
    return {"by": by, "groups": rows, "worst": worst, "trend": trend,
            "totals": {"licences": len(scanned), "disturbed_ha": round(sum(p.area_m2 for p in patches) / 1e4, 2),
                       "open_flags": sum(f.status == "open" for f in flags), "flags": len(flags)}}


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


def scorecard_rows(store: Store, lang: str) -> tuple[list[str], list[list[str]]]:
    """The green-survey ranking of licences (gmsense.outputs.scorecards) as table rows."""
    frame = scorecard_tables(store)["licences"]

    def num(v: Any, pattern: str) -> str:
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else pattern.format(v)

    head = [tr(f"summary.col.{c}", lang) for c in ("rank", "licence", "holder", "disturbed_intensity",
                                                    "linear_intensity", "trend", "reclaimed_by_deadline",
                                                    "confirmed_violations", "green_score")]
    rows = [[str(r["rank"]), str(r["site_id"]), str(r["holder"] or "-"),
             num(r["disturbed_ha_per_km2_per_year"], "{:.3f}"), num(r["trench_track_m_per_km2_per_year"], "{:.1f}"),
             num(r["trend_ha_per_km2_per_year"], "{:+.3f}"), num(r["reclaimed_by_deadline_share"], "{:.0%}"),
             str(r["confirmed_violations"]), f"{r['score']:.1f}"] for _, r in frame.iterrows()]
    return head, rows


def write_summary_report(store: Store, out: Path, by: str = "county", lang: str = "en", unit: str = "ha") -> Path:
    """Write the programme summary to ``out`` (.pdf or .html) in ``lang`` (en, zh) with areas in
    ``unit`` (ha, mu)."""
    out = Path(out)
    if out.suffix.lower() not in (".pdf", ".html", ".htm"):
        raise InputError(f"summary report {out} must end in .pdf or .html")
    catalog(lang)  # an unknown language is a clear error before any work
    if unit not in ("ha", "mu"):
        raise InputError(f"unknown area unit {unit!r}; choose ha or mu")
    check_target(out)
    t = summary_tables(store, by)
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
    cards_head, cards = scorecard_rows(store, lang)
    cards_title, cards_note = tr("summary.scorecards", lang), tr("summary.scorecards_note", lang, formula=FORMULA)
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
                f"<h2>{esc(cards_title)}</h2><p>{esc(cards_note)}</p>{table(cards_head, cards)}"
                "</body></html>", encoding="utf-8")
    return out
