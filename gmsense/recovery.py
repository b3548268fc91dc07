"""Recovery of each patch against an undisturbed reference ring in the same images.

For every growing season from the one the patch was detected in, the median index of the patch
and of a ring around it (``ring_inner_m``..``ring_outer_m`` out, excluding every patch) are
taken per date (:func:`trajectory`). The recovery ratio is taken on a per-season series of the two
(:func:`ratio_series`): by default the patch's vegetation cover relative to its ring, ``(patch -
soil) / (ring - soil)`` for NDVI (the dimidiate pixel model, as in gmsense.restoration), which
cancels season and drought for vegetation and leaves bare ground at 0 whether the ring dries or
greens; or their difference ``relative = patch - ring`` (stored with every observation; the series
for other indices, for a ring not green enough to be a reference, and with
``recovery.ratio_measure: difference``). With ``baseline`` the series' value in the season before
detection, ``trough`` the lowest value since, and ``current`` that of the latest season:

    recovery_ratio = (current - trough) / (baseline - trough)

the share of the lost cover (index) regained. Status: ``active`` if detected in the latest season,
``recovered`` at ratio >= ``recovered_ratio`` x ceiling (or an index loss under :data:`MIN_LOSS`),
``recovering`` at >= ``recovering_ratio`` x ceiling, else ``not_recovering``.

The ceiling (:func:`regrowth_ceiling`) is the share of the loss that the cover reclaimed ground
regrows into first, herbaceous cover, can regain against the patch's own reference: around a ring
greener than ``herbaceous_ndvi`` (forest, a maize field at its peak) a fully grassed patch stays
below the ring, so "80 % regrown" is 80 % of what grass can give back; around grassland or steppe
the ceiling is 1 and the ratios apply as they are. It is the ring's relative vegetation cover as
in gmsense.restoration, ``(herbaceous_ndvi - soil_ndvi) / (ring - soil_ndvi)`` with the ring's
median NDVI of the latest season (the same images as ``current``), and it is the same for a mixed
pixel (a narrow trench in a 30 m pixel loses and regains the same share of each). The stored
``recovery_ratio`` is the plain share regained (without the ceiling).

Ground disturbed again (a later break of the same pixels, gmsense.detect.change.later_breaks) is
the later disturbance's patch from the new break on: the earlier patch's trajectory leaves those
pixels out from then on (``trajectory(..., until=...)``), so its status and ratio say how far it had
recovered before it was disturbed again, and the later patch is followed from its own detection.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense._numeric import nan_median
from gmsense._parallel import parallel_map
from gmsense.config import RecoverySettings, SeasonSettings
from gmsense.cube.ops import season_year
from gmsense.records import RecoveryObservation

QUAD_SEGS = 16  # segments per quarter circle of the rings' buffers (shapely's default for a geometry's buffer)
RING_INNER_M = 20.0
RING_OUTER_M = 100.0
MIN_LOSS = 0.03  # below this baseline-trough gap (index units) there is nothing to recover
#: A ring less than this much greener than bare ground (NDVI) in any season is no vegetated reference:
#: the patch's cover relative to it is not taken (the plain difference is).
MIN_RING_ABOVE_SOIL = 0.1


def ring_exclusion(all_patches: list[BaseGeometry]) -> BaseGeometry:
    """Everything within 20 m of a patch: no ring reaches into it (compute once per scene)."""
    return unary_union(shapely.buffer(np.array(all_patches, dtype=object), RING_INNER_M, quad_segs=QUAD_SEGS))


def ring_outlines(geometries: list[BaseGeometry], exclusion: BaseGeometry, threads: int = 1) -> list[BaseGeometry]:
    """The ring of each of ``geometries`` as a shape: up to 100 m around it, less ``exclusion``
    (:func:`ring_exclusion`), what :func:`ring_mask` burns; in one vectorised call per thread's
    share of them (GEOS works without the GIL; the same shapes)."""
    if not geometries:
        return []
    blocks = np.array_split(np.array(geometries, dtype=object), min(max(threads, 1), len(geometries)))

    def outline(block: np.ndarray) -> np.ndarray:
        return shapely.difference(shapely.buffer(block, RING_OUTER_M, quad_segs=QUAD_SEGS), exclusion)

    return [ring for part in parallel_map(outline, blocks, threads) for ring in part]


def ring_mask(geometry: BaseGeometry, all_patches: list[BaseGeometry], shape: tuple[int, int],
              transform: Affine, exclusion: BaseGeometry | None = None,
              outline: BaseGeometry | None = None) -> np.ndarray:
    """Pixels 20-100 m around ``geometry``, not within 20 m of any patch (``exclusion``: the
    :func:`ring_exclusion` of ``all_patches``, when already computed; ``outline``: the ring's
    shape from :func:`ring_outlines`, when already computed)."""
    if outline is None:
        if exclusion is None:
            exclusion = ring_exclusion(all_patches)
        outline = geometry.buffer(RING_OUTER_M, quad_segs=QUAD_SEGS).difference(exclusion)
    return burn(outline, shape, transform)


def burn(polygon: BaseGeometry, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    """Pixels (bool, ``shape``) whose centre lies in ``polygon`` on the grid ``transform``, burnt
    in the window of the grid that holds the polygon only (a ring is small beside its scene)."""
    mask = np.zeros(shape, dtype=bool)
    if polygon.is_empty:
        return mask
    minx, miny, maxx, maxy = polygon.bounds
    corners = [~transform * (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    col0, col1 = max(math.floor(min(cols)) - 1, 0), min(math.ceil(max(cols)) + 1, shape[1])
    row0, row1 = max(math.floor(min(rows)) - 1, 0), min(math.ceil(max(rows)) + 1, shape[0])
    if col0 >= col1 or row0 >= row1:
        return mask
    window = transform * Affine.translation(col0, row0)
    mask[row0:row1, col0:col1] = geometry_mask([polygon], out_shape=(row1 - row0, col1 - col0), transform=window,
                                               invert=True)
    return mask


def trajectory(index: np.ndarray, times: np.ndarray, patch_mask: np.ndarray, ring: np.ndarray,
               first_detected: np.datetime64, index_name: str,
               until: np.ndarray | None = None, season: SeasonSettings | None = None) -> list[RecoveryObservation]:
    """Per-season medians of patch and ring for the season before detection and every later one.

    ``index`` (T, y, x) growing-season index values, NaN where not clear. ``until`` (y, x)
    datetime64, optional: the date from which a pixel's ground belongs to a later disturbance
    (NaT: never); its observations from then on are not the patch's, so the recovery of a patch
    disturbed again is followed up to the new disturbance (a season in which none of its pixels
    is still its own is left out).
    """
    years = season_year(times, season)
    detected_year = int(season_year(first_detected, season))
    patch_values = index[:, patch_mask]
    if until is not None and (~np.isnat(cut := until[patch_mask])).any():
        patch_values = np.where(np.asarray(times)[:, None] >= cut[None, :], np.nan, patch_values)
    patch_daily = nan_median(patch_values.T)  # per date, over the pixels; NaN where none is clear
    ring_daily = nan_median(index[:, ring].T)
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


def recovery_metrics(seasons: np.ndarray, relative: np.ndarray, disturbance_season: int,
                     reference_seasons: tuple[int, ...] | None = None, absolute: np.ndarray | None = None,
                     target: float = 0.8) -> dict[str, float | None]:
    """Recovery metrics of one patch from its per-season trajectory (index units, per season).

    ``relative`` is the patch minus its reference ring per season (``absolute``, optional, the
    patch alone). Definitions (after Frazier et al. 2018, Remote Sens. Environ. 205:32-45, and
    the spectral-recovery package):

    - ``baseline``: mean of ``relative`` over ``reference_seasons`` (default: the season before
      ``disturbance_season``);
    - ``trough``: the lowest ``relative`` in the disturbance season or the one after, at
      ``trough_season``; ``magnitude`` = baseline - trough (the index lost);
    - ``recovery_ratio``: (latest - trough) / magnitude, the share of the loss regained by the
      latest season; ``y2r``: seasons from the trough to the first season whose ratio reaches
      ``target`` (None if not yet);
    - ``rri``: (max relative 4-5 seasons after the trough - trough) / magnitude (Frazier's RRI);
    - ``yryr``: (relative 5 seasons after the trough - trough) / 5, index units per season;
    - ``r80p``: max ``absolute`` 4-5 seasons after the trough / (0.8 x mean absolute over the
      reference seasons) (Frazier's R80P; needs ``absolute``);
    - ``slope``: least-squares slope of ``relative`` from the trough on, index units per season.
    """
    seasons = np.asarray(seasons, dtype=int)
    relative = np.asarray(relative, dtype=float)
    reference = reference_seasons or (disturbance_season - 1,)
    ref_mask = np.isin(seasons, reference) & np.isfinite(relative)
    window = np.isin(seasons, (disturbance_season, disturbance_season + 1)) & np.isfinite(relative)
    out: dict[str, float | None] = dict.fromkeys(
        ("baseline", "trough", "trough_season", "magnitude", "recovery_ratio", "y2r", "rri", "yryr", "r80p", "slope"))
    if not ref_mask.any() or not window.any():
        return out
    baseline = float(relative[ref_mask].mean())
    trough_i = int(np.flatnonzero(window)[np.argmin(relative[window])])
    trough, trough_season = float(relative[trough_i]), int(seasons[trough_i])
    magnitude = baseline - trough
    out.update(baseline=baseline, trough=trough, trough_season=trough_season, magnitude=magnitude)
    after = (seasons >= trough_season) & np.isfinite(relative)
    if magnitude <= 0:
        return out
    ratios = (relative - trough) / magnitude
    out["recovery_ratio"] = float(ratios[after][-1])
    reached = np.flatnonzero(after & (ratios >= target))
    out["y2r"] = float(seasons[reached[0]] - trough_season) if reached.size else None
    late = after & np.isin(seasons, (trough_season + 4, trough_season + 5))
    if late.any():
        out["rri"] = float((relative[late].max() - trough) / magnitude)
        if absolute is not None:
            absolute = np.asarray(absolute, dtype=float)
            pre = absolute[ref_mask].mean()
            out["r80p"] = float(absolute[late].max() / (0.8 * pre)) if pre else None
    five = after & (seasons == trough_season + 5)
    if five.any():
        out["yryr"] = float((relative[five][0] - trough) / 5)
    if after.sum() >= 2:
        out["slope"] = float(np.polyfit(seasons[after], relative[after], 1)[0])
    return out


def regrowth_ceiling(ring_ndvi: float, settings: RecoverySettings) -> float:
    """The share of an NDVI loss herbaceous regrowth can regain against a reference of ``ring_ndvi``
    (see the module docstring): ``(herbaceous_ndvi - soil_ndvi) / (ring_ndvi - soil_ndvi)``, at most
    1 (a ring no greener than herbaceous cover, or ``herbaceous_ndvi`` None)."""
    herbaceous = settings.herbaceous_ndvi
    if herbaceous is None or not np.isfinite(ring_ndvi) or ring_ndvi <= herbaceous:
        return 1.0
    return float((herbaceous - settings.soil_ndvi) / (ring_ndvi - settings.soil_ndvi))


def uses_cover(observations: list[RecoveryObservation], settings: RecoverySettings) -> bool:
    """Whether the recovery ratio of this trajectory is taken on the relative vegetation cover
    (:func:`ratio_series`): NDVI, ``ratio_measure: cover``, and a ring at least
    :data:`MIN_RING_ABOVE_SOIL` greener than bare ground in every season."""
    return (settings.ratio_measure == "cover" and bool(observations)
            and all(o.index == "ndvi" and o.ring_value - settings.soil_ndvi >= MIN_RING_ABOVE_SOIL
                    for o in observations))


def ratio_series(observations: list[RecoveryObservation], settings: RecoverySettings) -> tuple[np.ndarray, np.ndarray]:
    """Seasons and the series the recovery ratio is taken on (module docstring): the patch's NDVI
    cover relative to its ring, ``(patch - soil_ndvi) / (ring - soil_ndvi)``, where
    :func:`uses_cover`; else the difference ``patch - ring``."""
    seasons = np.array([o.season for o in observations], dtype=int)
    patch = np.array([o.patch_value for o in observations], dtype=float)
    ring = np.array([o.ring_value for o in observations], dtype=float)
    if uses_cover(observations, settings):
        return seasons, (patch - settings.soil_ndvi) / (ring - settings.soil_ndvi)
    return seasons, patch - ring


def recovery_status(observations: list[RecoveryObservation], first_detected: np.datetime64,
                    latest_season: int, settings: RecoverySettings,
                    season: SeasonSettings | None = None) -> tuple[str, float | None]:
    """Status and recovery ratio from a trajectory (see module docstring; ``season``: see
    gmsense.cube.ops.season_year)."""
    detected_year = int(season_year(first_detected, season))
    if detected_year >= latest_season:
        return "active", 0.0
    seasons = np.array([o.season for o in observations])
    loss = recovery_metrics(seasons, np.array([o.relative for o in observations]), detected_year)
    if loss["baseline"] is None:
        return "not_recovering", None
    if loss["magnitude"] < MIN_LOSS:  # index units, whatever the ratio's series
        return "recovered", 1.0
    metrics = recovery_metrics(*ratio_series(observations, settings), detected_year)
    ratio = metrics["recovery_ratio"]
    if ratio is None:  # no cover lost against the ring (it lost as much): nothing to recover
        return "recovered", 1.0
    latest = observations[-1]
    ceiling = regrowth_ceiling(latest.ring_value, settings) if latest.index == "ndvi" else 1.0
    if ratio >= settings.recovered_ratio * ceiling:
        status = "recovered"
    elif ratio >= settings.recovering_ratio * ceiling:
        status = "recovering"
    else:
        status = "not_recovering"
    return status, round(float(ratio), 3)
