"""`gmsense report site`: the per-licence inspection report (PDF, A4, readable in black and white).

Pages: the licence and what was found (attributes, counts, provenance); a map of the licence,
its buffer and every patch on a recent composite; one page per flagged patch (before/after
chips, trajectory against the reference ring, class, area, dates, images, the rules' sentences);
the recovery table; a coordinates table an inspector can type into a GPS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pyproj
from matplotlib import font_manager
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from shapely import wkt

from gmsense import __version__
from gmsense.errors import GmsenseError, InputError
from gmsense.files import atomic_file, check_target
from gmsense.geo.sites import CONTRACT_FIELDS, WGS84, reproject_geometry
from gmsense.outputs.i18n import area, attr_value, catalog, coverage_sentences, flag_sentence, public_attrs, t
from gmsense.outputs.report import (
    PLAIN_TEXT,
    chips_figure,
    draw_table,
    scene_for,
    site_map_figure,
    split_rows,
    table_layout,
    trajectory_figure,
    wrap_cell,
)
from gmsense.records import HUMAN_MADE_CLASSES, RecoveryObservation
from gmsense.store import Store

A4 = (8.27, 11.69)
_WRAP = [100]  # characters per line; CJK glyphs are twice as wide, see report_style
CJK_FONT = "Noto Sans CJK SC"


TOP, BOTTOM = 0.95, 0.06  # text and tables stay above the page number


def _text_pages(title: str, blocks: list[tuple[str, list[str]]]) -> list[Figure]:
    """Headed blocks of wrapped lines on as many A4 pages as they need."""
    fig = plt.figure(figsize=A4)
    pages = [fig]
    fig.text(0.08, TOP, title, fontsize=15, weight="bold", va="top")
    y = 0.90
    for heading, lines in blocks:
        if y < BOTTOM + 0.06:
            fig = plt.figure(figsize=A4)
            pages.append(fig)
            y = TOP
        fig.text(0.08, y, heading, fontsize=11, weight="bold", va="top")
        y -= 0.025
        for line in lines:
            for wrapped in wrap_cell(line, _WRAP[0]):
                if y < BOTTOM:
                    fig = plt.figure(figsize=A4)
                    pages.append(fig)
                    y = TOP
                fig.text(0.10, y, wrapped, fontsize=8.5, va="top")
                y -= 0.018
        y -= 0.015
    return pages


def _table_pages(title: str, header: list[str], rows: list[list[str]], note: str = "",
                 none: str = "none") -> list[Figure]:
    """A table on as many A4 pages as it needs, columns as wide as their content (wrapped when
    the page is too narrow), the header on every page."""
    rect = (0.05, BOTTOM, 0.9, 0.90 - BOTTOM)
    layout = table_layout(header, rows, rect[2] * A4[0], fontsize=7)
    chunks = split_rows(layout, rect[3] * A4[1]) if rows else [[]]
    pages = []
    for k, chunk in enumerate(chunks):
        fig = plt.figure(figsize=A4)
        fig.text(0.08, TOP, title if k == 0 else f"{title} ({k + 1}/{len(chunks)})", fontsize=13, weight="bold",
                 va="top")
        if note:
            fig.text(0.08, 0.925, note, fontsize=8, va="top")
        ax = fig.add_axes(rect)
        if chunk:
            draw_table(ax, layout, chunk)
        else:
            ax.axis("off")
            ax.text(0.0, 1.0, none, va="top")
        pages.append(fig)
    return pages


def number_pages(pages: list[Figure], lang: str) -> None:
    """Write "page N of M" at the foot of every page."""
    for n, fig in enumerate(pages, start=1):
        fig.text(0.5, 0.02, t("report.page", lang, n=n, total=len(pages)), fontsize=7, ha="center", va="bottom")


def _paste(fig_sub: Figure, target: Figure, rect: tuple[float, float, float, float]) -> None:
    """Draw a finished figure into a rectangle of an A4 page (as an image)."""
    fig_sub.canvas.draw()
    image = np.asarray(fig_sub.canvas.buffer_rgba())
    ax = target.add_axes(rect)
    ax.imshow(image)
    ax.axis("off")
    plt.close(fig_sub)


def _has_font(family: str) -> bool:
    try:
        font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    except ValueError:
        return False
    return True


@contextmanager
def report_style(lang: str) -> Iterator[None]:
    """Matplotlib settings for a report in ``lang``: a CJK font for Chinese, checked to exist
    (never boxes instead of characters), embedded in the PDF."""
    # Type 3 subsets embed any outline (CFF CJK fonts too); text is never read as math ("$5 to $10").
    style: dict[str, Any] = {"pdf.fonttype": 3, **PLAIN_TEXT}
    if lang == "zh":
        if not _has_font(CJK_FONT):
            # Installed after matplotlib cached its font list: register Debian's files directly.
            for path in sorted(Path("/usr/share/fonts").glob("**/NotoSansCJK*.ttc")):
                font_manager.fontManager.addfont(str(path))
        if not _has_font(CJK_FONT):
            raise GmsenseError(
                f"Chinese reports need the font {CJK_FONT!r}, which is not installed; install it with "
                "'apt-get install fonts-noto-cjk' (scripts/setup.sh does this)")
        style["font.family"] = [CJK_FONT, "DejaVu Sans"]
    with plt.rc_context(style):
        yield


def _field(key: str, lang: str) -> str:
    """A licence attribute's label in ``lang`` (the key itself for attributes outside the contract)."""
    return t(f"field.{key}", lang) if f"field.{key}" in catalog("en") else key


def _ordered(attrs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Licence attributes in the order of the data contract, then any others by name; internal
    ones (``synthetic_*``, ``_*``) are left out."""
    attrs = public_attrs(attrs)
    known = [(k, attrs[k]) for k in CONTRACT_FIELDS if k in attrs]
    return known + sorted((k, v) for k, v in attrs.items() if k not in CONTRACT_FIELDS)


def _scan_status(status: str, lang: str) -> str:
    key = f"summary.scan_status.{status}"
    return t(key, lang) if key in catalog("en") else status


def _lonlat(geom: Any, crs: str) -> Any:
    return reproject_geometry(geom, pyproj.CRS.from_user_input(crs), WGS84)


def write_site_report(store: Store, site_id: str, out: Path, lang: str = "en", unit: str = "ha",
                      progress: Callable[[str], None] | None = None) -> Path:
    """Write the inspection report of ``site_id`` to ``out`` (PDF) in ``lang`` (en, zh) with
    areas in ``unit`` (ha, mu); returns the path. ``progress`` is told each step (the imagery
    takes most of the time). Written to a temporary file renamed into place: a failure (a full
    disk, an unwritable folder) is a clear error and leaves nothing behind."""
    with report_style(lang):
        _WRAP[0] = 100  # wrap_cell counts CJK characters twice
        return _write_site_report(store, site_id, Path(out), lang, unit, progress or (lambda _step: None))


def _write_site_report(store: Store, site_id: str, out: Path, lang: str, unit: str,
                       progress: Callable[[str], None]) -> Path:
    check_target(out)
    site_row = next((r for r in store.site_rows() if r.site_id == site_id), None)
    if site_row is None:
        known = ", ".join(r.site_id for r in store.site_rows()[:10])
        raise InputError(f"licence {site_id!r} is not in the store; known licences include: {known}")
    patches = [p for p in store.patch_rows() if p.site_id == site_id]
    flags = [f for f in store.flag_rows() if f.site_id == site_id]
    recovery = [r for r in store.recovery_rows() if r.patch_id in {p.patch_id for p in patches}]
    scans = [s for s in store.scans() if any(u.site_id == site_id for u in store.scan(s.id)[1])]
    with atomic_file(out) as tmp:  # the folder is checked to be writable before the slow part
        progress("loading the imagery of the last scan")
        scene = scene_for(store, site_id)
        progress("drawing the pages")
        last = store.last_unit(site_id)
        coverage = coverage_sentences(last.stats, last.scan_id, lang) if last is not None else []
        pages = _pages(site_row, patches, flags, recovery, scans, scene, site_id, lang, unit, progress, coverage)
        number_pages(pages, lang)
        progress("writing the PDF")
        try:
            with PdfPages(tmp) as pdf:
                for page in pages:
                    pdf.savefig(page)
                info = pdf.infodict()
                info["Title"] = f"gmsense inspection report {site_id}"
                info["Creator"] = f"gmsense {__version__}"
        finally:
            for page in pages:
                plt.close(page)
    return out


def _pages(site_row: Any, patches: list[Any], flags: list[Any], recovery: list[Any], scans: list[Any],
           scene: Any, site_id: str, lang: str, unit: str, progress: Callable[[str], None],
           coverage: list[str] | None = None) -> list[Figure]:
    """The report's pages; ``coverage``: the sentences on what the last scan's imagery observed."""
    pages: list[Figure] = []
    attrs = site_row.attrs or {}
    flagged = sorted({f.patch_id for f in flags if f.patch_id})
    human = [p for p in patches if p.disturbance_class in HUMAN_MADE_CLASSES]
    summary = [
        t("report.findings_patches", lang, n=len(patches),
          classes=", ".join(t(f"class.{c}", lang) for c in sorted({p.disturbance_class for p in patches}))
          or t("report.none", lang),
          human=area(sum(p.area_m2 for p in human), lang, unit),
          outside=area(sum(p.area_outside_m2 for p in human), lang, unit),
          natural=area(sum(p.area_m2 for p in patches if p.disturbance_class == "natural"), lang, unit),
          uncertain=area(sum(p.area_m2 for p in patches if p.disturbance_class == "uncertain"), lang, unit)),
        t("report.findings_flags", lang, n=len(flags), critical=sum(f.severity == "critical" for f in flags),
          open=sum(f.status == "open" for f in flags), flagged=len(flagged)),
        *(coverage or []),
    ]
    provenance = [t("report.scan_line", lang, id=s.id, when=f"{s.started_at:%Y-%m-%d %H:%M}", source=s.source,
                    detector=s.detector,
                    model=t("report.scan_model", lang, model=s.model_version) if s.model_version else "",
                    settings=s.config_hash, version=s.gmsense_version, status=_scan_status(s.status, lang))
                  for s in scans]
    provenance.append(t("report.generated", lang, when=f"{datetime.now(UTC):%Y-%m-%d %H:%M}", version=__version__))
    pages += _text_pages(t("report.title", lang, site_id=site_id), [
        (t("report.licence", lang), [f"{_field(k, lang)}{'：' if lang == 'zh' else ': '}{attr_value(k, v, lang)}"
                                     for k, v in _ordered(attrs)] or [t("report.none", lang)]),
        (t("report.findings", lang), summary),
        (t("report.flags", lang), [f"[{t('severity.' + f.severity, lang)}] {flag_sentence(f, lang, unit)}"
                                   for f in flags] or [t("report.none", lang)]),
        (t("report.provenance", lang), provenance),
    ])
    cube, licence = scene if scene else (None, None)
    if licence is None:
        from gmsense.geo.sites import utm_crs_for

        g = wkt.loads(site_row.geometry_wkt)
        crs = utm_crs_for(g.centroid.x, g.centroid.y)
        licence_geom = reproject_geometry(g, WGS84, crs)
        local_crs = crs.to_string()
    else:
        licence_geom, local_crs = licence.geometry, licence.crs.to_string()
    local_patches = [(reproject_geometry(wkt.loads(p.geometry_wkt), WGS84, pyproj.CRS.from_user_input(local_crs)),
                      p) for p in patches]
    page = plt.figure(figsize=A4)
    page.text(0.08, 0.95, t("report.map", lang, site_id=site_id), fontsize=13, weight="bold", va="top")
    page.text(0.08, 0.925, t("report.map_legend", lang)
              + ("" if cube is not None else t("report.no_background", lang)), fontsize=8, va="top")
    _paste(site_map_figure(cube, licence_geom, 500.0, [(g, p.disturbance_class) for g, p in local_patches],
                           title=f"{site_id} ({local_crs})", lang=lang), page, (0.05, 0.25, 0.9, 0.65))
    pages.append(page)
    by_patch = {p.patch_id: (g, p) for g, p in local_patches}
    for k, patch_id in enumerate(flagged, start=1):
        progress(f"drawing flagged patch {k} of {len(flagged)}")
        geom, p = by_patch[patch_id]
        page = plt.figure(figsize=A4)
        page.text(0.08, 0.96, t("report.patch", lang, patch_id=patch_id, klass=t(f"class.{p.disturbance_class}", lang)),
                  fontsize=13, weight="bold", va="top")
        evidence = (p.metrics or {}).get("evidence", {})
        lines = [
            t("report.patch_facts", lang, confidence=p.confidence, area=area(p.area_m2, lang, unit),
              outside=area(p.area_outside_m2, lang, unit), first_detected=p.first_detected,
              confirmed_on=p.confirmed_on, last_seen=p.last_seen, status=t(f"status.{p.recovery_status}", lang),
              ratio="" if p.recovery_ratio is None else t("report.patch_ratio", lang, ratio=p.recovery_ratio)),
            t("report.patch_images", lang, before=evidence.get("before_image", "-"),
              after=evidence.get("after_image", "-"), confirm=evidence.get("confirm_image", "-")),
            *[f"[{t('severity.' + f.severity, lang)}] {flag_sentence(f, lang, unit)}"
              for f in flags if f.patch_id == patch_id],
        ]
        y = 0.935
        for line in lines:
            for wrapped in wrap_cell(line, _WRAP[0] + 10):
                page.text(0.08, y, wrapped, fontsize=8, va="top")
                y -= 0.016
        if cube is not None:
            _paste(chips_figure(cube, licence_geom, geom, p.first_detected, title=t("fig.before_after", lang),
                                lang=lang, before_date=evidence.get("before_date"),
                                after_date=evidence.get("after_date")), page,
                   (0.1, 0.42, 0.8, 0.42))
        else:
            page.text(0.1, 0.6, t("report.no_chips", lang), fontsize=9)
        obs = [RecoveryObservation(r.season, r.index_name, r.n_obs, r.patch_value, r.ring_value, r.relative)
               for r in recovery if r.patch_id == patch_id]
        if obs:
            _paste(trajectory_figure(obs, title=t("ui.trajectory", lang), disturbance_season=int(p.first_detected[:4]),
                                     status=t(f"status.{p.recovery_status}", lang), lang=lang),
                   page, (0.08, 0.06, 0.84, 0.35))
        pages.append(page)
    rows = [[p.patch_id, t(f"class.{p.disturbance_class}", lang), area(p.area_m2, lang, unit), p.first_detected,
             t(f"status.{p.recovery_status}", lang),
             "-" if p.recovery_ratio is None else f"{p.recovery_ratio:.2f}"] for p in patches]
    header = [t(f"report.col.{c}", lang) for c in ("patch", "class", "area", "first_seen", "status", "ratio")]
    pages += _table_pages(t("report.recovery", lang), header, rows, t("report.ratio_note", lang),
                          t("report.none", lang))
    coords = []
    for geom, p in local_patches:
        ll = _lonlat(geom, local_crs)
        c = ll.centroid
        minx, miny, maxx, maxy = ll.bounds
        coords.append([p.patch_id, f"{c.y:.6f}", f"{c.x:.6f}", f"{miny:.6f}, {minx:.6f}", f"{maxy:.6f}, {maxx:.6f}"])
    header = [t(f"report.col.{c}", lang) for c in ("patch", "centroid_lat", "centroid_lon", "sw_corner", "ne_corner")]
    pages += _table_pages(t("report.coordinates", lang), header, coords, none=t("report.none", lang))
    return pages
