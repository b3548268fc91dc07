"""Signatures of the natural agents, measured per patch from its own observations.

A patch may be called ``natural`` only when a named agent explains it (the decision is
:mod:`gmsense.classify.trust`); this module only measures. From the patch's mean reflectance per
growing-season date (``series``: band -> (T,) unitless reflectance, NaN where not clear) and the
seasons around its first detection:

- ``sig_dnbr``: NBR before less NBR after (medians of the season before and of the dates from
  ``first_detected`` to the end of that season; NBR = (nir - swir2) / (nir + swir2)). Burn
  severity scales with it (Key and Benson 2006, Landscape Assessment: 0.10 low, 0.27 moderate,
  0.66 high severity);
- ``sig_visible_ratio``: mean visible reflectance (blue, green, red) after over before: char and
  water keep the surface dark, bare soil, spoil and gravel brighten it;
- ``sig_nir_after``: NIR after (unitless);
- ``sig_water_max``: the highest NDWI (McFeeters 1996: (green - nir) / (green + nir)) of the patch
  on the dates after ``first_detected`` in its season: above 0 the patch was mostly open water
  on some date; ``sig_water_last``: NDWI on the last clear date of that season (a flood recedes,
  a pit lake stays);
- ``sig_cycle_repeat``: how much the patch's NDVI fell at the same time of year in the season
  before, as a share of this year's drop (``(before_median - before_at_same_days) /
  (before_median - after_median)``): near 1 for a field harvested every year, near 0 for a
  one-off change;
- ``sig_prior_amplitude``: the NDVI range (90th less 10th percentile) over the season before: a
  crop's yearly cycle is wide, forest and grass are flat;
- ``sig_regreen``: how far the patch had greened again this season, before the change, above the
  low of the season before, as a share of the drop: a field re-grows every spring, a pit or a
  spreading clearing does not;
- ``sig_ndvi_before``: the patch's NDVI before (land cover: forest canopy is high);
- ``sig_next_recovery``: the share of the drop regained in the following season's median NDVI
  (NaN when there is no following season; negative when the decline went on);
- ``sig_decline_before``: how much the median NDVI had already fallen from two seasons before to
  the season before, as a share of the drop (a canopy dying back declines for years; wind fells it
  at once).

Annual composites (``extended``): the composite of the fire's year may be made of dates before the
fire or straddling it (a best-available-pixel composite picks each pixel's date near a target
day), so the burn may show only in the next composite. As Key and Benson (2006) assess severity
on the growing season after the fire (their *extended assessment*) as well as right after it
(*initial*), the fire's measurements (``sig_dnbr``, ``sig_visible_ratio``, ``sig_nir_ratio``: NIR
after over before, and the ranks below) are then read on the next season when its NBR drop is the
larger; ``sig_fire_extended`` is 1 when they were.

Imagery rescaled per image (``ranks``, e.g. min-max rescaled composites: every band of every
image spans 0..1) has no reflectance: a ratio after / before of a dark surface (canopy, char)
measures the rescaling more than the ground. What survives any rescaling that keeps each image's
order is the patch's place in its own scene: ``sig_visible_rank_after`` and
``sig_nir_rank_after`` (and ``_before``), the share of the scene's clear pixels darker than the
patch's mean visible brightness and NIR on the dates after (before). Char is the darkest land
surface in the NIR (about 0.06 against 0.2-0.45 for soils and vegetation) while bare soil, spoil
and gravel are the brightest in the visible of a vegetated scene (Pereira 1999; Trigg and Flasse
2001): :mod:`gmsense.classify.trust` tests the fire's char on these ranks there.

Context measured elsewhere (:func:`gmsense.detect.features.add_patch_context`) completes the
evidence: ``ring_drop_near``/``ring_drop_far`` (the surroundings share the change: windthrow,
dieback, a dry year) and the patch's shape (``solidity``).
"""

from __future__ import annotations

import numpy as np

from gmsense.config import SeasonSettings
from gmsense.cube.ops import normalized_difference, season_days, season_year
from gmsense.detect.lines import finite_quantile

#: Dates within this many days of the same day of year count as "the same time of year".
SAME_DAYS_WINDOW = 20


def _median(values: np.ndarray) -> float:
    return finite_quantile(values, 0.5)


def signatures(series: dict[str, np.ndarray], times: np.ndarray, first_detected: np.datetime64,
               season: SeasonSettings | None = None, *, extended: bool = False) -> dict[str, float]:
    """The ``sig_*`` measurements (module docstring) of one patch; a measurement whose bands or
    dates are missing is left out. ``series`` may hold ``visible_rank`` and ``nir_rank`` (the
    patch's rank in its scene per date, imagery rescaled per image); ``extended``: annual
    composites, whose fire measurements may read the next season (the module docstring)."""
    times = np.asarray(times).astype("datetime64[ns]")
    years = season_year(times, season)
    year = int(season_year(first_detected, season))
    before_t = years == year - 1
    after_t = (years == year) & (times >= first_detected)
    next_t = years == year + 1
    out: dict[str, float] = {}
    nir, red = series.get("nir"), series.get("red")
    if nir is None or red is None:
        return out
    ndvi = normalized_difference(nir, red)
    out["sig_ndvi_before"] = _median(ndvi[before_t])
    out["sig_nir_after"] = _median(nir[after_t])
    visible = [series[b] for b in ("blue", "green", "red") if b in series]
    brightness = np.mean(visible, axis=0)
    before_bright, after_bright = _median(brightness[before_t]), _median(brightness[after_t])
    if before_bright > 0:
        out["sig_visible_ratio"] = after_bright / before_bright
    if "swir2" in series:
        nbr = normalized_difference(nir, series["swir2"])
        out["sig_dnbr"] = _median(nbr[before_t]) - _median(nbr[after_t])
        out.update(_fire_window(series, nbr, brightness, before_t, after_t, next_t, out["sig_dnbr"], extended))
    if "green" in series:
        ndwi = normalized_difference(series["green"], nir)[after_t]
        seen = ndwi[np.isfinite(ndwi)]
        if seen.size:
            out["sig_water_max"], out["sig_water_last"] = float(seen.max()), float(seen[-1])
    drop = out["sig_ndvi_before"] - _median(ndvi[after_t])
    prior = ndvi[before_t]
    if np.isfinite(prior).sum() >= 3:
        out["sig_prior_amplitude"] = float(np.nanpercentile(prior, 90) - np.nanpercentile(prior, 10))
        day = season_days(times, years)
        after_days = day[after_t]
        if after_days.size and drop > 0:
            same = before_t & (day >= after_days.min() - SAME_DAYS_WINDOW) & (day <= after_days.max()
                                                                              + SAME_DAYS_WINDOW)
            out["sig_cycle_repeat"] = (out["sig_ndvi_before"] - _median(ndvi[same])) / drop
        early_t = (years == year) & (times < first_detected)
        if early_t.any() and drop > 0:
            out["sig_regreen"] = (_median(ndvi[early_t]) - float(np.nanpercentile(prior, 10))) / drop
    if next_t.any() and drop > 0:
        out["sig_next_recovery"] = (_median(ndvi[next_t]) - _median(ndvi[after_t])) / drop
    earlier_t = years == year - 2
    if earlier_t.any() and drop > 0:
        out["sig_decline_before"] = (_median(ndvi[earlier_t]) - out["sig_ndvi_before"]) / drop
    return {k: v for k, v in out.items() if np.isfinite(v)}


def _fire_window(series: dict[str, np.ndarray], nbr: np.ndarray, brightness: np.ndarray, before_t: np.ndarray,
                 after_t: np.ndarray, next_t: np.ndarray, initial_dnbr: float, extended: bool) -> dict[str, float]:
    """The fire's measurements on the dates after the change, or (``extended``: annual composites) on
    the next season when its NBR drop is the larger (the module docstring)."""
    out: dict[str, float] = {}
    window = after_t
    if extended and next_t.any():
        later = _median(nbr[before_t]) - _median(nbr[next_t])
        if later > initial_dnbr or not np.isfinite(initial_dnbr):
            window = next_t
            out["sig_dnbr"] = later
            before_bright = _median(brightness[before_t])
            if before_bright > 0:
                out["sig_visible_ratio"] = _median(brightness[next_t]) / before_bright
        out["sig_fire_extended"] = float(window is next_t)
    if extended:
        nir_before = _median(series["nir"][before_t])
        if nir_before > 0:
            out["sig_nir_ratio"] = _median(series["nir"][window]) / nir_before
    for name in ("visible_rank", "nir_rank"):
        if name in series:
            out[f"sig_{name}_before"] = _median(series[name][before_t])
            out[f"sig_{name}_after"] = _median(series[name][window])
    return out
