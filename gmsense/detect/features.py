"""Per-patch features: the patch's reflectance and indices before and after the change, and the
patch against its surroundings.

Spectra (:func:`add_patch_spectra`): ``before`` is the per-pixel median over the clear
growing-season observations of the season before the patch was first detected; ``after`` the
median from ``first_detected`` to the end of that season. Both are averaged over the patch's
pixels. Reflectance is unitless. From the patch's mean reflectance per date, for NDVI, NBR, NDMI
and BSI: ``z_<index>``, the change of the median after against the median before in robust
z-scores (scaled by 1.4826 x the MAD before, at least ``Z_SPREAD_FLOOR``), and
``persistence``: the share of the clear observations after ``confirmed_on`` (every later season)
on which NDVI is still below the midpoint of before and after.

Context (:func:`add_patch_context`), from the detection index (NDVI): ``ridge``, the median Sato
ridge response (:func:`gmsense.detect.lines.ridge_response`) of the break-magnitude image over
the patch (narrow lines stand out, scales ``line_ridge_sigmas_m``);
``ring_drop_near`` and ``ring_drop_far``, the drop (before less after, per pixel, medians as
above) of the surroundings ``context_near_ring_m`` (10-30 m) and ``context_far_ring_m`` (30-100 m)
out (other patches excluded; both from at least one pixel out, :func:`context_rings`) as a share
of the patch's own drop: near 0 for work in quiet land, near 1 where everything around changed
too (fire, flood, harvest, a dry year); ``ring_anomaly_near`` and ``ring_anomaly_far``, how much lower
each ring is after than at the same days of the season before (:func:`ring_anomaly`), as a share of the
patch's drop: a yearly cycle around the patch (fields harvested at this time every year) cancels, a dry year
does not;
``contrast_after``, the patch's NDVI after less that of the near ring; ``ring_ndvi_before``, the
far ring's NDVI before (land-cover context: forest, grass, crop).

Natural-agent signatures (``sig_*``, :mod:`gmsense.detect.agents`) are added with the spectra;
``sig_patchiness`` here: the spread (interquartile range) of the per-pixel drop inside the patch
over its median drop: machines remove cover evenly, wind, beetles and fire leave it patchy.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import ndimage

from gmsense._numeric import nan_median
from gmsense.config import DetectSettings, SeasonSettings
from gmsense.cube import ops as cubeops
from gmsense.cube.contract import CUBE_BANDS
from gmsense.cube.ops import ring_pixels, scale_pixels, season_days, season_year
from gmsense.detect.agents import signatures
from gmsense.detect.lines import finite_quantile, median_over, ridge_response, ring
from gmsense.detect.patches import Patch

Z_SPREAD_FLOOR = 0.01  # index units: a perfectly steady history must not make every change infinite
FEATURE_INDICES = ("ndvi", "nbr", "ndmi", "bsi")
#: The ridge filter is run around each patch this many of its widest scale out: beyond the reach of
#: its widest kernel (scipy's default truncation at 4 sigma), so the result is the whole image's.
RIDGE_PAD_SIGMAS = 5


def _mean_per_date(pixels: np.ndarray) -> np.ndarray:
    """(..., T, P) -> (..., T) mean of the finite values per date; NaN on dates with none. (No
    ``np.nanmean``: its warning would need ``warnings.catch_warnings``, which is not thread-safe
    and the scan analyses licences in threads.)"""
    seen = np.isfinite(pixels)
    count = seen.sum(axis=-1)
    total = np.where(seen, pixels, 0.0).sum(axis=-1)
    return np.divide(total, count.astype(total.dtype), out=np.full(count.shape, np.nan, dtype=total.dtype),
                     where=count > 0)


def _same_dtype(bands: list[str], arrays: dict[str, np.ndarray]) -> list[list[str]]:
    """``bands`` in groups of one dtype, in their order within each group."""
    groups: dict[np.dtype, list[str]] = {}
    for b in bands:
        groups.setdefault(arrays[b].dtype, []).append(b)
    return list(groups.values())


def _band_medians(pixels: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """(band, time, pixel) -> (band, pixel): each pixel's median over ``dates`` (NaN-aware)."""
    n_bands, _, n_pixels = pixels.shape
    picked = pixels[:, dates].transpose(1, 0, 2).reshape(len(dates), n_bands * n_pixels)
    return nan_median(picked).reshape(n_bands, n_pixels)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def add_patch_spectra(patches: list[Patch], labels: np.ndarray, season_cube: xr.Dataset,
                      clear: np.ndarray | None = None, time_index: np.ndarray | slice | None = None,
                      season: SeasonSettings | None = None, *, annual: bool = False,
                      rescaled: bool = False) -> None:
    """Fill ``patch.spectral`` with ``<band>_before``, ``<band>_after`` and ``<band>_ratio``.

    ``season_cube`` holds masked growing-season reflectance (NaN where not clear), loaded. Or,
    with ``clear`` ((T, y, x) bool over the growing-season dates), unmasked reflectance, loaded,
    whose growing-season dates are ``time_index`` (indices or a slice of its time axis; all when
    None): then only each patch's bounding box is read and masked, nothing is copied whole.
    ``annual``: the cube holds annual composites; ``rescaled``: its images are rescaled each on its
    own (no reflectance), so the patch's rank in its scene is measured too (:mod:`gmsense.detect.agents`).
    """
    select = slice(None) if time_index is None else time_index
    times = season_cube["time"].values[select].astype("datetime64[ns]")
    years = season_year(times, season)
    bands = [b for b in CUBE_BANDS if b in season_cube]
    arrays = {b: np.asarray(season_cube[b].transpose("time", "y", "x").values) for b in bands}
    boxes = ndimage.find_objects(labels)
    scene = _scene_values(arrays, select, clear) if rescaled else None
    for patch in patches:
        box = boxes[patch.label - 1]
        mask = labels[box] == patch.label
        year = int(season_year(patch.first_detected, season))
        before_t = np.flatnonzero(years == year - 1)
        after_t = np.flatnonzero((years == year) & (times >= patch.first_detected))
        window = (slice(None), *box)
        visible = clear[window] if clear is not None else None
        series = {}
        # The bands of one dtype at once (one masking, gather and median per step instead of one per
        # band: the same values, each band's columns and rows computed alone).
        for group in _same_dtype(bands, arrays):
            values = np.stack([arrays[b][select][window] if isinstance(select, slice) else arrays[b][(select, *box)]
                               for b in group])
            if visible is not None:
                values = np.where(visible, values, np.nan)
            pixels = values[:, :, mask]  # (band, time, pixel)
            means = _mean_per_date(pixels)
            before_all = _band_medians(pixels, before_t)
            after_all = _band_medians(pixels, after_t)
            for i, b in enumerate(group):
                series[b] = means[i]
                before, after = _mean(before_all[i]), _mean(after_all[i])
                patch.spectral[f"{b}_before"] = before
                patch.spectral[f"{b}_after"] = after
                patch.spectral[f"{b}_ratio"] = after / before if before and np.isfinite(before) else float("nan")
        patch.spectral.update(_index_changes(series, times, before_t, after_t, patch.confirmed_on))
        if scene is not None:
            series.update(_scene_ranks(series, scene))
        patch.spectral.update(signatures(series, times, patch.first_detected, season, extended=annual))


def _visible(values: dict[str, np.ndarray]) -> np.ndarray | None:
    bands = [values[b] for b in ("blue", "green", "red") if b in values]
    return sum(bands[1:], bands[0]) / len(bands) if bands else None


def _scene_values(arrays: dict[str, np.ndarray], select: np.ndarray | slice,
                  clear: np.ndarray | None) -> dict[str, list[np.ndarray]]:
    """Per date, the sorted clear values of the scene's visible brightness and NIR (for ranks)."""
    picked = {b: np.asarray(a[select], dtype=float) for b, a in arrays.items()}
    out: dict[str, list[np.ndarray]] = {}
    for name, values in (("visible_rank", _visible(picked)), ("nir_rank", picked.get("nir"))):
        if values is None:
            continue
        if clear is not None:
            values = np.where(clear, values, np.nan)
        flat = values.reshape(len(values), -1)
        out[name] = [np.sort(row[np.isfinite(row)]) for row in flat]
    return out


def _scene_ranks(series: dict[str, np.ndarray], scene: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Per date, the share of the scene's clear pixels darker than the patch's mean (NaN: not seen)."""
    mine = {"visible_rank": _visible(series), "nir_rank": series.get("nir")}
    out = {}
    for name, rows in scene.items():
        values = mine[name]
        ranks = np.full(len(rows), np.nan)
        for t, row in enumerate(rows):
            if row.size and np.isfinite(values[t]):
                ranks[t] = np.searchsorted(row, values[t], side="left") / row.size
        out[name] = ranks
    return out


def _robust_z(values: np.ndarray, before_t: np.ndarray, after_t: np.ndarray) -> float:
    before, after = values[before_t], values[after_t]
    before, after = before[np.isfinite(before)], after[np.isfinite(after)]
    if before.size < 2 or after.size == 0:
        return float("nan")
    centre = np.median(before)
    spread = max(1.4826 * float(np.median(np.abs(before - centre))), Z_SPREAD_FLOOR)
    return float((np.median(after) - centre) / spread)


def _index_series(series: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """The index ``name`` per date from band series (formulas of :func:`gmsense.cube.ops.index`);
    None when a band is missing."""
    if not all(b in series for b in cubeops.INDEX_BANDS[name]):
        return None
    b = series
    a, c = {"ndvi": (b.get("nir"), b.get("red")), "nbr": (b.get("nir"), b.get("swir2")),
            "ndmi": (b.get("nir"), b.get("swir1"))}.get(name) or (b["swir1"] + b["red"], b["nir"] + b["blue"])
    return cubeops.normalized_difference(a, c)


def _index_changes(series: dict[str, np.ndarray], times: np.ndarray, before_t: np.ndarray, after_t: np.ndarray,
                   confirmed_on: np.datetime64) -> dict[str, float]:
    """``z_<index>`` and ``persistence`` (module docstring) from the patch's mean band values per date."""
    out: dict[str, float] = {}
    for name in FEATURE_INDICES:
        values = _index_series(series, name)
        if values is not None:
            out[f"z_{name}"] = _robust_z(values, before_t, after_t)
    ndvi = _index_series(series, "ndvi")
    if ndvi is not None:
        before, after = ndvi[before_t], ndvi[after_t]
        later = ndvi[times > confirmed_on]
        later = later[np.isfinite(later)]
        if np.isfinite(before).any() and np.isfinite(after).any() and later.size:
            midpoint = 0.5 * (np.nanmedian(before) + np.nanmedian(after))
            out["persistence"] = float((later < midpoint).mean())
    return out


def _median(values: np.ndarray) -> float:
    return finite_quantile(values, 0.5)


def context_rings(settings: DetectSettings, pixel_m: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """The near and far rings of the patch context (``context_near_ring_m``, ``context_far_ring_m``)
    as dilation steps of a ``pixel_m`` grid (:func:`gmsense.detect.lines.ring`).

    Both start at least one pixel out: the pixels next to the patch share its drop through mixed
    pixels and misregistration (as a line's do, :class:`gmsense.detect.lines._Scale`), so a ring
    holding them reads "the surroundings changed too" around any patch. At 10 m the near ring's 10 m
    is one step already; at 20 and 30 m it rounds to 0 steps and would hold them. The far ring starts
    no nearer than the near one ends, so the two never share a pixel (the drought rule asks both)."""
    near = ring_pixels(settings.context_near_ring_m, pixel_m, min_inner=1)
    return near, ring_pixels(settings.context_far_ring_m, pixel_m, min_inner=near[1])


def ring_anomaly(values: np.ndarray, days: np.ndarray, before_t: np.ndarray, after_t: np.ndarray) -> float:
    """How much lower a ring is on the dates ``after_t`` than it was at the same days of the season
    before (``before_t``), NDVI units (positive: lower now): the median over the dates after of the
    ring's per-date median less the season before's per-date medians interpolated at the same day
    of the season (``days``, :func:`gmsense.cube.ops.season_days`). A yearly cycle (a harvest, the
    autumn's senescence) cancels; a dry year does not. NaN when the season before has fewer than
    two clear dates or does not span an after date.

    ``values`` (T, pixels) NDVI, NaN where not clear."""
    daily = nan_median(values.T) if values.shape[1] else np.full(values.shape[0], np.nan)
    before = before_t[np.isfinite(daily[before_t])]
    after = after_t[np.isfinite(daily[after_t])]
    if before.size < 2 or after.size == 0:
        return float("nan")
    then = np.interp(days[after], days[before], daily[before], left=np.nan, right=np.nan)
    seen = np.isfinite(then)
    return float(np.median(then[seen] - daily[after][seen])) if seen.any() else float("nan")


def add_patch_context(patches: list[Patch], labels: np.ndarray, index: np.ndarray, times: np.ndarray,
                      magnitude: np.ndarray, settings: DetectSettings, pixel_m: float,
                      season: SeasonSettings | None = None) -> None:
    """Fill ``patch.context`` with ``ridge``, ``ring_drop_near``, ``ring_drop_far``,
    ``contrast_after`` and ``ring_ndvi_before`` (module docstring). ``index`` (T, y, x) NDVI, NaN
    where not clear, on the growing-season dates ``times``; ``magnitude`` (y, x) the breaks' drop
    (NaN where none); ``pixel_m`` the grid's pixel size (metres), which turns the rings and ridge
    scales of ``settings`` into pixels."""
    times = np.asarray(times).astype("datetime64[ns]")
    years = season_year(times, season)
    days = season_days(times, years)
    boxes = ndimage.find_objects(labels)
    near_px, far_px = context_rings(settings, pixel_m)
    sigmas = tuple(scale_pixels(s, pixel_m) for s in settings.line_ridge_sigmas_m)
    ridge_pad = int(np.ceil(RIDGE_PAD_SIGMAS * max(sigmas)))
    for patch in patches:
        box, ridge_box = (tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n))
                                for s, n in zip(boxes[patch.label - 1], labels.shape, strict=True))
                          for pad in (far_px[1], ridge_pad))
        here = labels[box]
        mask = here == patch.label
        others = (here > 0) & ~mask
        ridge = ridge_response(np.nan_to_num(magnitude[ridge_box]), sigmas)
        patch.context["ridge"] = float(np.median(ridge[labels[ridge_box] == patch.label]))
        year = int(season_year(patch.first_detected, season))
        before_t = np.flatnonzero(years == year - 1)
        after_t = np.flatnonzero((years == year) & (times >= patch.first_detected))
        if before_t.size == 0 or after_t.size == 0:
            continue
        window = index[(slice(None), *box)]
        before, after = median_over(window, before_t), median_over(window, after_t)
        drop = before - after
        own = _median(drop[mask])
        near, far = ring(mask, near_px) & ~others, ring(mask, far_px) & ~others
        if np.isfinite(own) and own > 0:
            patch.context["ring_drop_near"] = _median(drop[near]) / own
            patch.context["ring_drop_far"] = _median(drop[far]) / own
            for name, pixels in (("near", near), ("far", far)):
                anomaly = ring_anomaly(window[:, pixels], days, before_t, after_t)
                if np.isfinite(anomaly):
                    patch.context[f"ring_anomaly_{name}"] = anomaly / own
        patch.context["contrast_after"] = _median(after[mask]) - _median(after[near])
        own_drop = drop[mask]
        own_drop = own_drop[np.isfinite(own_drop)]
        if own_drop.size >= 4 and own > 0:
            q25, q75 = np.quantile(own_drop, [0.25, 0.75])
            patch.context["sig_patchiness"] = float((q75 - q25) / own)
        patch.context["ring_ndvi_before"] = _median(before[far])
