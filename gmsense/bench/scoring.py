"""Scoring detected patches against synthetic truth.

Rules (both frames in one projected CRS, metres):

- a truth event is *detected* when a patch overlaps its footprint buffered by ``tolerance_m``
  (misregistration); its *predicted class* is that of the matched patch with the largest overlap.
  An event split into several patches is one hit, and none of its pieces is a false alarm; one
  patch covering several events is a hit for each of them;
- a patch overlapping no buffered human-made event is a *false alarm* when it is labelled
  human-made (trench, pad, track, clearing: an accusation); labelled ``uncertain`` it is *review
  load* instead (reported per km2 per year beside the false alarms); a false alarm overlapping a
  buffered natural event (fire, flood, windthrow, harvest) counts as "on natural change";
- *lag* (days) runs from the event's first clear observation to its detection:

  - the first clear observation is the truth's ``first_observed``: the first growing-season
    acquisition on or after the start date on which at least half of the footprint is clear by
    the scene's own mask (the synthetic SCL, imperfect as a user's would be; see
    :func:`gmsense.sources.synthetic.first_observed` and
    :func:`gmsense.bench.accuracy.complete_truth`). Fallback, when the footprint was never that
    clear (or the truth has no such column): the event's start date. ``lag_basis`` records
    which one was used (``first_observed`` | ``start``);
  - the detection date is the patch's ``confirmed_on``: the observation that confirmed the
    change, i.e. the day the system could flag it (``lag_days``, the benchmark's lag). The
    patch's ``first_detected`` (the first clear observation showing the change, a date the
    system only knows afterwards) gives ``first_detected_lag_days``. Fallback: a patch frame
    without ``confirmed_on`` uses ``first_detected`` for both;
  - of the event's matched patches only those confirmed on or after its start date can be its
    detection; of those the earliest counts (a split event is known once its first piece is
    confirmed);
- a patch confirmed before an event began is another, earlier disturbance of the same ground (a
  field harvested before a trench was dug in it): it neither detects the event nor gives it a class.
  An event overlapped only by such patches is *missed* (counted in ``missed_patch_predates_event``;
  before 2026-11-30 it counted as detected with the earlier patch's class, so a missed trench under a
  harvest read as a work labelled ``natural``);
- ``class_accuracy`` counts ``uncertain`` as wrong; ``human_labelled_natural`` and
  ``human_labelled_uncertain`` are the shares of detected human-made events labelled so (the first
  is the violation nobody sees, the second goes to a reviewer); ``natural_labelled_uncertain`` the
  share of detected natural events left to a reviewer;
- *recovery-status* and *inside-licence* accuracy compare the matched patch with the event, over
  detected human-made events (reclamation is owed for those; a crop field "recovers" every year);
  each event row keeps the truth's status (``truth_status``), the matched patch's (``status``), its
  ``recovery_ratio`` and ``patch_id``, so the errors can be read one by one;
- *recall by resolvability* (``recall_by_width``): the recall of human-made events grouped by their
  width relative to the scene's pixel size, so a miss that is physics (a 3 m trench is a tenth of a
  30 m pixel) reads apart from one that is not. An event's width is ``2 x area / perimeter`` of its
  truth footprint (exact for a long strip, half the side of a square); the groups are
  :data:`WIDTH_GROUPS`: narrower than a third of a pixel, a third to one pixel, at least one pixel.
  The targets stay on all events.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from gmsense.classify.trust import UNCERTAIN_REASONS
from gmsense.records import HUMAN_MADE_CLASSES, PATCH_CLASSES


def _safe_ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


EVENT_COLUMNS = ["event_id", "kind", "truth_class", "human", "detected", "n_patches", "predicted", "lag_days",
                 "first_detected_lag_days", "lag_basis", "status_ok", "inside_ok", "width_m", "width_px",
                 "patch_id", "truth_status", "status", "recovery_ratio", "uncertain_rule", "predates"]

#: Groups of event width over pixel size (lower bound inclusive, upper exclusive), for ``recall_by_width``.
WIDTH_GROUPS: dict[str, tuple[float, float]] = {"under_third_px": (0.0, 1 / 3), "third_to_one_px": (1 / 3, 1.0),
                                                "at_least_one_px": (1.0, float("inf"))}


def footprint_width(geometry: Any) -> float:
    """The width of a footprint in its CRS units: ``2 x area / perimeter`` (a strip of length L and
    width w gives ``w L / (L + w)``, w for L >> w; a square of side s gives s / 2). 0 for an empty one."""
    perimeter = float(geometry.length) if geometry is not None else 0.0
    return 2 * float(geometry.area) / perimeter if perimeter > 0 else 0.0


def width_group(width_px: float | None) -> str | None:
    """The :data:`WIDTH_GROUPS` key of a width in pixels; None when unknown."""
    if width_px is None or not np.isfinite(width_px):
        return None
    return next(name for name, (lo, hi) in WIDTH_GROUPS.items() if lo <= width_px < hi)


def _iso(value: Any) -> str | None:
    """An ISO date (YYYY-MM-DD) from a string, date, Timestamp or datetime64; None when blank/NaT/NaN."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(stamp) else stamp.date().isoformat()


def _number(value: Any) -> float | None:
    """A float from a cell, None when missing or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _days(later: str, earlier: str) -> int:
    return int((np.datetime64(later, "D") - np.datetime64(earlier, "D")) / np.timedelta64(1, "D"))


def _as_bool(value: Any) -> bool:
    """``inside_licence`` as read back from GeoJSON/CSV may be a string: "false" is False."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "t")
    return bool(value) and not (isinstance(value, float) and np.isnan(value))


def _detection(ev: Any, matched: pd.DataFrame) -> tuple[str | None, str | None]:
    """(confirmed, first detected) dates of the event's detection among its matched patches; see the
    module docstring. (None, None) when every matched patch was confirmed before the event began."""
    first = [_iso(d) for d in matched.first_detected] if "first_detected" in matched else [None] * len(matched)
    confirmed = ([_iso(d) for d in matched.confirmed_on] if "confirmed_on" in matched else first)
    confirmed = [c or f for c, f in zip(confirmed, first, strict=True)]
    start = _iso(ev.get("start"))
    usable = [(c, f or c) for c, f in zip(confirmed, first, strict=True) if c and (start is None or c >= start)]
    if not usable:
        return None, None
    return min(c for c, _ in usable), min(f for _, f in usable)


def uncertain_rule(reason: object) -> str:
    """The trust rule named by an ``uncertain`` patch's ``label_reason``
    (gmsense.classify.trust.UNCERTAIN_REASONS), ``other`` for any other reason (the rule
    baseline's) and ``none`` without one."""
    if not isinstance(reason, str) or not reason:
        return "none"
    return next((rule for rule, words in UNCERTAIN_REASONS.items() if words in reason), "other")


def _rule_of(patch: Any) -> str | None:
    if patch is None or patch.disturbance_class != "uncertain":
        return None
    return uncertain_rule(patch.get("label_reason"))


class FalseAlarms(list):
    """Patches on no human-made event labelled human-made (a wrong accusation: the false alarms),
    with ``review``: those labelled ``uncertain`` (no accusation, but a reviewer's time); each item
    the natural kind the patch sits on, or None for background; ``review_rules``: per ``review``
    patch, the trust rule that made it uncertain (:func:`uncertain_rule`)."""

    def __init__(self, alarms: list[str | None], review: list[str | None] | None = None,
                 review_rules: list[str] | None = None) -> None:
        super().__init__(alarms)
        self.review = list(review or [])
        self.review_rules = list(review_rules or [])

    def __iadd__(self, other: list[str | None]) -> FalseAlarms:  # type: ignore[override]
        super().__iadd__(other)
        self.review += getattr(other, "review", [])
        self.review_rules += getattr(other, "review_rules", [])
        return self


def match_scene(truth: Any, patches: Any, tolerance_m: float = 15.0,
                pixel_m: float | None = None) -> tuple[pd.DataFrame, list[str | None]]:
    """Per truth event: detected, predicted class, lag, status and inside-licence agreement, and its
    width (:func:`footprint_width`, metres; in pixels of ``pixel_m`` metres when given); and per
    false-alarm patch the natural kind it sits on (None for background)."""
    events = []
    geoms = list(patches.geometry) if len(patches) else []
    used_by_human = np.zeros(len(geoms), dtype=bool)
    on_natural: list[str | None] = [None] * len(geoms)
    for _, ev in truth.iterrows():
        buffered = ev.geometry.buffer(tolerance_m)
        overlaps = [(g.intersection(buffered).area, i) for i, g in enumerate(geoms) if g.intersects(buffered)]
        human = ev.disturbance_class in HUMAN_MADE_CLASSES
        for _, i in overlaps:
            if human:
                used_by_human[i] = True
            elif on_natural[i] is None:
                on_natural[i] = str(ev.get("kind", "natural"))
        predates = False
        if overlaps:
            usable = [(a, i) for a, i in overlaps if _detection(ev, patches.iloc[[i]])[0] is not None]
            predates, overlaps = not usable, usable
        best = patches.iloc[max(overlaps)[1]] if overlaps else None
        observed, basis = _iso(ev.get("first_observed")), "first_observed"
        if observed is None:
            observed, basis = _iso(ev.get("start")), "start"
        lag = first_lag = None
        if best is not None:
            confirmed, first = _detection(ev, patches.iloc[[i for _, i in overlaps]])
            if observed is not None:
                lag, first_lag = _days(confirmed, observed), _days(first, observed)
        truth_status = ev.get("recovery_status")
        events.append({
            "event_id": ev.get("event_id"), "kind": ev.get("kind", ev.disturbance_class),
            "truth_class": ev.disturbance_class, "human": human, "detected": best is not None,
            "n_patches": len(overlaps), "predicted": None if best is None else best.disturbance_class,
            "lag_days": lag, "first_detected_lag_days": first_lag,
            "lag_basis": None if best is None or observed is None else basis,
            "status_ok": None if best is None or not isinstance(truth_status, str) or not truth_status
            else best.recovery_status == truth_status,
            "inside_ok": None if best is None else _as_bool(best.inside_licence) == _as_bool(ev.inside_licence),
            "width_m": round(footprint_width(ev.geometry), 2),
            "width_px": round(footprint_width(ev.geometry) / pixel_m, 4) if pixel_m else None,
            "patch_id": None if best is None else best.get("patch_id"),
            "truth_status": truth_status if isinstance(truth_status, str) and truth_status else None,
            "status": None if best is None else best.recovery_status,
            "recovery_ratio": None if best is None else _number(best.get("recovery_ratio")),
            "uncertain_rule": _rule_of(best),
            "predates": predates,
        })
    false_alarms = [on_natural[i] for i in range(len(geoms))
                    if not used_by_human[i] and patches.iloc[i].disturbance_class in HUMAN_MADE_CLASSES]
    on_review = [i for i in range(len(geoms))
                 if not used_by_human[i] and patches.iloc[i].disturbance_class == "uncertain"]
    review = [on_natural[i] for i in on_review]
    rules = [uncertain_rule(patches.iloc[i].get("label_reason")) for i in on_review]
    return pd.DataFrame(events, columns=EVENT_COLUMNS), FalseAlarms(false_alarms, review, rules)


def patch_truth(truth: Any, patches: Any, tolerance_m: float = 15.0) -> list[dict[str, Any]]:
    """Per patch (rows of ``patches``), the truth under it, with the buffers of :func:`match_scene`:
    the human-made event it overlaps most (``truth_class``, ``truth_event_id``; None when none) and
    the kind of the natural event it overlaps most (``natural_kind``), so each label can be read
    against the ground it sits on."""
    buffered = [(ev.geometry.buffer(tolerance_m), ev) for _, ev in truth.iterrows()]
    out = []
    for geometry in (patches.geometry if len(patches) else []):
        best: dict[bool, tuple[float, Any]] = {}
        for shape, ev in buffered:
            if not geometry.intersects(shape):
                continue
            area = geometry.intersection(shape).area
            human = ev.disturbance_class in HUMAN_MADE_CLASSES
            if human not in best or area > best[human][0]:
                best[human] = (area, ev)
        work, natural = best.get(True, (0, None))[1], best.get(False, (0, None))[1]
        out.append({"truth_class": None if work is None else work.disturbance_class,
                    "truth_event_id": None if work is None else work.get("event_id"),
                    "natural_kind": None if natural is None else str(natural.get("kind", "natural"))})
    return out


def _rules(events: pd.DataFrame) -> dict[str, int]:
    """How many of ``events`` were labelled ``uncertain``, by the trust rule that said so."""
    if not len(events) or "uncertain_rule" not in events:
        return {}
    return dict(Counter(events.uncertain_rule.dropna()))


def summarise(events: pd.DataFrame, false_alarms: list[str | None], n_patches: int, *, area_km2: float,
              years: float) -> dict[str, Any]:
    """Pooled metrics over every event and false alarm of one or many scenes."""
    events = events.astype({"human": bool, "detected": bool}) if len(events) else events
    human = events[events.human] if len(events) else events
    detected = human[human.detected] if len(human) else human
    detected_all = events[events.detected] if len(events) else events
    lags = pd.to_numeric(detected.lag_days, errors="coerce").dropna().to_numpy() if len(detected) else np.array([])
    first_lags = (pd.to_numeric(detected.first_detected_lag_days, errors="coerce").dropna().to_numpy()
                  if len(detected) else np.array([]))
    basis = Counter(detected.lag_basis.dropna()) if len(detected) else Counter()
    status = detected.status_ok.dropna() if len(detected) else pd.Series(dtype=bool)
    inside = detected.inside_ok.dropna() if len(detected) else pd.Series(dtype=bool)
    return {
        "events_human": len(human), "events_natural": int((~events.human).sum()) if len(events) else 0,
        "patches": n_patches,
        "recall": _safe_ratio(int(human.detected.sum()), len(human)) if len(human) else None,
        "recall_by_type": {c: _safe_ratio(int(human[human.truth_class == c].detected.sum()),
                                          int((human.truth_class == c).sum())) if len(human) else None
                           for c in HUMAN_MADE_CLASSES},
        "recall_by_width": recall_by_width(human),
        "class_accuracy": _safe_ratio(int((detected.predicted == detected.truth_class).sum()), len(detected)),
        "human_labelled_natural": _safe_ratio(int((detected.predicted == "natural").sum()), len(detected)),
        "human_labelled_uncertain": _safe_ratio(int((detected.predicted == "uncertain").sum()), len(detected)),
        "natural_labelled_uncertain": _safe_ratio(
            int((detected_all[~detected_all.human.astype(bool)].predicted == "uncertain").sum()),
            int((~detected_all.human.astype(bool)).sum())) if len(detected_all) else None,
        "false_alarms": len(false_alarms),
        "false_alarms_on_natural": dict(Counter(k for k in false_alarms if k)),
        "false_alarms_per_km2_year": round(len(false_alarms) / (area_km2 * years), 4) if area_km2 and years else None,
        "review_load": len(getattr(false_alarms, "review", [])),
        "review_load_on_natural": dict(Counter(k for k in getattr(false_alarms, "review", []) if k)),
        "review_load_by_rule": dict(Counter(getattr(false_alarms, "review_rules", []))),
        "uncertain_rules_human": _rules(detected),
        "uncertain_rules_natural": _rules(detected_all[~detected_all.human.astype(bool)]) if len(detected_all) else {},
        "review_load_per_km2_year": round(len(getattr(false_alarms, "review", [])) / (area_km2 * years), 4)
        if area_km2 and years else None,
        "median_lag_days": float(np.median(lags)) if lags.size else None,
        "p90_lag_days": float(np.percentile(lags, 90)) if lags.size else None,
        "median_first_detected_lag_days": float(np.median(first_lags)) if first_lags.size else None,
        "lag_events": int(lags.size),
        "lag_from_start_date": basis.get("start", 0),
        "missed_patch_predates_event": int(human.predates.astype(bool).sum()) if "predates" in human else 0,
        "recovery_status_accuracy": _safe_ratio(int(status.sum()), len(status)),
        "inside_licence_accuracy": _safe_ratio(int(inside.sum()), len(inside)),
        "confusion": {t: dict(Counter(detected_all[detected_all.truth_class == t].predicted)) if len(detected_all)
                      else {} for t in PATCH_CLASSES},
        "area_km2": round(area_km2, 3), "years": years,
    }


def recall_by_width(events: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Recall and event count per :data:`WIDTH_GROUPS` group of ``events`` (rows of
    :func:`match_scene`; human-made ones are taken), by ``width_px``; events without a pixel size
    fall in no group."""
    out: dict[str, dict[str, Any]] = {name: {"recall": None, "events": 0} for name in WIDTH_GROUPS}
    if not len(events) or "width_px" not in events:
        return out
    human = events[events.human.astype(bool)]
    groups = [width_group(None if pd.isna(w) else float(w)) for w in human.width_px]
    for name in WIDTH_GROUPS:
        chosen = human[[g == name for g in groups]]
        out[name] = {"recall": _safe_ratio(int(chosen.detected.astype(bool).sum()), len(chosen)),
                     "events": len(chosen)}
    return out


def score(truth: Any, patches: Any, *, area_km2: float, years: float, tolerance_m: float = 15.0,
          pixel_m: float | None = None) -> dict[str, Any]:
    """Metrics of one scene (see the module docstring); ``pixel_m`` its pixel size, metres."""
    events, false_alarms = match_scene(truth, patches, tolerance_m, pixel_m)
    return summarise(events, false_alarms, len(patches), area_km2=area_km2, years=years)
