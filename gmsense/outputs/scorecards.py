"""Green-survey scorecards (issue 19 item 6): per licence and per holder, how much surface each
disturbs per km² of licence and year, how much trench and track it cuts, whether it reclaims by its
deadline, its confirmed violations, the trend across years, and a ranking with its formula.

All figures come from the store (patches, flags and licences written by ``gmsense scan``):

- **years observed**: per licence, the growing seasons from the first to the last acquisition its scans
  analysed (every season of the imagery, the first ones included although they serve as the
  detector's baseline; without such records, the seasons of its patches);
- **disturbed area**: human-made patches (``trench, pad, track, clearing``) by the season of their
  ``first_detected`` date, m² (ground disturbed twice counts twice: two patches);
- **trench/track length**: the ``length_m`` of trench and track patches (skeleton or Feret length);
- per km² of licence (geodesic area of the licence polygon) and per year observed;
- **trend**: the Theil-Sen slope of the yearly disturbed ha per km² (ha/km² per year; positive: more
  disturbance each year);
- **reclaimed by deadline**: of the human-made patches whose reclamation deadline has passed (the
  licence's ``reclamation_due`` when set, else ``rules.reclamation_seasons`` seasons after the patch's
  season, as the ``reclamation_overdue`` rule), the area share that is ``recovered`` or ``recovering``
  (empty when nothing is due yet);
- **confirmed violations**: flags a reviewer confirmed, other than ``new_disturbance`` (a record, not a
  breach); open flags beside them.

The **green-survey score** (0-100, higher is greener; :data:`FORMULA`) ranks licences (and holders
among holders): each term is 0 for the best and 1 for the worst. ``P(x)`` is the percentile rank of x
among those ranked (0 the lowest value, 1 the highest, ties share a rank), so the intensities are
compared with the other licences of the same store rather than with an absolute norm; a licence
with nothing due counts as reclaiming fully; violations count up to three.
"""

from __future__ import annotations

import functools
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyproj import Geod
from shapely import wkt

from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.files import write_bytes
from gmsense.outputs.export import write_frame
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.store import Store
from gmsense.store.scope import PROVINCE, Scope

LINEAR = ("trench", "track")
WEIGHTS = {"disturbed": 0.35, "linear": 0.25, "reclamation": 0.25, "violations": 0.15}
MAX_VIOLATIONS = 3
FORMULA = ("score = 100 x (1 - (0.35 P(disturbed ha per km2 per year) + 0.25 P(trench+track m per km2 per year) "
           "+ 0.25 (1 - share reclaimed by deadline) + 0.15 min(confirmed violations, 3) / 3)); "
           "P = percentile rank among those ranked (0 lowest, 1 highest); rank 1 = greenest")
LICENCE_COLUMNS = ["rank", "site_id", "name", "holder", "licence_type", "mineral_class", "province", "city", "county",
                   "licence_km2", "years_observed", "first_year", "last_year", "patches", "disturbed_ha",
                   "disturbed_ha_per_km2_per_year", "trench_track_m", "trench_track_m_per_km2_per_year",
                   "trend_ha_per_km2_per_year", "due_ha", "reclaimed_by_deadline_share", "confirmed_violations",
                   "open_flags", "p_disturbed", "p_trench_track", "score", "patch_ids"]
_GEOD = Geod(ellps="WGS84")


@functools.lru_cache(maxsize=1 << 16)
def licence_km2(geometry_wkt: str) -> float:
    """The geodesic area of a licence polygon (WKT in EPSG:4326), km² (remembered per polygon: the
    licences of a province are measured once per process, not at every dashboard)."""
    area, _ = _GEOD.geometry_area_perimeter(wkt.loads(geometry_wkt))
    return abs(area) / 1e6


def _season(iso: str) -> int:
    return int(str(iso)[:4])


def _slope(values: list[float]) -> float | None:
    """Theil-Sen slope per step of ``values`` (one per year); None with fewer than two. (In plain
    Python: a licence has a handful of years, for which numpy's set-up costs more than the sums.)"""
    v = [float(x) for x in values]
    if len(v) < 2:
        return None
    return float(statistics.median((v[j] - v[i]) / (j - i) for i in range(len(v)) for j in range(i + 1, len(v))))


def _percentile(values: pd.Series) -> pd.Series:
    """0 for the lowest value, 1 for the highest, ties sharing their average rank; 0 for a single one."""
    if len(values) <= 1:
        return pd.Series(0.0, index=values.index)
    return (values.rank(method="average") - 1) / (len(values) - 1)


def _score(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["p_disturbed"] = _percentile(frame["disturbed_ha_per_km2_per_year"]).round(4)
    frame["p_trench_track"] = _percentile(frame["trench_track_m_per_km2_per_year"]).round(4)
    reclaimed = frame["reclaimed_by_deadline_share"].astype(float).fillna(1.0)
    violations = frame["confirmed_violations"].clip(upper=MAX_VIOLATIONS) / MAX_VIOLATIONS
    w = WEIGHTS
    penalty = (w["disturbed"] * frame["p_disturbed"] + w["linear"] * frame["p_trench_track"]
               + w["reclamation"] * (1 - reclaimed) + w["violations"] * violations)
    frame["score"] = (100 * (1 - penalty)).round(1)
    frame["rank"] = frame["score"].rank(method="min", ascending=False).astype(int)
    return frame.sort_values(["rank", frame.columns[1]])


def _observed_years(units: list[tuple[str, str | None, str | None]], patches: list[Any]) -> dict[str, list[int]]:
    """Per licence, the growing seasons its imagery covered in the store's scans (each finished scan
    unit records the first and last acquisition it analysed: ``units`` are (licence, first season,
    last season)); a licence without such records gets the seasons of its patches."""
    years: dict[str, set[int]] = defaultdict(set)
    for site_id, first, last in units:
        if first and last:
            years[site_id].update(range(int(first), int(last) + 1))
    for p in patches:
        if p.site_id not in years:
            years[p.site_id].add(_season(p.first_detected))
    return {site_id: sorted(v) for site_id, v in years.items()}


def _in_scope(scope: Scope) -> Any:
    """(licences in scope, a condition-maker for a licence-id column of another table)."""
    from sqlalchemy import select

    from gmsense.store import SiteRow
    from gmsense.store.scope import site_clause

    in_scope = site_clause(scope)
    ids = None if scope.everything else select(SiteRow.site_id).where(in_scope)
    return in_scope, (lambda column: [] if ids is None else [column.in_(ids)])


@dataclass
class LicenceFigures:
    """What scans and licence imports alone change (flags' decisions do not): per licence in a scope,
    every column of LICENCE_COLUMNS but the flag counts, ranks and score (``licences``), the per-year
    rows when asked for (``years``, without their violations), and the seasons observed."""

    licences: list[dict[str, Any]]
    years: list[dict[str, Any]]
    observed: list[int]
    _frame: pd.DataFrame | None = field(default=None, init=False, repr=False, compare=False)

    def licence_frame(self) -> pd.DataFrame:
        """``licences`` as a DataFrame, made once (the review app ranks the same figures again with
        each decision's flag counts: building the frame was half of a ranking's time)."""
        if self._frame is None:
            self._frame = pd.DataFrame(self.licences)
        return self._frame


def licence_figures(store: Store, settings: Settings | None = None, scope: Scope = PROVINCE, *,
                    years: bool = True) -> LicenceFigures:
    """The licence figures of ``scope`` (:class:`LicenceFigures`), from the licences, their human-made
    patches (the columns used; the trench/track length out of the metrics, in SQL), the seasons their
    scan units covered and the newest observation of the whole store; ``years``: the per-year rows too."""
    from sqlalchemy import func, select

    from gmsense.store import PatchRow, ScanUnitRow, SiteRow

    settings = settings or Settings()
    in_scope, of = _in_scope(scope)
    with store.session() as s:
        sites = s.execute(select(SiteRow.site_id, SiteRow.geometry_wkt, SiteRow.attrs).where(in_scope)).all()
        patches = s.execute(select(PatchRow.patch_id, PatchRow.site_id, PatchRow.disturbance_class, PatchRow.area_m2,
                                   PatchRow.first_detected, PatchRow.recovery_status,
                                   PatchRow.metrics["length_m"].as_float().label("length_m"))
                            .where(PatchRow.disturbance_class.in_(HUMAN_MADE_CLASSES), *of(PatchRow.site_id))
                            .order_by(PatchRow.patch_id)).all()
        units = s.execute(select(ScanUnitRow.site_id, func.substr(ScanUnitRow.stats["first_date"].as_string(), 1, 4),
                                 func.substr(ScanUnitRow.stats["last_date"].as_string(), 1, 4))
                          .where(ScanUnitRow.status == "done", *of(ScanUnitRow.site_id)).distinct()).all()
        latest = s.scalar(select(func.max(PatchRow.last_seen)))
    if not sites:
        if not scope.everything:
            raise InputError(f"the store {store.location} holds no licences in the scope {scope}")
        raise InputError(f"the store {store.location} holds no licences: run gmsense scan first")
    observed = _observed_years(units, patches)
    by_site: dict[str, list[Any]] = defaultdict(list)
    for p in patches:
        by_site[p.site_id].append(p)
    year_rows, licence_rows = [], []
    for site_id, geometry_wkt, attrs in sorted(sites, key=lambda row: row[0]):
        attrs = attrs or {}
        seen = observed.get(site_id, [])
        km2 = licence_km2(geometry_wkt)
        mine = by_site.get(site_id, [])
        of_year: dict[int, list[Any]] = defaultdict(list)
        for p in mine:
            of_year[_season(p.first_detected)].append(p)
        yearly = []
        for year in seen:
            these = of_year.get(year, [])
            disturbed = sum(p.area_m2 for p in these)
            intensity = disturbed / 1e4 / km2 if km2 > 0 else None
            yearly.append(intensity or 0.0)
            if years:
                length = sum(float(p.length_m or 0.0) for p in these if p.disturbance_class in LINEAR)
                year_rows.append({
                    "site_id": site_id, "holder": attrs.get("holder"), "year": year, "licence_km2": round(km2, 4),
                    "patches": len(these), "disturbed_ha": round(disturbed / 1e4, 4),
                    "disturbed_ha_per_km2": None if intensity is None else round(intensity, 4),
                    "trench_track_m": round(length, 1),
                    "trench_track_m_per_km2": round(length / km2, 2) if km2 > 0 else None,
                    "_patch_ids": {p.patch_id for p in these},
                    "patch_ids": ";".join(sorted(p.patch_id for p in these))})
        seasons = rules_seasons(settings, attrs)
        due = [p for p in mine if _is_due(p, attrs.get("reclamation_due"), seasons, latest)]
        due_m2 = sum(p.area_m2 for p in due)
        reclaimed = sum(p.area_m2 for p in due if p.recovery_status in ("recovered", "recovering"))
        n = max(len(seen), 1)
        disturbed = sum(p.area_m2 for p in mine)
        length = sum(float(p.length_m or 0.0) for p in mine if p.disturbance_class in LINEAR)
        slope = _slope(yearly)
        licence_rows.append({
            "site_id": site_id, "name": attrs.get("name"), "holder": attrs.get("holder"),
            "licence_type": attrs.get("licence_type"), "mineral_class": attrs.get("mineral_class"),
            "province": attrs.get("province"), "city": attrs.get("city"), "county": attrs.get("county"),
            "licence_km2": round(km2, 4), "years_observed": len(seen), "first_year": seen[0] if seen else None,
            "last_year": seen[-1] if seen else None, "patches": len(mine), "disturbed_ha": round(disturbed / 1e4, 4),
            "disturbed_ha_per_km2_per_year": round(disturbed / 1e4 / km2 / n, 4) if km2 > 0 else 0.0,
            "trench_track_m": round(length, 1),
            "trench_track_m_per_km2_per_year": round(length / km2 / n, 2) if km2 > 0 else 0.0,
            "trend_ha_per_km2_per_year": None if slope is None else round(slope, 4),
            "due_ha": round(due_m2 / 1e4, 4),
            "reclaimed_by_deadline_share": round(reclaimed / due_m2, 4) if due_m2 > 0 else None,
            "patch_ids": ";".join(sorted(p.patch_id for p in mine)), "_due_m2": due_m2, "_reclaimed_m2": reclaimed,
            "_disturbed_m2": disturbed, "_length_m": length})
    return LicenceFigures(licence_rows, year_rows, sorted({y for v in observed.values() for y in v}))


def flag_counts(store: Store, scope: Scope = PROVINCE, *, per_patch: bool = True
                ) -> tuple[dict[str, dict[str | None, int]], dict[str, int]]:
    """Counted by the database for the licences in ``scope``: the confirmed violations (confirmed
    flags other than new_disturbance) per licence and flagged patch (None: a flag of no patch; without
    ``per_patch``, all under None), and the open flags per licence."""
    from sqlalchemy import func, null, select

    from gmsense.store import FlagRow

    _, of = _in_scope(scope)
    patch = FlagRow.patch_id if per_patch else null()
    with store.session() as s:
        confirmed = s.execute(select(FlagRow.site_id, patch, func.count())
                              .where(FlagRow.status == "confirmed", FlagRow.rule != "new_disturbance",
                                     *of(FlagRow.site_id))
                              .group_by(FlagRow.site_id, *([patch] if per_patch else []))).all()
        open_flags = {site_id: int(n) for site_id, n in s.execute(
            select(FlagRow.site_id, func.count()).where(FlagRow.status == "open", *of(FlagRow.site_id))
            .group_by(FlagRow.site_id)).all()}
    violations: dict[str, dict[str | None, int]] = defaultdict(dict)
    for site_id, patch_id, n in confirmed:
        violations[site_id][patch_id] = int(n)
    return violations, open_flags


def scorecard_tables(store: Store, settings: Settings | None = None, scope: Scope = PROVINCE, *,
                     holders: bool = True, figures: LicenceFigures | None = None,
                     flag_totals: tuple[dict[str, dict[str | None, int]], dict[str, int]] | None = None
                     ) -> dict[str, Any]:
    """``licences`` (one row per licence in ``scope``, ranked among them), ``holders`` (one per holder,
    ranked among holders) and ``years`` (one row per licence and observed year) as DataFrames (without
    ``holders``: None and an empty frame), and the ``formula``. ``figures``: the licence figures of
    ``scope`` when known already (the review app keeps them between scans: gmsense.review.cache). The
    flag counts are read here, unless ``flag_totals`` gives them per licence (as :func:`flag_counts`
    without ``per_patch``; not with ``holders``, whose yearly rows count violations per patch)."""
    figures = figures or licence_figures(store, settings, scope, years=holders)
    if flag_totals is not None and not holders:
        violations, open_flags = flag_totals
    else:
        violations, open_flags = flag_counts(store, scope, per_patch=holders)
    if figures.licences:
        ids = [row["site_id"] for row in figures.licences]  # the frame's rows, in order
        licences = _score(figures.licence_frame().assign(
            confirmed_violations=[sum(violations.get(site_id, {}).values()) for site_id in ids],
            open_flags=[open_flags.get(site_id, 0) for site_id in ids]))
    else:
        licences = _score(pd.DataFrame([]))
    year_rows = []
    for row in figures.years if holders else []:
        counts = violations.get(row["site_id"], {})
        year_rows.append({k: v for k, v in row.items() if k not in ("_patch_ids", "patch_ids")}
                         | {"confirmed_violations": sum(counts.get(p, 0) for p in row["_patch_ids"]),
                            "patch_ids": row["patch_ids"]})
    years_frame = pd.DataFrame(year_rows)
    return {"licences": licences[LICENCE_COLUMNS].reset_index(drop=True),
            "holders": _holders(licences, years_frame) if holders else None,
            "years": years_frame, "formula": FORMULA, "observed_years": figures.observed}


def rules_seasons(settings: Settings, attrs: dict[str, Any]) -> int:
    """Growing seasons allowed to reclaim a patch of this licence (``rules.reclamation_seasons``)."""
    return settings.rules.seasons_to_reclaim(attrs.get("licence_type"), attrs.get("mineral_class"))


def _is_due(patch: Any, reclamation_due: Any, seasons: int, latest: str | None) -> bool:
    """Whether ``patch``'s reclamation deadline passed by ``latest`` (the newest observation in the store)."""
    if latest is None:
        return False
    if reclamation_due:
        return str(latest) > str(reclamation_due) and patch.first_detected <= str(reclamation_due)
    return _season(latest) - _season(patch.first_detected) >= seasons


def _holders(licences: pd.DataFrame, years: pd.DataFrame) -> pd.DataFrame:
    """Per holder (licences without one are ``(none)``): the licences' sums as intensities (per km² of
    licence and per licence-year observed, km²-weighted), scored among holders."""
    frame = licences.assign(holder=licences["holder"].fillna("(none)").astype(str))
    years_of = ({str(h): g for h, g in years.groupby(years["holder"].fillna("(none)").astype(str))}
                if "holder" in years else {})
    rows = []
    for holder, group in frame.groupby("holder", sort=True):
        km2 = float(group["licence_km2"].sum())
        disturbed = float(group["_disturbed_m2"].sum())
        length = float(group["_length_m"].sum())
        due = float(group["_due_m2"].sum())
        own = years_of.get(str(holder), years.iloc[:0]) if "holder" in years else years
        yearly = (own.groupby("year")["disturbed_ha"].sum() / km2 if km2 > 0 and len(own)
                  else pd.Series(dtype=float))
        slope = _slope(list(yearly.values))
        km2_years = float((group["licence_km2"] * group["years_observed"]).sum())
        rows.append({
            "holder": holder, "licences": len(group), "site_ids": ";".join(sorted(group["site_id"])),
            "licence_km2": round(km2, 4), "disturbed_ha": round(disturbed / 1e4, 4),
            "disturbed_ha_per_km2_per_year": round(disturbed / 1e4 / km2_years, 4) if km2_years > 0 else 0.0,
            "trench_track_m": round(length, 1),
            "trench_track_m_per_km2_per_year": round(length / km2_years, 2) if km2_years > 0 else 0.0,
            "trend_ha_per_km2_per_year": None if slope is None else round(slope, 4), "due_ha": round(due / 1e4, 4),
            "reclaimed_by_deadline_share": round(float(group["_reclaimed_m2"].sum()) / due, 4) if due > 0 else None,
            "confirmed_violations": int(group["confirmed_violations"].sum()),
            "open_flags": int(group["open_flags"].sum())})
    holders = _score(pd.DataFrame(rows))
    first = ["rank", "holder"]
    return holders[first + [c for c in holders.columns if c not in first]].reset_index(drop=True)


def write_scorecards(store: Store, out: Path, settings: Settings | None = None) -> list[Path]:
    """Write the licence scorecards to ``out`` (CSV), and beside it ``<stem>_holders.csv``,
    ``<stem>_years.csv`` and ``<stem>.md`` (the formula, the ranking, the definitions). Returns the files."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(f"the scorecards are written as CSV: name a .csv file, not {out.name!r}")
    tables = scorecard_tables(store, settings)
    stem = out.with_suffix("")
    written = [write_frame(tables["licences"], out, "csv", "scorecards"),
               write_frame(tables["holders"], Path(f"{stem}_holders.csv"), "csv", "holders"),
               write_frame(tables["years"], Path(f"{stem}_years.csv"), "csv", "years")]
    written.append(write_bytes(Path(f"{stem}.md"), markdown(tables).encode("utf-8")))
    return written


def markdown(tables: dict[str, Any]) -> str:
    """The ranking of licences and holders with the formula."""
    years = tables["observed_years"]
    span = f"{years[0]}-{years[-1]}" if years else "-"
    lines = ["# Green-survey scorecards", "", f"Seasons observed: {span}. Formula: `{tables['formula']}`.", "",
             "## Licences", "", "| rank | licence | holder | disturbed ha/km2/yr | trench+track m/km2/yr | trend | "
             "reclaimed by deadline | confirmed violations | score |", "|---|---|---|---|---|---|---|---|---|"]

    def fmt(v: Any, pattern: str = "{:.3f}") -> str:
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else pattern.format(v)

    for _, r in tables["licences"].iterrows():
        lines.append(f"| {r['rank']} | {r['site_id']} | {r['holder'] or '-'}"
                     f" | {fmt(r['disturbed_ha_per_km2_per_year'])}"
                     f" | {fmt(r['trench_track_m_per_km2_per_year'], '{:.1f}')} | {fmt(r['trend_ha_per_km2_per_year'])}"
                     f" | {fmt(r['reclaimed_by_deadline_share'], '{:.0%}')} | {r['confirmed_violations']}"
                     f" | {r['score']:.1f} |")
    lines += ["", "## Holders", "", "| rank | holder | licences | disturbed ha/km2/yr | trench+track m/km2/yr | "
              "reclaimed by deadline | confirmed violations | score |", "|---|---|---|---|---|---|---|---|"]
    for _, r in tables["holders"].iterrows():
        lines.append(f"| {r['rank']} | {r['holder']} | {r['licences']} | {fmt(r['disturbed_ha_per_km2_per_year'])}"
                     f" | {fmt(r['trench_track_m_per_km2_per_year'], '{:.1f}')}"
                     f" | {fmt(r['reclaimed_by_deadline_share'], '{:.0%}')} | {r['confirmed_violations']}"
                     f" | {r['score']:.1f} |")
    lines += ["", "Definitions: gmsense/outputs/scorecards.py (module docstring). Per licence and year: the "
              "`_years.csv` file, with the patch ids counted."]
    return "\n".join(lines) + "\n"
