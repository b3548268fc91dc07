"""Flags from patches and licence attributes.

First rules (the full, configurable set in configs/rules.yaml is a later step):
``outside_licence`` (critical): human-made disturbance reaching outside the licence boundary;
``new_disturbance`` (warning): human-made disturbance inside the licence, for review.
Natural change is not flagged.
"""

from __future__ import annotations

from gmsense.records import FlagRecord, PatchRecord

HUMAN_MADE = ("trench", "pad", "track", "clearing")


def _ha(m2: float) -> str:
    return f"{m2 / 10_000:.2f} ha"


def flags_for(site_id: str, patches: list[PatchRecord]) -> list[FlagRecord]:
    """The flags one licence's patches raise."""
    flags = []
    for i, p in enumerate(patches):
        if p.disturbance_class not in HUMAN_MADE:
            continue
        evidence = {"area_m2": round(p.area_m2, 1), "area_outside_m2": round(p.area_outside_m2, 1),
                    "first_detected": p.first_detected, "confirmed_on": p.confirmed_on,
                    "disturbance_class": p.disturbance_class, "confidence": p.confidence}
        if p.area_outside_m2 > 0:
            flags.append(FlagRecord(
                "outside_licence", "critical",
                f"A {p.disturbance_class} of {_ha(p.area_m2)} first seen on {p.first_detected} lies "
                f"{_ha(p.area_outside_m2)} outside the boundary of licence {site_id}.",
                i, evidence))
        else:
            flags.append(FlagRecord(
                "new_disturbance", "warning",
                f"A {p.disturbance_class} of {_ha(p.area_m2)} was first seen on {p.first_detected} "
                f"inside licence {site_id}; check it against the approved work programme.",
                i, evidence))
    return flags
