"""Restoration status of a register polygon per year, against a reference ring (pure numpy).

Per year (growing season), ``ratio`` = the polygon's vegetation cover relative to its reference ring:
(mean NDVI of the polygon's pixels - ``soil_ndvi``) / (median NDVI of the ring - ``soil_ndvi``), the
dimidiate pixel model of fractional vegetation cover (Gutman & Ignatov 1998, Int. J. Remote Sens.
19(8)) with the ring as the full-cover end member: NDVI mixes linearly with cover, so the mean over
the polygon is its area-weighted cover (half the polygon green reads as half, not as the median
pixel), and subtracting bare ground's NDVI makes "vegetation at 80 % of the reference" a cover of
80 %, not an NDVI ratio of 80 % (which bare ground's own NDVI reaches at a lower cover). The ring
is the pixels ``ring_inner_m``..``ring_outer_m`` (metres) around the polygon, leaving out every
register polygon and ``ring_inner_m`` around each (as gmsense.recovery's ring leaves out patches);
it is in the same composite, so season, drought and atmosphere cancel. A ring whose median NDVI is
below ``min_reference_ndvi`` is no vegetated reference: that year has no ratio (and no status).

**Restored area** (:func:`restored_shares`): restoration works are done on parts of a site (a
terraced and planted section, the rest left bare), so the polygon is read as its homogeneous parts
(:func:`segments`: two parts when its pixels fall in two clearly different groups over the latest
years, else one), and each part follows the polygon's rule on its median pixel ratio: from the year
the polygon is first seen damaged, a part is restored once its ratio has been at least
``restored_ratio`` for ``restored_seasons`` seasons in a row, and stays restored until it falls below
``damaged_ratio``. The restored share of a year is the area share of the parts restored then, so a
polygon half grown back counts half of its area as restored, whatever its status as a whole; a part
is judged by its median, not pixel by pixel, so single pixels' noise around the threshold neither
adds nor removes area.

Status per year, with ``damaged_ratio`` (0.5), ``restored_ratio`` (0.8), ``restored_seasons``
(2), ``trend_years`` (2) and ``min_rise`` (0.05) of :class:`gmsense.config.RestorationSettings`:

- none before the first year the polygon is seen damaged (ratio below ``damaged_ratio``): the
  ground was still intact; a polygon never seen damaged is followed from its first year, and is
  restored from its first year when its first ``restored_seasons`` years are at reference (the
  archive begins after its restoration);
- ``restored``: the ratio has been at least ``restored_ratio`` for ``restored_seasons`` years in a
  row; it stays restored until the ratio falls below ``damaged_ratio`` again, which is
  ``reverted`` (and stays so until a new restoration begins);
- ``under_restoration``: a sustained greening trend, the ratio rising by at least ``min_rise`` in
  each of the last ``trend_years`` years, or by at least ``min_slope`` a year over the last
  ``trend_window`` years (Theil-Sen: slow natural succession), or at reference but not yet for
  ``restored_seasons`` years; a restoration whose trend stops is ``damaged`` again (a stalled
  partial restoration);
- ``damaged`` otherwise.

Events: ``started`` in the first year of the rise that led to ``under_restoration`` (or
``restored``), ``finished`` in the first year a restoration is ``restored``, ``reverted`` in the
year a restored polygon falls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense._numeric import nan_median
from gmsense.config import RestorationSettings


@dataclass(frozen=True)
class Measures:
    """Per year (arrays of one length): the polygon's mean and the reference ring's median NDVI, the
    ratio (relative cover, module docstring), the pixel counts, and ``pixel_ratio`` (years, pixels):
    each pixel's relative cover (NaN: not observed, or no vegetated ring)."""

    polygon_ndvi: np.ndarray
    reference_ndvi: np.ndarray
    ratio: np.ndarray
    n_pixels: np.ndarray
    n_reference: np.ndarray
    pixel_ratio: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """Per year: the status (None: before damage, or no ratio) and the events of the year."""

    statuses: list[str | None]
    events: list[str]

    def last_year_of(self, event: str, years: Sequence[int]) -> int | None:
        """The latest year with ``event`` (started, finished, reverted), or None."""
        hits = [y for y, e in zip(years, self.events, strict=True) if event in e.split(",")]
        return hits[-1] if hits else None


def exclusion(polygons: Sequence[BaseGeometry], settings: RestorationSettings) -> BaseGeometry:
    """Every register polygon with ``ring_inner_m`` metres around it: no reference ring reaches into it."""
    return unary_union([g.buffer(settings.ring_inner_m) for g in polygons])


def masks(geometry: BaseGeometry, excluded: BaseGeometry, shape: tuple[int, int], transform: Affine,
          settings: RestorationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (y, x) masks of the polygon's pixels (centre inside) and of its reference ring, on the
    grid ``shape``/``transform`` (same CRS as the geometries, metres)."""
    polygon = geometry_mask([geometry], out_shape=shape, transform=transform, invert=True)
    ring = geometry.buffer(settings.ring_outer_m).difference(excluded)
    if ring.is_empty:
        return polygon, np.zeros(shape, dtype=bool)
    return polygon, geometry_mask([ring], out_shape=shape, transform=transform, invert=True)


def measure(ndvi: np.ndarray, polygon: np.ndarray, ring: np.ndarray, settings: RestorationSettings) -> Measures:
    """Yearly measures from ``ndvi`` (years, y, x; NaN where not observed) and the two masks."""
    inside = np.asarray(ndvi[:, polygon], dtype=float)  # (years, pixels)
    around = np.asarray(ndvi[:, ring], dtype=float)
    seen = np.isfinite(inside)
    n_pixels = seen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        polygon_ndvi = np.where(n_pixels > 0, np.where(seen, inside, 0.0).sum(axis=1) / np.maximum(n_pixels, 1),
                                np.nan)
    reference = nan_median(around.T)
    vegetated = np.isfinite(reference) & (reference >= settings.min_reference_ndvi)
    soil = settings.soil_ndvi
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(vegetated, (polygon_ndvi - soil) / (reference - soil), np.nan)
        pixel_ratio = np.where(vegetated[:, None], (inside - soil) / (reference[:, None] - soil), np.nan)
    return Measures(polygon_ndvi, reference, ratio, n_pixels, np.isfinite(around).sum(axis=1), pixel_ratio)


def restored_shares(pixel_ratio: np.ndarray, statuses: Sequence[str | None],
                    settings: RestorationSettings) -> np.ndarray:
    """The restored share of the polygon's area per year (NaN in years without a status), from
    ``pixel_ratio`` (years, pixels) of :class:`Measures` and the polygon's ``statuses`` of
    :func:`classify`: the polygon's parts (:func:`segments`, over the years from its first status)
    each follow the polygon's rule on their median ratio (module docstring); a polygon restored from
    its first year (restored before the archive began) has its parts at reference then restored at once."""
    pixel_ratio = np.asarray(pixel_ratio, dtype=float)
    years, pixels = pixel_ratio.shape
    out = np.full(years, np.nan)
    known = [k for k, s in enumerate(statuses) if s is not None]
    if not known or pixels == 0:
        return out
    begin = known[0]
    labels = segments(pixel_ratio[begin:], settings)
    parts = [labels == k for k in np.unique(labels)]
    weights = np.array([m.sum() for m in parts], dtype=float)
    ratio = np.stack([nan_median(pixel_ratio[:, m].T) for m in parts], axis=1)  # (years, parts)
    run = np.full(len(parts), settings.restored_seasons - 1 if statuses[begin] == "restored" else 0)
    restored = np.zeros(len(parts), dtype=bool)
    seen = np.zeros(len(parts), dtype=bool)
    for k in range(begin, years):
        r = ratio[k]
        observed = np.isfinite(r)
        seen |= observed
        run = np.where(observed, np.where(r >= settings.restored_ratio, run + 1, 0), run)
        kept = restored & (r >= settings.damaged_ratio)
        restored = np.where(observed, kept | (run >= settings.restored_seasons), restored)
        if statuses[k] is not None and seen.any():
            out[k] = float(weights[seen & restored].sum() / weights[seen].sum())
    return out


def segments(pixel_ratio: np.ndarray, settings: RestorationSettings) -> np.ndarray:
    """Labels (0 or 1 per pixel) splitting a polygon into two homogeneous parts when its pixels fall
    in two clearly different groups over the last ``segment_years`` years with a ratio (each pixel's
    median there, split at the Otsu threshold; the groups' medians at least ``segment_gap`` apart, the
    smaller at least ``segment_min_share`` of the pixels): a part restored and a part left bare. Else
    one part. Read again at every run, so a part planted lately splits off once it has grown."""
    window, min_gap, min_share = settings.segment_years, settings.segment_gap, settings.segment_min_share
    pixel_ratio = np.asarray(pixel_ratio, dtype=float)
    labels = np.zeros(pixel_ratio.shape[1], dtype=int)
    rows = np.flatnonzero(np.isfinite(pixel_ratio).any(axis=1))[-window:]
    if rows.size == 0 or pixel_ratio.shape[1] < 4:
        return labels
    feature = nan_median(pixel_ratio[rows])  # per pixel, over the years
    ok = np.isfinite(feature)
    values = np.sort(feature[ok])
    if values.size < 4:
        return labels
    # Otsu: the split of the sorted values with the largest between-group variance
    n = values.size
    k = np.arange(1, n)
    below = np.cumsum(values)[:-1]
    gap = (values.sum() - below) / (n - k) - below / k
    best = int(np.argmax(k * (n - k) * gap**2))
    cut = (values[best] + values[best + 1]) / 2
    high = ok & (feature > cut)
    low = ok & ~high
    share = min(high.sum(), low.sum()) / ok.sum()
    if share < min_share or np.median(feature[high]) - np.median(feature[low]) < min_gap:
        return labels
    labels[high] = 1
    return labels


def _window_slope(r: np.ndarray, k: int, window: int) -> float:
    """Theil-Sen slope (ratio per year) of the ``window`` values of ``r`` ending at ``k``: robust to
    one noisy composite; 0 with fewer than two values."""
    values = r[max(0, k - window + 1):k + 1]
    if values.size < 2:
        return 0.0
    i, j = np.triu_indices(values.size, 1)
    return float(np.median((values[j] - values[i]) / (j - i)))


def classify(ratio: np.ndarray, settings: RestorationSettings) -> Trajectory:
    """Status and events per year from the yearly ``ratio`` (NaN: no ratio that year, skipped; the
    rules compare consecutive years that have one). See the module docstring."""
    ratio = np.asarray(ratio, dtype=float)
    statuses: list[str | None] = [None] * ratio.size
    events = [""] * ratio.size
    valid = np.flatnonzero(np.isfinite(ratio))
    if valid.size == 0:
        return Trajectory(statuses, events)
    r = ratio[valid]
    low = r < settings.damaged_ratio
    high = r >= settings.restored_ratio
    rises = np.concatenate([[False], np.diff(r) >= settings.min_rise])
    begin = int(np.argmax(low)) if low.any() else 0
    run_high = 0
    before_archive = (not low.any() and r.size >= settings.restored_seasons
                      and bool(high[:settings.restored_seasons].all()))
    if before_archive:
        run_high = settings.restored_seasons - 1  # restored before the archive began: no events
    state: str | None = None
    marks: list[list[str]] = [[] for _ in r]
    for k in range(begin, r.size):
        run_high = run_high + 1 if high[k] else 0
        trend = k >= settings.trend_years and bool(rises[k - settings.trend_years + 1:k + 1].all())
        slope = _window_slope(r, k, settings.trend_window) if k - begin + 1 >= settings.trend_window else 0.0
        if state == "restored":
            status = "reverted" if low[k] else "restored"
        elif run_high >= settings.restored_seasons:
            status = "restored"
        elif trend or slope >= settings.min_slope or high[k]:
            status = "under_restoration"
        else:
            status = "reverted" if state == "reverted" else "damaged"
        quiet = before_archive and k == begin
        if status == "reverted" and state == "restored":
            marks[k].append("reverted")
        if status in ("under_restoration", "restored") and state not in ("under_restoration", "restored") \
                and not quiet:
            first = k  # the first year of the run of rises that ends here
            while rises[first] and first - 1 >= begin and rises[first - 1]:
                first -= 1
            marks[first].append("started")
        if status == "restored" and state != "restored" and not quiet:
            marks[k].append("finished")
        statuses[valid[k]] = status
        state = status
    for k, mark in enumerate(marks):
        events[valid[k]] = ",".join(mark)
    return Trajectory(statuses, events)


def annual_ndvi(ndvi: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median NDVI per year: ``ndvi`` (dates, y, x) with each date's (growing-season)
    year -> (sorted unique years, array (years, y, x)). Annual composites pass through unchanged."""
    years = np.asarray(years, dtype=int)
    unique = np.unique(years)
    if unique.size == years.size:
        order = np.argsort(years)
        return years[order], np.asarray(ndvi)[order]
    out = np.stack([nan_median(np.asarray(ndvi)[years == y].reshape((years == y).sum(), -1))
                    .reshape(ndvi.shape[1:]) for y in unique])
    return unique, out
