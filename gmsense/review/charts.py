"""Charts the review app draws into its pages as inline SVG: no picture request, no script, nothing a strict
Content-Security-Policy refuses (presentation attributes only, no ``style``).

:func:`trend_svg` is the restoration page's trend: per year the damaged and the restored area of the polygons
the page shows (stacked bars; the scope and filter are applied in SQL before the accounting, see
:func:`gmsense.review.restoration.overview`), the restoration rate (line, right axis) and the target
(dashed). Every bar and point carries its figure in ``data-*`` attributes and a ``<title>`` (the tooltip),
the same numbers as the trend table below it and ``gmsense restoration report``'s ``total.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from gmsense.outputs.i18n import M2_PER_HA, M2_PER_MU, area, t

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 60, 44, 40
DAMAGED, RESTORED, RATE = "#b35806", "#1b7837", "#222222"
#: At most this many year labels under the axis (every n-th year beyond it).
MAX_YEAR_LABELS = 14


def _ceiling(value: float) -> float:
    """A round top for an axis at or above ``value`` (1, 2, 2.5 or 5 x 10^k)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(f * power for f in (1, 2, 2.5, 5, 10) if f * power >= value)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def trend_svg(rows: Sequence[dict[str, Any]], lang: str = "en", unit: str = "ha") -> str:
    """The trend chart of ``rows`` (the whole register's accounting per year: ``year``, ``damaged_m2``,
    ``restored_m2``, ``restoration_rate``, ``target_rate``), areas in ``unit``, words in ``lang``: SVG markup,
    every text in it escaped (the template inserts it as is); empty without rows."""
    if not rows:
        return ""
    rows = sorted(rows, key=lambda r: int(r["year"]))
    per = M2_PER_HA if unit == "ha" else M2_PER_MU
    unit_name = t(f"unit.{unit}", lang)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = _ceiling(max(float(r["damaged_m2"]) + float(r["restored_m2"]) for r in rows) / per)
    slot = plot_w / len(rows)
    bar = max(min(slot * 0.6, 48.0), 2.0)

    def y_area(value_m2: float) -> float:
        return TOP + plot_h * (1 - value_m2 / per / top_value)

    def y_rate(share: float) -> float:
        return TOP + plot_h * (1 - share)

    words = {"damaged": t("restoration.col.damaged", lang), "restored": t("restoration.col.restored", lang),
             "rate": t("restoration.pdf_chart_rate", lang), "target": t("restoration.pdf_chart_target", lang)}
    title = t("ui.restoration_trend_chart", lang)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="trend-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="trend-chart-title" '
           f'font-family="sans-serif" font-size="11">',
           f'<title id="trend-chart-title">{escape(title)}</title>']
    # axes and grid
    for k in range(5):
        value = top_value * k / 4
        y = y_area(value * per)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dddddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(_number(value))}</text>')
        out.append(f'<text x="{LEFT + plot_w + 6}" y="{y + 4:.1f}">{k * 25}%</text>')
    out.append(f'<text x="{LEFT - 6}" y="{TOP - 10}" text-anchor="end">{escape(unit_name)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#444444"/>')
    every = max(1, math.ceil(len(rows) / MAX_YEAR_LABELS))
    points = []
    for k, row in enumerate(rows):
        year = int(row["year"])
        x = LEFT + slot * k + (slot - bar) / 2
        damaged, restored = float(row["damaged_m2"]), float(row["restored_m2"])
        y_d = y_area(damaged)
        y_r = y_area(damaged + restored)
        for kind, m2, y, height in (("damaged", damaged, y_d, TOP + plot_h - y_d), ("restored", restored, y_r,
                                                                                  y_d - y_r)):
            colour = DAMAGED if kind == "damaged" else RESTORED
            tip = f"{year}: {words[kind]} {area(m2, lang, unit)}"
            out.append(f'<rect class="bar {kind}" data-year="{year}" data-m2="{m2:.2f}" x="{x:.1f}" y="{y:.1f}" '
                       f'width="{bar:.1f}" height="{max(height, 0):.1f}" fill="{colour}"><title>{escape(tip)}'
                       "</title></rect>")
        if k % every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{year}</text>')
        rate = row.get("restoration_rate")
        points.append(None if _missing(rate) else (x + bar / 2, float(rate), year))
    # the rate, broken where a year has none
    runs: list[list[tuple[float, float, int]]] = [[]]
    for point in points:
        if point is None:
            runs.append([])
        else:
            runs[-1].append(point)
    for run in (r for r in runs if len(r) > 1):
        coords = " ".join(f"{x:.1f},{y_rate(rate):.1f}" for x, rate, _ in run)
        out.append(f'<polyline class="rate" points="{coords}" fill="none" stroke="{RATE}" stroke-width="1.5"/>')
    for point in (p for p in points if p is not None):
        x, rate, year = point
        tip = f"{year}: {words['rate']} {rate:.1%}"
        out.append(f'<circle class="rate" data-year="{year}" data-rate="{rate:.4f}" cx="{x:.1f}" '
                   f'cy="{y_rate(rate):.1f}" r="3" fill="{RATE}"><title>{escape(tip)}</title></circle>')
    target = next((float(r["target_rate"]) for r in reversed(rows) if not _missing(r.get("target_rate"))), None)
    if target is not None:
        y = y_rate(target)
        out.append(f'<line class="target" data-rate="{target:.4f}" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" '
                   f'y2="{y:.1f}" stroke="{RATE}" stroke-dasharray="5,4"><title>{escape(words["target"])} '
                   f'{target:.0%}</title></line>')
    # legend
    x = LEFT
    for kind, colour in (("damaged", DAMAGED), ("restored", RESTORED)):
        out.append(f'<rect x="{x}" y="12" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{x + 16}" y="22">{escape(words[kind])}</text>')
        x += 26 + 7 * len(words[kind]) * (2 if lang == "zh" else 1)
    out.append(f'<line x1="{x}" x2="{x + 18}" y1="18" y2="18" stroke="{RATE}" stroke-width="1.5"/>'
               f'<text x="{x + 22}" y="22">{escape(words["rate"])}</text>')
    x += 34 + 7 * len(words["rate"]) * (2 if lang == "zh" else 1)
    out.append(f'<line x1="{x}" x2="{x + 18}" y1="18" y2="18" stroke="{RATE}" stroke-dasharray="5,4"/>'
               f'<text x="{x + 22}" y="22">{escape(words["target"])}</text>')
    out.append("</svg>")
    return "".join(out)
