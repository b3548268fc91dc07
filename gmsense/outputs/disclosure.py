"""``gmsense export disclosure``: what the bureau publishes for social supervision (issue 20, item 5).

A folder with ``index.html`` (a static page: no script, no external resource, every value escaped)
and two CSV files (UTF-8 with a byte-order mark, so spreadsheet programs read the Chinese):

- ``violations.csv``: the **confirmed violations**, one row per flag whose review status is
  ``confirmed``: a public reference, the licence number, its name and holder, province / city /
  county, the rule's name and severity, the flag's sentence (rendered from its rule and parameters,
  never a reviewer's words), the patch's class, area, area outside the licence and first detection,
  the protected-land kind and overlap for ``protected_land`` flags, the date of confirmation, and
  how many third-party assessments the flag has with their verdicts in order (gmsense.review.assessments:
  the count and the coded verdicts only, never the assessor's name, text or files);
- ``restoration.csv``: the **restoration status** of every register polygon (mine land): id, kind,
  mineral class, divisions, area, deadline, the latest analysed year and its status, and the register
  polygon's protected-land overlaps.

Only the columns listed in :data:`VIOLATION_COLUMNS` and :data:`RESTORATION_COLUMNS` are written,
each from a named field: **no reviewer name, no decision reason or comment, no internal
attribute** (a licence's other attributes, the responsible party of mine land and the restoration
decisions are left out). Dates are ISO dates, areas m2.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gmsense import __version__
from gmsense.errors import InputError
from gmsense.outputs.i18n import catalog, flag_sentence, layer_kind_name
from gmsense.outputs.i18n import t as tr
from gmsense.store import (
    AssessmentRow,
    FlagRow,
    PatchRow,
    RegisterLayerFlagRow,
    RegisterRow,
    RestorationStatusRow,
    ReviewRow,
    SiteRow,
    Store,
)
from gmsense.store.scope import PROVINCE, Scope, register_clause, site_clause

VIOLATION_COLUMNS = ("reference", "licence", "licence_name", "holder", "province", "city", "county", "rule",
                     "severity", "finding", "class", "area_m2", "area_outside_m2", "first_detected",
                     "protected_kind", "protected_overlap_m2", "confirmed_on", "assessments", "assessment_verdicts")
RESTORATION_COLUMNS = ("register_id", "kind", "mineral_class", "province", "city", "county", "area_m2",
                       "restoration_deadline", "year", "status", "protected_land")
_TITLES = {"en": "Mine land: confirmed violations and restoration status",
           "zh": "矿山用地：已确认违法违规问题与生态修复情况"}


def _rule_name(rule: str, lang: str) -> str:
    key = f"rule_name.{rule}"
    return tr(key, lang) if key in catalog("en") else rule


def violation_rows(store: Store, lang: str = "en", scope: Scope = PROVINCE) -> list[dict[str, Any]]:
    """The confirmed violations (see the module docstring) on the licences in ``scope``, oldest first."""
    with store.session() as s:
        confirmed_on = (select(ReviewRow.flag_id, func.max(ReviewRow.at).label("at"))
                        .where(ReviewRow.decision == "confirmed").group_by(ReviewRow.flag_id).subquery())
        rows = s.execute(select(FlagRow, SiteRow, PatchRow, confirmed_on.c.at)
                         .join(SiteRow, SiteRow.site_id == FlagRow.site_id)
                         .outerjoin(PatchRow, PatchRow.patch_id == FlagRow.patch_id)
                         .outerjoin(confirmed_on, confirmed_on.c.flag_id == FlagRow.id)
                         .where(FlagRow.status == "confirmed", site_clause(scope)).order_by(FlagRow.id)).all()
        verdicts: dict[int, list[str]] = {}
        for flag_id, verdict in s.execute(select(AssessmentRow.flag_id, AssessmentRow.verdict)
                                          .join(FlagRow, FlagRow.id == AssessmentRow.flag_id)
                                          .where(FlagRow.status == "confirmed").order_by(AssessmentRow.seq)):
            verdicts.setdefault(flag_id, []).append(verdict)
    out = []
    for flag, site, patch, at in rows:
        attrs = site.attrs or {}
        out.append({
            "reference": f"F{flag.id:06d}", "licence": site.site_id, "licence_name": attrs.get("name") or "",
            "holder": attrs.get("holder") or "", "province": attrs.get("province") or "",
            "city": attrs.get("city") or "", "county": attrs.get("county") or "",
            "rule": _rule_name(flag.rule, lang), "severity": tr(f"severity.{flag.severity}", lang),
            "finding": flag_sentence(flag, lang),
            "class": patch.disturbance_class if patch else "", "area_m2": round(patch.area_m2, 1) if patch else "",
            "area_outside_m2": round(patch.area_outside_m2, 1) if patch else "",
            "first_detected": patch.first_detected if patch else "",
            "protected_kind": layer_kind_name(flag.layer_kind, lang) if flag.layer_kind else "",
            "protected_overlap_m2": round(flag.overlap_m2, 1) if flag.overlap_m2 is not None else "",
            "confirmed_on": f"{at:%Y-%m-%d}" if at is not None else "",
            "assessments": len(verdicts.get(flag.id, [])),
            "assessment_verdicts": "; ".join(tr(f"verdict.{v}", lang) for v in verdicts.get(flag.id, [])),
        })
    return out


def restoration_rows(store: Store, lang: str = "en", scope: Scope = PROVINCE) -> list[dict[str, Any]]:
    """Every register polygon in ``scope`` (none for a licence scope) with its latest analysed status
    (see the module docstring)."""
    with store.session() as s:
        polygons = list(s.scalars(select(RegisterRow).where(register_clause(scope)).order_by(RegisterRow.register_id)))
        latest_year = (select(RestorationStatusRow.register_id, func.max(RestorationStatusRow.year).label("year"))
                       .where(RestorationStatusRow.status.is_not(None))
                       .group_by(RestorationStatusRow.register_id).subquery())
        same = ((latest_year.c.register_id == RestorationStatusRow.register_id)
                & (latest_year.c.year == RestorationStatusRow.year))
        status = {r.register_id: r for r in s.scalars(select(RestorationStatusRow).join(latest_year, same))}
        protected: dict[str, list[str]] = {}
        for row in s.scalars(select(RegisterLayerFlagRow).order_by(RegisterLayerFlagRow.layer_kind)):
            protected.setdefault(row.register_id, []).append(
                f"{layer_kind_name(row.layer_kind, lang)} {row.overlap_m2:.0f} m2")
    out = []
    for polygon in polygons:
        attrs, latest = polygon.attrs or {}, status.get(polygon.register_id)
        out.append({
            "register_id": polygon.register_id, "kind": polygon.kind, "mineral_class": attrs.get("mineral_class") or "",
            "province": attrs.get("province") or "", "city": attrs.get("city") or "",
            "county": attrs.get("county") or "",
            "area_m2": round(polygon.area_m2, 1), "restoration_deadline": attrs.get("restoration_deadline") or "",
            "year": latest.year if latest else "", "status": latest.status if latest else "",
            "protected_land": "; ".join(protected.get(polygon.register_id, [])),
        })
    return out


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_disclosure(store: Store, out_dir: Path, lang: str = "en", scope: Scope = PROVINCE) -> dict[str, Any]:
    """Write ``index.html``, ``violations.csv`` and ``restoration.csv`` of the licences and mine land in
    ``scope`` into ``out_dir`` (created; an existing folder must be empty or an earlier disclosure
    export). Returns the counts and paths."""
    catalog(lang)  # an unknown language is a clear error before any work
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or out_dir.is_symlink()):
        raise InputError(f"{out_dir} exists and is not a folder: choose another --out")
    names = {"index.html", "violations.csv", "restoration.csv"}
    if out_dir.exists() and {p.name for p in out_dir.iterdir()} - names:
        raise InputError(f"{out_dir} holds other files: give an empty folder (or an earlier disclosure export)")
    violations, restoration = violation_rows(store, lang, scope), restoration_rows(store, lang, scope)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "violations.csv").write_text("\ufeff" + _csv(violations, VIOLATION_COLUMNS), encoding="utf-8")
    (out_dir / "restoration.csv").write_text("\ufeff" + _csv(restoration, RESTORATION_COLUMNS), encoding="utf-8")
    title = _TITLES[lang]
    stamp = f"{datetime.now(UTC):%Y-%m-%d}"
    esc = html.escape
    (out_dir / "index.html").write_text(
        f"<!doctype html><html lang='{'zh-CN' if lang == 'zh' else 'en'}'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #444;padding:3px 6px;font-size:13px;text-align:left}</style></head>"
        f"<body><h1>{esc(title)}</h1><p>{esc(stamp)} · gmsense {esc(__version__)} · "
        "<a href='violations.csv'>violations.csv</a> · <a href='restoration.csv'>restoration.csv</a></p>"
        f"<h2>{esc('已确认的违法违规问题' if lang == 'zh' else 'Confirmed violations')} ({len(violations)})</h2>"
        f"{_table(violations, VIOLATION_COLUMNS)}"
        f"<h2>{esc('生态修复情况' if lang == 'zh' else 'Restoration status of mine land')} ({len(restoration)})</h2>"
        f"{_table(restoration, RESTORATION_COLUMNS)}</body></html>", encoding="utf-8")
    return {"violations": len(violations), "restoration": len(restoration), "folder": out_dir}
