"""``gmsense restoration report --format pdf``: the restoration accounting as a PDF (A4, en or zh).

Pages: the province and per-zone restoration rates against their targets (40 % by default, a zone's
own ``target_rate``), the method and where every figure comes from; a map of the register polygons by status
(:mod:`gmsense.outputs.restoration_map`); a chart of damaged and restored
area per year (the stock with the rate against the target, and the yearly newly damaged / newly
restored area); tables by province, zone and county for the latest year; the register polygons of
the latest year. Every figure is read from the accounting tables the report writes beside the PDF
as CSV (``total.csv``, ``by_<level>.csv`` with the ``register_ids`` each row counts,
``status_by_polygon_year.csv``), so each can be traced to its polygons.

Chinese needs the Noto Sans CJK font (Debian ``fonts-noto-cjk``, installed by ``scripts/setup.sh``);
without it the report stops with a message saying so (never boxes instead of characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gmsense import __version__
from gmsense.config import Settings
from gmsense.files import atomic_file
from gmsense.outputs.i18n import area, t
from gmsense.outputs.site_report import A4, _table_pages, _text_pages, number_pages, report_style

PDF_NAME = "restoration_report.pdf"
#: The CSV files the PDF's figures come from (written beside it).
SOURCES = ("total.csv", "by_province.csv", "by_zone.csv", "by_county.csv", "status_by_polygon_year.csv")


def _pct(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.1%}"


def _verdict(value: Any, lang: str) -> str:
    return "-" if value is None or pd.isna(value) else t("restoration.met" if value else "restoration.not_met", lang)


def _status(value: Any, lang: str) -> str:
    return t("restoration.status." + ("none" if value is None or pd.isna(value) else str(value)), lang)


def chart_figure(total: pd.DataFrame, target: float, lang: str, unit: str) -> Figure:
    """Two panels over the years of ``total`` (the whole register's accounting): damaged and restored
    area stacked, with the restoration rate and the target on a second axis; newly damaged and newly
    restored area. Areas in ``unit`` (ha or mu)."""
    per = 1e4 if unit == "ha" else 10_000 / 15
    label = "ha" if unit == "ha" else ("亩" if lang == "zh" else "mu")
    years = total["year"].astype(int).to_numpy()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(A4[0], A4[1] * 0.8))
    damaged, restored = total["damaged_m2"] / per, total["restored_m2"] / per
    top.bar(years, damaged, color="#b35806", label=t("restoration.col.damaged", lang))
    top.bar(years, restored, bottom=damaged, color="#1b7837", label=t("restoration.col.restored", lang))
    top.set_title(t("restoration.pdf_chart_stock", lang), fontsize=11)
    top.set_ylabel(label)
    rate = top.twinx()
    rate.plot(years, total["restoration_rate"] * 100, color="black", marker="o", ms=3,
              label=t("restoration.pdf_chart_rate", lang))
    rate.axhline(target * 100, color="black", ls="--", lw=1, label=t("restoration.pdf_chart_target", lang))
    rate.set_ylim(0, 100)
    rate.set_ylabel("%")
    handles = top.get_legend_handles_labels()
    more = rate.get_legend_handles_labels()
    top.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    width = 0.4
    bottom.bar(years - width / 2, total["newly_damaged_m2"] / per, width, color="#b35806",
               label=t("restoration.col.new_damaged", lang))
    bottom.bar(years + width / 2, total["newly_restored_m2"] / per, width, color="#1b7837",
               label=t("restoration.col.new_restored", lang))
    bottom.set_title(t("restoration.pdf_chart_new", lang), fontsize=11)
    bottom.set_ylabel(label)
    bottom.legend(loc="upper left", fontsize=8)
    for ax in (top, bottom):
        ax.set_xlabel(t("restoration.col.year", lang))
    fig.tight_layout()
    return fig


def _group_rows(frame: pd.DataFrame, year: int, lang: str, unit: str) -> list[list[str]]:
    rows = frame[frame["year"] == year]
    return [[str(r["group"]), str(int(r["polygons"])), area(r["damaged_m2"], lang, unit),
             area(r["restored_m2"], lang, unit), _pct(r["restoration_rate"]), _pct(r["target_rate"]),
             _verdict(r["meets_target"], lang), area(r["newly_damaged_m2"], lang, unit),
             area(r["newly_restored_m2"], lang, unit)] for _, r in rows.iterrows()]


def pages(tables: dict[str, pd.DataFrame], table: pd.DataFrame, run: Any, settings: Settings, lang: str,
          unit: str, polygons: pd.DataFrame | None = None, zone_areas: Sequence[tuple[str, Any]] = ()) -> list[Figure]:
    """The report's pages from the accounting ``tables`` (``total`` and per level) and the status ``table``;
    with ``polygons`` (the register's, with their status in the latest year and EPSG:4326 geometry) a map
    (:mod:`gmsense.outputs.restoration_map`), the demonstration zones (``zone_areas``: zone id, EPSG:4326
    geometry) outlined on it."""
    total = tables["total"]
    year = int(total["year"].max())
    lines = []
    for _, r in tables["province"][tables["province"]["year"] == year].iterrows():
        lines.append(t("restoration.pdf_province", lang, group=r["group"], restored=area(r["restored_m2"], lang, unit),
                       total=area(r["damaged_m2"] + r["restored_m2"], lang, unit), rate=_pct(r["restoration_rate"]),
                       target=_pct(r["target_rate"]), verdict=_verdict(r["meets_target"], lang),
                       polygons=int(r["polygons"])))
    zones = tables["zone"][tables["zone"]["year"] == year]
    zone_lines = [t("restoration.pdf_zone", lang, group=r["group"], rate=_pct(r["restoration_rate"]),
                    target=_pct(r["target_rate"]), verdict=_verdict(r["meets_target"], lang),
                    restored=area(r["restored_m2"], lang, unit),
                    total=area(r["damaged_m2"] + r["restored_m2"], lang, unit), polygons=int(r["polygons"]))
                  for _, r in zones.iterrows()] or [t("restoration.pdf_no_zones", lang)]
    now = total[total["year"] == year].iloc[0]
    overview = [t("restoration.total", lang, restored=area(now["restored_m2"], lang, unit),
                  total=area(now["damaged_m2"] + now["restored_m2"], lang, unit), rate=_pct(now["restoration_rate"]),
                  target=_pct(now["target_rate"]), verdict=_verdict(now["meets_target"], lang)),
                t("restoration.changes", lang, year=year, damaged=area(now["newly_damaged_m2"], lang, unit),
                  restored=area(now["newly_restored_m2"], lang, unit))]
    if now["borderline_m2"] > 0:
        overview.append(t("restoration.range", lang, area=area(now["borderline_m2"], lang, unit),
                          low=_pct(now["rate_low"]), high=_pct(now["rate_high"])))
    s = settings.restoration
    method = [t("restoration.provenance", lang, run=run.id, imagery=run.imagery, damaged=f"{s.damaged_ratio:.0%}",
                restored=f"{s.restored_ratio:.0%}", seasons=s.restored_seasons),
              t("restoration.pdf_trace", lang, files=", ".join(SOURCES))]
    out = _text_pages(t("restoration.pdf_title", lang, year=year),
                      [(t("restoration.pdf_targets", lang, year=year), lines + overview),
                       (t("restoration.by_zone", lang), zone_lines),
                       (t("restoration.pdf_method", lang), method)])
    if polygons is not None and len(polygons):
        from gmsense.outputs.restoration_map import map_figure

        figure = map_figure(polygons, year, lang, zone_areas)
        figure.set_size_inches(*A4)
        figure.subplots_adjust(top=0.93, bottom=0.07, left=0.06, right=0.94)
        out.append(figure)
    chart = chart_figure(total, settings.restoration.target_rate, lang, unit)
    chart.suptitle(t("restoration.pdf_chart", lang), fontsize=13, weight="bold")
    chart.text(0.05, 0.01, t("restoration.pdf_chart_note", lang), fontsize=7)
    chart.set_size_inches(*A4)
    chart.subplots_adjust(top=0.9, bottom=0.08, hspace=0.35, left=0.12, right=0.88)
    out.append(chart)
    head = [t(f"restoration.col.{c}", lang) for c in ("group", "polygons", "damaged", "restored", "rate", "target",
                                                       "verdict", "new_damaged", "new_restored")]
    for level in ("province", "zone", "county"):
        out += _table_pages(t(f"restoration.by_{level}", lang), head, _group_rows(tables[level], year, lang, unit),
                            note=t("restoration.pdf_table_note", lang, year=year, file=f"by_{level}.csv"),
                            none=t("restoration.none", lang))
    rows = table[table["year"] == year].sort_values("register_id")
    body = [[str(r["register_id"]), str(r["county"] or "-"), "-" if pd.isna(r["zone"]) else str(r["zone"]),
             _status(r["status"], lang), area(r["area_m2"], lang, unit),
             "-" if pd.isna(r["restored_share"]) or pd.isna(r["status"]) else f"{r['restored_share']:.0%}",
             "-" if pd.isna(r["restored_m2"]) else area(r["restored_m2"], lang, unit)] for _, r in rows.iterrows()]
    head = [t(f"restoration.col.{c}", lang) for c in ("register_id", "county", "zone", "status", "area", "share",
                                                       "restored")]
    out += _table_pages(t("restoration.pdf_polygons", lang, year=year), head, body,
                        note=t("restoration.pdf_polygons_note", lang, year=year), none=t("restoration.none", lang))
    return out


def write_restoration_pdf(tables: dict[str, pd.DataFrame], table: pd.DataFrame, run: Any, settings: Settings,
                          out: Path, lang: str = "en", unit: str = "ha", polygons: pd.DataFrame | None = None,
                          zone_areas: Sequence[tuple[str, Any]] = ()) -> Path:
    """Write the PDF to ``out`` (a temporary file renamed into place); returns ``out``. ``polygons`` and
    ``zone_areas``: the map's (see :func:`pages`)."""
    with report_style(lang):
        figures = pages(tables, table, run, settings, lang, unit, polygons, zone_areas)
        number_pages(figures, lang)
        try:
            with atomic_file(Path(out)) as tmp, PdfPages(tmp) as pdf:
                for page in figures:
                    pdf.savefig(page)
                info = pdf.infodict()
                info["Title"] = t("restoration.pdf_title", lang, year=int(tables["total"]["year"].max()))
                info["Creator"] = f"gmsense {__version__}"
        finally:
            for page in figures:
                plt.close(page)
    return Path(out)
