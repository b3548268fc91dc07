"""Scoring detected patches against synthetic truth.

Rules (both frames in one projected CRS, metres):

- a truth event is *detected* when a patch intersects its footprint buffered by ``tolerance_m``
  (misregistration); its *predicted class* is that of the matched patch with the largest overlap;
- a patch overlapping no buffered human-made event is a *false alarm* unless it is classified
  ``natural``; a false alarm overlapping a natural event (fire, flood, windthrow, harvest) counts
  as "on natural change";
- *lag* is ``first_detected - first_observed`` in days (the event's first clear growing-season
  observation; its start date when that is unknown);
- *recovery-status* and *inside-licence* accuracy compare the matched patch with the event, over
  detected human-made events (reclamation is owed for those; a crop field "recovers" every year).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

HUMAN_MADE = ("trench", "pad", "track", "clearing")
CLASSES = (*HUMAN_MADE, "natural")


def _safe_ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


EVENT_COLUMNS = ["kind", "truth_class", "human", "detected", "predicted", "lag_days", "status_ok", "inside_ok"]


def match_scene(truth: Any, patches: Any, tolerance_m: float = 15.0) -> tuple[pd.DataFrame, list[str | None]]:
    """Per truth event: detected, predicted class, lag, status and inside-licence agreement; and per
    false-alarm patch the natural kind it sits on (None for background)."""
    events = []
    geoms = list(patches.geometry) if len(patches) else []
    used_by_human = np.zeros(len(geoms), dtype=bool)
    on_natural: list[str | None] = [None] * len(geoms)
    for _, ev in truth.iterrows():
        buffered = ev.geometry.buffer(tolerance_m)
        overlaps = [(g.intersection(buffered).area, i) for i, g in enumerate(geoms) if g.intersects(buffered)]
        human = ev.disturbance_class in HUMAN_MADE
        for _, i in overlaps:
            if human:
                used_by_human[i] = True
            elif on_natural[i] is None:
                on_natural[i] = str(ev.get("kind", "natural"))
        best = patches.iloc[max(overlaps)[1]] if overlaps else None
        observed = next((d for d in (ev.get("first_observed"), ev.get("start")) if isinstance(d, str) and d), None)
        truth_status = ev.get("recovery_status")
        events.append({
            "kind": ev.get("kind", ev.disturbance_class), "truth_class": ev.disturbance_class, "human": human,
            "detected": best is not None,
            "predicted": None if best is None else best.disturbance_class,
            "lag_days": None if best is None or not observed else
            int((np.datetime64(best.first_detected) - np.datetime64(observed)) / np.timedelta64(1, "D")),
            "status_ok": None if best is None or not truth_status else best.recovery_status == truth_status,
            "inside_ok": None if best is None else bool(best.inside_licence) == bool(ev.inside_licence),
        })
    false_alarms = [on_natural[i] for i in range(len(geoms))
                    if not used_by_human[i] and patches.iloc[i].disturbance_class != "natural"]
    return pd.DataFrame(events, columns=EVENT_COLUMNS), false_alarms


def summarise(events: pd.DataFrame, false_alarms: list[str | None], n_patches: int, *, area_km2: float,
              years: float) -> dict[str, Any]:
    """Pooled metrics over every event and false alarm of one or many scenes."""
    events = events.astype({"human": bool, "detected": bool}) if len(events) else events
    human = events[events.human] if len(events) else events
    detected = human[human.detected] if len(human) else human
    detected_all = events[events.detected] if len(events) else events
    lags = pd.to_numeric(detected.lag_days, errors="coerce").dropna().to_numpy() if len(detected) else np.array([])
    status = detected.status_ok.dropna() if len(detected) else pd.Series(dtype=bool)
    inside = detected.inside_ok.dropna() if len(detected) else pd.Series(dtype=bool)
    return {
        "events_human": len(human), "events_natural": int((~events.human).sum()) if len(events) else 0,
        "patches": n_patches,
        "recall": _safe_ratio(int(human.detected.sum()), len(human)) if len(human) else None,
        "recall_by_type": {c: _safe_ratio(int(human[human.truth_class == c].detected.sum()),
                                          int((human.truth_class == c).sum())) if len(human) else None
                           for c in HUMAN_MADE},
        "class_accuracy": _safe_ratio(int((detected.predicted == detected.truth_class).sum()), len(detected)),
        "false_alarms": len(false_alarms),
        "false_alarms_on_natural": dict(Counter(k for k in false_alarms if k)),
        "false_alarms_per_km2_year": round(len(false_alarms) / (area_km2 * years), 4) if area_km2 and years else None,
        "median_lag_days": float(np.median(lags)) if lags.size else None,
        "p90_lag_days": float(np.percentile(lags, 90)) if lags.size else None,
        "recovery_status_accuracy": _safe_ratio(int(status.sum()), len(status)),
        "inside_licence_accuracy": _safe_ratio(int(inside.sum()), len(inside)),
        "confusion": {t: dict(Counter(detected_all[detected_all.truth_class == t].predicted)) if len(detected_all)
                      else {} for t in CLASSES},
        "area_km2": round(area_km2, 3), "years": years,
    }


def score(truth: Any, patches: Any, *, area_km2: float, years: float, tolerance_m: float = 15.0) -> dict[str, Any]:
    """Metrics of one scene (see the module docstring)."""
    events, false_alarms = match_scene(truth, patches, tolerance_m)
    return summarise(events, false_alarms, len(patches), area_km2=area_km2, years=years)
