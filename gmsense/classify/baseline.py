"""The rule-based first classifier: a disturbance class and a confidence per patch.

Classes: ``trench`` (straight, narrow line), ``track`` (curved narrow line), ``pad`` (small
compact patch), ``clearing`` (larger compact patch) and ``natural`` (darkening without bright
soil, as after fire or flood, or very large compact change). Thresholds are in
:class:`gmsense.config.ClassifySettings`. The learned classifier replaces it; this stays as the
baseline (``--detector rules``).
"""

from __future__ import annotations

import math

from gmsense.config import ClassifySettings
from gmsense.detect.patches import Patch


def _is_dark_change(spectral: dict[str, float], settings: ClassifySettings) -> bool:
    """NIR fell and the surface got no brighter in SWIR (or red): char, water or shadow, not soil."""
    nir_ratio = spectral.get("nir_ratio", math.nan)
    if not nir_ratio < settings.dark_after_nir_ratio:
        return False
    swir_ratio = spectral.get("swir1_ratio", math.nan)
    if not math.isnan(swir_ratio):
        return swir_ratio < 0.85
    return spectral.get("red_ratio", math.nan) < 1.5


def classify_patch(patch: Patch, settings: ClassifySettings) -> tuple[str, float]:
    """The class of one patch and a confidence in [0, 1] (a heuristic margin, not a probability)."""
    s = patch.shape
    if _is_dark_change(patch.spectral, settings):
        return "natural", 0.7
    linear = s["elongation"] >= settings.linear_min_elongation and s["width_m"] <= settings.linear_max_width_m
    if linear:
        margin = min(s["elongation"] / settings.linear_min_elongation, 3.0) / 3.0
        if s["curvature"] <= settings.trench_max_curvature:
            return "trench", round(0.5 + 0.4 * margin, 3)
        return "track", round(0.5 + 0.4 * margin, 3)
    area = s["area_px_m2"]
    if area <= settings.pad_max_area_m2:
        return "pad", round(0.5 + 0.4 * (1 - area / settings.pad_max_area_m2), 3)
    if area >= settings.natural_min_area_m2:
        return "natural", 0.6
    return "clearing", round(0.5 + 0.4 * min(area / settings.natural_min_area_m2, 1.0), 3)
