"""Flags: findings a regulator must act on, from patches, licence attributes and the rules.

The rules and their severities are data (``configs/rules.yaml``, :class:`RulesSettings`). Each
flag names its rule, a severity, the evidence (patch, areas, dates, values) and a sentence a
regulator can paste into a letter. Natural change is never flagged.

Rules per human-made patch: ``outside_licence``, ``after_licence_end``, ``while_suspended``,
``outside_work_programme`` (when the licence has an approved work programme),
``reclamation_overdue`` (``reclamation_due`` passed, or the configured number of growing
seasons since the disturbance, and the patch is neither recovering nor recovered),
``recovery_reversed`` (the recovery ratio fell ``reversal_drop`` below its best season), and
``new_disturbance`` for a human-made patch no other rule flagged. A later disturbance of a patch's
ground is a patch of its own and is judged like any other; the permitted area counts ground
disturbed twice once. ``uncertain_label`` for an
``uncertain`` patch inside or touching the licence (gmsense.classify.trust: a label that cannot be
trusted goes to a reviewer, whose decision trains the next model). Per licence:
``permitted_area_exceeded`` and ``approved_work_not_observed`` (one flag per work).
``protected_land`` for a human-made patch overlapping a protected-land layer (gmsense.geo.layers),
one flag per patch and layer (its key the layer's name), its severity the layer kind's
(``protected_land_severity``), with the overlapping area (m2) and the layer version checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.config import RecoverySettings, RulesSettings, SeasonSettings
from gmsense.cube.ops import season_year
from gmsense.geo.layers import LocalLayer, overlaps
from gmsense.geo.sites import ApprovedWork, Site
from gmsense.outputs.i18n import rule_message
from gmsense.records import HUMAN_MADE_CLASSES, FlagRecord, PatchRecord
from gmsense.recovery import ratio_series, recovery_metrics


def _year(iso: str, season: SeasonSettings | None = None) -> int:
    """The growing season of an ISO date (gmsense.cube.ops.season_year)."""
    return int(season_year(np.datetime64(iso[:10]), season))


def _ratio_history(patch: PatchRecord, recovery: RecoverySettings,
                   season: SeasonSettings | None = None) -> list[tuple[int, float]]:
    """(season, recovery ratio) for every season from the trough on, on the series the patch's
    status is taken on (gmsense.recovery.ratio_series)."""
    if not patch.recovery or not patch.first_detected:
        return []
    seasons, series = ratio_series(patch.recovery, recovery)
    m = recovery_metrics(seasons, series, _year(patch.first_detected, season))
    if not m["magnitude"] or m["magnitude"] <= 0:
        return []
    return [(int(s), float((r - m["trough"]) / m["magnitude"]))
            for s, r in zip(seasons, series, strict=True) if s >= m["trough_season"]]


def _counted_twice_m2(geometries: Sequence[BaseGeometry], licence: BaseGeometry) -> float:
    """Licence area (m2) a sum over ``geometries`` counts more than once: ground under more than one
    patch (a later disturbance of a patch's ground, gmsense.detect.change.later_breaks); 0 when
    the patches do not overlap (less than 1 m2)."""
    if len(geometries) < 2:
        return 0.0
    inside = [g.intersection(licence) for g in geometries]
    twice = sum(g.area for g in inside) - unary_union(inside).area
    return float(twice) if twice > 1.0 else 0.0


class _Flagger:
    def __init__(self, site: Site, rules: RulesSettings) -> None:
        self.site, self.rules = site, rules
        self.mineral = site.attrs.get("mineral_class")
        self.flags: list[FlagRecord] = []

    def add(self, rule: str, params: dict, patch_index: int | None, evidence: dict, key: str = "",
            severity: str | None = None) -> None:
        """Raise ``rule``; its sentence is rendered from ``params`` (kept in the evidence, so it can
        be rendered again in another language: gmsense.outputs.i18n.rule_message). ``severity``:
        instead of the rule's (protected land: the layer kind's)."""
        if getattr(self.rules, rule).enabled:
            params = {"site_id": self.site.site_id, **params}
            self.flags.append(FlagRecord(rule, severity or self.rules.severity(rule, self.mineral),
                                         rule_message(rule, params), patch_index,
                                         {**evidence, "message_params": params}, key))


def protected_evidence(layer: LocalLayer, overlap_m2: float) -> dict:
    """What a ``protected_land`` flag records of the layer it was checked against (the store copies
    ``layer_name``, ``layer_kind``, ``layer_version`` and ``overlap_m2`` into columns of its own)."""
    return {"layer_name": layer.name, "layer_kind": layer.kind, "layer_version": layer.version,
            "overlap_m2": round(overlap_m2, 1)}


def evaluate(site: Site, patches: Sequence[PatchRecord], geometries: Sequence[BaseGeometry], latest_date: str,
             rules: RulesSettings, works: Sequence[ApprovedWork] | None = None,
             season: SeasonSettings | None = None, layers: Sequence[LocalLayer] | None = None,
             recovery: RecoverySettings | None = None) -> list[FlagRecord]:
    """The flags one licence raises.

    ``site`` and ``geometries`` (one per patch), ``works`` and ``layers`` (protected land around the
    licence: gmsense.geo.layers.LayerSet.localised) share one projected CRS (metres); overlaps are
    areas in it.
    ``latest_date`` is the ISO date of the scan's last observation. ``works`` is None when the
    licence has no approved work programme. ``season``: the growing-season window that names
    the seasons (gmsense.cube.ops.season_year; None: calendar years). ``recovery``: how the
    recovery ratio is measured (for ``recovery_reversed``; None: the defaults).
    """
    f = _Flagger(site, rules)
    recovery = recovery or RecoverySettings()
    attrs = site.attrs
    latest_year = _year(latest_date, season)
    reclaim_seasons = rules.seasons_to_reclaim(attrs.get("licence_type"), f.mineral)
    human = [i for i, p in enumerate(patches) if p.disturbance_class in HUMAN_MADE_CLASSES]
    for i in human:
        p, geom = patches[i], geometries[i]
        what = {"klass": p.disturbance_class, "area_m2": round(p.area_m2, 1), "first_detected": p.first_detected}
        evidence = {"area_m2": round(p.area_m2, 1), "area_outside_m2": round(p.area_outside_m2, 1),
                    "first_detected": p.first_detected, "confirmed_on": p.confirmed_on, "last_seen": p.last_seen,
                    "disturbance_class": p.disturbance_class, "confidence": p.confidence,
                    "recovery_status": p.recovery_status, "recovery_ratio": p.recovery_ratio}
        before = len(f.flags)
        if p.area_outside_m2 >= rules.outside_min_area_m2:
            f.add("outside_licence", {**what, "area_outside_m2": round(p.area_outside_m2, 1)}, i, evidence)
        end = attrs.get("licence_end")
        if end and p.first_detected > str(end):
            f.add("after_licence_end", {**what, "licence_end": end}, i, {**evidence, "licence_end": end})
        if str(attrs.get("status", "")).lower() == "suspended":
            since = attrs.get("suspended_since")
            if not since or p.first_detected >= str(since):
                f.add("while_suspended", {**what, "suspended_since": since}, i, {**evidence, "suspended_since": since})
        if works is not None:
            year = _year(p.first_detected)
            near = [w for w in works if w.geometry.distance(geom) <= rules.work_tolerance_m
                    and (w.year is None or abs(w.year - year) <= 1)]
            if not near:
                f.add("outside_work_programme", {**what, "tolerance_m": f"{rules.work_tolerance_m:.0f}", "year": year},
                      i, evidence)
        due = attrs.get("reclamation_due")
        seasons_since = latest_year - _year(p.first_detected, season)
        overdue_by_date = bool(due) and latest_date > str(due)
        if ((overdue_by_date or seasons_since >= reclaim_seasons)
                and p.recovery_status not in ("recovering", "recovered")):
            f.add("reclamation_overdue",
                  {**what, "status": p.recovery_status, "deadline_kind": "due" if overdue_by_date else "seasons",
                   "reclamation_due": due, "seasons": reclaim_seasons},
                  i, {**evidence, "reclamation_due": due, "seasons_allowed": reclaim_seasons})
        for layer, overlap in overlaps(geom, layers or (), rules.protected_min_overlap_m2):
            f.add("protected_land",
                  {**what, "layer": layer.name, "layer_kind": layer.kind, "layer_version": layer.version,
                   "overlap_m2": round(overlap, 1)},
                  i, {**evidence, **protected_evidence(layer, overlap)}, key=layer.name,
                  severity=rules.protected_severity(layer.kind, f.mineral))
        history = _ratio_history(p, recovery, season)
        if len(history) >= 2:
            best_season, best = max(history, key=lambda sr: sr[1])
            last_season, last = history[-1]
            if last_season > best_season and best - last >= rules.reversal_drop:
                f.add("recovery_reversed",
                      {**what, "best": round(best, 3), "best_season": best_season, "latest": round(last, 3),
                       "latest_season": last_season},
                      i, {**evidence, "best_season": best_season, "best_ratio": round(best, 3),
                          "latest_season": last_season, "latest_ratio": round(last, 3)})
        if len(f.flags) == before:
            f.add("new_disturbance", what, i, evidence)

    for i, p in enumerate(patches):
        if p.disturbance_class == "uncertain" and geometries[i].intersects(site.geometry):
            reason = str(p.metrics.get("label_reason") or "")
            f.add("uncertain_label",
                  {"klass": "uncertain", "area_m2": round(p.area_m2, 1), "first_detected": p.first_detected,
                   "reason": reason},
                  i, {"area_m2": round(p.area_m2, 1), "area_outside_m2": round(p.area_outside_m2, 1),
                      "first_detected": p.first_detected, "confirmed_on": p.confirmed_on, "last_seen": p.last_seen,
                      "disturbance_class": "uncertain", "confidence": p.confidence, "label_reason": reason,
                      "label_before_trust": p.metrics.get("label_before_trust"),
                      "recovery_status": p.recovery_status, "recovery_ratio": p.recovery_ratio})
    permitted_ha = attrs.get("permitted_disturbance_ha")
    inside_m2 = sum(patches[i].area_m2 - patches[i].area_outside_m2 for i in human)
    if permitted_ha is not None:  # ground disturbed again is one ground
        inside_m2 -= _counted_twice_m2([geometries[i] for i in human], site.geometry)
    if permitted_ha is not None and inside_m2 > float(permitted_ha) * 10_000:
        f.add("permitted_area_exceeded",
              {"disturbed_m2": round(inside_m2, 1), "permitted_m2": float(permitted_ha) * 10_000}, None,
              {"disturbed_m2": round(inside_m2, 1), "permitted_ha": float(permitted_ha), "patches": len(human)})
    for work in works or ():
        if work.year is not None and work.year > latest_year:
            continue
        if not any(work.geometry.distance(geometries[i]) <= rules.work_tolerance_m for i in human):
            f.add("approved_work_not_observed",
                  {"work_type": work.work_type, "work_id": work.work_id, "year_planned": work.year},
                  None, {"work_id": work.work_id, "work_type": work.work_type, "year": work.year}, key=work.work_id)
    return f.flags


def evaluate_register(register_id: str, geometry: BaseGeometry, layers: Sequence[LocalLayer], rules: RulesSettings,
                      mineral_class: str | None = None) -> list[FlagRecord]:
    """The ``protected_land`` flags of one register polygon (mine land, gmsense.geo.register):
    one per layer it overlaps by at least ``protected_min_overlap_m2``. ``geometry`` and ``layers``
    share one projected CRS (the polygon's local UTM zone); ``patch_index`` is None, the key the
    layer's name."""
    if not rules.protected_land.enabled:
        return []
    out = []
    for layer, overlap in overlaps(geometry, layers, rules.protected_min_overlap_m2):
        params = {"register_id": register_id, "layer": layer.name, "layer_kind": layer.kind,
                  "layer_version": layer.version, "overlap_m2": round(overlap, 1)}
        out.append(FlagRecord("protected_land", rules.protected_severity(layer.kind, mineral_class),
                              rule_message("protected_land", params), None,
                              {"register_id": register_id, "area_m2": round(float(geometry.area), 1),
                               **protected_evidence(layer, overlap), "message_params": params}, layer.name))
    return out
