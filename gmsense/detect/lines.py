"""The line pass: new narrow lines (sub-pixel trenches, access tracks) from weak per-pixel drops.

A trench 2-4 m wide covers a third of a 10 m pixel, or less of two, so the index of its pixels
falls too little for the per-pixel test of :mod:`gmsense.detect.change`. That module also
reports *weak runs* (``weak_first``, ``weak_confirmed``, ``weak_magnitude``: ``line_confirm_obs``
consecutive clear drops of at least ``max(line_min_drop, line_z x spread)``), which alone are
noise. This pass keeps the weak runs that draw a new line:

1. the Sato ridge filter (:func:`ridge_response`, bright ridges, scales ``line_ridge_sigmas_m``) of the
   weak-run magnitude image is at least ``line_min_ridge`` (NDVI units);
2. the connected ridge component is at least ``line_min_length_m`` long, ``line_min_elongation``
   times longer than wide, most of its pixels have a weak run, and it does not enclose weak runs
   (the outline of a patch);
3. it keeps ``line_clearance_m`` from the confirmed breaks that form a patch (at least ``min_patch_m2``:
   an edge of a patch is the patch's); a speck of confirmed pixels too small to be a patch (a few
   pixels of a trench where it covers most of a pixel) does not keep a line away, it joins it;
4. its surroundings (``line_ring_m`` out, from at least one pixel out) are quiet: at most
   ``line_max_ring_share`` of them have weak runs of their own, and their drop over the same dates
   (upper quartile) is at most ``line_max_ring_drop`` times the line's: a line, not the edge of a
   wider change (a harvest, a dry year);
5. the same weeks of the season before show no dark line within ``line_prior_reach_m`` (Sato
   dark-ridge response of the median index at most ``line_max_prior_ridge``): not an existing road or ditch answering a
   dry year.

The kept pixels become breaks with their weak run's dates and magnitude; ``line`` marks them.
Lengths in metres of the cube's projected CRS, turned into pixels by its pixel size (every
window at least one pixel); drops in index (NDVI) units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import ndimage

from gmsense._numeric import nan_median
from gmsense._parallel import parallel_map
from gmsense.config import DetectSettings, SeasonSettings
from gmsense.cube.ops import ring_pixels, scale_pixels, season_days, season_year
from gmsense.detect.patches import label_breaks, long_and_thin
from gmsense.geo.grid import grid_transform

ARC_OVER_DIAGONAL = np.pi / 2  # an arc up to a half circle is at most this much longer than its box's diagonal
_EIGHT = np.ones((3, 3), dtype=bool)
_MIN_PIXELS = 3


def ridge_response(image: np.ndarray, sigmas: tuple[float, ...], bright: bool = True, threads: int = 1) -> np.ndarray:
    """Sato's tubeness in 2-D (``skimage.filters.sato``): per pixel, the largest over ``sigmas`` (pixels) of
    sigma^2 x the larger Hessian eigenvalue of the (for bright ridges, negated) image, clipped at
    0; the Hessian from Gaussian derivatives, three separable filters per sigma. The sigmas are
    filtered in ``threads`` threads (scipy's filters release the GIL; the same result)."""
    image = np.asarray(-image if bright else image, dtype="float64")

    def response(sigma: float) -> np.ndarray:
        h_rr, h_rc, h_cc = (ndimage.gaussian_filter(image, sigma, order=order, mode="reflect")
                            for order in ((2, 0), (1, 1), (0, 2)))
        larger = 0.5 * (h_rr + h_cc) + np.sqrt((0.5 * (h_rr - h_cc)) ** 2 + h_rc**2)
        return sigma**2 * np.maximum(larger, 0)

    best = np.zeros(image.shape)
    for one in parallel_map(response, sigmas, threads):
        best = np.maximum(best, one)
    return best


@dataclass(frozen=True)
class _Scale:
    """The line pass's windows in pixels of one grid (from DetectSettings' metres)."""

    sigmas: tuple[float, ...]
    ring: tuple[int, int]
    prior_reach: int

    @classmethod
    def of(cls, settings: DetectSettings, pixel_m: float) -> _Scale:
        # The ring starts at least one pixel out: a line narrower than a pixel straddles pixel
        # edges and moves by up to half a pixel between dates (misregistration), so the pixels next
        # to its own share its drop. (At 20 and 30 m, 10 m rounds to 0 steps, and a dilation of 0
        # iterations is scipy's "until nothing changes": the ring was empty and every line rejected.)
        return cls(tuple(scale_pixels(s, pixel_m) for s in settings.line_ridge_sigmas_m),
                   ring_pixels(settings.line_ring_m, pixel_m, min_inner=1),
                   max(round(settings.line_prior_reach_m / pixel_m), 1))


def median_over(index: np.ndarray, dates: np.ndarray, box: tuple[slice, ...] = ()) -> np.ndarray:
    """NaN-aware median of ``index`` (T, y, x) over ``dates`` inside ``box`` (all of it when
    empty) -> (y, x); NaN where never clear."""
    window = index[(dates, *box)]
    return nan_median(window.reshape(window.shape[0], math.prod(window.shape[1:]))).reshape(window.shape[1:])


def ring(mask: np.ndarray, px: tuple[int, int]) -> np.ndarray:
    """The pixels ``px[0]`` (exclusive) to ``px[1]`` (inclusive) dilation steps (4-connected) out of
    ``mask``: a city-block distance from it, in one chamfer pass instead of ``px[1]`` dilations."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    steps = ndimage.distance_transform_cdt(~mask, metric="taxicab")
    return (steps > px[0]) & (steps <= px[1])


def _few_weak_around(has_weak: np.ndarray, line: np.ndarray, box: tuple[slice, slice],
                     settings: DetectSettings, scale: _Scale) -> bool:
    """The first half of test 4 (module docstring), the cheap one."""
    around = ring(line, scale.ring)
    return bool(around.any() and has_weak[box][around].mean() <= settings.line_max_ring_share)


def _quiet_surroundings(index: np.ndarray, times: np.ndarray, years: np.ndarray, first: np.ndarray,
                        has_weak: np.ndarray, line: np.ndarray, box: tuple[slice, slice],
                        settings: DetectSettings, scale: _Scale) -> bool:
    """The rest of test 4, and test 5 (module docstring), for one candidate ``line`` (bool, in ``box``)."""
    around = ring(line, scale.ring)
    start = int(np.median(first[box][line & has_weak[box]]))
    year = years[start]
    after = np.flatnonzero((np.arange(times.size) >= start) & (years == year))
    day = season_days(times, years)
    before = np.flatnonzero((years == year - 1) & (day >= day[start]) & (day <= day[after[-1]]))
    if before.size == 0:
        return False
    prior = median_over(index, before, box)
    drop = prior - median_over(index, after, box)
    line_drop = finite_quantile(drop[line & has_weak[box]], 0.5)
    ring_drop = finite_quantile(drop[around], 0.75)
    if not (line_drop > 0 and ring_drop <= settings.line_max_ring_drop * line_drop):
        return False  # (NaN compares false: no clear view before or after says nothing for it)
    filled = np.where(np.isfinite(prior), prior, finite_quantile(prior, 0.5))
    prior_ridge = ridge_response(filled, scale.sigmas, bright=False)
    near = ndimage.binary_dilation(line, iterations=scale.prior_reach)
    return bool(prior_ridge[near].max() <= settings.line_max_prior_ridge)


def finite_quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the finite ``values``; NaN (quietly) when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else float("nan")


def _padded(box: tuple[slice, slice], pad: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, shape, strict=True))


def patch_pixels(first_detected: np.ndarray, min_area_m2: float, pixel_m: float,
                 season: SeasonSettings | None = None) -> np.ndarray:
    """The confirmed pixels (bool, y x) that form patches: touching pixels of one season
    (:func:`gmsense.detect.patches.label_breaks`) covering at least ``min_area_m2``."""
    labels = label_breaks(first_detected, season)
    counts = np.bincount(labels.ravel())
    big = counts * pixel_m**2 >= min_area_m2
    big[0] = False
    return big[labels]


def _plausible(labels: np.ndarray, boxes: list, has_weak: np.ndarray, pixel: float,
               settings: DetectSettings) -> np.ndarray:
    """The labels of the candidate lines worth the per-line tests, in order: at least
    ``_MIN_PIXELS`` pixels, most of them with weak drops, and a reach (the most their pixels could
    stretch: a diagonal chain, or an arc in their box) long and thin enough for the shape test.
    Counted for every component at once (a scene has hundreds, most of one or two pixels)."""
    counts = np.bincount(labels.ravel())[1:]
    weak = np.bincount(labels.ravel(), weights=has_weak.ravel())[1:len(counts) + 1]
    spans = np.array([(b[0].stop - b[0].start, b[1].stop - b[1].start) if b is not None else (0, 0) for b in boxes],
                     dtype="float64").reshape(-1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.minimum(counts * np.sqrt(2), ARC_OVER_DIAGONAL * np.hypot(spans[:, 0], spans[:, 1])) * pixel
        ok = (counts >= _MIN_PIXELS) & (weak / counts > 0.5)
        ok &= (reach >= settings.line_min_length_m) & (reach**2 / (counts * pixel**2) >= settings.line_min_elongation)
    return np.flatnonzero(ok) + 1


def find_lines(breaks: xr.Dataset, index: np.ndarray, times: np.ndarray, settings: DetectSettings,
               season: SeasonSettings | None = None, threads: int = 1) -> np.ndarray:
    """Pixels (bool, y x) of the new lines the weak runs of ``breaks`` draw (see the module
    docstring). ``breaks`` from :func:`gmsense.detect.change.detect_breaks`, loaded; ``index`` the
    (time, y, x) index it was computed from (NaN where not clear), as numpy, on dates ``times``."""
    weak_first = np.asarray(breaks["weak_first"].values)
    has_weak = ~np.isnat(weak_first)
    found = np.zeros(has_weak.shape, dtype=bool)
    if not has_weak.any():
        return found
    pixel = abs(grid_transform(breaks).a)
    times = np.asarray(times).astype("datetime64[ns]")
    years = season_year(times, season)
    first = np.searchsorted(times, np.where(has_weak, weak_first, times[0]))
    magnitude = np.where(has_weak, np.nan_to_num(np.asarray(breaks["weak_magnitude"].values)), 0.0)
    confirmed = patch_pixels(np.asarray(breaks["first_detected"].values), settings.min_patch_m2, pixel, season)
    scale = _Scale.of(settings, pixel)
    clearance = int(np.ceil(settings.line_clearance_m / pixel))
    free = ~(ndimage.binary_dilation(confirmed, iterations=clearance) if confirmed.any() and clearance else confirmed)
    candidate = (ridge_response(magnitude, scale.sigmas, threads=threads) >= settings.line_min_ridge) & free
    labels, _ = ndimage.label(candidate, structure=_EIGHT)
    pad = scale.ring[1] + 2
    boxes = ndimage.find_objects(labels)
    for label in _plausible(labels, boxes, has_weak, pixel, settings):
        box = boxes[label - 1]
        part = labels[box] == label
        holes = ndimage.binary_fill_holes(part) & ~part
        if holes.any() and has_weak[box][holes].mean() > 0.5:
            continue  # the outline of a patch of weak drops
        outer = _padded(box, pad, labels.shape)
        line = labels[outer] == label
        if not _few_weak_around(has_weak, line, outer, settings, scale):
            continue
        if not long_and_thin(part, pixel, settings.line_min_length_m, settings.line_min_elongation):
            continue
        if _quiet_surroundings(index, times, years, first, has_weak, line, outer, settings, scale):
            found[outer] |= line & has_weak[outer]
    return found


def add_line_breaks(breaks: xr.Dataset, index: xr.DataArray, settings: DetectSettings,
                    season: SeasonSettings | None = None, threads: int = 1) -> xr.Dataset:
    """``breaks`` with the pixels of :func:`find_lines` confirmed by their weak runs and a ``line``
    mask (bool, y x). Without ``settings.line_pass`` the mask is all false and nothing changes.
    ``threads``: for the whole grid's ridge filter (the same result)."""
    line = (find_lines(breaks, np.asarray(index.transpose("time", "y", "x").values), index["time"].values, settings,
                       season, threads)
            if settings.line_pass else np.zeros((breaks.sizes["y"], breaks.sizes["x"]), dtype=bool))
    out = breaks.copy()
    mask = xr.DataArray(line, dims=("y", "x"))
    if line.any():  # (no new line, the common case: nothing to replace)
        out["first_detected"] = out["first_detected"].where(~mask, out["weak_first"])
        out["confirmed_on"] = out["confirmed_on"].where(~mask, out["weak_confirmed"])
        out["magnitude"] = out["magnitude"].where(~mask, out["weak_magnitude"])
    out["line"] = mask
    return out
