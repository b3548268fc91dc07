"""Recovery of each patch against an undisturbed reference ring in the same images.

For every growing season from the one the patch was detected in, the median index of the patch
and of a ring around it (``ring_inner_m``..``ring_outer_m`` out, excluding every patch) are
taken per date; their difference ``relative`` cancels season, drought and atmosphere. With
``baseline`` the relative value of the season before detection, ``trough`` the lowest relative
value since, and ``current`` that of the latest season:

    recovery_ratio = (current - trough) / (baseline - trough)

the share of the lost index regained. Status: ``active`` if detected in the latest season,
``recovered`` at ratio >= ``recovered_ratio``, ``recovering`` at >= ``recovering_ratio``, else
``not_recovering``.
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.config import RecoverySettings
from gmsense.records import RecoveryObservation

RING_INNER_M = 20.0
RING_OUTER_M = 100.0
MIN_LOSS = 0.03  # below this baseline-trough gap (index units) there is nothing to recover


def ring_mask(geometry: BaseGeometry, all_patches: list[BaseGeometry], shape: tuple[int, int],
              transform: Affine) -> np.ndarray:
    """Pixels 20-100 m around ``geometry``, not within 20 m of any patch."""
    ring = geometry.buffer(RING_OUTER_M).difference(unary_union([g.buffer(RING_INNER_M) for g in all_patches]))
    if ring.is_empty:
        return np.zeros(shape, dtype=bool)
    return geometry_mask([ring], out_shape=shape, transform=transform, invert=True)


def _daily_median(values: np.ndarray) -> np.ndarray:
    """(T, P) -> (T,) median over pixels per date, NaN where none is clear."""
    out = np.full(values.shape[0], np.nan)
    seen = np.isfinite(values).any(axis=1)
    if seen.any():
        out[seen] = np.nanmedian(values[seen], axis=1)
    return out


def trajectory(index: np.ndarray, times: np.ndarray, patch_mask: np.ndarray, ring: np.ndarray,
               first_detected: np.datetime64, index_name: str) -> list[RecoveryObservation]:
    """Per-season medians of patch and ring for the season before detection and every later one.

    ``index`` (T, y, x) growing-season index values, NaN where not clear.
    """
    years = times.astype("datetime64[Y]").astype(int) + 1970
    detected_year = int(first_detected.astype("datetime64[Y]").astype(int) + 1970)
    patch_daily = _daily_median(index[:, patch_mask])
    ring_daily = _daily_median(index[:, ring])
    out = []
    for season in range(detected_year - 1, int(years.max()) + 1):
        use = years == season
        if season == detected_year:
            use &= times >= first_detected
        both = use & np.isfinite(patch_daily) & np.isfinite(ring_daily)
        if not both.any():
            continue
        p, r = float(np.median(patch_daily[both])), float(np.median(ring_daily[both]))
        out.append(RecoveryObservation(season, index_name, int(both.sum()), p, r, p - r))
    return out


def recovery_status(observations: list[RecoveryObservation], first_detected: np.datetime64,
                    latest_season: int, settings: RecoverySettings) -> tuple[str, float | None]:
    """Status and recovery ratio from a trajectory (see module docstring)."""
    detected_year = int(first_detected.astype("datetime64[Y]").astype(int) + 1970)
    if detected_year >= latest_season:
        return "active", 0.0
    baseline = [o.relative for o in observations if o.season == detected_year - 1]
    since = [o for o in observations if o.season >= detected_year]
    if not baseline or not since:
        return "not_recovering", None
    trough = min(o.relative for o in since)
    loss = baseline[0] - trough
    if loss < MIN_LOSS:
        return "recovered", 1.0
    ratio = (since[-1].relative - trough) / loss
    if ratio >= settings.recovered_ratio:
        status = "recovered"
    elif ratio >= settings.recovering_ratio:
        status = "recovering"
    else:
        status = "not_recovering"
    return status, round(float(ratio), 3)
